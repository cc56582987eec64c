/**
 * eBPF attribution: the kernel program names the caller of every connection to the IMDS at connect
 * time; events are joined to wire connections by 4-tuple within a window (an event that arrives a
 * little after the packets still joins), or, for a connection NATed before the capture point, by
 * destination and initial sequence number. A connection with no event (it began before the agent, or
 * the loader is down) is looked up through /proc instead, and says why — naming the loader's gap when
 * the connection fell in one. If the loader dies it is restarted at once (with backoff only while
 * restarts keep failing), and the gap is reported. Events that no wire connection joined are handed
 * to onUnseen (join.ts), with their process.
 *
 * Guards in the kernel (counted in stats.kernel): network namespaces the capture cannot see are
 * filtered (netns-reach.ts judges them), and every source (network namespace + cgroup) has a
 * budget of events, so a flood from one cannot evict everyone else's events.
 */
import { HelperRestarts } from '../../helper-process.js';
import { DEFAULTS } from '../../defaults.js';
import { LossSpell } from '../../loss-spell.js';
import { startEbpfSource, type EbpfSource } from './loader.js';
import type { ConnectEvent, SourceDrops } from './events.js';
import { NetnsReach, ownNetnsInode } from './netns-reach.js';
import type { ProcessInfo } from '../../record.js';
import { CgroupPaths } from './cgroup-paths.js';
import { AncestorCache, CgroupFacts, LastProcess, processFromEvent } from './process.js';
import { JoinTable, noEventReason, sameAddr, sameTuple, type UnseenKind, type WireView } from './join.js';
import type { Attributor, Tuple } from '../attributor.js';
import { UserNames } from '../proc/process.js';

export interface EbpfAttributorOptions {
  ancestors: number;
  joinWindowMs: number;
  /** How long a connection waits for its kernel event before /proc is asked. */
  joinWaitMs: number;
  maxEvents: number;
  targets: { ipv4: string[]; ipv6: string[]; ports: number[] };
  /** The loader binary (default: bpf/.output/imds_connect of this installation). */
  loaderPath?: string;
  fallback: Attributor;
  onError(message: string): void;
  onInfo(message: string): void;
  /** A connection the kernel saw that the wire did not show (or showed without a request). */
  onUnseen?(e: ConnectEvent, atMs: number, kind: UnseenKind, process: Promise<ProcessInfo>, untilMs?: number): void;
  /** Filter, in the kernel, network namespaces the capture cannot see (default true). */
  netnsFilter?: boolean;
  /** Kernel budget per source; defaults: DEFAULTS.ebpfBudgetRate / ebpfBudgetBurst (rate 0: none). */
  budgetRate?: number;
  budgetBurst?: number;
  netnsRefreshMs?: number;
  /** Lost events are said to have stopped (a notice with their count) once none is lost for this long. */
  lossQuietMs?: number;
}

/** How the reason of a call that /proc could not name while the loader was down begins. */
export const LOADER_DOWN_REASON = 'eBPF loader down';

/** A lookup's answer, and the 4-tuple the caller's kernel saw when it differs from the wire's (NAT). */
export interface EbpfLookup {
  process: ProcessInfo;
  sent: { client: string; cport: number } | null;
}

export interface EbpfCounters {
  events: number;
  lost: number;
  joined: number;
  fallbacks: number;
  restarts: number;
  /** Kernel: target connections from a filtered network namespace, and over their source's budget. */
  filtered: number;
  overBudget: number;
}

/** A source over its budget or that lost events, as stats.kernel reports it. */
export interface SourceOverBudget {
  netns_ino: number;
  cgroup_id: string;
  /** the cgroup's path when known */
  cgroup: string | null;
  dropped: number;
  /** its events lost in the kernel (ring buffer full) */
  lost: number;
}

