/**
 * The table of TCP connections to the metadata service, built from captured segments. Pure (no I/O):
 * it turns segments into HTTP request and response heads per connection, bounded in size.
 * The same connection seen on two interfaces (container veth and bridge) is one connection (same
 * 4-tuple; duplicate bytes are dropped by TcpStream). The same connection seen before and after NAT
 * (MASQUERADE keeps sequence numbers) is recognised by its initial sequence number and reported once,
 * under its first (pre-NAT) 4-tuple; the first connection then knows the address and port it left with
 * (`nat`), and an answer seen only on the post-NAT view (it died on its way in: hop limit) still answers
 * its request, once.
 */
import { wireKey } from '../net.js';
import { shiftKeep } from '../shift-keep.js';
import type { TcpSegment } from './packet.js';
import { type StreamLimits, type StreamSink, TcpStream } from './tcp-stream.js';
import { HttpStream } from './http-stream.js';
import type { Ambiguity, RequestHead, ResponseHead } from './http-head.js';

export interface Conn {
  id: number;
  key: string;
  family: 4 | 6;
  client: string;
  cport: number;
  server: string;
  sport: number;
  iface: string | null;
  openedAt: number;
  lastSeen: number;
  synSeen: boolean;
  clientIsn: number | null;
  /** Set when this is the post-NAT view of another connection: its messages are not reported. */
  natViewOf: number | null;
  /** On a connection seen before NAT: how its post-NAT view left the host (source, port, interface). */
  nat?: { client: string; cport: number; iface: string | null };
  /** Sequence number of the last request whose response was reported (over all views); 0 before the first. */
  respondedSeq: number;
  /** Set by attribution when the caller's kernel saw another 4-tuple (NAT before the capture point). */
  sentAs?: { client: string; cport: number };
  /** Methods of requests still waiting for their response, oldest first (pipelining). */
  awaiting: Array<{ method: string; seq: number }>;
  requests: number;
  closed: boolean;
  /** The wire showed the client send all it will: its FIN, or a RST either way. */
  clientDone: boolean;
  /** Its requests still waiting for their record, oldest first: kept by the pipeline (calls), not here. */
  waiting?: Array<{ seq: number }>;
  /** Its connection info for records as the pipeline last made it: kept by the pipeline, not here. */
  info?: object;
}

export interface FlowHandlers {
  isServer(addr: string, port: number): boolean;
  onOpen(conn: Conn): void;
  onRequest(conn: Conn, head: RequestHead, seqNo: number, ts: number): void;
  /** `ttl`: IP TTL / hop limit of the segment that completed the response head, as first seen. */
  onResponse(conn: Conn, head: ResponseHead, requestSeq: number | null, ts: number, ttl: number | null): void;
  onClose(conn: Conn): void;
  onSecret(value: string): void;
  /** A request already reported (its seqNo) turned out ambiguous below HTTP (TCP overlap, urgent data). */
  onAmbiguity?(conn: Conn, seqNo: number, why: Ambiguity): void;
}

export interface FlowLimits {
  maxFlows: number;
  maxOutOfOrderSegments: number;
  maxBufferedBytesPerDirection: number;
  maxHeaderBytes: number;
  flowIdleMs: number;
  /** All flows together hold at most this many bytes; beyond it the oldest flows are evicted. */
  maxBufferedBytesTotal: number;
  /** Per direction: delivered bytes the receiver has not acknowledged, kept to compare retransmissions. */
  maxUnackedWindowBytes?: number;
}

export interface FlowStats {
  flows: number;
  flowsEvicted: number;
  natDuplicates: number;
  duplicateBytes: number;
  gaps: number;
  malformed: number;
  bufferedBytes: number;
  /** TCP segments whose bytes differed from another copy of the same bytes (either direction). */
  overlapConflicts: number;
  /** TCP segments with urgent data (either direction). */
  urgent: number;
}

interface FlowState {
  conn: Conn;
  up: TcpStream;
  down: TcpStream;
  upHttp: HttpStream;
  downHttp: HttpStream;
  finUp: boolean;
  finDown: boolean;
  /** Bytes this flow held after its last segment (counted in the table's total). */
  bytes: number;
  /** TTL / hop limit of the server segment being handled. */
  downTtl: number | null;
  /** The connection this one is the post-NAT view of. */
  natOrigin: Conn | null;
}

const NAT_WINDOW_MS = 5000;

/**
 * A connection's first client sequence number, remembered NAT_WINDOW_MS to know its post-NAT view.
 * Kept by the number alone (no key string per connection); the few entries of other servers or ports
 * with the same number chain on `next`.
 */
interface IsnEntry { isn: number; server: string; sport: number; at: number; conn: Conn; next: IsnEntry | null }

