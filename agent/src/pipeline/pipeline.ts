/**
 * The way of a captured frame to a call record, in one place and in order:
 *
 *   push(frame) → decode (wire/packet) → flow table, TCP, HTTP (wire/flows) → classify (classify)
 *   → count, keep what is wanted → wait for the response (calls) → attribute (the Attributor passed
 *   in; not for the agent's own connections, known by their 4-tuple) → container names → the
 *   agent's own calls counted, not written → redact, v1 reason, record (calls, record) → sink.
 *
 * The attributor, the clock and the sink are passed in: the whole path runs without root and without
 * capture (test/unit/pipeline.test.ts pushes hand-made frames through it). The state it keeps: the
 * flow table (per TCP connection), one `ConnState` per connection (its caller, looked up at connect
 * time), the requests waiting for their answer (calls), and one `Counters` object.
 */
import { networkInterfaces } from 'node:os';
import { isIP } from 'node:net';
import { DEFAULTS } from '../defaults.js';
import { unmapV4, type Tuple } from '../net.js';
import { decodeFrame, linkIfindex } from '../wire/packet.js';
import { FlowTable, type Conn } from '../wire/flows.js';
import { classify } from '../classify.js';
import { Redactor } from '../redact.js';
import { sharedCopy } from '../output/record-json.js';
import { PendingCalls, Waits, type ResponseTimers } from './calls.js';
import { Counters } from './counters.js';
import { UnseenCalls } from './unseen.js';
import { CaptureTimeline } from '../capture/timeline.js';
import { interfaceFor, isHostAddress, type InterfaceTable } from '../capture/interfaces.js';
import { InterfaceNames } from '../capture/ifnames.js';
import type { Attributor } from '../attribution/attributor.js';
import type { ConnectEvent } from '../attribution/ebpf/events.js';
import type { UnseenKind, WireView } from '../attribution/ebpf/join.js';
import type { CallRecord, ConnectionInfo, ProcessInfo } from '../record.js';

/** Where records go (the RecordWriter in the agent; an array in tests). */
export interface RecordSink {
  write(rec: CallRecord): void;
  error(component: string, message: string): void;
  notice?(component: string, message: string): void;
}

/**
 * An attributor that joins wire connections with kernel events (eBPF): told about every connection
 * the wire opens, and able to say which 4-tuple a NATed connection was sent with.
 */
export interface JoiningAttributor extends Attributor {
  wireSeen(t: Tuple, atMs: number, view: WireView): void;
  lookupJoined(t: Tuple, atMs: number, wait: boolean): Promise<{ process: ProcessInfo; sent?: { client: string; cport: number } | null }>;
  unreachable(netnsIno: number): boolean;
}

export interface PipelineOptions {
  /** The capture interface; `any` names each frame's interface from its link header. */
  device: string;
  includeV2: boolean;
  includeOther: boolean;
  /** Scrub words added to the defaults (`--scrub-word`). */
  scrubWords?: string[];
  /** null or absent: no attribution backend yet (every record says so); see useAttributor. */
  attributor?: Attributor | null;
  /** Set when the attributor joins kernel events (eBPF): the same object as attributor. */
  joins?: JoiningAttributor | null;
  sink: RecordSink;
  /** Milliseconds since the epoch (default Date.now): frames without a capture time get this one. */
  clock?: () => number;
  /** The host's interfaces (default: os.networkInterfaces, re-read every 5 s). */
  interfaces?: () => InterfaceTable;
  /** Interface index → name for `any` captures (default: /sys/class/net). */
  ifname?: (ifindex: number) => string | null;
  /** The agent's own pid: its calls are counted, never written (default: process.pid). */
  selfPid?: number;
  /**
   * Whether a connection is one the agent opened itself (self/own-sockets.ts): its caller is the agent,
   * known without attribution or enrichment. Connections it does not know still go through
   * attribution, and a caller found with the agent's pid is filtered after it (stage 6).
   */
  ownConnection?: (t: Tuple, openedAtMs: number) => boolean;
  /** More about the caller once attribution found it (container names), before its record is made. */
  enrich?: (p: ProcessInfo) => Promise<ProcessInfo>;
  /** What enrich would give, when it is known without waiting (its cache); else undefined. */
  enrichNow?: (p: ProcessInfo) => ProcessInfo | undefined;
  /** Whether a record's caller was not found because the eBPF loader was down. */
  loaderDown?: (reason: string | undefined) => boolean;
  /** The clock a request waits for its answer on (default: the wall clock; offline, the capture file's). */
  responseTimers?: ResponseTimers;
}

