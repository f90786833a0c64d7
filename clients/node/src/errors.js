/**
 * The client's one error type, and the decoding of gRPC's rich error details.
 *
 * Every failed call rejects with a {@link FleetBenchError} (never a raw grpc-js error):
 * `code` is the gRPC status name, `details` the server's message (safe to show; the
 * server never sends a traceback) and, for a bad manifest, `fieldViolations` lists
 * every problem with its location.
 *
 * The violations travel in the `grpc-status-details-bin` trailer as a serialized
 * `google.rpc.Status` whose `details` hold a packed `google.rpc.BadRequest`. grpc-js
 * does not decode that trailer, and the `google/rpc` protos are not part of the repo
 * or of any installed package, so the three messages involved are declared inline
 * below (field numbers from googleapis' `google/rpc/status.proto` and
 * `error_details.proto`) and decoded with protobufjs, the library proto-loader is
 * built on.
 *
 * @module
 */

import grpc from '@grpc/grpc-js';
import protobuf from 'protobufjs';

/** The trailer grpc-status-details-bin rich error details travel in. */
const DETAILS_TRAILER = 'grpc-status-details-bin';

/** The type URL of a packed `google.rpc.BadRequest`. */
const BAD_REQUEST_TYPE = 'type.googleapis.com/google.rpc.BadRequest';

/**
 * Wire-compatible stand-ins for `google.rpc.Status`, `google.protobuf.Any` and
 * `google.rpc.BadRequest` (only the fields the client reads). `Any` is declared
 * locally rather than as `google.protobuf.Any` so protobufjs's special JSON handling
 * of that type stays out of the way; the bytes on the wire are the same.
 */
const RICH_ERROR_PROTO = `
syntax = "proto3";
package google.rpc;
message Any { string type_url = 1; bytes value = 2; }
message Status { int32 code = 1; string message = 2; repeated Any details = 3; }
message BadRequest {
  message FieldViolation { string field = 1; string description = 2; }
  repeated FieldViolation field_violations = 1;
}
`;

const richErrors = protobuf.parse(RICH_ERROR_PROTO, { keepCase: true }).root;
const StatusType = richErrors.lookupType('google.rpc.Status');
const BadRequestType = richErrors.lookupType('google.rpc.BadRequest');

/** gRPC status numbers → names (`5` → `'NOT_FOUND'`). */
const STATUS_NAMES = new Map(
  Object.entries(grpc.status)
    .filter(([, value]) => typeof value === 'number')
    .map(([name, value]) => [/** @type {number} */ (value), name]),
);

/**
 * The name of a gRPC status code.
 * @param {number} code
 * @returns {string}
 */
export function statusName(code) {
  return STATUS_NAMES.get(code) ?? `STATUS_${code}`;
}

/**
 * One problem of a request, as `google.rpc.BadRequest.FieldViolation` carries it.
 * @typedef {object} FieldViolation
 * @property {string} field where the problem is, e.g. `repositories[0].scenarios[0]`
 *   or `datasets/x.json: test_cases[3].prompt`; empty for the input as a whole
 * @property {string} description what is wrong, for a human
 */

/**
 * One packed detail of a `google.rpc.Status`, left undecoded.
 * @typedef {object} StatusDetail
 * @property {string} type_url e.g. `type.googleapis.com/google.rpc.BadRequest`
 * @property {Uint8Array} value the serialized message
 */

/** A call to the fleetbench server failed (or its answer failed a client-side check). */
export class FleetBenchError extends Error {
  /**
   * @param {string} message
   * @param {object} fields
   * @param {string} fields.code the gRPC status name, e.g. `'NOT_FOUND'`
   * @param {string} [fields.details] the server's message
   * @param {string} [fields.method] the RPC that failed, e.g. `'GetRun'`
   * @param {FieldViolation[]} [fields.fieldViolations]
   * @param {StatusDetail[]} [fields.statusDetails]
   * @param {unknown} [fields.cause] the grpc-js error, when there is one
   */
  constructor(message, { code, details = '', method = '', fieldViolations = [],
    statusDetails = [], cause } = /** @type {any} */ ({})) {
    super(message, cause === undefined ? undefined : { cause });
    this.name = 'FleetBenchError';
    /** The gRPC status name, e.g. `'INVALID_ARGUMENT'`. */
    this.code = code;
    /** The gRPC status number, e.g. `3`; `undefined` for an unknown name. */
    this.grpcCode = /** @type {number | undefined} */ (
      /** @type {Record<string, unknown>} */ (grpc.status)[code]);
    /** The server's message (or the client's, for a client-side check). */
    this.details = details;
    /** The RPC that failed. */
    this.method = method;
    /** Every field violation of a `google.rpc.BadRequest` detail; empty if none. */
    this.fieldViolations = fieldViolations;
    /** Every detail of the rich status, undecoded (for detail types not decoded here). */
    this.statusDetails = statusDetails;
  }
}

/**
 * Decodes a `grpc-status-details-bin` trailer value.
 * @param {Uint8Array} bytes a serialized `google.rpc.Status`
 * @returns {{details: StatusDetail[], fieldViolations: FieldViolation[]}}
 */
export function decodeStatusDetails(bytes) {
  const status = /** @type {any} */ (StatusType.toObject(StatusType.decode(bytes),
    { defaults: true, arrays: true }));
  /** @type {FieldViolation[]} */
  const fieldViolations = [];
  for (const detail of status.details) {
    if (detail.type_url === BAD_REQUEST_TYPE) {
      const bad = /** @type {any} */ (BadRequestType.toObject(
        BadRequestType.decode(detail.value), { defaults: true, arrays: true }));
      for (const { field, description } of bad.field_violations) {
        fieldViolations.push({ field, description });
      }
    }
  }
  return { details: status.details, fieldViolations };
}

/**
 * Turns a grpc-js error into a {@link FleetBenchError}, with the rich details of its
 * trailers decoded (a trailer that does not decode is ignored: the code and message
 * still stand).
 * @param {any} error a grpc-js `ServiceError` (or anything thrown during a call)
 * @param {string} method the RPC, for the message
 * @returns {FleetBenchError}
 */
export function fromGrpcError(error, method) {
  if (error instanceof FleetBenchError) {
    return error;
  }
  if (typeof error?.code !== 'number') {
    return new FleetBenchError(`${method}: ${error?.message ?? error}`,
      { code: 'UNKNOWN', details: String(error?.message ?? error), method, cause: error });
  }
  const code = statusName(error.code);
  const details = error.details ?? error.message ?? '';
  let decoded = { details: /** @type {StatusDetail[]} */ ([]),
    fieldViolations: /** @type {FieldViolation[]} */ ([]) };
  const [trailer] = error.metadata?.get?.(DETAILS_TRAILER) ?? [];
  if (trailer instanceof Uint8Array) {
    try {
      decoded = decodeStatusDetails(trailer);
    } catch {
      // A malformed details trailer must not hide the status itself.
    }
  }
  return new FleetBenchError(`${method}: ${code}: ${details}`, {
    code, details, method, cause: error,
    fieldViolations: decoded.fieldViolations, statusDetails: decoded.details,
  });
}
