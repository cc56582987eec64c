/**
 * The agent: capture → TCP/HTTP → classification → attribution → records. Wiring only; each stage
 * lives in its own module.
 */
import { networkInterfaces } from 'node:os';
import { isIP } from 'node:net';
import { DEFAULTS, type Backend } from './defaults.js';
import { decodeFrame, linkIfindex } from './wire/packet.js';
import { FlowTable, type Conn } from './wire/flows.js';
import { classify } from './classify.js';
import { Redactor } from './redact.js';
import { PendingCalls } from './calls.js';
import { ProcAttributor, type Attributor } from './attribution/proc.js';
import { EbpfAttributor, LOADER_DOWN_REASON } from './attribution/ebpf.js';
import { unmapV4 } from './attribution/proc-parse.js';
import { captureFilter } from './capture/filter.js';
import { interfaceFor, isHostAddress, type InterfaceTable } from './capture/interfaces.js';
import { openCapture, type PcapSource } from './capture/pcap.js';
import { nativeHelper, SupervisedCapture } from './capture/supervised.js';
import { InterfaceNames } from './capture/ifnames.js';
import type { CaptureStats } from './capture/framing.js';
import { CaptureTimeline } from './capture/timeline.js';
import { UnseenCalls } from './unseen.js';
import type { RecordWriter } from './output/writer.js';
import type { Attribution, CallRecord, ConnectionInfo, ProcessInfo, ReadyRecord, StatsRecord } from './record.js';
import { VERSION } from './paths.js';
import { SelfCalls } from './self-calls.js';
import { ContainerNames, namesOptions } from './names/resolver.js';

export interface TracerOptions {
  device: string;
  includeV2: boolean;
  includeOther: boolean;
  backend: Backend;
  ancestors: number;
  logFile: string | null;
  statsIntervalMs: number;
  writer: RecordWriter;
  /** More stats fields from outside the tracer (own CPU/RSS, log rotation, CloudWatch). */
  statsExtra?: () => Partial<StatsRecord>;
  /** Scrub words added to the defaults (`--scrub-word`). */
  scrubWords?: string[];
}

export class Tracer {
  private capture: PcapSource | null = null;
  private readonly flows: FlowTable;
  private readonly calls: PendingCalls;
  private readonly redactor: Redactor;
  private readonly selfCalls = new SelfCalls();
  private attributor: Attributor | null = null;
  private attributionKind: Attribution = 'none';
  private readonly connAttr = new Map<number, Promise<ProcessInfo>>();
  private ifaces: InterfaceTable = {};
  private ifacesAt = 0;
  private readonly timers: NodeJS.Timeout[] = [];
  private readonly startedAt = Date.now();
  private readonly servers = new Set<string>([...DEFAULTS.imdsIPv4, ...DEFAULTS.imdsIPv6]);
  readonly counts = { packets: 0, undecodable: 0, v1: 0, v2: 0, other: 0, unattributed: 0, self: 0, ambiguous: 0, loaderGapUnattributed: 0 };
  /** When capture could not see (gaps, drops), and the calls the kernel saw that the wire did not. */
  private readonly timeline = new CaptureTimeline();
  private readonly unseen: UnseenCalls;