const ADDRESS_FACTS_SIZE = 1024;

interface AddressFacts {
  iface: string | null;
  /** Whether it is an address of the host itself (computed when first asked). */
  host: boolean | undefined;
}

/**
 * A connection's ConnectionInfo (kept on the Conn: no table of connections) with what it was made
 * from: it is made again only when one of those changes (a NAT view or the kernel's 4-tuple learnt
 * later, the host's interface table read again). From its second call on, a shared copy
 * (output/record-json.ts): its calls' records share it, and its JSON is made once.
 */
interface MadeConnectionInfo {
  info: ConnectionInfo;
  sentAs: Conn['sentAs'];
  nat: Conn['nat'];
  iface: string | null;
  table: InterfaceTable;
  /** info is a shared copy: made so at the connection's second call (a connection with one call costs no copy). */
  shared: boolean;
}

/** What the pipeline keeps per TCP connection besides the flow table's own view of it. */
interface ConnState {
  /** The caller, looked up when the connection opened (or again when the first answer was none). */
  caller: Promise<ProcessInfo>;
  /** The same caller once the look-up has answered: its next calls' records are made at once. */
  known?: ProcessInfo;
}

export class Pipeline {
  readonly counters = new Counters();
  readonly flows: FlowTable;
  readonly calls: PendingCalls;
  readonly unseen: UnseenCalls;
  /** When capture could not see (gaps, drops): the reason of the calls the kernel saw that the wire did not. */
  readonly timeline = new CaptureTimeline();
  private readonly redactor: Redactor;
  private readonly conns = new Map<number, ConnState>();
  private readonly servers = new Set<string>([...DEFAULTS.imdsIPv4, ...DEFAULTS.imdsIPv6]);
  private readonly now: () => number;
  private readonly selfPid: number;
  private readonly ifnames: (ifindex: number) => string | null;
  private readonly hostInterfaces: () => InterfaceTable;
  private earlyLookups = 0;
  /** The host interface of an address, and whether it is the host's own, for the current interface table. */
  private readonly facts = new Map<string, AddressFacts>();
  private factsTable: InterfaceTable | null = null;
  /** A closed connection's caller is forgotten attributionWaitMs later (one timer for all, never holding the process up). */
  private readonly forget = new Waits(DEFAULTS.attributionWaitMs, () => Date.now(), false);
  private attributor: Attributor | null;
  private joins: JoiningAttributor | null;

  constructor(private readonly o: PipelineOptions) {
    this.attributor = o.attributor ?? null;
    this.joins = o.joins ?? null;
    this.now = o.clock ?? Date.now;
    this.selfPid = o.selfPid ?? process.pid;
    this.redactor = new Redactor(undefined, o.scrubWords ?? []);
    const names = o.ifname ? null : new InterfaceNames();
    this.ifnames = o.ifname ?? ((i) => names!.name(i));
    this.hostInterfaces = o.interfaces ?? cachedInterfaces(this.now);
    this.flows = new FlowTable({
      isServer: (addr, port) => port === DEFAULTS.imdsPort && this.servers.has(unmapV4(addr)),
      onOpen: (conn) => this.opened(conn),
      onRequest: (conn, head, seq, ts) => this.request(conn, head, seq, ts),
      onAmbiguity: (conn, seq, why) => this.ambiguity(conn, seq, why),
      onResponse: (conn, head, seq, _ts, ttl) => {
        // An interim answer (100 Continue, 102, 103) is followed by the call's own: that one decides it.
        if (head.status >= 100 && head.status < 200 && head.status !== 101) return;
        this.calls.response(conn, seq, head.status, ttl);
      },
      onClose: (conn) => this.closed(conn),
      onSecret: (v) => this.redactor.addSecret(v),
    }, DEFAULTS);
    this.calls = new PendingCalls({
      responseWaitMs: DEFAULTS.responseWaitMs,
      attributionWaitMs: DEFAULTS.attributionWaitMs,
      maxPending: DEFAULTS.maxPendingCalls,
      redact: (s) => this.redactor.text(s),
      redactArgv: (a) => this.redactor.argv(a),
      redactProcess: (p) => this.redactor.process(p),
      connection: (conn) => this.connectionInfo(conn),
      source: (conn) => sourceOf(conn),
      isLocalAddress: (src) => this.hostAddress(src),
      attribution: (conn) => this.isOwn(conn) ? Promise.resolve(this.selfInfo) : this.caller(conn).then((p) => this.o.enrich?.(p) ?? p),
      attributionNow: (conn) => this.isOwn(conn) ? this.selfInfo : this.knownCaller(conn),
      emit: (rec) => this.record(rec),
      responseTimers: o.responseTimers,
    });
    this.unseen = new UnseenCalls({
      burst: DEFAULTS.unseenRecordBurst, perMinute: DEFAULTS.unseenRecordsPerMinute,
      reasonAt: (at) => this.timeline.reasonAt(at),
      reasonDuring: (at, until) => this.timeline.reasonDuring(at, until ?? at + DEFAULTS.joinWindowMs),
      connection: (e) => ({
        src: e.saddr, sport: e.sport, dst: e.daddr, dport: e.dport, interface: this.interfaceOf(e.saddr, null),
        family: e.family === 6 ? 'ipv6' : 'ipv4',
      }),
      redact: (s) => this.redactor.text(s), redactArgv: (a) => this.redactor.argv(a),
      selfPid: this.selfPid, onSelf: () => { this.counters.self++; },
      unreachable: (e) => this.joins?.unreachable(e.netnsIno) ?? false,
      emit: (rec) => this.record(rec),
      error: (m) => this.o.sink.error('ebpf', m), notice: (m) => this.o.sink.notice?.('ebpf', m),
    });
  }

