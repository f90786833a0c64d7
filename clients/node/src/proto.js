/**
 * Loads the fleetbench v1 contract (`protos/fleetbench/v1/fleetbench.proto`) at run
 * time, so the client can never drift from the server's `.proto`: there is no code
 * generation step and nothing to regenerate when fields are added.
 *
 * Messages are plain objects shaped by these loader options:
 * - `keepCase`: field names as in the `.proto` (`run_id`, `last_seq`), the names the
 *   contract, the docs and the other clients use;
 * - `longs: String`: int64 fields (`seq`, `last_seq`, token counts …) are decimal
 *   strings, so nothing is rounded beyond 2^53;
 * - `enums: String`: enums are their names (`'RUN_STATUS_COMPLETED'`); requests take
 *   names or numbers;
 * - `defaults: true`: absent scalars read as their zero value and absent messages as
 *   `null`; fields declared `optional` (e.g. `latency_ms`, `cost_usd`) stay `undefined`
 *   when unset, so "absent" and zero remain distinguishable.
 *
 * @module
 */

import { fileURLToPath } from 'node:url';
import grpc from '@grpc/grpc-js';
import protoLoader from '@grpc/proto-loader';

/** The repository's `protos/` folder: `../../protos` relative to this package. */
export const DEFAULT_PROTO_DIR = fileURLToPath(new URL('../../../protos', import.meta.url));

/** The contract file, relative to the proto folder (as its imports expect). */
const PROTO_FILE = 'fleetbench/v1/fleetbench.proto';

/** The statuses after which a run executes no more (see `RunStatus` in the contract). */
export const TERMINAL_STATUSES = Object.freeze(new Set([
  'RUN_STATUS_COMPLETED',
  'RUN_STATUS_FAILED',
  'RUN_STATUS_CANCELLED',
  'RUN_STATUS_INTERRUPTED',
]));

/**
 * Whether a run status is terminal.
 * @param {string} status a `RunStatus` name
 * @returns {boolean}
 */
export function isTerminal(status) {
  return TERMINAL_STATUSES.has(status);
}

/** @type {Map<string, grpc.ServiceClientConstructor>} */
const loaded = new Map();

/**
 * The generated-at-run-time client constructor of `fleetbench.v1.FleetBenchService`,
 * loaded once per proto folder.
 * @param {string} [protoDir] the folder holding `fleetbench/v1/fleetbench.proto`
 * @returns {grpc.ServiceClientConstructor}
 */
export function serviceClient(protoDir = DEFAULT_PROTO_DIR) {
  let constructor = loaded.get(protoDir);
  if (!constructor) {
    const definition = protoLoader.loadSync(PROTO_FILE, {
      includeDirs: [protoDir],
      keepCase: true,
      longs: String,
      enums: String,
      defaults: true,
    });
    const api = /** @type {any} */ (grpc.loadPackageDefinition(definition));
    constructor = /** @type {grpc.ServiceClientConstructor} */ (
      api.fleetbench.v1.FleetBenchService);
    loaded.set(protoDir, constructor);
  }
  return constructor;
}