export class FlowTable {
  private readonly flows = new Map<string, FlowState>();
  /** By first sequence number (as a signed 32-bit integer: a small integer key, never a boxed number). */
  private readonly byIsn = new Map<number, IsnEntry>();
  /** Entries in byIsn (with those chained). */
  private isnCount = 0;
  /** byIsn's entries in the order they were made, to forget those past the window from the oldest. */
  private isnOrder: IsnEntry[] = [];
  private isnHead = 0;
  /** Capture time of the last walk over byIsn for expired entries (see noteIsn). */
  private isnWalkAt = -Infinity;
  private nextId = 1;
  /** The flow the latest segment belonged to (checked against its 4-tuple and closed flag before use). */
  private last: FlowState | null = null;
  readonly stats: FlowStats = { flows: 0, flowsEvicted: 0, natDuplicates: 0, duplicateBytes: 0, gaps: 0, malformed: 0, bufferedBytes: 0,
    overlapConflicts: 0, urgent: 0 };

  /** What every connection's streams share (made once, not per connection). */
  private readonly upLimits: StreamLimits;
  private readonly downLimits: StreamLimits;
  private readonly onSecret: (value: string) => void;

  constructor(private readonly h: FlowHandlers, private readonly limits: FlowLimits) {
    this.upLimits = {
      maxOutOfOrderSegments: limits.maxOutOfOrderSegments,
      maxBufferedBytes: limits.maxBufferedBytesPerDirection,
      maxWindowBytes: limits.maxUnackedWindowBytes,
    };
    this.downLimits = { ...this.upLimits, maxWindowBytes: 0 };
    this.onSecret = (v) => h.onSecret(v);
  }

  handle(seg: TcpSegment, ts: number, iface: string | null): void {
    const toServer = this.h.isServer(seg.dst, seg.dport);
    if (!toServer && !this.h.isServer(seg.src, seg.sport)) return;
    const client = toServer ? seg.src : seg.dst;
    const cport = toServer ? seg.sport : seg.dport;
    const server = toServer ? seg.dst : seg.src;
    const sport = toServer ? seg.dport : seg.sport;
    // The flow of the previous segment (most segments follow one of their own connection): found
    // without building its key.
    const last = this.last;
    let st: FlowState | undefined;
    let key: string;
    if (last !== null && !last.conn.closed && last.conn.cport === cport && last.conn.sport === sport
      && last.conn.client === client && last.conn.server === server) {
      st = last;
      key = last.conn.key;
    } else {
      key = wireKey(client, cport, server, sport);
      st = this.flows.get(key);
    }
    const isSyn = seg.flags.syn && !seg.flags.ack && toServer;
    // A client SYN whose ISN differs from the one we know (or that follows a connection picked up
    // mid-stream, whose ISN we never saw): the 4-tuple is reused by a new connection.
    if (st && isSyn && st.conn.clientIsn !== seg.seq) {
      this.close(st);
      st = undefined;
    }
    if (!st) {
      // Nothing to learn from a stray end, nor from an empty segment (the last ACK after both FINs).
      if (seg.flags.rst || (!toServer && seg.flags.fin)) return;
      if (!seg.flags.syn && seg.payload.length === 0) return;
      st = this.open(key, seg, toServer, client, cport, server, sport, ts, iface);
    }
    this.last = st;
    const c = st.conn;
    c.lastSeen = ts;
    if (toServer) {
      if (seg.flags.syn) { st.up.onSyn(seg.seq); c.clientIsn ??= seg.seq; }
      st.up.onSegment(seg.flags.syn ? (seg.seq + 1) >>> 0 : seg.seq, seg.payload, seg.urgent);
      if (seg.flags.ack) st.down.onAck(seg.ack);
      // The client sent all it will: a head it left without its blank line is still a request.
      if (seg.flags.fin && !seg.flags.rst && !st.up.holding) st.upHttp.end();
    } else {
      if (seg.flags.syn) st.down.onSyn(seg.seq);
      st.downTtl = seg.ttl ?? null;
      st.down.onSegment(seg.flags.syn ? (seg.seq + 1) >>> 0 : seg.seq, seg.payload, seg.urgent);
      if (seg.flags.ack) st.up.onAck(seg.ack);
    }
    this.account(st);
    if (seg.flags.rst || (toServer && seg.flags.fin)) c.clientDone = true;
    if (seg.flags.rst) this.close(st);
    else if (seg.flags.fin) {
      // One FIN per direction: a retransmitted FIN, or the same FIN seen on two interfaces, is not the
      // other side's.
      if (toServer) st.finUp = true; else st.finDown = true;
      if (st.finUp && st.finDown) this.close(st);
    }
  }

