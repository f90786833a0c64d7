/**
 * The client against a live `fleetbench serve` (started here on port 0): start,
 * stream, resume, idempotency, errors, listing, waiting, cancelling, artifacts.
 */

import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { FleetBenchClient, FleetBenchError } from '../src/index.js';
import { writeFleet } from '../test-support/fleet.js';
import { DEADLINE_MS, startServer, tempDir } from '../test-support/server.js';

/**
 * Every message of one stream (with the test deadline).
 * @param {FleetBenchClient} client
 * @param {string} runId
 * @param {import('../src/client.js').StreamOptions} [options]
 */
async function collect(client, runId, options = {}) {
  const messages = [];
  for await (const message of client.streamResults(runId,
    { timeoutMs: DEADLINE_MS, ...options })) {
    messages.push(message);
  }
  return messages;
}

/** @param {any[]} messages */
const resultsOf = (messages) => messages.flatMap((m) => m.results);

/**
 * The rejection of `promise`, which must be a FleetBenchError with `code`.
 * @param {Promise<unknown>} promise
 * @param {string} code
 * @returns {Promise<FleetBenchError>}
 */
async function rejection(promise, code) {
  try {
    await promise;
  } catch (error) {
    assert.ok(error instanceof FleetBenchError, `not a FleetBenchError: ${error}`);
    assert.equal(error.code, code, error.message);
    return error;
  }
  assert.fail(`expected ${code}, the call succeeded`);
}

