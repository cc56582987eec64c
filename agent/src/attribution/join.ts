/**
 * Joining kernel connect events to wire connections, by 4-tuple within a time window. Pure.
 * Ports and addresses are reused, so an event only joins a connection that started within
 * `windowMs` of it; and the tracepoint sees every network namespace, so when two events share a
 * 4-tuple (two namespaces with the same addresses) the one in the agent's own namespace wins, then
 * the closest in time.
 */
import { unmapV4 } from './proc-parse.js';

export interface JoinableEvent {
  saddr: string;
  sport: number;
  daddr: string;
  dport: number;
  netnsIno: number;
}

export interface TupleLike {
  client: string;
  cport: number;
  server: string;
  sport: number;
}

interface Entry<E> {
  event: E;
  atMs: number;
}

export const joinKey = (client: string, cport: number, server: string, sport: number): string =>
  `${unmapV4(client)}|${cport}|${unmapV4(server)}|${sport}`;

export class JoinTable<E extends JoinableEvent> {
  private readonly byKey = new Map<string, Entry<E>[]>();
  private count = 0;
  evicted = 0;

  constructor(private readonly windowMs: number, private readonly maxEntries: number,
    private readonly ownNetns: number | null) {}

  add(event: E, atMs: number): void {
    const k = joinKey(event.saddr, event.sport, event.daddr, event.dport);
    const list = this.byKey.get(k);
    if (list) list.push({ event, atMs }); else this.byKey.set(k, [{ event, atMs }]);
    this.count++;
    if (this.count > this.maxEntries) this.evictOldest();
  }

  /** The event for a connection seen on the wire at atMs, or null. Not removed: requests share it. */
  find(t: TupleLike, atMs: number): E | null {
    const list = this.byKey.get(joinKey(t.client, t.cport, t.server, t.sport));
    if (!list) return null;
    let best: Entry<E> | null = null;
    for (const e of list) {
      if (Math.abs(e.atMs - atMs) > this.windowMs) continue;
      if (!best || this.better(e, best, atMs)) best = e;
    }
    return best ? best.event : null;
  }

  private better(a: Entry<E>, b: Entry<E>, atMs: number): boolean {
    const aOwn = a.event.netnsIno === this.ownNetns;
    const bOwn = b.event.netnsIno === this.ownNetns;
    if (aOwn !== bOwn) return aOwn;
    return Math.abs(a.atMs - atMs) < Math.abs(b.atMs - atMs);
  }

  /** Forget events older than the window (relative to nowMs). */
  sweep(nowMs: number): void {
    for (const [k, list] of this.byKey) {
      const keep = list.filter((e) => nowMs - e.atMs <= this.windowMs * 2);
      this.count -= list.length - keep.length;
      if (keep.length) this.byKey.set(k, keep); else this.byKey.delete(k);
    }
  }

  private evictOldest(): void {
    const first = this.byKey.entries().next();
    if (first.done) return;
    const [k, list] = first.value;
    list.shift();
    this.count--;
    this.evicted++;
    if (list.length === 0) this.byKey.delete(k);
  }

  get size(): number {
    return this.count;
  }
}