export class EbpfAttributor implements Attributor {
  private source: EbpfSource | null = null;
  /** Kernel events waiting to be joined, each with its process description (read when it came). */
  private readonly table: JoinTable<ConnectEvent, Promise<ProcessInfo>>;
  /** Connections waiting for their kernel event: by client port, and by ISN (a NATed connection's event). */
  private readonly waiters = new Map<number, Waiter[]>();
  private readonly isnWaiters = new Map<number, Waiter[]>();
  private readonly users = new UserNames();
  private readonly cgroups = new CgroupPaths();
  private readonly parents = new AncestorCache();
  private readonly facts = new CgroupFacts();
  /** The last event's process description, shared with the next events of the same caller. */
  private readonly lastProcess = new LastProcess();
  private sweepTimer: NodeJS.Timeout;
  /** A restart under way (stop() waits for it, then stops what it started). */
  private restarting: Promise<void> = Promise.resolve();
  /** Restarts: at once after a loader that ran for a while, with growing delays while they keep failing. */
  private readonly restartsDue = new HelperRestarts(1000, 60_000, 10_000, true);
  private attachedAt = 0;
  private lastFailure = '';
  private stopped = false;
  private lostBase = 0;
  /** The running loader's last reading of its lost count, and when it came. */
  private lostReading = { at: 0, lost: 0 };
  /** Kernel events lost: one error when the count starts to grow, one notice when it stops. */
  private readonly losses: LossSpell;
  /** When the loader was down (bounded): a connection in one of these had no kernel event to find. */
  private readonly downs: Array<{ from: number; to: number | null }> = [];
  private gapsEnded = 0;
  private gapEndedMs = 0;
  private filteredBase = 0;
  private overBudgetBase = 0;
  private topSources: SourceDrops[] = [];
  private readonly reach: NetnsReach | null;
  private reachTimer: NodeJS.Timeout | null = null;
  readonly counters: EbpfCounters = {
    events: 0, lost: 0, joined: 0, fallbacks: 0, restarts: 0, filtered: 0, overBudget: 0,
  };
  loadMs = 0;
  attachMs = 0;

  private constructor(private readonly o: EbpfAttributorOptions) {
    const own = ownNetnsInode();
    this.table = new JoinTable<ConnectEvent, Promise<ProcessInfo>>(o.joinWindowMs, o.maxEvents, own,
      (e, at, kind, proc, until) => this.unseen(e, at, kind, proc, until));
    this.sweepTimer = setInterval(() => this.table.sweep(Date.now()), o.joinWindowMs / 2);
    this.sweepTimer.unref();
    this.losses = new LossSpell({
      quietMs: o.lossQuietMs ?? DEFAULTS.lossQuietMs,
      began: () => o.onError('kernel connect events are being lost (the kernel ring buffer or the eBPF loader\'s queue is full): '
        + 'callers of new IMDS connections are looked up through /proc instead, and one that has already exited is unnamed '
        + '(counted in stats.kernel.events_lost)'),
      ended: (lost, fromMs, toMs, stopped) => o.onInfo(`${stopped ? 'eBPF attribution stopped' : 'kernel connect events are no longer lost'}: `
        + `${lost} were lost between ${new Date(fromMs).toISOString()} and ${new Date(toMs).toISOString()}`),
    });
    this.reach = own !== null && o.netnsFilter !== false
      ? new NetnsReach(own, {
        max: DEFAULTS.maxNetns,
        onVerdict: (ino, v) => { this.source?.setNetnsVerdict(ino, v); },
        onError: (m) => this.o.onError(`network namespaces: ${m}`),
      })
      : null;
  }

  /** Judge every namespace now and then; the first pass starts at once. */
  private startReach(): void {
    if (!this.reach || this.reachTimer) return;
    const tick = (): Promise<void> => (this.reach?.refresh() ?? Promise.resolve())
      .catch((err) => this.o.onError(`network namespaces: ${(err as Error).message}`));
    void tick().then(() => {
      if (!this.reach || this.stopped) return;
      this.o.onInfo(`network namespaces judged: ${this.reach.verdicts.size}, of which ${this.netnsFiltered} `
        + 'not reachable from this namespace\'s interfaces (their IMDS connections are filtered in the kernel)');
    });
    this.reachTimer = setInterval(tick, this.o.netnsRefreshMs ?? DEFAULTS.netnsRefreshMs);
    this.reachTimer.unref();
  }

  /** Network namespaces judged unreachable (their connections are filtered in the kernel). */
  get netnsFiltered(): number {
    let n = 0;
    for (const v of this.reach?.verdicts.values() ?? []) if (v === 'drop') n++;
    return n;
  }