  constructor(private readonly o: TracerOptions) {
    this.redactor = new Redactor(undefined, o.scrubWords ?? []);
    this.flows = new FlowTable({
      isServer: (addr, port) => port === DEFAULTS.imdsPort && this.servers.has(unmapV4(addr)),
      onOpen: (conn) => {
        this.ebpf?.wireSeen(this.tuple(conn), conn.openedAt, conn);
        this.startAttribution(conn);
      },
      onRequest: (conn, head, seq, ts) => {
        const cls = classify(head);
        if (cls.imdsVersion === 'v1') this.counts.v1++;
        else if (cls.imdsVersion === 'v2') this.counts.v2++;
        else this.counts.other++;
        if (head.ambiguity) this.counts.ambiguous++;
        const write = this.wanted(cls.imdsVersion);
        if (!write) this.countIfSelf(conn, cls.imdsVersion);
        // AWS requests not written are still tracked: token requests (to explain a later IMDSv1 call),
        // and any of them may yet turn out ambiguous (onAmbiguity) and so IMDSv1.
        if (write || cls.provider === 'aws') this.calls.add(conn, head, seq, cls, new Date(ts), write);
      },
      onAmbiguity: (conn, seq, why) => {
        const change = this.calls.amend(conn, seq, why, (v) => this.wanted(v));
        if (!change) return;
        if (change.first) this.counts.ambiguous++;
        const key = (v: 'v1' | 'v2' | null): 'v1' | 'v2' | 'other' => v ?? 'other';
        this.counts[key(change.before.imdsVersion)]--;
        this.counts[key(change.after.imdsVersion)]++;
      },
      onResponse: (conn, head, seq, _ts, ttl) => this.calls.response(conn, seq, head.status, ttl),
      onClose: (conn) => {
        this.calls.closed(conn);
        setTimeout(() => this.connAttr.delete(conn.id), DEFAULTS.attributionWaitMs).unref();
      },
      onSecret: (v) => this.redactor.addSecret(v),
    }, DEFAULTS);
    this.calls = new PendingCalls({
      responseWaitMs: DEFAULTS.responseWaitMs,
      attributionWaitMs: DEFAULTS.attributionWaitMs,
      maxPending: DEFAULTS.maxPendingCalls,
      redact: (s) => this.redactor.text(s),
      redactArgv: (a) => this.redactor.argv(a),
      connection: (conn) => this.connectionInfo(conn),
      isLocalAddress: (src) => isHostAddress(src, this.interfaceTable()),
      attribution: (conn) => this.attributionFor(conn).then((p) => this.names.enrich(p)),
      emit: (rec) => this.emit(rec),
    });
    this.unseen = new UnseenCalls({
      burst: DEFAULTS.unseenRecordBurst, perMinute: DEFAULTS.unseenRecordsPerMinute,
      reasonAt: (at) => this.timeline.reasonAt(at),
      reasonDuring: (at) => this.timeline.reasonDuring(at, at + DEFAULTS.joinWindowMs),
      connection: (e) => ({
        src: e.saddr, sport: e.sport, dst: e.daddr, dport: e.dport, interface: this.interfaceOf(e.saddr, null),
        family: e.family === 6 ? 'ipv6' : 'ipv4',
      }),
      redact: (s) => this.redactor.text(s), redactArgv: (a) => this.redactor.argv(a),
      selfPid: process.pid, onSelf: () => { this.counts.self++; },
      unreachable: (e) => this.ebpf?.unreachable(e.netnsIno) ?? false,
      emit: (rec) => this.emit(rec),
    });
  }

  private wanted(v: 'v1' | 'v2' | null): boolean {
    return v === 'v1' || (v === 'v2' && this.o.includeV2) || (v === null && this.o.includeOther);
  }

  async start(): Promise<void> {
    await this.startAttributor();
    const filter = captureFilter(DEFAULTS.imdsIPv4, DEFAULTS.imdsIPv6, DEFAULTS.imdsPort);
    this.capture = await this.openCapture(filter);
    this.timers.push(setInterval(() => this.flows.sweep(Date.now()), 10_000));
    if (this.o.statsIntervalMs > 0) {
      this.timers.push(setInterval(() => this.o.writer.write(this.stats()), this.o.statsIntervalMs));
    }
    const ready: ReadyRecord = {
      event: 'ready', time: new Date().toISOString(), version: VERSION, pid: process.pid,
      interface: this.o.device, link_type: this.capture.linkType, capture: this.captureKind,
      backend: this.attributionKind,
      include_v2: this.o.includeV2, log_file: this.o.logFile,
      startup_ms: Math.round(process.uptime() * 1000),
    };
    if (this.backendReason) ready.backend_reason = this.backendReason;
    if (this.ebpf) ready.ebpf = { load_ms: round2(this.ebpf.loadMs), attach_ms: round2(this.ebpf.attachMs) };
    this.o.writer.write(ready);
    if (this.o.device !== 'any' && this.attributionKind === 'proc') {
      this.o.writer.notice('capture', `capturing on ${this.o.device} alone with the /proc backend: a connection NATed `
        + `before ${this.o.device} (a container on a bridge) cannot be traced to its caller, whose socket has another `
        + `4-tuple; it is reported with attribution none. Capture on any, or use the eBPF backend, to name it`);
    }
  }

  /** Container names (Docker, the kubelet, the ECS agent), cached. */
  private readonly names = new ContainerNames(namesOptions());
  private backendReason: string | undefined;
  private captureKind: 'helper' | 'cap' | 'cap-worker' = 'cap';
  private pcapStats: CaptureStats | null = null;
  private readonly ifnames = new InterfaceNames();
  private earlyLookups = 0;
  private ebpf: EbpfAttributor | null = null;

