/**
 * The client's pieces that need no server: decoding rich error details, verifying
 * artifacts, bounding reconnections.
 */

import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import path from 'node:path';
import { test } from 'node:test';
import grpc from '@grpc/grpc-js';
import { ArtifactFile } from '../src/artifacts.js';
import { decodeStatusDetails, FleetBenchError, fromGrpcError } from '../src/errors.js';
import { Reconnector } from '../src/retry.js';
import { toSeq } from '../src/stream.js';
import { tempDir } from '../test-support/server.js';

/**
 * A `google.rpc.Status` serialized by Python's googleapis-common-protos (so not by
 * the decoder under test): code 3, an `ErrorInfo` detail, then a `BadRequest` with
 * two violations.
 */
const STATUS_HEX = '0803121d746865206d616e69666573742068617320322070726f626c656d2873291a3b0a28'
  + '747970652e676f6f676c65617069732e636f6d2f676f6f676c652e7270632e4572726f72496e666f12'
  + '0f0a0158120a666c65657462656e63681a8d010a29747970652e676f6f676c65617069732e636f6d2f'
  + '676f6f676c652e7270632e4261645265717565737412600a380a1c7265706f7369746f726965735b30'
  + '5d2e7363656e6172696f735b305d1218756e6b6e6f776e207363656e6172696f2027636f646e67270a'
  + '240a0776657273696f6e1219756e737570706f727465642076657273696f6e2027322e3027';

const VIOLATIONS = [
  { field: 'repositories[0].scenarios[0]', description: "unknown scenario 'codng'" },
  { field: 'version', description: "unsupported version '2.0'" },
];

test('decodeStatusDetails reads the BadRequest among other details', () => {
  const decoded = decodeStatusDetails(Buffer.from(STATUS_HEX, 'hex'));
  assert.deepEqual(decoded.fieldViolations, VIOLATIONS);
  assert.deepEqual(decoded.details.map((d) => d.type_url), [
    'type.googleapis.com/google.rpc.ErrorInfo', 'type.googleapis.com/google.rpc.BadRequest']);
});

test('fromGrpcError names the code and decodes the details trailer', () => {
  const metadata = new grpc.Metadata();
  metadata.set('grpc-status-details-bin', Buffer.from(STATUS_HEX, 'hex'));
  const error = fromGrpcError({ code: grpc.status.INVALID_ARGUMENT,
    details: 'the manifest has 2 problem(s)', metadata }, 'StartFleetRun');
  assert.ok(error instanceof FleetBenchError);
  assert.equal(error.code, 'INVALID_ARGUMENT');
  assert.equal(error.grpcCode, 3);
  assert.equal(error.method, 'StartFleetRun');
  assert.deepEqual(error.fieldViolations, VIOLATIONS);
  assert.match(error.message, /^StartFleetRun: INVALID_ARGUMENT: the manifest has 2/);
});

test('a malformed details trailer still gives the code and message', () => {
  const metadata = new grpc.Metadata();
  metadata.set('grpc-status-details-bin', Buffer.from([0xff, 0xff, 0xff]));
  const error = fromGrpcError({ code: grpc.status.INVALID_ARGUMENT, details: 'bad',
    metadata }, 'StartFleetRun');
  assert.equal(error.code, 'INVALID_ARGUMENT');
  assert.deepEqual(error.fieldViolations, []);
});

/**
 * Writes `chunks` through an ArtifactFile and finishes it.
 * @param {string} dest
 * @param {Array<{offset: number, data: Buffer}>} chunks
 * @param {{sha256?: string, total?: number}} announced what the server claims
 */
async function writeArtifact(dest, chunks, { sha256, total } = {}) {
  const whole = Buffer.concat(chunks.map((c) => c.data));
  const file = await ArtifactFile.create('a.txt', dest);
  try {
    for (const [i, chunk] of chunks.entries()) {
      const last = i === chunks.length - 1;
      await file.write({ offset: String(chunk.offset), data: chunk.data,
        total_size_bytes: String(total ?? whole.length),
        sha256: last ? (sha256 ?? createHash('sha256').update(whole).digest('hex')) : '' });
    }
    return await file.finish();
  } catch (error) {
    await file.discard();
    throw error;
  }
}

/**
 * A temporary folder removed when test `t` ends.
 * @param {import('node:test').TestContext} t
 */
async function scratch(t) {
  const dir = await tempDir();
  t.after(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

test('an artifact whose bytes match the announced sha256 is moved into place', async (t) => {
  const dir = await scratch(t);
  const dest = path.join(dir, 'a.txt');
  const got = await writeArtifact(dest, [{ offset: 0, data: Buffer.from('hello ') },
    { offset: 6, data: Buffer.from('world') }]);
  assert.equal(readFileSync(dest, 'utf8'), 'hello world');
  assert.equal(got.sizeBytes, 11);
  assert.deepEqual(readdirSync(dir), ['a.txt'], 'no temporary file is left');
});

test('a sha256 mismatch, a gap or a short file is DATA_LOSS and writes nothing', async (t) => {
  const dir = await scratch(t);
  const dest = path.join(dir, 'a.txt');
  const cases = [
    [[{ offset: 0, data: Buffer.from('hello') }], { sha256: '0'.repeat(64) }],
    [[{ offset: 0, data: Buffer.from('he') }, { offset: 3, data: Buffer.from('lo') }], {}],
    [[{ offset: 0, data: Buffer.from('hello') }], { total: 6 }],
  ];
  for (const [chunks, announced] of cases) {
    await assert.rejects(writeArtifact(dest, /** @type {any} */ (chunks), announced),
      (/** @type {any} */ error) => error.code === 'DATA_LOSS');
    assert.equal(existsSync(dest), false);
    assert.deepEqual(readdirSync(dir), [], 'the temporary file is removed');
  }
});

test('reconnections are bounded, reset by progress, and only for transient errors',
  async () => {
    const unavailable = new FleetBenchError('x', { code: 'UNAVAILABLE' });
    const events = [];
    const reconnector = new Reconnector({ maxReconnects: 2, initialBackoffMs: 1,
      onReconnect: (event) => events.push(event) });
    await reconnector.afterFailure(unavailable, '5');
    await reconnector.afterFailure(unavailable, '5');
    await assert.rejects(reconnector.afterFailure(unavailable, '5'), unavailable);
    reconnector.progress();
    await reconnector.afterFailure(unavailable, '9');
    assert.deepEqual(events.map((e) => [e.attempt, e.resumeFrom]),
      [[1, '5'], [2, '5'], [1, '9']]);
    const notFound = new FleetBenchError('y', { code: 'NOT_FOUND' });
    await assert.rejects(new Reconnector().afterFailure(notFound, '0'), notFound);
  });

test('seqs are int64 from numbers, bigints or strings, never negative', () => {
  assert.equal(toSeq('9007199254740993', 'afterSeq'), 9007199254740993n);
  assert.equal(toSeq(undefined, 'afterSeq'), 0n);
  assert.throws(() => toSeq(-1, 'afterSeq'), { code: 'INVALID_ARGUMENT' });
  assert.throws(() => toSeq('x', 'afterSeq'), { code: 'INVALID_ARGUMENT' });
});
