/**
 * When and how fast the client reconnects a broken stream (StreamResults, GetArtifact).
 *
 * Unary calls are retried by grpc-js itself (see the service config in `client.js`);
 * a server stream cannot be, because part of it was already delivered. Instead the
 * client opens it again from where it stopped (`after_seq`, `offset`), pacing the
 * attempts with exponential backoff and giving up after a bounded number of attempts
 * that bring nothing new.
 *
 * @module
 */

import { setTimeout as delay } from 'node:timers/promises';
import { FleetBenchError } from './errors.js';

/**
 * How a stream reconnects.
 * @typedef {object} ReconnectOptions
 * @property {number} [maxReconnects=8] attempts in a row that deliver nothing new before
 *   giving up (with the last error); 0 never reconnects
 * @property {number} [initialBackoffMs=50] the wait before the first reconnection;
 *   doubled for each further one
 * @property {number} [maxBackoffMs=2000] the longest wait between two attempts
 * @property {(event: ReconnectEvent) => void} [onReconnect] told before each
 *   reconnection (for logging or metrics)
 */

/**
 * @typedef {object} ReconnectEvent
 * @property {number} attempt 1 for the first reconnection since the last progress
 * @property {number} delayMs how long the client waits before it
 * @property {FleetBenchError} error why the stream broke
 * @property {string} resumeFrom the `after_seq` or byte offset the next call asks for
 */

/**
 * Whether a failed stream is worth opening again: the connection or the server went
 * away (UNAVAILABLE: connection dropped, server restarting; ABORTED), or the HTTP/2
 * stream was reset under it. A refusal (NOT_FOUND, INVALID_ARGUMENT …) or a deadline
 * is final.
 * @param {FleetBenchError} error
 * @returns {boolean}
 */
export function isTransient(error) {
  if (error.code === 'UNAVAILABLE' || error.code === 'ABORTED') {
    return true;
  }
  return error.code === 'INTERNAL' && /RST_STREAM/.test(error.details);
}

/** Paces the reconnections of one stream; `progress()` resets the count. */
export class Reconnector {
  /** @param {ReconnectOptions} [options] */
  constructor({ maxReconnects = 8, initialBackoffMs = 50, maxBackoffMs = 2000,
    onReconnect } = {}) {
    this.maxReconnects = maxReconnects;
    this.initialBackoffMs = initialBackoffMs;
    this.maxBackoffMs = maxBackoffMs;
    this.onReconnect = onReconnect;
    /** Attempts since the stream last delivered something new. */
    this.attempts = 0;
    /** Reconnections over the stream's whole life. */
    this.total = 0;
  }

  /** The stream delivered something new: the next failure starts the count afresh. */
  progress() {
    this.attempts = 0;
  }

  /**
   * The stream broke with `error`: rethrows it when it is final or the attempts are
   * used up, else waits the backoff delay (so the caller can open the stream again).
   * @param {FleetBenchError} error
   * @param {string} resumeFrom where the next call starts, for `onReconnect`
   * @returns {Promise<void>}
   */
  async afterFailure(error, resumeFrom) {
    if (!isTransient(error) || this.attempts >= this.maxReconnects) {
      throw error;
    }
    this.attempts += 1;
    this.total += 1;
    const base = Math.min(this.maxBackoffMs, this.initialBackoffMs * 2 ** (this.attempts - 1));
    const delayMs = Math.round(base * (0.8 + 0.4 * Math.random()));  // jitter: ±20 %
    this.onReconnect?.({ attempt: this.attempts, delayMs, error, resumeFrom });
    await delay(delayMs);
  }
}
