/**
 * A server with a bearer token and TLS (a self-signed certificate made here with
 * openssl): the client's `token` and `rootCert` options.
 */

import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { FleetBenchClient } from '../src/index.js';
import { startServer, tempDir } from '../test-support/server.js';

const TOKEN = 'node-client-secret';

/** Why the suite cannot run here, or '' when it can. */
function missingOpenssl() {
  try {
    execFileSync('openssl', ['version'], { stdio: 'ignore' });
    return '';
  } catch {
    return 'openssl is not installed (needed to make a self-signed certificate)';
  }
}

describe('token and TLS', { timeout: 60_000, skip: missingOpenssl() || false }, () => {
  /** @type {import('../test-support/server.js').ServeProcess} */
  let server;
  let cert = '';

  before(async () => {
    const root = await tempDir();
    cert = path.join(root, 'cert.pem');
    const key = path.join(root, 'key.pem');
    execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes',
      '-keyout', key, '-out', cert, '-days', '1', '-subj', '/CN=localhost',
      '-addext', 'subjectAltName=DNS:localhost,IP:127.0.0.1'], { stdio: 'ignore' });
    const tokenFile = path.join(root, 'token');
    writeFileSync(tokenFile, `${TOKEN}\n`);
    server = await startServer({ root,
      args: ['--auth-token-file', tokenFile, '--tls-cert', cert, '--tls-key', key] });
  });

  after(async () => {
    await server?.stop();
  });

  /**
   * The code a ListPlugins call ends with ('OK' on success).
   * @param {import('../src/client.js').ClientOptions} options
   */
  async function outcome(options) {
    const client = new FleetBenchClient(server.address, { callTimeoutMs: 10_000, ...options,
      // Check the certificate's DNS name: Node deprecates TLS server names that are IP
      // addresses (DEP0123), which a plain `127.0.0.1:PORT` target would send.
      channelOptions: { 'grpc.ssl_target_name_override': 'localhost' } });
    try {
      const plugins = await client.listPlugins();
      assert.ok(plugins.length > 0);
      return 'OK';
    } catch (error) {
      return /** @type {any} */ (error).code;
    } finally {
      client.close();
    }
  }

  test('the right token over TLS is let in (rootCert as a path or as PEM)', async () => {
    assert.equal(await outcome({ token: TOKEN, rootCert: cert }), 'OK');
    assert.equal(await outcome({ token: TOKEN, rootCert: readFileSync(cert) }), 'OK');
    assert.equal(await outcome({ token: TOKEN, rootCert: readFileSync(cert, 'utf8') }), 'OK');
  });

  test('no token or a wrong one is UNAUTHENTICATED', async () => {
    assert.equal(await outcome({ rootCert: cert }), 'UNAUTHENTICATED');
    assert.equal(await outcome({ token: 'wrong', rootCert: cert }), 'UNAUTHENTICATED');
  });

  test('plaintext to a TLS server is UNAVAILABLE', async () => {
    assert.equal(await outcome({ token: TOKEN }), 'UNAVAILABLE');
  });
});
