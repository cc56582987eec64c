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
import { EbpfAttributor } from './attribution/ebpf.js';
import { unmapV4 } from './attribution/proc-parse.js';
import { captureFilter } from './capture/filter.js';
import { interfaceFor, type InterfaceTable } from './capture/interfaces.js';
import { openCapture, type PcapSource } from './capture/pcap.js';
import { nativeHelper, SupervisedCapture } from './capture/supervised.js';
import { InterfaceNames } from './capture/ifnames.js';
import type { CaptureStats } from './capture/framing.js';
import type { RecordWriter } from './output/writer.js';
import type { Attribution, CallRecord, ConnectionInfo, ProcessInfo, ReadyRecord, StatsRecord } from './record.js';
import { VERSION } from './paths.js';
import { SelfCalls } from './self-calls.js';

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
  readonly counts = { packets: 0, undecodable: 0, v1: 0, v2: 0, other: 0, unattributed: 0, self: 0, ambiguous: 0 };

  constructor(private readonly o: TracerOptions) {
    this.redactor = new Redactor(undefined, o.scrubWords ?? []);
    this.flows = new FlowTable({
      isServer: (addr, port) => port === DEFAULTS.imdsPort && this.servers.has(unmapV4(addr)),
      onOpen: (conn) => this.startAttribution(conn),
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
      onResponse: (conn, head, seq) => this.calls.response(conn, seq, head.status),
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
      attribution: (conn) => this.attributionFor(conn),
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
  }

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
    const p = this.attributor.lookup(this.tuple(conn), conn.openedAt);
    void p.finally(() => { this.earlyLookups--; });
    this.connAttr.set(conn.id, p);
  }

  private tuple(conn: Conn) {
    return { client: conn.client, cport: conn.cport, server: conn.server, sport: conn.sport };
  }

  /** The caller found at connect time; looked up again once if it was not found then. */
  private async attributionFor(conn: Conn): Promise<ProcessInfo> {
    const first = this.connAttr.get(conn.id);
    if (!this.attributor) return { attribution: 'none', reason: 'no attribution backend' };
    const info = first ? await first : null;
    if (info && (info.attribution !== 'none' || conn.closed)) return info;
    const again = this.attributor.lookup(this.tuple(conn), conn.openedAt);
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

  private connectionInfo(conn: Conn): ConnectionInfo {
    return {
      src: unmapV4(conn.client), sport: conn.cport, dst: unmapV4(conn.server), dport: conn.sport,
      interface: conn.iface ?? this.interfaceOf(conn.client),
      family: isIP(unmapV4(conn.client)) === 6 ? 'ipv6' : 'ipv4',
    };
  }

  private interfaceOf(addr: string): string {
    if (Date.now() - this.ifacesAt > 5000) {
      this.ifaces = networkInterfaces();
      this.ifacesAt = Date.now();
    }
    return interfaceFor(unmapV4(addr), this.ifaces) ?? 'any';
  }

  private emit(rec: CallRecord): void {
    if (rec.process.pid === process.pid) {
      this.counts.self++; // the agent's own IMDS calls are not someone else's
      const alarm = this.selfCalls.count(rec.imds_version, rec.request.method, rec.request.path);
      if (alarm) this.o.writer.error('self', alarm);
      return;
    }
    if (rec.process.attribution === 'none') this.counts.unattributed++;
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
    }
    Object.assign(st, this.o.statsExtra?.());
    return st;
  }

  /**
   * Stop capturing, write every call already seen, then the final stats (unless finalStats is
   * false: run.ts writes them itself after the CloudWatch exit flush, so they count its losses).
   */
  async stop(finalStats = true): Promise<void> {
    for (const t of this.timers) clearInterval(t);
    await this.capture?.close();
    this.capture = null;
    this.flows.closeAll();
    await this.calls.flush();
    await this.ebpf?.stop();
    if (finalStats) this.o.writer.write(this.stats());
  }
}

function round2(n: number): number {
  return Math.round(n * 100) / 100;
}
