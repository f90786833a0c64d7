/**
 * fleetbench-client: a Node.js client of the fleetbench v1 gRPC API.
 *
 * @example
 * import { FleetBenchClient } from 'fleetbench-client';
 * const client = new FleetBenchClient('127.0.0.1:50051');
 * const { run } = await client.startRun(manifestText);
 * for await (const message of client.streamResults(run.run_id)) {
 *   for (const result of message.results) console.log(result.key, result.status);
 * }
 * client.close();
 *
 * @module
 */

export { FleetBenchClient } from './client.js';
export { FleetBenchError, decodeStatusDetails, statusName } from './errors.js';
export { DEFAULT_PROTO_DIR, TERMINAL_STATUSES, isTerminal } from './proto.js';
export { isTransient } from './retry.js';
