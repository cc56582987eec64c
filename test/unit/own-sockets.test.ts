/**
 * The agent's own connections are known by their 4-tuple from the moment they are connected, before
 * a byte of the request is written: a real HTTP client to a loopback server.
 */
import { afterEach, describe, expect, it } from 'vitest';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { OwnSockets } from '../../agent/src/self/own-sockets.js';

describe('own sockets', () => {
  let server: http.Server | null = null;
  let own: OwnSockets | null = null;
  afterEach(async () => {
    own?.stop();
    await new Promise((r) => server ? server.close(r) : r(null));
  });

  it('a connection this process opens to a watched server is known before its request reaches the server', async () => {
    const seen: boolean[] = [];
    server = http.createServer((q, s) => {
      // The server's view of the connection is the wire's: client = the remote end here.
      seen.push(own!.has({ client: q.socket.remoteAddress!, cport: q.socket.remotePort!, server: q.socket.localAddress!, sport: q.socket.localPort! }));
      s.end('ok');
    });
    await new Promise<void>((r) => server!.listen(0, '127.0.0.1', r));
    const port = (server.address() as AddressInfo).port;
    own = new OwnSockets((addr, p) => addr === '127.0.0.1' && p === port, 60_000).watch();
    const other = new OwnSockets((addr, p) => addr === '127.0.0.2' && p === port, 60_000).watch();
    let clientPort = -1;
    let closed: Promise<unknown> = Promise.resolve();
    await new Promise<void>((resolve, reject) => {
      const req = http.get({ host: '127.0.0.1', port, agent: false }, (r) => { r.resume(); r.on('end', resolve); }).on('error', reject);
      req.on('socket', (sock) => {
        closed = new Promise((c) => sock.once('close', c));
        sock.once('connect', () => { clientPort = sock.localPort!; });
      });
    });
    expect(seen).toEqual([true]);
    expect(own.size).toBe(1);
    expect(other.size).toBe(0); // another server: not kept
    expect(own.has({ client: '127.0.0.1', cport: 1, server: '127.0.0.1', sport: port })).toBe(false);
    // Closed now: the same 4-tuple is still the agent's for a connection that began before the close,
    // never for one that began after it (another process reusing the port).
    const tuple = { client: '127.0.0.1', cport: clientPort, server: '127.0.0.1', sport: port };
    await closed;
    expect(own.has(tuple, Date.now() - 60_000)).toBe(true);
    expect(own.has(tuple, Date.now() + 1)).toBe(false);
    other.stop();
  });
});
