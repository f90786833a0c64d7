/**
 * `FleetBenchClient`: the fleetbench v1 API with promises and async iterators.
 *
 * One client holds one gRPC channel; share it across calls and `close()` it at the
 * end. Unary calls reject with a {@link FleetBenchError}; streams are async iterators
 * that resume by themselves after a dropped connection.
 *
 * @module
 */

import { readFileSync } from 'node:fs';
import grpc from '@grpc/grpc-js';
import { download } from './artifacts.js';
import { fromGrpcError } from './errors.js';
import { isTerminal, serviceClient } from './proto.js';
import { Reconnector } from './retry.js';
import { followResults, toSeq } from './stream.js';

const SERVICE = 'fleetbench.v1.FleetBenchService';

/** A batch of 5,000 results with answers can exceed gRPC's 4 MiB default. */
const MAX_MESSAGE_BYTES = 256 * 1024 * 1024;

/**
 * Calls that fail before the server answered (UNAVAILABLE) are retried by grpc-js:
 * every RPC of the service is safe to repeat (StartFleetRun is idempotent by run id;
 * a retried start may report `created: false` for the run it just created).
 */
const SERVICE_CONFIG = JSON.stringify({
  methodConfig: [{
    name: [{ service: SERVICE }],
    retryPolicy: {
      maxAttempts: 5, initialBackoff: '0.1s', maxBackoff: '1s', backoffMultiplier: 2,
      retryableStatusCodes: ['UNAVAILABLE'],
    },
  }],
});

/**
 * @typedef {object} ClientOptions
 * @property {string} [token] bearer token, sent as `authorization: Bearer <token>` on
 *   every call (the server's `--auth-token-file`)
 * @property {Buffer | string} [rootCert] PEM root certificate(s) to trust, turning TLS
 *   on: the PEM as a Buffer or a string, or the path of a PEM file
 * @property {boolean} [tls] use TLS with the system's roots (implied by `rootCert`)
 * @property {number} [callTimeoutMs=30000] deadline of each unary call
 * @property {string} [protoDir] the folder holding `fleetbench/v1/fleetbench.proto`
 *   (default: the repository's `protos/`, `../../protos` from this package)
 * @property {Record<string, string | number>} [channelOptions] extra grpc-js channel
 *   options, overriding the client's
 */

/**
 * @typedef {import('./retry.js').ReconnectOptions & {
 *   afterSeq?: number | bigint | string,
 *   maxBatch?: number,
 *   snapshotIntervalMs?: number,
 *   replayOnly?: boolean,
 *   timeoutMs?: number,
 * }} StreamOptions
 * `afterSeq`: deliver only results after this seq (0: all; pass a message's `last_seq`
 * to resume); `maxBatch`: results per message (0: the server's default, 500);
 * `snapshotIntervalMs`: a periodic snapshot at most this often (0: only the first and
 * last message carry one); `replayOnly`: end after the stored results; `timeoutMs`: a
 * deadline for the whole stream, reconnections included (default: none).
 */

/** A client of one fleetbench server. */
export class FleetBenchClient {
  /** @type {any} the grpc-js service client */
  #stub;
  /** @type {string | undefined} */
  #token;
  /** @type {number} */
  #callTimeoutMs;

