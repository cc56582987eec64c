/**
 * The agent's lifecycle: start attribution (eBPF, else /proc) and capture, feed every captured frame
 * to the pipeline (pipeline/pipeline.ts, where a frame becomes a record), write stats on a timer,
 * and stop in order. No packet logic lives here.
 */
import { DEFAULTS, type Backend } from './defaults.js';
import { ProcAttributor } from './attribution/proc/attributor.js';
import { EbpfAttributor, LOADER_DOWN_REASON } from './attribution/ebpf/attributor.js';
import { captureFilter } from './capture/filter.js';
import { openCapture, type PcapSource } from './capture/pcap.js';
import { nativeHelper, SupervisedCapture } from './capture/supervised.js';
import type { CaptureStats } from './capture/framing.js';
import type { RecordWriter } from './output/writer.js';
import type { Attribution, ReadyRecord, StatsRecord } from './record.js';
import { VERSION } from './paths.js';
import { Pipeline } from './pipeline/pipeline.js';
import { buildStats } from './pipeline/stats.js';
import { ContainerNames, namesOptions } from './names/resolver.js';
import { OwnSockets } from './self/own-sockets.js';
import { unmapV4 } from './net.js';

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
  private readonly pipeline: Pipeline;
  private attributionKind: Attribution = 'none';
  private readonly timers: NodeJS.Timeout[] = [];
  private readonly startedAt = Date.now();

  constructor(private readonly o: TracerOptions) {
    this.pipeline = new Pipeline({
      device: o.device, includeV2: o.includeV2, includeOther: o.includeOther, scrubWords: o.scrubWords,
      sink: o.writer, loaderDown: (reason) => reason?.startsWith(LOADER_DOWN_REASON) ?? false,
      enrich: (p) => this.names.enrich(p),
      enrichNow: (p) => this.names.enrichNow(p),
      ownConnection: (t, openedAt) => this.own.has(t, openedAt),
    });
  }

  /** The pipeline's counters (packets, calls by version, self, ...). */
  get counts() {
    return this.pipeline.counters;
  }

  async start(): Promise<void> {
    this.pipeline.useAttributor(await this.startAttributor(), this.ebpf);
    const filter = captureFilter(DEFAULTS.imdsIPv4, DEFAULTS.imdsIPv6, DEFAULTS.imdsPort);
    try {
      this.capture = await this.openCapture(filter);
    } catch (err) {
      for (const say of this.beforeReady.splice(0)) say(); // tracing will not start: say what was seen
      throw err;
    }
    this.timers.push(setInterval(() => this.pipeline.sweep(Date.now()), 10_000));
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
    for (const say of this.beforeReady.splice(0)) say();
    this.isReady = true;
    if (this.o.device !== 'any' && this.attributionKind === 'proc') {
      this.o.writer.notice('capture', `capturing on ${this.o.device} alone with the /proc backend: a connection NATed `
        + `before ${this.o.device} (a container on a bridge) cannot be traced to its caller, whose socket has another `
        + `4-tuple; it is reported with attribution none. Capture on any, or use the eBPF backend, to name it`);
    }
  }

  /** The `ready` record is the first: components' errors and notices from before it wait for it. */
  private isReady = false;
  private readonly beforeReady: Array<() => void> = [];
  private afterReady(say: () => void): void {
    if (this.isReady) say();
    else if (this.beforeReady.length < 100) this.beforeReady.push(say);
  }

  /** The agent's own connections to the metadata service, known by their 4-tuple (no attribution). */
  private readonly own = new OwnSockets((addr, port) => port === DEFAULTS.imdsPort
    && ([...DEFAULTS.imdsIPv4, ...DEFAULTS.imdsIPv6] as string[]).includes(unmapV4(addr)), DEFAULTS.ownSocketKeepMs).watch();
  /** Container names (Docker, the kubelet, the ECS agent), cached. */
  private readonly names = new ContainerNames(namesOptions());
  private backendReason: string | undefined;
  private captureKind: 'helper' | 'cap' | 'cap-worker' = 'cap';
  private pcapStats: CaptureStats | null = null;
  private ebpf: EbpfAttributor | null = null;

  /** eBPF when asked or possible; /proc otherwise, saying why. */
  private async startAttributor(): Promise<ProcAttributor | EbpfAttributor> {
    const proc = new ProcAttributor(this.o.ancestors);
    if (this.o.backend !== 'proc') {
      try {
        this.ebpf = await EbpfAttributor.start({
          ancestors: this.o.ancestors, joinWindowMs: DEFAULTS.joinWindowMs, joinWaitMs: DEFAULTS.joinWaitMs,
          maxEvents: DEFAULTS.maxPendingJoins, fallback: proc,
          targets: { ipv4: [...DEFAULTS.imdsIPv4], ipv6: [...DEFAULTS.imdsIPv6], ports: [DEFAULTS.imdsPort] },
          loaderPath: process.env.IMDS_TRACER_EBPF_LOADER || undefined,
          netnsFilter: process.env.IMDS_TRACER_EBPF_ALL_NETNS !== '1',
          onError: (m) => this.afterReady(() => this.o.writer.error('ebpf', m)),
          onInfo: (m) => this.afterReady(() => this.o.writer.notice('ebpf', m)),
          onUnseen: (e, at, kind, proc, until) => this.pipeline.pushUnseen(e, at, kind, proc, until),
        });
        this.attributionKind = 'ebpf';
        return this.ebpf;
      } catch (err) {
        const why = (err as Error).message;
        if (this.o.backend === 'ebpf') throw new Error(`the eBPF backend cannot start: ${why}`);
        this.backendReason = `eBPF unavailable (${why}); attributing through /proc`;
      }
    }
    this.attributionKind = 'proc';
    return proc;
  }

  /**
   * The native helper (native/imds_capture) when built: bursts absorbed, drops counted, interfaces
   * named, and a lost interface only restarts it. Otherwise the `cap` binding: in process for `any`,
   * through a supervised worker for a named interface (the binding aborts when its interface goes).
   */
  private async openCapture(filter: string): Promise<PcapSource> {
    const helper = nativeHelper();
    const onFrame = (frame: Buffer, link: string, tsUs?: number): void => this.pipeline.push(frame, link, tsUs);
    if (!helper && this.o.device === 'any') {
      this.captureKind = 'cap';
      return openCapture(this.o.device, filter, DEFAULTS.pcapBindingBufferBytes, onFrame);
    }
    this.captureKind = helper ? 'helper' : 'cap-worker';
    return SupervisedCapture.open({
      device: this.o.device, filter, bufferBytes: helper ? DEFAULTS.pcapBufferBytes : DEFAULTS.pcapBindingBufferBytes, helper, onFrame,
      onStats: (st) => { this.pcapStats = st; },
      onDown: (at, lostFrom) => this.pipeline.timeline.down(at, lostFrom), onUp: (at) => { this.pipeline.timeline.up(at); },
      onDrops: (from, to) => this.pipeline.timeline.dropped(from, to),
      onError: (m) => this.afterReady(() => this.o.writer.error('capture', m)),
      onNotice: (m) => this.afterReady(() => this.o.writer.notice('capture', m)),
    });
  }

  stats(): StatsRecord {
    return buildStats({
      pipeline: this.pipeline, nowMs: Date.now(), startedAt: this.startedAt, writer: this.o.writer,
      pcap: this.pcapStats, ebpf: this.ebpf, extra: this.o.statsExtra?.(),
    });
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
    await this.pipeline.endOfCapture();
    await this.ebpf?.stop();
    await this.ebpf?.drainUnseen();
    await this.pipeline.flushUnseen();
    if (finalStats) this.o.writer.write(this.stats());
    this.own.stop();
  }
}

function round2(n: number): number {
  return Math.round(n * 100) / 100;
}