  /**
   * The sources with the most events not traced, budget drops and kernel losses together (of the
   * running loader), with their cgroup path when known.
   */
  get sourcesOverBudget(): SourceOverBudget[] {
    return this.topSources.map((s) => ({
      netns_ino: s.netnsIno, cgroup_id: s.cgroupId, cgroup: this.cgroups.cached(s.cgroupId), dropped: s.dropped,
      lost: s.lost,
    }));
  }

  /** Load and attach the program; rejects with the reason when it cannot. */
  static async start(o: EbpfAttributorOptions): Promise<EbpfAttributor> {
    const a = new EbpfAttributor(o);
    try {
      await a.attach();
    } catch (err) {
      clearInterval(a.sweepTimer);
      throw err;
    }
    return a;
  }

  private async attach(): Promise<void> {
    const keep: number[] = [];
    const drop: number[] = [];
    for (const [ino, v] of this.reach?.verdicts ?? []) (v === 'keep' ? keep : drop).push(ino);
    const src = await startEbpfSource({
      ...this.o.targets, binaryPath: this.o.loaderPath,
      netnsFilter: this.reach !== null, keepNetns: keep, dropNetns: drop,
      ...budgetFromEnv(process.env.IMDS_TRACER_EBPF_BUDGET, this.o.budgetRate ?? DEFAULTS.ebpfBudgetRate,
        this.o.budgetBurst ?? DEFAULTS.ebpfBudgetBurst),
    });
    if (this.stopped) {
      // stop() came while this (re)start was under way: a loader left running would keep the agent alive.
      await src.stop();
      throw new Error('stopped while starting');
    }
    this.source = src;
    this.loadMs = src.loadMs;
    this.attachMs = src.attachMs;
    this.attachedAt = Date.now();
    this.lostBase = this.counters.lost;
    this.lostReading = { at: Date.now(), lost: 0 };
    this.filteredBase = this.counters.filtered;
    this.overBudgetBase = this.counters.overBudget;
    this.topSources = [];
    src.on('event', (e) => this.onEvent(e, src));
    src.on('stats', (s) => {
      const now = Date.now();
      this.losses.grew(s.lost - this.lostReading.lost, this.lostReading.at, now);
      this.lostReading = { at: now, lost: s.lost };
      this.counters.lost = this.lostBase + s.lost;
      this.counters.filtered = this.filteredBase + s.filtered;
      this.counters.overBudget = this.overBudgetBase + s.overBudget;
      this.topSources = s.topSources;
    });
    this.startReach();
    src.on('warning', (line) => this.o.onInfo(`eBPF loader: ${line}`));
    src.once('exit', (_code, reason) => this.onExit(src, reason));
  }

  private onEvent(e: ConnectEvent, src: EbpfSource): void {
    this.counters.events++;
    // A namespace not judged yet (made since the last pass): judge it now, while its caller lives.
    if (this.reach && !this.reach.verdicts.has(e.netnsIno)) void this.reach.judge(e.netnsIno, e.tgid);
    const at = src.monoToEpochMs(e.tsSynNs);
    // Read /proc now, while the caller may still be alive.
    this.table.add(e, at, processFromEvent(e, this.o.ancestors, this.users, this.cgroups, at, this.parents, this.facts, this.lastProcess));
    if (this.waiters.size === 0) return; // no connection waits for an event
    const byPort = this.waiters.get(e.sport);
    if (byPort) for (const w of [...byPort]) if (sameTuple(e, w.t)) w.done();
    const byIsn = this.isnWaiters.get(e.isn >>> 0);
    if (byIsn) for (const w of [...byIsn]) if (e.dport === w.t.sport && sameAddr(e.daddr, w.t.server)) w.done();
  }

  private onExit(src: EbpfSource, reason: string): void {
    if (this.source === src) this.source = null;
    if (this.stopped) return;
    const now = Date.now();
    this.downs.push({ from: now, to: null });
    if (this.downs.length > 1000) this.downs.shift();
    this.restartsDue.ended(now - this.attachedAt);
    this.o.onError(`eBPF loader exited at ${new Date(now).toISOString()} (${reason}); attributing through /proc until it is restarted`);
    this.scheduleRestart();
  }

