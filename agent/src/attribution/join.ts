/**
 * Joining kernel connect events to wire connections, by 4-tuple within a time window. Pure.
 * Ports and addresses are reused, so an event only joins a connection that started within
 * `windowMs` of it; and the tracepoint sees every network namespace, so when two events share a
 * 4-tuple (two namespaces with the same addresses) the one in the agent's own namespace wins, then
 * the closest in time.
 * A connection NATed on its way out (a container behind MASQUERADE, captured on the host's NIC only)
 * has another 4-tuple on the wire than in the kernel; NAT keeps the client's initial sequence number,
 * so such a connection joins by (destination address, destination port, ISN) instead.
 */
import { unmapV4 } from './proc-parse.js';

export interface JoinableEvent {
  saddr: string;
  sport: number;
  daddr: string;
  dport: number;
  netnsIno: number;
  /** The socket's initial sequence number (absent from events of a program that does not read it). */
  isn?: number | null;
}

export interface TupleLike {
  client: string;
  cport: number;
  server: string;
  sport: number;
  /** The client's initial sequence number, when the wire saw its SYN. */
  isn?: number | null;
}

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

interface Entry<E> {
  event: E;
  atMs: number;
  joined: boolean;
}

export const joinKey = (client: string, cport: number, server: string, sport: number): string =>
  `${unmapV4(client)}|${cport}|${unmapV4(server)}|${sport}`;

export const isnKey = (server: string, sport: number, isn: number): string =>
  `${unmapV4(server)}|${sport}|${isn >>> 0}`;

const hasIsn = (isn: number | null | undefined): isn is number => typeof isn === 'number';

export class JoinTable<E extends JoinableEvent> {
  private readonly byKey = new Map<string, Entry<E>[]>();
  private readonly byIsn = new Map<string, Entry<E>[]>();
  private count = 0;
  evicted = 0;

  constructor(private readonly windowMs: number, private readonly maxEntries: number,
    private readonly ownNetns: number | null) {}

  add(event: E, atMs: number): void {
    const entry: Entry<E> = { event, atMs, joined: false };
    push(this.byKey, joinKey(event.saddr, event.sport, event.daddr, event.dport), entry);
    if (hasIsn(event.isn)) push(this.byIsn, isnKey(event.daddr, event.dport, event.isn), entry);
    this.count++;
    if (this.count > this.maxEntries) this.evictOldest();
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

  /** Forget events older than the window (relative to nowMs). */
  sweep(nowMs: number): void {
    const keep = (e: Entry<E>): boolean => nowMs - e.atMs <= this.windowMs * 2;
    for (const [k, list] of this.byKey) {
      const kept = list.filter(keep);
      this.count -= list.length - kept.length;
      if (kept.length) this.byKey.set(k, kept); else this.byKey.delete(k);
    }
    for (const [k, list] of this.byIsn) {
      const kept = list.filter(keep);
      if (kept.length) this.byIsn.set(k, kept); else this.byIsn.delete(k);
    }
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

function push<E>(m: Map<string, Entry<E>[]>, k: string, e: Entry<E>): void {
  const list = m.get(k);
  if (list) list.push(e); else m.set(k, [e]);
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