  private open(key: string, seg: TcpSegment, toServer: boolean, client: string, cport: number,
    server: string, sport: number, ts: number, iface: string | null): FlowState {
    if (this.flows.size >= this.limits.maxFlows) this.evictOldest();
    const conn: Conn = {
      id: this.nextId++, key, family: seg.family, client, cport, server, sport, iface,
      openedAt: ts, lastSeen: ts, synSeen: seg.flags.syn && toServer,
      clientIsn: seg.flags.syn && toServer ? seg.seq : null, natViewOf: null,
      respondedSeq: 0, awaiting: [], requests: 0, closed: false, clientDone: false, info: undefined,
    };
    const natOrigin = conn.clientIsn !== null ? this.noteIsn(conn, ts) : null;
    let upSeq = 0;
    const upHttp = new HttpStream({
      kind: 'request', maxHeaderBytes: this.limits.maxHeaderBytes, onSecret: this.onSecret,
      onMessage: (head) => {
        if (head.kind !== 'request') return;
        const seqNo = ++upSeq;
        conn.requests++;
        conn.awaiting.push({ method: head.method, seq: seqNo });
        if (conn.awaiting.length > 64) shiftKeep(conn.awaiting);
        if (conn.natViewOf === null) this.h.onRequest(conn, head, seqNo, conn.lastSeen);
      },
      onAmbiguity: (seqNo, why) => {
        if (conn.natViewOf === null) this.h.onAmbiguity?.(conn, seqNo, why);
      },
    });
    const downHttp = new HttpStream({
      kind: 'response', maxHeaderBytes: this.limits.maxHeaderBytes,
      requestMethod: () => conn.awaiting[0]?.method ?? null,
      onMessage: (head) => {
        if (head.kind !== 'response') return;
        const interim = head.status >= 100 && head.status < 200;
        const req = interim ? conn.awaiting[0] : shiftKeep(conn.awaiting);
        // One response per request over all views of a connection: the first view that completes it.
        const origin = st.natOrigin ?? conn;
        if (st.natOrigin && (interim || origin.closed)) return;
        if (!interim && req) {
          if (req.seq <= origin.respondedSeq) return;
          origin.respondedSeq = req.seq;
        }
        this.h.onResponse(origin, head, req?.seq ?? null, conn.lastSeen, st.downTtl);
      },
    });
    const st: FlowState = {
      conn, upHttp, downHttp, finUp: false, finDown: false, bytes: 0, downTtl: null, natOrigin,
      up: new TcpStream(new ToHttp(upHttp, this.stats, true), this.upLimits),
      // Responses decide nothing about the IMDS version: their delivered bytes are not kept for comparing.
      down: new TcpStream(new ToHttp(downHttp, this.stats, false), this.downLimits),
    };
    this.flows.set(key, st);
    this.stats.flows++;
    if (conn.natViewOf === null) this.h.onOpen(conn);
    return st;
  }

  /** Keep the table's total of buffered bytes; evict the oldest flows when it is over budget. */
  private account(st: FlowState): void {
    const now = st.up.buffered + st.down.buffered + st.upHttp.buffered + st.downHttp.buffered;
    this.stats.bufferedBytes += now - st.bytes;
    st.bytes = now;
    while (this.stats.bufferedBytes > this.limits.maxBufferedBytesTotal && this.flows.size > 0) this.evictOldest();
  }

  /**
   * A SYN with the same ISN to the same server shortly after another one: the post-NAT view. Returns
   * the connection it is a view of (which learns the post-NAT address), else null.
   */
  private noteIsn(conn: Conn, ts: number): Conn | null {
    const isn = conn.clientIsn! | 0;
    const prior = this.isnFind(isn, conn.server, conn.sport);
    if (prior && ts - prior.at < NAT_WINDOW_MS) {
      conn.natViewOf = prior.conn.id;
      prior.conn.nat ??= { client: conn.client, cport: conn.cport, iface: conn.iface };
      this.stats.natDuplicates++;
      return prior.conn;
    }
    if (prior) this.isnForget(prior);
    const entry: IsnEntry = { isn, server: conn.server, sport: conn.sport, at: ts, conn, next: this.byIsn.get(isn) ?? null };
    this.byIsn.set(isn, entry);
    this.isnCount++;
    this.isnOrder.push(entry);
    // Those past the window (as sweep forgets them), from the oldest on: no connection is kept for
    // them. (A queue, not a walk over the map from its start: a map keeps the holes its deletions
    // leave until it is rebuilt, and every walk would pass over them again.)
    while (this.isnHead < this.isnOrder.length && ts - this.isnOrder[this.isnHead].at >= NAT_WINDOW_MS) {
      this.isnForget(this.isnOrder[this.isnHead++]);
    }
    if (this.isnHead > 1024 && this.isnHead * 2 > this.isnOrder.length) {
      this.isnOrder = this.isnOrder.slice(this.isnHead);
      this.isnHead = 0;
    }
    // A clock going backwards keeps the queue's oldest from expiring: then the whole map and queue are
    // checked for what expired. Not on every connection: above ~4,000 new connections/s every entry is
    // still in the window and each walk found nothing (47 % of the agent's CPU at 5,000/s). At most once
    // a second of capture time, or at once when the clock went back.
    if ((this.isnCount > this.limits.maxFlows * 2 || this.isnOrder.length - this.isnHead > this.limits.maxFlows * 4)
      && (ts - this.isnWalkAt >= 1000 || ts < this.isnWalkAt)) {
      this.isnWalkAt = ts;
      this.isnExpire(ts);
      this.isnOrder = this.isnOrder.slice(this.isnHead).filter((e) => this.isnFind(e.isn, e.server, e.sport) === e);
      this.isnHead = 0;
    }
    // A hard bound whatever the rate (a SYN flood): the oldest first connections are forgotten early.
    // A NAT view of one of them is then not known as such (its request could be written twice); no
    // request is lost.
    while (this.isnCount > this.limits.maxFlows * 4 && this.isnHead < this.isnOrder.length) {
      this.isnForget(this.isnOrder[this.isnHead++]);
    }
    return null;
  }