  /** At once the first time; with growing backoff while restarts keep failing (each new reason said once). */
  private scheduleRestart(): void {
    this.restartsDue.schedule(() => { this.restarting = this.restart(); });
  }

  /** One restart: attach again, and say how long kernel attribution was down; else try again later. */
  private async restart(): Promise<void> {
    if (this.stopped) return;
    try {
      await this.attach();
      this.counters.restarts++;
      this.lastFailure = '';
      const now = Date.now();
      const down = this.downs.at(-1);
      const from = down?.from ?? now;
      if (down && down.to === null) down.to = now;
      this.gapsEnded++;
      this.gapEndedMs += now - from;
      this.o.onInfo(`eBPF loader restarted; kernel attribution resumed at ${new Date(now).toISOString()}; `
        + `it was down from ${new Date(from).toISOString()} (${now - from} ms)`);
    } catch (err) {
      const why = (err as Error).message;
      if (this.stopped) return;
      if (why !== this.lastFailure) this.o.onError(`eBPF loader restart failed: ${why}; retrying with backoff`);
      this.lastFailure = why;
      this.scheduleRestart();
    }
  }

  /** The loader gap that a connection at atMs fell in (events of the last moments before a crash die with it). */
  private gapAt(atMs: number): { from: number; to: number | null } | null {
    for (let i = this.downs.length - 1; i >= 0; i--) {
      const d = this.downs[i];
      if (atMs >= d.from - this.o.joinWaitMs && (d.to === null || atMs <= d.to)) return d;
    }
    return null;
  }

  /** Gaps of the loader so far, the current one included, and their total time up to now. */
  gapTotals(now = Date.now()): { gaps: number; gapMs: number } {
    const open = this.downs.at(-1);
    const ongoing = open !== undefined && open.to === null;
    const current = ongoing ? now - open.from : 0;
    return { gaps: this.gapsEnded + (ongoing ? 1 : 0), gapMs: Math.round(this.gapEndedMs + current) };
  }

  /** A wire connection (first seen at atMs): the kernel events of its 4-tuple are seen on the wire. */
  wireSeen(t: Tuple, atMs: number, view: WireView): void {
    this.table.wire(t, atMs, view);
  }

  private unseen(e: ConnectEvent, atMs: number, kind: UnseenKind, enriched: Promise<ProcessInfo> | undefined, untilMs?: number): void {
    const proc = enriched ?? processFromEvent(e, this.o.ancestors, this.users, this.cgroups, atMs, this.parents, this.facts, this.lastProcess);
    this.o.onUnseen?.(e, atMs, kind, proc, untilMs);
  }

  /**
   * Decide every kernel event still waiting for the wire (at exit, after capture handed over all it
   * had). A namespace not judged yet (its first judgement failed, or came too soon after another) is
   * judged now, so a connection from a namespace the capture cannot see is counted as filtered, not
   * written as a call the wire missed; one that still cannot be judged is written (when in doubt).
   */
  async drainUnseen(): Promise<void> {
    const reach = this.reach;
    if (reach) {
      const unjudged = new Map<number, number>();
      for (const e of this.table.pending()) if (!reach.verdicts.has(e.netnsIno)) unjudged.set(e.netnsIno, e.tgid);
      const judged = Promise.all([...unjudged].slice(0, DEFAULTS.ebpfExitJudgeMax).map(([ino, pid]) => reach.judge(ino, pid, true)));
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([judged, new Promise((r) => { timer = setTimeout(r, DEFAULTS.ebpfExitJudgeMs); })]);
      clearTimeout(timer);
    }
    this.table.sweep(Date.now(), true);
  }

  /** The namespace was judged unreachable from the capture (its later events are filtered in the kernel). */
  unreachable(netnsIno: number): boolean {
    return this.reach?.verdicts.get(netnsIno) === 'drop';
  }

  /** Kernel events that a wire connection with another 4-tuple (after NAT) stood for. */
  get paired(): number {
    return this.table.paired;
  }

  async lookup(t: Tuple, atMs = Date.now()): Promise<ProcessInfo> {
    return (await this.lookupJoined(t, atMs)).process;
  }

