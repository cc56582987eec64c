/**
 * Joining kernel connect events to wire connections, by 4-tuple within a time window. Pure.
 * Ports and addresses are reused, so an event only joins a connection that started within
 * `windowMs` of it; and the tracepoint sees every network namespace, so when two events share a
 * 4-tuple (two namespaces with the same addresses) the one in the agent's own namespace wins, then
 * the closest in time.
 * A connection NATed on its way out (a container behind MASQUERADE, captured on the host's NIC only)
 * has another 4-tuple on the wire than in the kernel; NAT keeps the client's initial sequence number,
 * so such a connection joins by (destination address, destination port, ISN) instead.
 *
 * The table also tells which events the wire showed. Every wire connection is noted (wire()); an
 * event that no wire connection joined by the time it is forgotten (twice the window after it, so a
 * capture running behind still joins) goes to `onUnseen`: the kernel saw a connection the wire did
 * not. A wire connection that joined no event (its SYN not captured, so no ISN) may stand for one
 * such event to the same server at the same moment (within pairMs); so a connection the wire showed
 * never also counts as unseen. An event joined only by wire connections that carried no request goes
 * to onUnseen too, as "no_request" (its caller decides whether capture lost the bytes).
 */
import { isnKey, serverKey, tupleKey, unmapV4, type Tuple } from '../../net.js';

export interface JoinableEvent {
  saddr: string;
  sport: number;
  daddr: string;
  dport: number;
  netnsIno: number;
  /** The socket's initial sequence number (absent from events of a program that does not read it). */
  isn?: number | null;
}

/** A connection the wire saw (the 4-tuple type of net.ts). */
export type TupleLike = Tuple;

export interface Joined<E> {
  event: E;
  /** How: the same 4-tuple, or (NAT) the same destination and initial sequence number. */
  by: 'tuple' | 'isn';
}

/** Kernel events to one destination near a time that no connection has joined (for reasons). */
export interface Unjoined {
  count: number;
  /** Of those, events that carry no ISN (so a NATed connection cannot join them). */
  withoutIsn: number;
}

/** What the wire showed of a connection; read when its event is decided, so it may still grow. */
export interface WireView {
  readonly requests: number;
}

export type UnseenKind = 'no_wire' | 'no_request';

interface Entry<E> {
  event: E;
  atMs: number;
  joined: boolean;
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

/** The 4-tuple key (kept under its old name for the join's callers). */
export const joinKey = tupleKey;
export { isnKey };

const hasIsn = (isn: number | null | undefined): isn is number => typeof isn === 'number';

export class JoinTable<E extends JoinableEvent> {
  private readonly byKey = new Map<string, Entry<E>[]>();
  private readonly byIsn = new Map<string, Entry<E>[]>();
  /**
   * Wire connections seen, by 4-tuple, to join events that arrive after them (bounded: a connection
   * that carries a request is also joined by its lookup, see join()).
   */
  private readonly sightings = new Map<string, Sighting[]>();
  /** Sightings that joined no event yet, by server: those that may stand for an unjoined event. */
  private readonly loose = new Map<string, Set<Sighting>>();
  private count = 0;
  private sightingCount = 0;
  evicted = 0;
  /** Kernel events that a wire connection with another 4-tuple and no ISN to join by stood for. */
  paired = 0;

  constructor(private readonly windowMs: number, private readonly maxEntries: number,
    private readonly ownNetns: number | null,
    private readonly onUnseen: (event: E, atMs: number, kind: UnseenKind) => void = () => undefined,
    private readonly pairMs = 1000, private readonly maxSightings = 2048) {}

  add(event: E, atMs: number): void {
    const entry: Entry<E> = { event, atMs, joined: false, wire: [] };
    const k = joinKey(event.saddr, event.sport, event.daddr, event.dport);
    push(this.byKey, k, entry);
    const ik = hasIsn(event.isn) ? isnKey(event.daddr, event.dport, event.isn) : null;
    if (ik !== null) push(this.byIsn, ik, entry);
    for (const s of this.sightings.get(k) ?? []) {
      if (Math.abs(s.atMs - atMs) > this.windowMs) continue;
      entry.wire.push(s.view);
      entry.joined = true;
      this.use(s);
    }
    this.count++;
    if (this.count > this.maxEntries) this.evictOldest();
  }