  /** The attribution backend, once it has started (before the first frame). */
  useAttributor(attributor: Attributor, joins: JoiningAttributor | null = null): void {
    this.attributor = attributor;
    this.joins = joins;
  }

  // --- stage 1: decode; the frame's interface -------------------------------------------------

  /**
   * One captured frame (link type as libpcap names it; capture time in µs, else the clock's); `iface`
   * names its interface when the caller knows it (a capture file), else the device or the link header does.
   */
  push(frame: Buffer, link: string, tsUs?: number, iface?: string | null): void {
    this.counters.packets++;
    const seg = decodeFrame(link, frame);
    if (!seg) {
      this.counters.undecodable++;
      return;
    }
    const ifindex = iface !== undefined ? null : linkIfindex(link, frame);
    iface = iface !== undefined ? iface : this.o.device !== 'any' ? this.o.device : ifindex === null ? null : this.ifnames(ifindex);
    // --- stage 2: flow table, TCP reassembly, HTTP heads (their events come back below) ---
    this.flows.handle(seg, tsUs === undefined ? this.now() : tsUs / 1000, iface);
  }

  /** A connection the kernel saw and the wire did not (eBPF): a record with its reason, or a count. */
  pushUnseen(e: ConnectEvent, atMs: number, kind: UnseenKind, process: Promise<ProcessInfo>, untilMs?: number): void {
    this.unseen.handle(e, atMs, kind, process, untilMs);
  }

  // --- stage 3: a connection opens: its caller is looked up while it surely lives --------------

  private opened(conn: Conn): void {
    this.joins?.wireSeen(tupleOf(conn), conn.openedAt, conn);
    if (this.isOwn(conn)) return; // the agent's own: no lookup (known again at its request, see isOwn)
    if (!this.attributor || this.earlyLookups >= DEFAULTS.maxEarlyLookups) return; // bounded: a SYN flood cannot pile up lookups
    if (this.attributor.answerNow) return; // its answer needs no look-up, now or later (a capture file's)
    this.earlyLookups++;
    const p = this.lookup(conn);
    void p.finally(() => { this.earlyLookups--; });
    this.remember(conn, p);
  }

  /** The caller look-up of conn, kept (and its answer, once in) for the connection's calls. */
  private remember(conn: Conn, caller: Promise<ProcessInfo>): void {
    const st: ConnState = { caller };
    this.conns.set(conn.id, st);
    void caller.then((p) => { st.known = p; }, () => undefined);
    if (conn.closed) this.forgetLater(conn.id); // looked up (again) after it closed: forgotten as well
  }

  // --- stage 4: a request: classify, count, keep what is wanted ---------------------------------

  private request(conn: Conn, head: Parameters<PendingCalls['add']>[1], seq: number, ts: number): void {
    const cls = classify(head);
    this.counters.version(cls.imdsVersion);
    if (head.ambiguity) this.counters.ambiguous++;
    const write = this.wanted(cls.imdsVersion);
    if (!write) this.countIfSelf(conn, cls.imdsVersion);
    // AWS requests not written are still tracked: token requests (to explain a later IMDSv1 call),
    // and any of them may yet turn out ambiguous (ambiguity) and so IMDSv1.
    if (write || cls.provider === 'aws') this.calls.add(conn, head, seq, cls, new Date(ts), write);
  }