  /**
   * @param {string} address `host:port` of `fleetbench serve`
   * @param {ClientOptions} [options]
   */
  constructor(address, { token, rootCert, tls, callTimeoutMs = 30_000, protoDir,
    channelOptions = {} } = {}) {
    if (!address) {
      throw new TypeError("address must be 'host:port'");
    }
    const ServiceClient = serviceClient(protoDir);
    this.#stub = new ServiceClient(address, credentials({ rootCert, tls }), {
      'grpc.service_config': SERVICE_CONFIG,
      'grpc.enable_retries': 1,
      // Come back quickly when the server restarts (the default waits up to 2 minutes).
      'grpc.initial_reconnect_backoff_ms': 100,
      'grpc.max_reconnect_backoff_ms': 2000,
      'grpc.max_receive_message_length': MAX_MESSAGE_BYTES,
      'grpc.max_send_message_length': MAX_MESSAGE_BYTES,
      ...channelOptions,
    });
    this.#token = token;
    this.#callTimeoutMs = callTimeoutMs;
  }

  /**
   * Validates and plans a manifest, then starts the run (or returns the existing run
   * with the same id, `created: false`, resuming it if it had not completed).
   * @param {string} manifestText the manifest, YAML or JSON
   * @param {{runKey?: string, labels?: Record<string, string>, manifestPath?: string}} [options]
   *   `runKey`: mixed into the run id to run the same manifest again; `labels`: stored
   *   with the run; `manifestPath`: where the manifest lives on the server (relative
   *   paths resolve against its folder, which must be inside a data root)
   * @returns {Promise<{run: any, created: boolean}>} the `StartFleetRunResponse`
   */
  startRun(manifestText, { runKey = '', labels = {}, manifestPath = '' } = {}) {
    return this.#unary('StartFleetRun', {
      manifest: manifestText, run_key: runKey, labels, manifest_path: manifestPath,
    });
  }

  /**
   * Streams a run's results: the stored ones after `afterSeq`, then live ones until
   * the run ends. Each result is delivered exactly once, in seq order; when the
   * connection breaks (UNAVAILABLE) the stream reconnects with backoff and resumes
   * after the last seq delivered, giving up after `maxReconnects` fruitless attempts.
   * Breaking out of the loop cancels the call.
   * @param {string} runId
   * @param {StreamOptions} [options]
   * @returns {AsyncGenerator<any, void, undefined>} `StreamResultsResponse` messages
   */
  streamResults(runId, options = {}) {
    const { afterSeq, maxBatch = 0, snapshotIntervalMs = 0, replayOnly = false,
      timeoutMs, ...reconnect } = options;
    const deadline = timeoutMs === undefined ? undefined : Date.now() + timeoutMs;
    const open = (/** @type {string} */ after) => this.#stub.StreamResults({
      run_id: runId, after_seq: after, replay_only: replayOnly, max_batch: maxBatch,
      snapshot_interval_ms: snapshotIntervalMs,
    }, this.#metadata(), deadline === undefined ? {} : { deadline });
    return followResults(open, {
      afterSeq: toSeq(afterSeq, 'afterSeq'), replayOnly, reconnector: new Reconnector(reconnect),
    });
  }

  /**
   * Waits until the run ends (by following its stream from its current `last_seq`,
   * so no result is transferred twice), then returns it.
   * @param {string} runId
   * @param {{timeoutMs?: number} & import('./retry.js').ReconnectOptions} [options]
   *   `timeoutMs`: reject with DEADLINE_EXCEEDED if the run has not ended by then
   * @returns {Promise<any>} the ended `Run`
   */
  async wait(runId, options = {}) {
    const run = await this.getRun(runId);
    if (isTerminal(run.status)) {
      return run;
    }
    const stream = this.streamResults(runId, { ...options, afterSeq: run.last_seq,
      maxBatch: 5000 });
    for await (const message of stream) {
      void message;  // only the end of the stream matters here
    }
    return this.getRun(runId);
  }

  /**
   * One run with its progress, summary and artifacts.
   * @param {string} runId
   * @returns {Promise<any>} the `Run`
   */
  async getRun(runId) {
    return (await this.#unary('GetRun', { run_id: runId })).run;
  }

  /**
   * Lists runs, newest first, page by page.
   * @param {{fleetId?: string, statuses?: Array<string | number>, pageSize?: number}} [filter]
   *   `statuses`: `RunStatus` names or numbers; `pageSize`: 0 for the server's default
   * @returns {AsyncGenerator<{runs: any[], next_page_token: string}, void, undefined>}
   *   `ListRunsResponse` pages
   */
  async* listRuns({ fleetId = '', statuses = [], pageSize = 0 } = {}) {
    let pageToken = '';
    do {
      const page = await this.#unary('ListRuns', {
        fleet_id: fleetId, statuses, page_size: pageSize, page_token: pageToken,
      });
      yield page;
      pageToken = page.next_page_token;
    } while (pageToken);
  }

  /**
   * Cancels a run (a run that already ended is returned unchanged).
   * @param {string} runId
   * @param {{reason?: string}} [options] recorded as the run's `error_message`
   * @returns {Promise<any>} the `Run` after the cancellation took effect
   */
  async cancelRun(runId, { reason = '' } = {}) {
    return (await this.#unary('CancelRun', { run_id: runId, reason })).run;
  }

  /**
   * Validates and plans a manifest without starting anything; problems come back in
   * the response (`problems`, each with its `location`), not as an error.
   * @param {string} manifestText
   * @param {{runKey?: string, manifestPath?: string}} [options] as for `startRun`
   * @returns {Promise<any>} the `ValidateManifestResponse`
   */
  validateManifest(manifestText, { runKey = '', manifestPath = '' } = {}) {
    return this.#unary('ValidateManifest', {
      manifest: manifestText, run_key: runKey, manifest_path: manifestPath,
    });
  }

  /**
   * Every capability of the server's loaded plugins.
   * @returns {Promise<any[]>} `PluginInfo` objects, grouped by kind, then by name
   */
  async listPlugins() {
    return (await this.#unary('ListPlugins', {})).plugins;
  }

  /**
   * Downloads one artifact of a run to `destPath`, checking its size and SHA-256
   * (DATA_LOSS on a mismatch; the destination is only written when they match).
   * A broken download resumes at the byte offset it had reached.
   * @param {string} runId
   * @param {string} name the artifact's name, as in `Run.artifacts[].name`
   * @param {string} destPath the file to write (parent folders are created)
   * @param {{chunkSize?: number} & import('./retry.js').ReconnectOptions} [options]
   *   `chunkSize`: bytes per chunk (0: the server's default, 64 KiB)
   * @returns {Promise<import('./artifacts.js').DownloadedArtifact>}
   */
  downloadArtifact(runId, name, destPath, { chunkSize = 0, ...reconnect } = {}) {
    const open = (/** @type {number} */ offset) => this.#stub.GetArtifact({
      run_id: runId, name, offset, chunk_size: chunkSize,
    }, this.#metadata());
    return download(open, { name, destPath, reconnector: new Reconnector(reconnect) });
  }

  /** Closes the channel; calls in flight fail with CANCELLED. */
  close() {
    this.#stub.close();
  }

  /**
   * One unary call as a promise.
   * @param {string} method the RPC's name
   * @param {object} request
   * @returns {Promise<any>}
   */
  #unary(method, request) {
    return new Promise((resolve, reject) => {
      const done = (/** @type {any} */ error, /** @type {any} */ response) => {
        if (error) {
          reject(fromGrpcError(error, method));
        } else {
          resolve(response);
        }
      };
      try {
        this.#stub[method](request, this.#metadata(),
          { deadline: Date.now() + this.#callTimeoutMs }, done);
      } catch (error) {  // e.g. a closed client, or a request that does not serialize
        done(error);
      }
    });
  }

  /** The metadata of one call (fresh each time: grpc-js may add to it). */
  #metadata() {
    const metadata = new grpc.Metadata();
    if (this.#token) {
      metadata.set('authorization', `Bearer ${this.#token}`);
    }
    return metadata;
  }
}

/**
 * The channel credentials: TLS when a root certificate is given or `tls` is set, else
 * plaintext (the server's default, on loopback).
 * @param {{rootCert?: Buffer | string, tls?: boolean}} options
 * @returns {grpc.ChannelCredentials}
 */
function credentials({ rootCert, tls }) {
  if (rootCert === undefined && !tls) {
    return grpc.credentials.createInsecure();
  }
  let roots = rootCert;
  if (typeof rootCert === 'string') {
    roots = rootCert.includes('-----BEGIN') ? Buffer.from(rootCert) : readFileSync(rootCert);
  }
  return grpc.credentials.createSsl(roots ?? null);
}
