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
 * to onUnseen too, as "no_request" (its caller decides whether capture lost the bytes), with the time
 * its client had sent all it will when the wire showed that (until then a request could still come). The wire's
 * sightings are bounded (maxSightings): an unjoined event that came after a sighting from its client
 * port within the window was dropped for the bound is not known to be unseen, and goes as
 * "wire_forgotten" (counted in wireForgotten).
 */
import { isnKey, tupleKey, unmapV4, type Tuple } from '../../net.js';

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

export interface Joined<E, D = undefined> {
  event: E;
  /** What the caller added with the event. */
  data: D | undefined;
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
  /** The wire showed the client send all it will (its FIN, or a RST): no request can come after. */
  readonly clientDone?: boolean;
  /** The connection's last packet on the wire, ms. */
  readonly lastSeen?: number;
}

/**
 * no_wire: no wire connection showed it; no_request: the wire showed it without a request;
 * wire_forgotten: it came after the wire connections near it were dropped for the bound, so whether
 * the wire showed it is not known (taken as shown unless capture was losing then).
 */
export type UnseenKind = 'no_wire' | 'no_request' | 'wire_forgotten';

/** When the client of every view had sent all it will (the latest of their last packets), else undefined. */
function ended(views: WireView[]): number | undefined {
  let until = -Infinity;
  for (const w of views) {
    if (!w.clientDone || w.lastSeen === undefined) return undefined;
    until = Math.max(until, w.lastSeen);
  }
  return until;
}

interface Entry<E, D> {
  event: E;
  /** What the caller keeps with the event (the attributor: its process description). */
  data: D | undefined;
  atMs: number;
  joined: boolean;
  /** Wire connections that joined this event (null until one does). */
  wire: WireView[] | null;
  /** When it came, a wire connection from its client port within the window had been dropped for the bound. */
  sightingForgotten: boolean;
}

interface Sighting {
  client: string;
  cport: number;
  server: string;
  sport: number;
  atMs: number;
  view: WireView;
  /** It joined a kernel event, or stood for one. */
  used: boolean;
}

/** The 4-tuple key (kept under its old name for the join's callers). */
export const joinKey = tupleKey;
export { isnKey };

const hasIsn = (isn: number | null | undefined): isn is number => typeof isn === 'number';

/** The same address, an IPv4-mapped one and its plain IPv4 alike (no string built when they are equal). */
export const sameAddr = (a: string, b: string): boolean => a === b || unmapV4(a) === unmapV4(b);

/** A kernel event of the wire connection's 4-tuple. */
export const sameTuple = (e: JoinableEvent, t: TupleLike): boolean =>
  e.sport === t.cport && e.dport === t.sport && sameAddr(e.daddr, t.server) && sameAddr(e.saddr, t.client);

/** A kernel event to the same destination with the same initial sequence number (NAT). */
const sameIsn = (e: JoinableEvent, server: string, sport: number, isn: number): boolean =>
  hasIsn(e.isn) && (e.isn >>> 0) === (isn >>> 0) && e.dport === sport && sameAddr(e.daddr, server);

/**
 * Items in order of their time, oldest first (nearly always appended: kernel events and wire
 * connections come in about the order of their times), so the old ones are taken from the front.
 */
class TimeQueue<T extends { atMs: number }> {
  private items: T[] = [];
  private head = 0;

  get length(): number {
    return this.items.length - this.head;
  }

  insert(x: T): void {
    const a = this.items;
    let i = a.length;
    while (i > this.head && a[i - 1].atMs > x.atMs) i--;
    if (i === a.length) a.push(x); else a.splice(i, 0, x);
  }

  first(): T | undefined {
    return this.items[this.head];
  }

  shift(): T | undefined {
    if (this.head >= this.items.length) return undefined;
    const x = this.items[this.head];
    (this.items as Array<T | undefined>)[this.head] = undefined;
    this.head++;
    if (this.head >= 1024 && this.head * 2 >= this.items.length) {
      this.items = this.items.slice(this.head);
      this.head = 0;
    }
    return x;
  }

  /** Every item, oldest first. */
  *[Symbol.iterator](): IterableIterator<T> {
    for (let i = this.head; i < this.items.length; i++) yield this.items[i];
  }
}

/**
 * Kernel events and wire sightings are found by number, not by text: by the client's port (the 4-tuple
 * then compared field by field) and, for NAT, by the initial sequence number (destination compared).
 */
