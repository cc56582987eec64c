/**
 * Joining kernel connect events to wire connections, by 4-tuple within a time window. Pure.
 * Ports and addresses are reused, so an event only joins a connection that started within
 * `windowMs` of it; and the tracepoint sees every network namespace, so when two events share a
 * 4-tuple (two namespaces with the same addresses) the one in the agent's own namespace wins, then
 * the closest in time.
 *
 * The table also tells which events the wire showed. Every wire connection is noted (wire()); an
 * event that no wire connection joined by the time it is forgotten (twice the window after it, so a
 * capture running behind still joins) goes to `onUnseen`: the kernel saw a connection the wire did
 * not. A wire connection that joined no event may stand for one such event to the same server at
 * the same moment (within pairMs): the post-NAT view of a connection whose own interface is not
 * captured; so a connection the wire showed never also counts as unseen. An event joined only by
 * wire connections that carried no request goes to onUnseen too, as "no_request" (its caller
 * decides whether capture lost the bytes).
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

/** What the wire showed of a connection; read when its event is decided, so it may still grow. */
export interface WireView {
  readonly requests: number;
}

export type UnseenKind = 'no_wire' | 'no_request';

interface Entry<E> {
  event: E;
  atMs: number;
  /** Wire connections that joined this event. */
  wire: WireView[];
}

interface Sighting {
  server: string;
  atMs: number;
  view: WireView;
  /** It joined a kernel event, or stood for one. */
  used: boolean;
}

export const joinKey = (client: string, cport: number, server: string, sport: number): string =>
  `${unmapV4(client)}|${cport}|${unmapV4(server)}|${sport}`;

const serverKey = (server: string, port: number): string => `${unmapV4(server)}|${port}`;

function push<K, V>(m: Map<K, V[]>, k: K, v: V): void {
  const list = m.get(k);
  if (list) list.push(v); else m.set(k, [v]);
}

export class JoinTable<E extends JoinableEvent> {
  private readonly byKey = new Map<string, Entry<E>[]>();
  private readonly sightings = new Map<string, Sighting[]>();
  /** Sightings that joined no event yet, by server: those that may stand for an unjoined event. */
  private readonly loose = new Map<string, Set<Sighting>>();
  private count = 0;
  private sightingCount = 0;
  evicted = 0;
  /** Kernel events that a wire connection with another 4-tuple (NAT) stood for. */
  paired = 0;

  constructor(private readonly windowMs: number, private readonly maxEntries: number,
    private readonly ownNetns: number | null,
    private readonly onUnseen: (event: E, atMs: number, kind: UnseenKind) => void = () => undefined,
    private readonly pairMs = 1000) {}

  add(event: E, atMs: number): void {
    const k = joinKey(event.saddr, event.sport, event.daddr, event.dport);
    const entry: Entry<E> = { event, atMs, wire: [] };
    for (const s of this.sightings.get(k) ?? []) {
      if (Math.abs(s.atMs - atMs) > this.windowMs) continue;
      entry.wire.push(s.view);
      this.use(s);
    }
    push(this.byKey, k, entry);
    this.count++;
    if (this.count > this.maxEntries) this.evictOldest();
  }

  /** A connection the wire showed, first seen at atMs: it joins the events of its 4-tuple within the window. */
  wire(t: TupleLike, atMs: number, view: WireView): void {
    const k = joinKey(t.client, t.cport, t.server, t.sport);
    const s: Sighting = { server: serverKey(t.server, t.sport), atMs, view, used: false };
    for (const e of this.byKey.get(k) ?? []) {
      if (Math.abs(e.atMs - atMs) > this.windowMs) continue;
      e.wire.push(view);
      s.used = true;
    }
    push(this.sightings, k, s);
    this.sightingCount++;
    if (!s.used) {
      const set = this.loose.get(s.server);
      if (set) set.add(s); else this.loose.set(s.server, new Set([s]));
    }
    if (this.sightingCount > this.maxEntries) this.dropOldestSighting();
  }

  private use(s: Sighting): void {
    if (s.used) return;
    s.used = true;
    const set = this.loose.get(s.server);
    set?.delete(s);
    if (set && set.size === 0) this.loose.delete(s.server);
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

  /**
   * Forget events older than twice the window (relative to nowMs), deciding each one; with `all`,
   * decide every event now (at exit, once capture has handed over everything it had).
   */
  sweep(nowMs: number, all = false): void {
    const old = (at: number): boolean => all || nowMs - at > this.windowMs * 2;
    const decided: Entry<E>[] = [];
    for (const [k, list] of this.byKey) {
      const keep = list.filter((e) => !old(e.atMs));
      for (const e of list) if (old(e.atMs)) decided.push(e);
      this.count -= list.length - keep.length;
      if (keep.length) this.byKey.set(k, keep); else this.byKey.delete(k);
    }
    decided.sort((a, b) => a.atMs - b.atMs);
    for (const e of decided) this.decide(e);
    for (const [k, list] of this.sightings) {
      const keep = list.filter((s) => !(all || nowMs - s.atMs > this.windowMs * 2 + this.pairMs));
      for (const s of list) if (!keep.includes(s)) this.use(s);
      this.sightingCount -= list.length - keep.length;
      if (keep.length) this.sightings.set(k, keep); else this.sightings.delete(k);
    }
  }

  private decide(e: Entry<E>): void {
    if (e.wire.length > 0) {
      if (!e.wire.some((w) => w.requests > 0)) this.onUnseen(e.event, e.atMs, 'no_request');
      return;
    }
    if (this.pair(e)) return;
    this.onUnseen(e.event, e.atMs, 'no_wire');
  }

  /** The nearest wire connection to the same server, within pairMs, that joined no event stands for this one. */
  private pair(e: Entry<E>): boolean {
    let best: Sighting | null = null;
    for (const s of this.loose.get(serverKey(e.event.daddr, e.event.dport)) ?? []) {
      if (Math.abs(s.atMs - e.atMs) > this.pairMs) continue;
      if (!best || Math.abs(s.atMs - e.atMs) < Math.abs(best.atMs - e.atMs)) best = s;
    }
    if (!best) return false;
    this.use(best);
    this.paired++;
    return true;
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

  private dropOldestSighting(): void {
    const first = this.sightings.entries().next();
    if (first.done) return;
    const [k, list] = first.value;
    this.use(list.shift() as Sighting);
    this.sightingCount--;
    if (list.length === 0) this.sightings.delete(k);
  }

  get size(): number {
    return this.count;
  }
}