  /**
   * As lookup, also giving the caller's own 4-tuple when the event joined by ISN (NAT). A new
   * connection waits up to joinWaitMs for its event; a second look (`wait` false) does not, nor does a
   * connection whose SYN the wire never saw (it began before the agent: its event came before, or never).
   */
  async lookupJoined(t: Tuple, atMs = Date.now(), wait = true): Promise<EbpfLookup> {
    let j = this.table.join(t, atMs);
    if (!j && this.source && wait && typeof t.isn === 'number') {
      await this.waitForEvent(t, this.o.joinWaitMs);
      j = this.table.join(t, atMs);
    }
    if (!j) {
      this.counters.fallbacks++;
      const gap = this.gapAt(atMs);
      const until = gap?.to ? `restarted at ${new Date(gap.to).toISOString()}` : 'not yet restarted';
      const why = gap
        ? `${LOADER_DOWN_REASON} (exited at ${new Date(gap.from).toISOString()}, ${until}): no kernel connect event`
        : noEventReason({
          loaderUp: this.source !== null, wireIsn: typeof t.isn === 'number',
          unjoined: this.table.unjoined(t.server, t.sport, atMs), dst: `${t.server}:${t.sport}`,
        });
      const p = await this.o.fallback.lookup(t);
      return { process: p.attribution === 'none' ? { ...p, reason: `${why}; ${p.reason}` } : p, sent: null };
    }
    this.counters.joined++;
    const e = j.event;
    const process = await (j.data
      ?? processFromEvent(e, this.o.ancestors, this.users, this.cgroups, atMs, this.parents, this.facts, this.lastProcess));
    const sent = j.by === 'isn' ? { client: e.saddr, cport: e.sport } : null;
    return { process, sent };
  }

  private waitForEvent(t: Tuple, waitMs: number): Promise<void> {
    const isn = typeof t.isn === 'number' ? t.isn >>> 0 : null;
    return new Promise((resolve) => {
      const w: Waiter = {
        t,
        done: () => {
          clearTimeout(timer);
          unwait(this.waiters, t.cport, w);
          if (isn !== null) unwait(this.isnWaiters, isn, w);
          resolve();
        },
      };
      const timer = setTimeout(w.done, waitMs);
      wait(this.waiters, t.cport, w);
      if (isn !== null) wait(this.isnWaiters, isn, w);
    });
  }

  /** Kernel events forgotten unjoined because the join table was full. */
  get joinsEvicted(): number {
    return this.table.evicted;
  }

  /** Unjoined kernel events that came after the wire's sightings near them had been dropped for the bound. */
  get wireForgotten(): number {
    return this.table.wireForgotten;
  }

  get loaded(): boolean {
    return this.source !== null;
  }

  /** Stop the loader; the events still waiting for the wire stay, for drainUnseen(). */
  async stop(): Promise<void> {
    this.stopped = true;
    clearInterval(this.sweepTimer);
    if (this.reachTimer) clearInterval(this.reachTimer);
    this.restartsDue.cancel();
    await this.source?.stop();
    await this.restarting;
    this.losses.end();
  }
}

/** A connection waiting for its kernel event. */
interface Waiter {
  t: Tuple;
  done(): void;
}

function wait(m: Map<number, Waiter[]>, k: number, w: Waiter): void {
  const list = m.get(k);
  if (list) list.push(w); else m.set(k, [w]);
}

function unwait(m: Map<number, Waiter[]>, k: number, w: Waiter): void {
  const list = m.get(k);
  if (!list) return;
  const i = list.indexOf(w);
  if (i !== -1) list.splice(i, 1);
  if (list.length === 0) m.delete(k);
}

/**
 * The kernel budget per source: IMDS_TRACER_EBPF_BUDGET=<rate>/<burst> (events per second and burst;
 * `0` for none) overrides the default, for a host whose busiest service makes more new IMDS
 * connections than the default allows (and for the benchmarks). A malformed value is ignored. Pure.
 */
export function budgetFromEnv(value: string | undefined, rate: number, burst: number): { budgetRate: number; budgetBurst: number } {
  const m = /^\s*(\d+)\s*(?:\/\s*(\d+)\s*)?$/.exec(value ?? '');
  if (!m) return { budgetRate: rate, budgetBurst: burst };
  const r = Number(m[1]);
  return { budgetRate: r, budgetBurst: m[2] !== undefined ? Math.max(1, Number(m[2])) : Math.max(1, r) };
}