  /** A request already seen turned out ambiguous below HTTP: classified again, counted again. */
  private ambiguity(conn: Conn, seq: number, why: Parameters<PendingCalls['amend']>[2]): void {
    const change = this.calls.amend(conn, seq, why, (v) => this.wanted(v));
    if (!change) return;
    if (change.first) this.counters.ambiguous++;
    this.counters.version(change.before.imdsVersion, -1);
    this.counters.version(change.after.imdsVersion);
  }

  private wanted(v: 'v1' | 'v2' | null): boolean {
    return v === 'v1' || (v === 'v2' && this.o.includeV2) || (v === null && this.o.includeOther);
  }

  /**
   * A request that is not written (IMDSv2 without --include-v2) still counts in calls_self_v1/v2
   * when it was the agent's own: from the caller found at connect time, no new lookup.
   */
  private countIfSelf(conn: Conn, version: 'v1' | 'v2' | null): void {
    if (version === null) return;
    if (this.isOwn(conn)) {
      this.counters.selfCalls.count(version, '', '');
      return;
    }
    const found = this.conns.get(conn.id);
    if (!found) return;
    void found.caller.then((p) => {
      if (p.pid === this.selfPid) this.counters.selfCalls.count(version, '', '');
    });
  }

  private closed(conn: Conn): void {
    this.calls.closed(conn);
    // Nothing kept for it (no look-up: a capture file's, or the agent's own): nothing to forget.
    if (this.conns.has(conn.id)) this.forgetLater(conn.id);
  }

  /** The connection's caller is forgotten attributionWaitMs from now. */
  private forgetLater(id: number): void {
    this.forget.add(() => this.conns.delete(id));
  }

  // --- stage 5: attribution (asked by calls once the answer is in) ------------------------------

  /** The agent's own caller, as attribution would name it (the record is counted, never written). */
  private get selfInfo(): ProcessInfo {
    return { attribution: 'proc', pid: this.selfPid };
  }

  /**
   * Whether conn is one the agent opened itself, by its 4-tuple: decided before attribution. Known
   * for sure from its first request on (the agent's socket is connected, and its tuple kept, before
   * it writes a byte); at SYN time it may not be known yet, and then its caller is looked up as any.
   */
  private isOwn(conn: Conn): boolean {
    return this.o.ownConnection?.(conn, conn.openedAt) ?? false; // conn holds its 4-tuple: no copy made
  }

  /** The caller of conn; with eBPF, a connection joined by its ISN (NAT) learns the 4-tuple it was sent with. */
  private lookup(conn: Conn, again = false): Promise<ProcessInfo> {
    const joins = this.joins;
    if (!joins) return this.attributor!.lookup(tupleOf(conn), conn.openedAt);
    return joins.lookupJoined(tupleOf(conn), conn.openedAt, !again).then((r) => {
      if (r.sent) conn.sentAs = r.sent;
      return r.process;
    });
  }

  /** The caller found at connect time; looked up again once if it was not found then. */
  private async caller(conn: Conn): Promise<ProcessInfo> {
    const first = this.conns.get(conn.id);
    if (!this.attributor) return { attribution: 'none', reason: 'no attribution backend' };
    const info = first ? await first.caller : null;
    if (info && (info.attribution !== 'none' || conn.closed)) return info;
    // A second look does not wait for the kernel event again; a first one (no early lookup: the bound
    // on lookups at SYN time was reached, e.g. during a SYN flood) does.
    const again = this.lookup(conn, first !== undefined);
    this.remember(conn, again);
    return again;
  }

  /**
   * What caller(conn), enriched, would answer, when that is known without waiting: the connection's
   * look-up has answered (with a caller, or with none on a closed connection, which is not asked
   * again) and its container names are cached. Else undefined.
   */
  private knownCaller(conn: Conn): ProcessInfo | undefined {
    if (!this.attributor) return undefined;
    const info = this.attributor.answerNow?.(tupleOf(conn)) ?? this.conns.get(conn.id)?.known;
    if (!info || (info.attribution === 'none' && !conn.closed && !this.attributor.answerNow)) return undefined;
    if (!this.o.enrich) return info;
    return this.o.enrichNow?.(info);
  }

