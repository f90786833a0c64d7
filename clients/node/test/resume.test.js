/**
 * Dropped connections: a stream and a download cut mid-way by a proxy (the server
 * keeps running) reconnect, resume where they stopped, and deliver everything once.
 */

import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { FleetBenchClient } from '../src/index.js';
import { writeFleet } from '../test-support/fleet.js';
import { CuttingProxy } from '../test-support/proxy.js';
import { DEADLINE_MS, startServer, tempDir } from '../test-support/server.js';

/** Every connection is cut once after this many bytes from the server (of several MB). */
const CUT_AFTER_BYTES = 20_000;

describe('resuming after a dropped connection', { timeout: 120_000 }, () => {
  /** @type {import('../test-support/server.js').ServeProcess} */
  let server;
  /** @type {import('../test-support/fleet.js').Fleet} */
  let fleet;
  let runId = '';

  before(async () => {
    server = await startServer();
    // 1,208 zero-latency tests: a stream long enough to be cut in the middle.
    fleet = await writeFleet(server.dataRoot, { cases: 300 });
  });

  after(async () => {
    await server?.stop();
  });

  /**
   * A client whose connection goes through a fresh proxy that cuts it once.
   * @returns {Promise<{client: FleetBenchClient, proxy: CuttingProxy}>}
   */
  async function cutOnce() {
    const proxy = new CuttingProxy(server.address, { cutAfterBytes: CUT_AFTER_BYTES });
    return { client: new FleetBenchClient(await proxy.start()), proxy };
  }

  test('a live stream cut mid-way resumes from its last seq: each result once',
    async () => {
      const { client, proxy } = await cutOnce();
      try {
        const started = await client.startRun(fleet.manifestText,
          { manifestPath: fleet.manifestPath });
        runId = started.run.run_id;
        /** @type {import('../src/retry.js').ReconnectEvent[]} */
        const reconnects = [];
        const keys = [];
        let status = '';
        for await (const message of client.streamResults(runId, {
          maxBatch: 10, timeoutMs: DEADLINE_MS, onReconnect: (e) => reconnects.push(e),
        })) {
          keys.push(...message.results.map((/** @type {any} */ r) => r.key));
          status = message.status;
        }
        assert.equal(proxy.cuts, 1);
        assert.ok(reconnects.length >= 1, 'the stream reconnected');
        assert.equal(reconnects[0].error.code, 'UNAVAILABLE');
        assert.ok(Number(reconnects[0].resumeFrom) > 0, 'resumed after results it had');
        assert.equal(status, 'RUN_STATUS_COMPLETED');
        assert.equal(keys.length, fleet.planned, 'no result repeated or missing');
        assert.equal(new Set(keys).size, fleet.planned);
      } finally {
        client.close();
        await proxy.close();
      }
    });

  test('a download cut mid-way resumes at its offset and still checks the sha256',
    async () => {
      const { client, proxy } = await cutOnce();
      const dest = await tempDir();
      try {
        const run = await client.getRun(runId);
        const artifact = run.artifacts.find((/** @type {any} */ a) => a.name === 'results.jsonl');
        assert.ok(Number(artifact.size_bytes) > 10 * CUT_AFTER_BYTES, 'big enough to cut');
        const reconnects = [];
        const target = path.join(dest, 'results.jsonl');
        const got = await client.downloadArtifact(runId, artifact.name, target,
          { chunkSize: 1024, onReconnect: (e) => reconnects.push(e) });
        assert.equal(proxy.cuts, 1);
        assert.equal(reconnects.length, 1);
        assert.ok(Number(reconnects[0].resumeFrom) > 0, 'resumed at an offset');
        assert.equal(got.sha256, artifact.sha256);
        assert.equal(createHash('sha256').update(readFileSync(target)).digest('hex'),
          artifact.sha256);
      } finally {
        client.close();
        await proxy.close();
        await rm(dest, { recursive: true, force: true });
      }
    });
});