  /**
   * A connection the wire showed, first seen at atMs: it joins the events of its 4-tuple within the
   * window, else (NAT) those of its destination and ISN; and, by 4-tuple, those that come after it (a
   * NATed connection's later event is joined by its lookup).
   */
  wire(t: TupleLike, atMs: number, view: WireView): void {
    const k = joinKey(t.client, t.cport, t.server, t.sport);
    const ik = hasIsn(t.isn) ? isnKey(t.server, t.sport, t.isn) : null;
    const s: Sighting = { server: serverKey(t.server, t.sport), atMs, view, used: false };
    let hits = (this.byKey.get(k) ?? []).filter((e) => Math.abs(e.atMs - atMs) <= this.windowMs);
    if (hits.length === 0 && ik !== null) hits = (this.byIsn.get(ik) ?? []).filter((e) => Math.abs(e.atMs - atMs) <= this.windowMs);
    for (const e of hits) {
      e.wire.push(view);
      e.joined = true;
      s.used = true;
    }
    push(this.sightings, k, s);
    this.sightingCount++;
    if (!s.used) {
      const set = this.loose.get(s.server);
      if (set) set.add(s); else this.loose.set(s.server, new Set([s]));
    }
    if (this.sightingCount > this.maxSightings) this.dropOldestSighting();
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
    return this.join(t, atMs)?.event ?? null;
  }

  /** As find, saying how it joined: by 4-tuple first, else (NAT) by destination and ISN. */
  join(t: TupleLike, atMs: number): Joined<E> | null {
    const direct = this.best(this.byKey.get(joinKey(t.client, t.cport, t.server, t.sport)), atMs);
    if (direct) {
      direct.joined = true;
      return { event: direct.event, by: 'tuple' };
    }
    if (!hasIsn(t.isn)) return null;
    const nat = this.best(this.byIsn.get(isnKey(t.server, t.sport, t.isn)), atMs);
    if (!nat) return null;
    nat.joined = true;
    return { event: nat.event, by: 'isn' };
  }

  /** Events to server:sport within the window of atMs that no connection has joined. */
  unjoined(server: string, sport: number, atMs: number): Unjoined {
    const dst = unmapV4(server);
    const out: Unjoined = { count: 0, withoutIsn: 0 };
    for (const list of this.byKey.values()) {
      for (const e of list) {
        if (e.joined || e.event.dport !== sport || unmapV4(e.event.daddr) !== dst) continue;
        if (Math.abs(e.atMs - atMs) > this.windowMs) continue;
        out.count++;
        if (!hasIsn(e.event.isn)) out.withoutIsn++;
      }
    }
    return out;
  }

  private best(list: Entry<E>[] | undefined, atMs: number): Entry<E> | null {
    let best: Entry<E> | null = null;
    for (const e of list ?? []) {
      if (Math.abs(e.atMs - atMs) > this.windowMs) continue;
      if (!best || this.better(e, best, atMs)) best = e;
    }
    return best;
  }

  private better(a: Entry<E>, b: Entry<E>, atMs: number): boolean {
    const aOwn = a.event.netnsIno === this.ownNetns;
    const bOwn = b.event.netnsIno === this.ownNetns;
    if (aOwn !== bOwn) return aOwn;
    return Math.abs(a.atMs - atMs) < Math.abs(b.atMs - atMs);
  }

  /** Every event still waiting to be decided. */
  pending(): E[] {
    return [...this.byKey.values()].flat().map((e) => e.event);
  }