export class JoinTable<E extends JoinableEvent, D = undefined> {
  /** Events by client port. */
  private readonly byPort = new Map<number, Entry<E, D>[]>();
  /** Events by initial sequence number. */
  private readonly byIsn = new Map<number, Entry<E, D>[]>();
  /** Every event, oldest first: swept and evicted from the front. */
  private readonly entries = new TimeQueue<Entry<E, D>>();
  /**
   * Wire connections seen, by client port, to join events that arrive after them (bounded: a
   * connection that carries a request is also joined by its lookup, see join()).
   */
  private readonly sightings = new Map<number, Sighting[]>();
  private readonly sightingQueue = new TimeQueue<Sighting>();
  /** Sightings that joined no event yet, by server port: those that may stand for an unjoined event. */
  private readonly loose = new Map<number, Set<Sighting>>();
  evicted = 0;
  /** Kernel events that a wire connection with another 4-tuple and no ISN to join by stood for. */
  paired = 0;
  /**
   * By client port, when the newest sighting dropped to keep the bound (maxSightings), not for its
   * age, had started (NaN: none). An event that comes later from that port within the window may have
   * lost its wire connection so, and "the wire did not show it" is not known. 512 KiB, made at the
   * first such drop.
   */
  private droppedAt: Float64Array | null = null;
  /** Unjoined kernel events whose wire connection may have been dropped so: taken as shown on the wire. */
  wireForgotten = 0;

  constructor(private readonly windowMs: number, private readonly maxEntries: number,
    private readonly ownNetns: number | null,
    private readonly onUnseen: (event: E, atMs: number, kind: UnseenKind, data: D | undefined, untilMs?: number) => void = () => undefined,
    private readonly pairMs = 1000, private readonly maxSightings = 2048) {}

  add(event: E, atMs: number, data?: D): void {
    const dropped = this.droppedAt?.[event.sport] ?? NaN;
    const entry: Entry<E, D> = {
      event, data, atMs, joined: false, wire: null, sightingForgotten: Math.abs(dropped - atMs) <= this.windowMs,
    };
    push(this.byPort, event.sport, entry);
    if (hasIsn(event.isn)) push(this.byIsn, event.isn >>> 0, entry);
    this.entries.insert(entry);
    const seen = this.sightings.get(event.sport);
    if (seen) {
      for (const s of seen) {
        if (Math.abs(s.atMs - atMs) > this.windowMs || !sameTuple(event, s)) continue;
        (entry.wire ??= []).push(s.view);
        entry.joined = true;
        this.use(s);
      }
    }
    if (this.entries.length > this.maxEntries) this.evictOldest();
  }

  /**
   * A connection the wire showed, first seen at atMs: it joins the events of its 4-tuple within the
   * window, else (NAT) those of its destination and ISN; and, by 4-tuple, those that come after it (a
   * NATed connection's later event is joined by its lookup).
   */
  wire(t: TupleLike, atMs: number, view: WireView): void {
    const s: Sighting = { client: t.client, cport: t.cport, server: t.server, sport: t.sport, atMs, view, used: false };
    for (const e of this.byPort.get(t.cport) ?? []) {
      if (Math.abs(e.atMs - atMs) > this.windowMs || !sameTuple(e.event, t)) continue;
      this.joinWire(e, view);
      s.used = true;
    }
    if (!s.used && hasIsn(t.isn)) {
      for (const e of this.byIsn.get(t.isn >>> 0) ?? []) {
        if (Math.abs(e.atMs - atMs) > this.windowMs || !sameIsn(e.event, t.server, t.sport, t.isn)) continue;
        this.joinWire(e, view);
        s.used = true;
      }
    }
    push(this.sightings, t.cport, s);
    this.sightingQueue.insert(s);
    if (!s.used) {
      const set = this.loose.get(s.sport);
      if (set) set.add(s); else this.loose.set(s.sport, new Set([s]));
    }
    if (this.sightingQueue.length > this.maxSightings) {
      const gone = this.sightingQueue.shift() as Sighting;
      (this.droppedAt ??= new Float64Array(65_536).fill(NaN))[gone.cport] = gone.atMs;
      this.dropSighting(gone);
    }
  }

  private joinWire(e: Entry<E, D>, view: WireView): void {
    (e.wire ??= []).push(view);
    e.joined = true;
  }

  private use(s: Sighting): void {
    if (s.used) return;
    s.used = true;
    const set = this.loose.get(s.sport);
    set?.delete(s);
    if (set && set.size === 0) this.loose.delete(s.sport);
  }

  /** The event for a connection seen on the wire at atMs, or null. Not removed: requests share it. */
  find(t: TupleLike, atMs: number): E | null {
    return this.join(t, atMs)?.event ?? null;
  }

