/**
 * StreamResults as an async iterator that survives broken connections.
 *
 * The contract makes resuming exact: every message carries `last_seq`, and a call
 * with `after_seq = last_seq` sends exactly the rest. The iterator keeps the seq of
 * the last result it handed out, drops anything at or before it (so a result is never
 * delivered twice, whatever the server resends), and when the stream breaks with a
 * transient error (see `retry.js`) opens it again from there.
 *
 * @module
 */

import { FleetBenchError, fromGrpcError } from './errors.js';
import { isTerminal } from './proto.js';
import { Reconnector } from './retry.js';

/**
 * A seq (int64) from a number, a bigint or a decimal string.
 * @param {number | bigint | string | undefined} value
 * @param {string} what the option's name, for the error
 * @returns {bigint}
 */
export function toSeq(value, what) {
  let seq;
  try {
    seq = BigInt(value ?? 0);
  } catch {
    seq = -1n;
  }
  if (seq < 0n) {
    throw new FleetBenchError(`${what} must be a non-negative integer, got ${value}`,
      { code: 'INVALID_ARGUMENT', details: `bad ${what}` });
  }
  return seq;
}

/**
 * Starts a call; a synchronous failure (e.g. a closed client) becomes a FleetBenchError.
 * @template T, A
 * @param {(arg: A) => T} open
 * @param {A} arg
 * @param {string} [method]
 * @returns {T}
 */
export function openOrThrow(open, arg, method = 'StreamResults') {
  try {
    return open(arg);
  } catch (error) {
    throw fromGrpcError(error, method);
  }
}

/**
 * Follows one run's results, reconnecting as needed.
 *
 * @param {(afterSeq: string) => import('@grpc/grpc-js').ClientReadableStream<any>} open
 *   starts a StreamResults call after the given seq
 * @param {object} options
 * @param {bigint} options.afterSeq deliver only results after this seq
 * @param {boolean} options.replayOnly whether the stream ends after the stored results
 * @param {Reconnector} options.reconnector the reconnection policy of this stream
 * @returns {AsyncGenerator<any, void, undefined>} `StreamResultsResponse` messages
 */
export async function* followResults(open, { afterSeq, replayOnly, reconnector }) {
  let lastSeq = afterSeq;
  for (;;) {
    const call = openOrThrow(open, lastSeq.toString());
    call.on('error', () => {});  // errors reach the loop below; never crash the process
    let status = 'RUN_STATUS_UNSPECIFIED';
    /** @type {FleetBenchError | undefined} */
    let failure;
    try {
      for await (const message of call) {
        const fresh = message.results.filter(
          (/** @type {any} */ result) => BigInt(result.seq) > lastSeq);
        if (fresh.length > 0) {
          lastSeq = BigInt(fresh[fresh.length - 1].seq);
          reconnector.progress();
        }
        status = message.status;
        message.results = fresh;
        yield message;
      }
    } catch (error) {
      failure = fromGrpcError(error, 'StreamResults');
    } finally {
      call.cancel();  // a no-op once the call ended; stops it when the caller broke off
    }
    if (!failure) {
      if (replayOnly || isTerminal(status)) {
        return;
      }
      // Ended cleanly but before the run did (e.g. a proxy closed it): resume.
      failure = new FleetBenchError(
        `StreamResults: UNAVAILABLE: the stream ended while the run was ${status}`,
        { code: 'UNAVAILABLE', details: 'stream ended early', method: 'StreamResults' });
    }
    await reconnector.afterFailure(failure, lastSeq.toString());
  }
}