  /**
   * Forget events older than twice the window (relative to nowMs), deciding each one; with `all`,
   * decide every event now (at exit, once capture has handed over everything it had).
   */
  sweep(nowMs: number, all = false): void {
    const keep = (e: Entry<E>): boolean => !all && nowMs - e.atMs <= this.windowMs * 2;
    const decided: Entry<E>[] = [];
    for (const [k, list] of this.byKey) {
      const kept = list.filter(keep);
      for (const e of list) if (!keep(e)) decided.push(e);
      this.count -= list.length - kept.length;
      if (kept.length) this.byKey.set(k, kept); else this.byKey.delete(k);
    }
    for (const [k, list] of this.byIsn) {
      const kept = list.filter(keep);
      if (kept.length) this.byIsn.set(k, kept); else this.byIsn.delete(k);
    }
    decided.sort((a, b) => a.atMs - b.atMs);
    for (const e of decided) this.decide(e);
    const keepSighting = (s: Sighting): boolean => !all && nowMs - s.atMs <= this.windowMs * 2 + this.pairMs;
    for (const [k, list] of this.sightings) {
      const kept = list.filter(keepSighting);
      for (const s of list) if (!keepSighting(s)) this.use(s);
      this.sightingCount -= list.length - kept.length;
      if (kept.length) this.sightings.set(k, kept); else this.sightings.delete(k);
    }
  }

  private decide(e: Entry<E>): void {
    if (e.wire.length > 0) {
      if (!e.wire.some((w) => w.requests > 0)) this.onUnseen(e.event, e.atMs, 'no_request');
      return;
    }
    if (e.joined) return; // a lookup from the wire joined it
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

  private dropOldestSighting(): void {
    const first = this.sightings.entries().next();
    if (first.done) return;
    const [k, list] = first.value;
    this.use(list.shift() as Sighting);
    this.sightingCount--;
    if (list.length === 0) this.sightings.delete(k);
  }

  private evictOldest(): void {
    const first = this.byKey.entries().next();
    if (first.done) return;
    const [k, list] = first.value;
    const gone = list.shift() as Entry<E>;
    this.count--;
    this.evicted++;
    if (list.length === 0) this.byKey.delete(k);
    if (hasIsn(gone.event.isn)) {
      const ik = isnKey(gone.event.daddr, gone.event.dport, gone.event.isn);
      const rest = (this.byIsn.get(ik) ?? []).filter((e) => e !== gone);
      if (rest.length) this.byIsn.set(ik, rest); else this.byIsn.delete(ik);
    }
  }

  get size(): number {
    return this.count;
  }
}

function push<V>(m: Map<string, V[]>, k: string, v: V): void {
  const list = m.get(k);
  if (list) list.push(v); else m.set(k, [v]);
}

/**
 * Why a wire connection has no kernel event, in words that are true for what the agent knows:
 * the loader was down; the SYN was not captured (so no ISN to join by); events to the same
 * destination exist but match neither the 4-tuple nor the ISN; or there is no event at all.
 */
export function noEventReason(o: { loaderUp: boolean; wireIsn: boolean; unjoined: Unjoined; dst: string }): string {
  if (!o.loaderUp) return 'no kernel connect event (the eBPF loader was down)';
  const { count, withoutIsn } = o.unjoined;
  if (count > 0) {
    const events = `${count} kernel connect event${count === 1 ? '' : 's'} to ${o.dst} near this time`;
    if (!o.wireIsn) {
      return `${events} not joined: none has this connection's 4-tuple, and its SYN was not captured, so it cannot be joined by its initial sequence number (NAT may have changed the 4-tuple)`;
    }
    if (withoutIsn > 0) {
      return `${events} not joined: none has this connection's 4-tuple, and ${withoutIsn === count ? 'they carry' : `${withoutIsn} carry`} no initial sequence number to join a NATed connection by`;
    }
    return `${events} not joined: none has this connection's 4-tuple or its initial sequence number`;
  }
  if (!o.wireIsn) return 'no kernel connect event for this connection (its SYN was not captured: it began before the agent started capturing)';
  return 'no kernel connect event for this connection (not made from this host, or its event was lost: see stats.kernel.events_lost)';
}