  /** The entry of a first sequence number (as a signed 32-bit integer) to server:sport, if kept. */
  private isnFind(isn: number, server: string, sport: number): IsnEntry | undefined {
    for (let e = this.byIsn.get(isn) ?? null; e !== null; e = e.next) {
      if (e.sport === sport && e.server === server) return e;
    }
    return undefined;
  }

  /** The entry is forgotten (if it is still kept). */
  private isnForget(entry: IsnEntry): void {
    const first = this.byIsn.get(entry.isn);
    if (first === entry) {
      if (entry.next) this.byIsn.set(entry.isn, entry.next); else this.byIsn.delete(entry.isn);
      this.isnCount--;
      return;
    }
    for (let e = first ?? null; e !== null; e = e.next) {
      if (e.next === entry) {
        e.next = entry.next;
        this.isnCount--;
        return;
      }
    }
  }

  /** Every entry past the window is forgotten (a map may lose, or change, entries while it is walked). */
  private isnExpire(ts: number): void {
    for (const first of this.byIsn.values()) {
      for (let e: IsnEntry | null = first; e !== null; e = e.next) if (ts - e.at >= NAT_WINDOW_MS) this.isnForget(e);
    }
  }

  private close(st: FlowState): void {
    if (st.conn.closed) return;
    st.conn.closed = true;
    // Nothing more is read on it; the connection may be kept a while yet (its first sequence number,
    // for NAT), not what its requests waited with.
    st.conn.awaiting.length = 0;
    this.flows.delete(st.conn.key);
    this.stats.bufferedBytes -= st.bytes;
    st.bytes = 0;
    this.stats.duplicateBytes += st.up.duplicateBytes + st.down.duplicateBytes;
    this.stats.gaps += st.up.gaps + st.down.gaps;
    this.stats.malformed += st.upHttp.malformed + st.downHttp.malformed;
    if (st.conn.natViewOf === null) this.h.onClose(st.conn);
  }

  private evictOldest(): void {
    const first = this.flows.values().next();
    if (first.done) return;
    this.stats.flowsEvicted++;
    this.close(first.value);
  }

  /** Forget connections idle for longer than flowIdleMs. */
  sweep(now: number): void {
    for (const st of this.flows.values()) {
      if (now - st.conn.lastSeen > this.limits.flowIdleMs) this.close(st);
    }
    this.isnExpire(now);
  }

  get size(): number {
    return this.flows.size;
  }

  closeAll(): void {
    for (const st of [...this.flows.values()]) this.close(st);
  }
}

/**
 * One direction's reassembled bytes into its HTTP parser; conflicting copies and urgent data are
 * counted, and (on the request side) make the message holding them ambiguous.
 */
class ToHttp implements StreamSink {
  constructor(private readonly http: HttpStream, private readonly stats: FlowStats, private readonly marksAmbiguity: boolean) {}

  onData(bytes: Buffer): void { this.http.push(bytes); }
  onGap(): void { this.http.gap(); }
  onConflict(offset: number): void {
    this.stats.overlapConflicts++;
    if (this.marksAmbiguity) this.http.ambiguous(offset, 'tcp_overlap_conflict');
  }
  onUrgent(offset: number): void {
    this.stats.urgent++;
    if (this.marksAmbiguity) this.http.ambiguous(offset, 'tcp_urgent');
  }
}
