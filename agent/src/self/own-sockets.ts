/**
 * The agent's own TCP connections to the instance metadata service, known without asking /proc or
 * the kernel: every client socket this process opens through `net.connect` (the HTTP clients of its
 * AWS SDK and of its own identity look-up do) is announced on the `net.client.socket` diagnostics
 * channel; once connected, its 4-tuple is kept while it lives and a while after (capture runs behind).
 * A socket is connected (and its tuple kept) before the first byte of its request is written, so by
 * the time the wire shows a request of it, the pipeline can tell it is the agent's own without
 * attribution.
 */
import diagnostics from 'node:diagnostics_channel';
import type { Socket } from 'node:net';
import { tupleKey, type Tuple } from '../net.js';

const CHANNEL = 'net.client.socket';

export class OwnSockets {
  /** Tuple key -> sockets open with it, and when the last of them closed (null while one is open). */
  private readonly live = new Map<string, { open: number; closedAt: number | null }>();
  /** Local port -> how many tuples of live have it: most connections asked about are not the agent's, told without a key. */
  private readonly ports = new Map<number, number>();
  private readonly onSocket = (msg: unknown): void => this.socket((msg as { socket: Socket }).socket);

  /**
   * @param isServer which remote ends to remember (the metadata service's addresses and port)
   * @param keepMs how long a closed connection stays known (its frames may still be on their way)
   */
  constructor(private readonly isServer: (addr: string, port: number) => boolean, private readonly keepMs: number) {}

  /** Start watching the sockets this process opens. */
  watch(): this {
    diagnostics.subscribe(CHANNEL, this.onSocket);
    return this;
  }

  stop(): void {
    diagnostics.unsubscribe(CHANNEL, this.onSocket);
    this.live.clear();
    this.ports.clear();
  }

  /**
   * Whether t (as the wire shows it), first seen at openedAtMs, is a connection this process opened.
   * Once the agent's socket closed, only a connection that began before that moment is its: another
   * process may reuse the same 4-tuple right after, and its calls must never be hidden as the agent's.
   */
  has(t: Tuple, openedAtMs = Number.NEGATIVE_INFINITY): boolean {
    if (!this.ports.has(t.cport)) return false;
    const e = this.live.get(tupleKey(t.client, t.cport, t.server, t.sport));
    return e !== undefined && (e.closedAt === null || openedAtMs <= e.closedAt);
  }

  get size(): number {
    return this.live.size;
  }

  private track(key: string, localPort: number): { open: number; closedAt: number | null } {
    const e = { open: 0, closedAt: null };
    this.live.set(key, e);
    this.ports.set(localPort, (this.ports.get(localPort) ?? 0) + 1);
    return e;
  }

  private forget(key: string, localPort: number): void {
    this.live.delete(key);
    const n = (this.ports.get(localPort) ?? 1) - 1;
    if (n > 0) this.ports.set(localPort, n); else this.ports.delete(localPort);
  }

  private socket(s: Socket | undefined): void {
    if (!s || typeof s.once !== 'function') return;
    s.once('connect', () => {
      const { localAddress, localPort, remoteAddress, remotePort } = s;
      if (!localAddress || !localPort || !remoteAddress || !remotePort || !this.isServer(remoteAddress, remotePort)) return;
      const key = tupleKey(localAddress, localPort, remoteAddress, remotePort);
      const e = this.live.get(key) ?? this.track(key, localPort);
      e.open++;
      e.closedAt = null;
      s.once('close', () => {
        e.open--;
        if (e.open > 0) return;
        const closedAt = Date.now();
        e.closedAt = closedAt;
        setTimeout(() => { if (this.live.get(key) === e && e.closedAt === closedAt) this.forget(key, localPort); }, this.keepMs).unref();
      });
    });
  }
}
