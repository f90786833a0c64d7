/**
 * `fleetbench serve` as a real subprocess for the tests: started on port 0 with a
 * temporary state dir and data root, its address parsed from the first stdout line,
 * stopped (SIGTERM, then SIGKILL) at the end. Its JSON log goes to a file that
 * failures print.
 *
 * The Python is the repository's venv (`../../.venv/bin/python` from this package),
 * or `$FLEETBENCH_PYTHON` (the pytest wrapper passes its own interpreter).
 *
 * @module
 */

import { spawn } from 'node:child_process';
import { openSync, closeSync, readFileSync } from 'node:fs';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const PACKAGE_DIR = fileURLToPath(new URL('..', import.meta.url));
const REPO_ROOT = path.resolve(PACKAGE_DIR, '../..');

/** How long any wait of the tests may take before it fails. */
export const DEADLINE_MS = 30_000;

/** The Python that runs the server. */
export const PYTHON = process.env.FLEETBENCH_PYTHON
  || path.resolve(PACKAGE_DIR, '../../.venv/bin/python');

/**
 * A temporary folder, removed by `cleanup()`.
 * @param {string} prefix
 */
export async function tempDir(prefix = 'fleetbench-node-') {
  return mkdtemp(path.join(os.tmpdir(), prefix));
}

/** A running `fleetbench serve`. */
export class ServeProcess {
  /**
   * @param {import('node:child_process').ChildProcess} child
   * @param {string} address `127.0.0.1:PORT`
   * @param {string} root the temporary folder (state, cache, data root, log)
   * @param {string} logPath the server's stderr
   */
  constructor(child, address, root, logPath) {
    this.child = child;
    this.address = address;
    this.root = root;
    /** The data root: fleets go here. */
    this.dataRoot = path.join(root, 'data');
    this.logPath = logPath;
  }

  /** The server's log so far (for assertion messages). */
  log() {
    return readFileSync(this.logPath, 'utf8');
  }

  /** Stops the server (SIGTERM, SIGKILL after the deadline) and removes its folder. */
  async stop() {
    if (this.child.exitCode === null && this.child.signalCode === null) {
      const exited = new Promise((resolve) => this.child.once('exit', resolve));
      this.child.kill('SIGTERM');
      const timer = setTimeout(() => this.child.kill('SIGKILL'), DEADLINE_MS);
      await exited;
      clearTimeout(timer);
    }
    await rm(this.root, { recursive: true, force: true });
  }
}

/**
 * Starts `python -m fleetbench serve --port 0` and waits (with a deadline) for its
 * `listening on HOST:PORT` line.
 * @param {{args?: string[], env?: Record<string, string>, root?: string}} [options]
 *   extra server arguments and environment; `root`: the temporary folder to use
 * @returns {Promise<ServeProcess>}
 */
export async function startServer({ args = [], env = {}, root } = {}) {
  const folder = root ?? await tempDir();
  const dataRoot = path.join(folder, 'data');
  const logPath = path.join(folder, 'serve.log');
  const environment = { ...process.env, FLEETBENCH_CACHE_DIR: path.join(folder, 'cache'),
    ...env };
  if (!('FLEETBENCH_AUTH_TOKEN' in env)) {
    delete environment.FLEETBENCH_AUTH_TOKEN;  // the caller's shell must not turn auth on
  }
  const stderr = openSync(logPath, 'a');
  await mkdir(dataRoot, { recursive: true });
  const child = spawn(PYTHON, ['-m', 'fleetbench', 'serve', '--port', '0',
    '--state-dir', path.join(folder, 'state'), '--data-root', dataRoot,
    '--shutdown-grace', '5', ...args],
  { cwd: REPO_ROOT, env: environment, stdio: ['ignore', 'pipe', stderr] });
  closeSync(stderr);
  const server = new ServeProcess(child, '', folder, logPath);
  try {
    server.address = await announcedAddress(child);
  } catch (error) {
    child.kill('SIGKILL');
    throw new Error(`${/** @type {Error} */ (error).message}; python: ${PYTHON}; `
      + `log:\n${server.log()}`);
  }
  return server;
}

/**
 * The address of the first stdout line, `listening on HOST:PORT`.
 * @param {import('node:child_process').ChildProcess} child
 * @returns {Promise<string>}
 */
function announcedAddress(child) {
  return new Promise((resolve, reject) => {
    let text = '';
    const timer = setTimeout(() => finish(new Error('serve printed no address in time')),
      DEADLINE_MS);
    const onData = (/** @type {Buffer} */ data) => {
      text += data.toString('utf8');
      const end = text.indexOf('\n');
      if (end >= 0) {
        const match = /^listening on (\S+:\d+)$/.exec(text.slice(0, end));
        finish(match ? match[1] : new Error(`unexpected first line ${JSON.stringify(text)}`));
      }
    };
    const onExit = (/** @type {number | null} */ code) => finish(
      new Error(`serve exited (status ${code}) before printing its address`));
    const onError = (/** @type {Error} */ error) => finish(error);
    /** @param {string | Error} outcome */
    function finish(outcome) {
      clearTimeout(timer);
      child.stdout?.off('data', onData);
      child.off('exit', onExit);
      child.off('error', onError);
      child.stdout?.resume();  // keep draining: a full pipe would block the server
      if (outcome instanceof Error) {
        reject(outcome);
      } else {
        resolve(outcome);
      }
    }
    child.stdout?.on('data', onData);
    child.once('exit', onExit);
    child.once('error', onError);
  });
}