  /** As find, saying how it joined: by 4-tuple first, else (NAT) by destination and ISN. */
  join(t: TupleLike, atMs: number): Joined<E, D> | null {
    let direct: Entry<E, D> | null = null;
    for (const e of this.byPort.get(t.cport) ?? []) {
      if (Math.abs(e.atMs - atMs) > this.windowMs || !sameTuple(e.event, t)) continue;
      if (!direct || this.better(e, direct, atMs)) direct = e;
    }
    if (direct) {
      direct.joined = true;
      return { event: direct.event, data: direct.data, by: 'tuple' };
    }
    if (!hasIsn(t.isn)) return null;
    let nat: Entry<E, D> | null = null;
    for (const e of this.byIsn.get(t.isn >>> 0) ?? []) {
      if (Math.abs(e.atMs - atMs) > this.windowMs || !sameIsn(e.event, t.server, t.sport, t.isn)) continue;
      if (!nat || this.better(e, nat, atMs)) nat = e;
    }
    if (!nat) return null;
    nat.joined = true;
    return { event: nat.event, data: nat.data, by: 'isn' };
  }

  /** Events to server:sport within the window of atMs that no connection has joined. */
  unjoined(server: string, sport: number, atMs: number): Unjoined {
    const dst = unmapV4(server);
    const out: Unjoined = { count: 0, withoutIsn: 0 };
    for (const e of this.entries) {
      if (e.joined || e.event.dport !== sport || unmapV4(e.event.daddr) !== dst) continue;
      if (Math.abs(e.atMs - atMs) > this.windowMs) continue;
      out.count++;
      if (!hasIsn(e.event.isn)) out.withoutIsn++;
    }
    return out;
  }

  private better(a: Entry<E, D>, b: Entry<E, D>, atMs: number): boolean {
    const aOwn = a.event.netnsIno === this.ownNetns;
    const bOwn = b.event.netnsIno === this.ownNetns;
    if (aOwn !== bOwn) return aOwn;
    return Math.abs(a.atMs - atMs) < Math.abs(b.atMs - atMs);
  }

  /** Every event still waiting to be decided. */
  pending(): E[] {
    return Array.from(this.entries, (e) => e.event);
  }

  /**
   * Forget events older than twice the window (relative to nowMs), deciding each one, oldest first;
   * with `all`, decide every event now (at exit, once capture has handed over everything it had).
   */
  sweep(nowMs: number, all = false): void {
    const decided: Entry<E, D>[] = [];
    for (let e = this.entries.first(); e && (all || nowMs - e.atMs > this.windowMs * 2); e = this.entries.first()) {
      this.entries.shift();
      this.forget(e);
      decided.push(e);
    }
    for (const e of decided) this.decide(e);
    const keepMs = this.windowMs * 2 + this.pairMs;
    for (let s = this.sightingQueue.first(); s && (all || nowMs - s.atMs > keepMs); s = this.sightingQueue.first()) {
      this.dropSighting(this.sightingQueue.shift() as Sighting);
    }
  }

  /** Take an event out of the lookups by port and ISN. */
  private forget(e: Entry<E, D>): void {
    remove(this.byPort, e.event.sport, e);
    if (hasIsn(e.event.isn)) remove(this.byIsn, e.event.isn >>> 0, e);
  }

  private dropSighting(s: Sighting): void {
    this.use(s);
    remove(this.sightings, s.cport, s);
  }

  private decide(e: Entry<E, D>): void {
    if (e.wire !== null && e.wire.length > 0) {
      if (!e.wire.some((w) => w.requests > 0)) this.onUnseen(e.event, e.atMs, 'no_request', e.data, ended(e.wire));
      return;
    }
    if (e.joined) return; // a lookup from the wire joined it
    if (this.pair(e)) return;
    if (e.sightingForgotten) {
      // More wire connections came than are kept, and this event came after its port's was dropped:
      // the wire most likely showed it. A call lost only if capture was losing at the time.
      this.wireForgotten++;
      this.onUnseen(e.event, e.atMs, 'wire_forgotten', e.data);
      return;
    }
    this.onUnseen(e.event, e.atMs, 'no_wire', e.data);
  }

  /** The nearest wire connection to the same server, within pairMs, that joined no event stands for this one. */
  private pair(e: Entry<E, D>): boolean {
    let best: Sighting | null = null;
    for (const s of this.loose.get(e.event.dport) ?? []) {
      if (Math.abs(s.atMs - e.atMs) > this.pairMs || !sameAddr(s.server, e.event.daddr)) continue;
      if (!best || Math.abs(s.atMs - e.atMs) < Math.abs(best.atMs - e.atMs)) best = s;
    }
    if (!best) return false;
    this.use(best);
    this.paired++;
    return true;
  }

  private evictOldest(): void {
    const gone = this.entries.shift();
    if (!gone) return;
    this.forget(gone);
    this.evicted++;
  }

  get size(): number {
    return this.entries.length;
  }
}

function push<K, V>(m: Map<K, V[]>, k: K, v: V): void {
  const list = m.get(k);
  if (list) list.push(v); else m.set(k, [v]);
}

function remove<K, V>(m: Map<K, V[]>, k: K, v: V): void {
  const list = m.get(k);
  if (!list) return;
  const i = list.indexOf(v);
  if (i !== -1) list.splice(i, 1);
  if (list.length === 0) m.delete(k);
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