  /**
   * The connection as the caller sent it (before NAT: from the wire when the capture saw it there,
   * else from the kernel event joined by ISN), and how it left the host when it was NATed.
   * `interface` is the host interface on the caller's side: the one holding src (its address, else
   * its subnet: the bridge of a container), else the one the request was seen on. Made once for a
   * connection and shared by its calls, until what it is made from changes.
   */
  private connectionInfo(conn: Conn): ConnectionInfo {
    const table = this.hostInterfaces();
    const made = conn.info as MadeConnectionInfo | undefined;
    if (made && made.sentAs === conn.sentAs && made.nat === conn.nat && made.iface === conn.iface && made.table === table) {
      // Its second call: from now on its records share one copy, whose JSON is made once.
      if (!made.shared) { made.info = sharedCopy(made.info); made.shared = true; }
      return made.info;
    }
    const info = this.makeConnectionInfo(conn);
    const next: MadeConnectionInfo = { info, sentAs: conn.sentAs, nat: conn.nat, iface: conn.iface, table, shared: false };
    conn.info = next;
    return info;
  }

  private makeConnectionInfo(conn: Conn): ConnectionInfo {
    const src = sourceOf(conn);
    const info: ConnectionInfo = {
      src, sport: conn.sentAs?.cport ?? conn.cport, dst: unmapV4(conn.server), dport: conn.sport,
      interface: this.interfaceOf(src, conn.iface),
      family: isIP(unmapV4(conn.client)) === 6 ? 'ipv6' : 'ipv4',
    };
    const out = conn.sentAs ? { client: conn.client, cport: conn.cport, iface: conn.iface } : conn.nat;
    if (out) {
      const natSrc = unmapV4(out.client);
      info.nat = { src: natSrc, sport: out.cport, interface: this.interfaceOf(natSrc, out.iface) };
    }
    return info;
  }

  private interfaceOf(addr: string, seenOn: string | null): string {
    return this.addressFacts(addr).iface ?? seenOn ?? 'any';
  }

  private hostAddress(addr: string): boolean {
    const facts = this.addressFacts(addr);
    facts.host ??= isHostAddress(addr, this.factsTable!);
    return facts.host;
  }

  /** What the host's interfaces say of an address, remembered while the table is the same one. */
  private addressFacts(addr: string): AddressFacts {
    const table = this.hostInterfaces();
    if (table !== this.factsTable) {
      this.factsTable = table;
      this.facts.clear();
    }
    let f = this.facts.get(addr);
    if (f === undefined) {
      f = { iface: interfaceFor(addr, table), host: undefined };
      if (this.facts.size >= ADDRESS_FACTS_SIZE) this.facts.clear();
      this.facts.set(addr, f);
    }
    return f;
  }

  // --- stage 6: the record (redacted, v1 reason, fitted by calls): self filter, counts, sink ----

  private record(rec: CallRecord): void {
    if (rec.process.pid === this.selfPid) {
      this.counters.self++; // the agent's own IMDS calls are not someone else's
      const alarm = this.counters.selfCalls.count(rec.imds_version, rec.request?.method ?? '', rec.request?.path ?? '');
      if (alarm) this.o.sink.error('self', alarm);
      return;
    }
    if (rec.process.attribution === 'none') this.counters.unattributed++;
    if (rec.process.attribution === 'none' && this.o.loaderDown?.(rec.process.reason)) this.counters.loaderGapUnattributed++;
    this.o.sink.write(rec);
  }

  // --- lifetime ---------------------------------------------------------------------------------

  /** Forget idle connections. */
  sweep(nowMs = this.now()): void {
    this.flows.sweep(nowMs);
  }

  /** Capture has ended: every connection closes and every call already seen is written. */
  async endOfCapture(): Promise<void> {
    this.timeline.closed(this.now()); // from here on, capture sees nothing
    this.flows.closeAll();
    await this.calls.flush();
  }

  /** Every record of a connection the kernel saw and the wire did not, already decided, is written (the agent stops). */
  async flushUnseen(): Promise<void> {
    await this.unseen.flush();
    this.unseen.end();
  }
}

/** The connection's client address as the caller sent it (connectionInfo's src). */
function sourceOf(conn: Conn): string {
  return unmapV4(conn.sentAs?.client ?? conn.client);
}

function tupleOf(conn: Conn): Tuple {
  return { client: conn.client, cport: conn.cport, server: conn.server, sport: conn.sport, isn: conn.clientIsn };
}

/** The host's interfaces, read again when older than 5 s. */
function cachedInterfaces(now: () => number): () => InterfaceTable {
  let table: InterfaceTable = {};
  let at = -Infinity;
  return () => {
    if (now() - at > 5000) {
      table = networkInterfaces();
      at = now();
    }
    return table;
  };
}
