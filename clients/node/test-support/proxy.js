/**
 * A TCP proxy in front of the server whose connections the tests can cut, to make a
 * live stream fail the way a dropped network connection does (UNAVAILABLE) while the
 * server itself keeps running.
 *
 * @module
 */

import net from 'node:net';

/** A TCP proxy to `target` on a free loopback port. */
export class CuttingProxy {
  /**
   * @param {string} target `host:port` to forward to
   * @param {{cutAfterBytes?: number}} [options] cut every open connection once the
   *   server has sent this many bytes through the proxy (once; later connections are
   *   left alone); 0 never cuts on its own
   */
  constructor(target, { cutAfterBytes = 0 } = {}) {
    const [host, port] = [target.slice(0, target.lastIndexOf(':')),
      Number(target.slice(target.lastIndexOf(':') + 1))];
    this.cutAfterBytes = cutAfterBytes;
    /** How many connections were cut. */
    this.cuts = 0;
    /** How many connections the proxy accepted. */
    this.connections = 0;
    this.forwarded = 0;
    /** @type {Set<net.Socket>} */
    this.sockets = new Set();
    this.server = net.createServer((client) => {
      this.connections += 1;
      const upstream = net.connect(port, host);
      for (const socket of [client, upstream]) {
        this.sockets.add(socket);
        socket.on('close', () => this.sockets.delete(socket));
        socket.on('error', () => {});
      }
      client.on('close', () => upstream.destroy());
      upstream.on('close', () => client.destroy());
      client.pipe(upstream);
      upstream.on('data', (data) => {
        client.write(data);
        this.forwarded += data.length;
        if (this.cutAfterBytes > 0 && this.cuts === 0 && this.forwarded >= this.cutAfterBytes) {
          this.cut();
        }
      });
    });
  }

  /** Listens; resolves to the proxy's `127.0.0.1:PORT`. */
  async start() {
    await new Promise((resolve) => this.server.listen(0, '127.0.0.1', () => resolve(null)));
    const { port } = /** @type {net.AddressInfo} */ (this.server.address());
    return `127.0.0.1:${port}`;
  }

  /** Drops every open connection at once, as a network failure would. */
  cut() {
    this.cuts += 1;
    for (const socket of this.sockets) {
      socket.destroy();
    }
  }

  /** Stops listening and drops what is left. */
  async close() {
    for (const socket of this.sockets) {
      socket.destroy();
    }
    await new Promise((resolve) => this.server.close(() => resolve(null)));
  }
}