describe('FleetBenchClient against a live server', { timeout: 120_000 }, () => {
  /** @type {import('../test-support/server.js').ServeProcess} */
  let server;
  /** @type {FleetBenchClient} */
  let client;
  /** @type {import('../test-support/fleet.js').Fleet} */
  let fleet;
  /** The run of `fleet`, streamed to its end by the first test. */
  let runId = '';

  before(async () => {
    server = await startServer();
    fleet = await writeFleet(server.dataRoot);
    client = new FleetBenchClient(server.address);
  });

  after(async () => {
    client?.close();
    await server?.stop();
  });

  test('start, then stream until the run completes: every result exactly once', async () => {
    const started = await client.startRun(fleet.manifestText,
      { manifestPath: fleet.manifestPath, labels: { team: 'node' } });
    assert.equal(started.created, true);
    runId = started.run.run_id;
    assert.match(runId, /^node-fleet-[0-9a-f]{12}$/);
    assert.deepEqual(started.run.labels, { team: 'node' });

    const messages = await collect(client, runId, { maxBatch: 5, snapshotIntervalMs: 10 });
    const results = resultsOf(messages);
    const keys = new Set(results.map((r) => r.key));
    assert.equal(results.length, fleet.planned);
    assert.equal(keys.size, fleet.planned);
    const seqs = results.map((r) => BigInt(r.seq));
    assert.ok(seqs.every((seq, i) => i === 0 || seq > seqs[i - 1]), 'seqs increase');
    assert.ok(messages.every((m) => m.results.length <= 5), 'maxBatch is honoured');

    const last = messages[messages.length - 1];
    assert.equal(last.status, 'RUN_STATUS_COMPLETED');
    assert.equal(BigInt(last.last_seq), seqs[seqs.length - 1]);
    assert.ok(messages[0].snapshot, 'the first message carries a snapshot');
    assert.equal(last.snapshot.progress.done, String(fleet.planned));

    const fast = results.find((r) => r.model === 'fast');
    const slow = results.find((r) => r.model === 'slow');
    assert.equal(typeof fast.cost_usd, 'number', 'a priced model has a cost');
    assert.equal(slow.cost_usd, undefined, 'an optional field without a value is absent');
  });

  test('a repeated start returns the same run with created = false', async () => {
    const again = await client.startRun(fleet.manifestText,
      { manifestPath: fleet.manifestPath });
    assert.equal(again.created, false);
    assert.equal(again.run.run_id, runId);
    assert.equal(again.run.status, 'RUN_STATUS_COMPLETED');
  });

  test('a stream resumed with afterSeq delivers exactly the rest', async () => {
    const all = resultsOf(await collect(client, runId, { replayOnly: true }));
    const cut = all[9];  // resume after the 10th result
    const rest = resultsOf(await collect(client, runId, { afterSeq: cut.seq, maxBatch: 7 }));
    assert.deepEqual(rest.map((r) => r.key), all.slice(10).map((r) => r.key));
    assert.ok(rest.every((r) => BigInt(r.seq) > BigInt(cut.seq)));
  });

  test('an invalid manifest is INVALID_ARGUMENT with every field path', async () => {
    const dir = path.join(server.dataRoot, 'bad');
    const bad = await writeFleet(dir, {
      edit: (m) => {
        m.version = '2.0';
        m.repositories[0].scenarios = ['codng'];
      },
    });
    const error = await rejection(
      client.startRun(bad.manifestText, { manifestPath: bad.manifestPath }), 'INVALID_ARGUMENT');
    const fields = error.fieldViolations.map((v) => v.field);
    assert.ok(fields.includes('version'), `fields: ${fields}`);
    assert.ok(fields.includes('repositories[0].scenarios[0]'), `fields: ${fields}`);
    assert.ok(error.fieldViolations.every((v) => v.description.length > 0));

    const report = await client.validateManifest(bad.manifestText,
      { manifestPath: bad.manifestPath });
    assert.deepEqual(report.problems.map((p) => p.location).sort(), [...fields].sort());
    assert.equal(report.planned_tests, '0');
  });

  test('ValidateManifest plans a good manifest and names its run id', async () => {
    const report = await client.validateManifest(fleet.manifestText,
      { manifestPath: fleet.manifestPath });
    assert.deepEqual(report.problems, []);
    assert.equal(report.planned_tests, String(fleet.planned));
    assert.equal(report.run_id, runId);
    assert.deepEqual(report.tests_per_provider, { 'simulated:fast': '16', 'simulated:slow': '16' });
  });

  test('an unknown run is NOT_FOUND, for every call that names one', async () => {
    await rejection(client.getRun('no-such-run'), 'NOT_FOUND');
    await rejection(client.cancelRun('no-such-run'), 'NOT_FOUND');
    await rejection(collect(client, 'no-such-run'), 'NOT_FOUND');
    await rejection(client.wait('no-such-run'), 'NOT_FOUND');
  });

  test('a manifest outside the data roots is PERMISSION_DENIED', async (t) => {
    const outside = await tempDir();
    t.after(() => rm(outside, { recursive: true, force: true }));
    await rejection(client.startRun(fleet.manifestText,
      { manifestPath: path.join(outside, 'fleet.json') }), 'PERMISSION_DENIED');
  });

  test('wait() follows a new run to its end; listRuns pages through every run', async () => {
    const second = await client.startRun(fleet.manifestText,
      { manifestPath: fleet.manifestPath, runKey: 'second' });
    assert.equal(second.created, true);
    const done = await client.wait(second.run.run_id, { timeoutMs: DEADLINE_MS });
    assert.equal(done.status, 'RUN_STATUS_COMPLETED');
    assert.equal(done.progress.done, String(fleet.planned));

    const pages = [];
    for await (const page of client.listRuns({ fleetId: 'node-fleet', pageSize: 1 })) {
      pages.push(page);
    }
    assert.equal(pages.length, 2, 'one run per page');
    assert.deepEqual(pages.flatMap((p) => p.runs.map((r) => r.run_id)),
      [second.run.run_id, runId], 'newest first');
    assert.equal(pages[1].next_page_token, '');

    const none = [];
    for await (const page of client.listRuns({ fleetId: 'node-fleet',
      statuses: ['RUN_STATUS_FAILED'] })) {
      none.push(...page.runs);
    }
    assert.deepEqual(none, []);
  });

  test('cancelling an ended run returns it unchanged', async () => {
    const run = await client.cancelRun(runId, { reason: 'too late' });
    assert.equal(run.status, 'RUN_STATUS_COMPLETED');
    assert.equal(run.error_message, '');
  });

  test('downloadArtifact writes every artifact and checks its sha256', async (t) => {
    const run = await client.getRun(runId);
    const names = run.artifacts.map((/** @type {any} */ a) => a.name);
    assert.ok(names.includes('results.jsonl'), `artifacts: ${names}`);
    const dest = await tempDir();
    t.after(() => rm(dest, { recursive: true, force: true }));
    for (const artifact of run.artifacts) {
      const target = path.join(dest, 'nested', artifact.name);
      const got = await client.downloadArtifact(runId, artifact.name, target,
        { chunkSize: 4096 });
      const bytes = readFileSync(target);
      assert.equal(got.sha256, artifact.sha256);
      assert.equal(createHash('sha256').update(bytes).digest('hex'), artifact.sha256);
      assert.equal(String(bytes.length), artifact.size_bytes);
    }
    const missing = path.join(dest, 'nothing');
    await rejection(client.downloadArtifact(runId, 'run.json', missing), 'NOT_FOUND');
    assert.equal(existsSync(missing), false, 'a failed download leaves no file');
  });

  test('listPlugins lists the simulated provider', async () => {
    const plugins = await client.listPlugins();
    assert.ok(plugins.some((p) => p.name === 'simulated' && p.kind === 'PLUGIN_KIND_PROVIDER'));
  });
});