  /** eBPF when asked or possible; /proc otherwise, saying why. */
  private async startAttributor(): Promise<void> {
    const proc = new ProcAttributor(this.o.ancestors);
    if (this.o.backend !== 'proc') {
      try {
        this.ebpf = await EbpfAttributor.start({
          ancestors: this.o.ancestors, joinWindowMs: DEFAULTS.joinWindowMs, joinWaitMs: DEFAULTS.joinWaitMs,
          maxEvents: DEFAULTS.maxPendingJoins, fallback: proc,
          targets: { ipv4: [...DEFAULTS.imdsIPv4], ipv6: [...DEFAULTS.imdsIPv6], ports: [DEFAULTS.imdsPort] },
          loaderPath: process.env.IMDS_TRACER_EBPF_LOADER || undefined,
          netnsFilter: process.env.IMDS_TRACER_EBPF_ALL_NETNS !== '1',
          onError: (m) => this.o.writer.error('ebpf', m),
          onInfo: (m) => this.o.writer.notice('ebpf', m),
          onUnseen: (e, at, kind, proc) => this.unseen.handle(e, at, kind, proc),
        });
        this.attributor = this.ebpf;
        this.attributionKind = 'ebpf';
        return;
      } catch (err) {
        const why = (err as Error).message;
        if (this.o.backend === 'ebpf') throw new Error(`the eBPF backend cannot start: ${why}`);
        this.backendReason = `eBPF unavailable (${why}); attributing through /proc`;
      }
    }
    this.attributor = proc;
    this.attributionKind = 'proc';
  }

  /**
   * The native helper (native/imds_capture) when built: bursts absorbed, drops counted, interfaces
   * named, and a lost interface only restarts it. Otherwise the `cap` binding: in process for `any`,
   * through a supervised worker for a named interface (the binding aborts when its interface goes).
   */
  private async openCapture(filter: string): Promise<PcapSource> {
    const helper = nativeHelper();
    const onFrame = (frame: Buffer, link: string, tsUs?: number): void => this.onFrame(frame, link, tsUs);
    if (!helper && this.o.device === 'any') {
      this.captureKind = 'cap';
      return openCapture(this.o.device, filter, DEFAULTS.pcapBufferBytes, onFrame);
    }
    this.captureKind = helper ? 'helper' : 'cap-worker';
    return SupervisedCapture.open({
      device: this.o.device, filter, bufferBytes: DEFAULTS.pcapBufferBytes, helper, onFrame,
      onStats: (st) => { this.pcapStats = st; },
      onDown: (at, lostFrom) => this.timeline.down(at, lostFrom), onUp: (at) => { this.timeline.up(at); },
      onDrops: (from, to) => this.timeline.dropped(from, to),
      onError: (m) => this.o.writer.error('capture', m), onNotice: (m) => this.o.writer.notice('capture', m),
    });
  }

  private onFrame(frame: Buffer, link: string, tsUs?: number): void {
    this.counts.packets++;
    const seg = decodeFrame(link, frame);
    if (!seg) {
      this.counts.undecodable++;
      return;
    }
    const ifindex = linkIfindex(link, frame);
    const iface = this.o.device !== 'any' ? this.o.device : ifindex === null ? null : this.ifnames.name(ifindex);
    this.flows.handle(seg, tsUs === undefined ? Date.now() : tsUs / 1000, iface);
  }

  /** Look the caller up at connect time, while it surely lives; bounded, so a SYN flood cannot pile up lookups. */
  private startAttribution(conn: Conn): void {
    if (!this.attributor || this.earlyLookups >= DEFAULTS.maxEarlyLookups) return;
    this.earlyLookups++;
    const p = this.lookup(conn);
    void p.finally(() => { this.earlyLookups--; });
    this.connAttr.set(conn.id, p);
  }

  private tuple(conn: Conn) {
    return { client: conn.client, cport: conn.cport, server: conn.server, sport: conn.sport, isn: conn.clientIsn };
  }

  /** The caller of conn; with eBPF, a connection joined by its ISN (NAT) learns the 4-tuple it was sent with. */
  private lookup(conn: Conn, again = false): Promise<ProcessInfo> {
    if (!this.ebpf || this.attributor !== this.ebpf) return this.attributor!.lookup(this.tuple(conn), conn.openedAt);
    return this.ebpf.lookupJoined(this.tuple(conn), conn.openedAt, !again).then((r) => {
      if (r.sent) conn.sentAs = r.sent;
      return r.process;
    });
  }

  /** The caller found at connect time; looked up again once if it was not found then. */
  private async attributionFor(conn: Conn): Promise<ProcessInfo> {
    const first = this.connAttr.get(conn.id);
    if (!this.attributor) return { attribution: 'none', reason: 'no attribution backend' };
    const info = first ? await first : null;
    if (info && (info.attribution !== 'none' || conn.closed)) return info;
    // A second look does not wait for the kernel event again; a first one (no early lookup: the bound
    // on lookups at SYN time was reached, e.g. during a SYN flood) does.
    const again = this.lookup(conn, first !== undefined);
    this.connAttr.set(conn.id, again);
    return again;
  }

  /**
   * A request that is not written (IMDSv2 without --include-v2) still counts in calls_self_v1/v2
   * when it was the agent's own: from the caller found at connect time, no new lookup.
   */
  private countIfSelf(conn: Conn, version: 'v1' | 'v2' | null): void {
    const found = this.connAttr.get(conn.id);
    if (!found || version === null) return;
    void found.then((p) => {
      if (p.pid === process.pid) this.selfCalls.count(version, '', '');
    });
  }

  /**
   * The connection as the caller sent it (before NAT: from the wire when the capture saw it there,
   * else from the kernel event joined by ISN), and how it left the host when it was NATed.
   * `interface` is the host interface on the caller's side: the one holding src (its address, else
   * its subnet: the bridge of a container), else the one the request was seen on.
   */
  private connectionInfo(conn: Conn): ConnectionInfo {
    const src = unmapV4(conn.sentAs?.client ?? conn.client);
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

  private interfaceTable(): InterfaceTable {
    if (Date.now() - this.ifacesAt > 5000) {
      this.ifaces = networkInterfaces();
      this.ifacesAt = Date.now();
    }
    return this.ifaces;
  }

  private interfaceOf(addr: string, seenOn: string | null): string {
    return interfaceFor(addr, this.interfaceTable()) ?? seenOn ?? 'any';
  }

  private emit(rec: CallRecord): void {
    if (rec.process.pid === process.pid) {
      this.counts.self++; // the agent's own IMDS calls are not someone else's
      const alarm = this.selfCalls.count(rec.imds_version, rec.request?.method ?? '', rec.request?.path ?? '');
      if (alarm) this.o.writer.error('self', alarm);
      return;
    }
    if (rec.process.attribution === 'none') this.counts.unattributed++;
    if (rec.process.attribution === 'none' && rec.process.reason?.startsWith(LOADER_DOWN_REASON)) this.counts.loaderGapUnattributed++;
    this.o.writer.write(rec);
  }

  stats(): StatsRecord {
    const f = this.flows.stats;
    const st: StatsRecord = {
      event: 'stats', time: new Date().toISOString(),
      uptime_s: Math.round((Date.now() - this.startedAt) / 1000),
      packets: this.counts.packets, packets_undecodable: this.counts.undecodable,
      flows_open: this.flows.size, flows_evicted: f.flowsEvicted, nat_duplicates: f.natDuplicates,
      http_malformed: f.malformed, tcp_gaps: f.gaps, buffered_bytes: f.bufferedBytes,
      calls: { v1: this.counts.v1, v2: this.counts.v2, other: this.counts.other },
      calls_unattributed: this.counts.unattributed, calls_dropped: this.calls.forced,
      records_written: this.o.writer.written, write_errors: this.o.writer.writeErrors,
      calls_self: this.counts.self,
      calls_self_v1: this.selfCalls.v1, calls_self_v2: this.selfCalls.v2,
      calls_ambiguous: this.counts.ambiguous, tcp_overlap_conflicts: f.overlapConflicts, tcp_urgent: f.urgent,
      capture_gaps: this.timeline.gapCount(), capture_gap_ms: this.timeline.gapMs(Date.now()),
    };
    if (this.pcapStats) st.pcap = {
      received: this.pcapStats.received, dropped: this.pcapStats.dropped + this.pcapStats.queueDropped,
      if_dropped: this.pcapStats.ifDropped,
    };
    if (this.ebpf) {
      const c = this.ebpf.counters;
      st.kernel = { loaded: this.ebpf.loaded, events: c.events, events_lost: c.lost, joined: c.joined,
        proc_fallbacks: c.fallbacks, loader_restarts: c.restarts, events_evicted: this.ebpf.joinsEvicted,
        events_filtered: c.filtered, events_over_budget: c.overBudget, netns_filtered: this.ebpf.netnsFiltered,
        sources_over_budget: this.ebpf.sourcesOverBudget };
      const g = this.ebpf.gapTotals();
      Object.assign(st.kernel, { loader_gaps: g.gaps, loader_gap_ms: g.gapMs, loader_gap_unattributed: this.counts.loaderGapUnattributed });
      st.calls_unseen = { ...this.unseen.counts };
      st.calls_unseen_unrecorded = this.unseen.unrecorded;
      st.calls_unseen_filtered = this.unseen.filtered;
    }
    Object.assign(st, this.o.statsExtra?.());
    return st;
  }

  /**
   * Stop capturing, write every call already seen; then every connection the kernel saw that the
   * wire did not (capture has handed over all it had), then the final stats (unless finalStats is
   * false: run.ts writes them itself after the CloudWatch exit flush, so they count its losses).
   */
  async stop(finalStats = true): Promise<void> {
    for (const t of this.timers) clearInterval(t);
    await this.capture?.close();
    this.capture = null;
    this.timeline.closed(Date.now()); // from here on, capture sees nothing
    this.flows.closeAll();
    await this.calls.flush();
    await this.ebpf?.stop();
    this.ebpf?.drainUnseen();
    await this.unseen.flush();
    if (finalStats) this.o.writer.write(this.stats());
  }
}

function round2(n: number): number {
  return Math.round(n * 100) / 100;
}
