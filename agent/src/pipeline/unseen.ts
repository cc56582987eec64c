/**
 * Connections the kernel saw that the wire did not show (join.ts decides which): each becomes an
 * `imds_call` record with `imds_version: null`, `request: null` and a `wire_reason`, its caller
 * from the kernel event — or, beyond a budget (a flood), a count only, said once by an `error` when
 * it starts and a `notice` when it stops. Every one is counted by reason. A connection that never got
 * established carried no request and is not a call.
 */
import type { ConnectEvent } from '../attribution/ebpf/events.js';
import type { UnseenKind } from '../attribution/ebpf/join.js';
import { isoTime } from '../iso-time.js';
import { redactProcess } from '../redact.js';
import type { CallRecord, ConnectionInfo, ProcessInfo, WireReason } from '../record.js';
import { DEFAULTS } from '../defaults.js';
import { LossSpell } from '../loss-spell.js';

const TCP_ESTABLISHED = 1;

export interface UnseenFacts {
  atMs: number;
  reason: WireReason;
  connection: ConnectionInfo;
  process: ProcessInfo;
}

/** The record of a call whose request could not be read. Pure. */
export function buildUnseenRecord(f: UnseenFacts): CallRecord {
  return {
    event: 'imds_call', time: isoTime(f.atMs), imds_version: null, provider: 'unknown',
    request: null, response: { status: null }, connection: f.connection, process: f.process, wire_reason: f.reason,
  };
}

/** A token bucket: `burst` at once, refilled at `perMinute`. Pure (time passed in). */
export class Budget {
  private tokens: number;
  private at: number | null = null;

  constructor(private readonly burst: number, private readonly perMinute: number) {
    this.tokens = burst;
  }

  take(nowMs: number): boolean {
    if (this.at !== null) this.tokens = Math.min(this.burst, this.tokens + ((nowMs - this.at) * this.perMinute) / 60_000);
    this.at = nowMs;
    if (this.tokens < 1) return false;
    this.tokens--;
    return true;
  }
}

export interface UnseenOptions {
  burst: number;
  perMinute: number;
  /** Why the wire did not show a connection that began at atMs. */
  reasonAt(atMs: number): WireReason;
  /**
   * Why a connection the wire showed from atMs on carried no request: a capture gap or drops until
   * untilMs (when the wire showed its client had sent all it will; else as long as one could come), else null.
   */
  reasonDuring(atMs: number, untilMs?: number): WireReason | null;
  connection(e: ConnectEvent): ConnectionInfo;
  redact(s: string): string;
  /** argv scrubbing (scrub words); default: redact each argument. */
  redactArgv?(args: string[]): string[];
  /**
   * The event's network namespace was judged unreachable from the capture after the event passed the
   * kernel filter (netns-reach.ts): it is counted like the ones filtered in the kernel, not recorded.
   */
  unreachable(e: ConnectEvent): boolean;
  /** The agent's own pid: its own calls are counted (onSelf), never recorded. */
  selfPid: number;
  onSelf(): void;
  emit(rec: CallRecord): void;
  /** Where calls counted but not written (past the budget) are said: one error when they start, a notice when they stop. */
  error?(message: string): void;
  notice?(message: string): void;
  lossQuietMs?: number;
}

export class UnseenCalls {
  readonly counts: Record<WireReason, number> = { capture_gap: 0, capture_dropped: 0, not_captured: 0 };
  unrecorded = 0;
  /** Of counts.not_captured, those from namespaces judged unreachable from the capture: no record. */
  filtered = 0;
  private readonly budget: Budget;
  private readonly inFlight = new Set<Promise<void>>();
  private readonly unrecordedSpell: LossSpell;

  constructor(private readonly o: UnseenOptions) {
    this.budget = new Budget(o.burst, o.perMinute);
    this.unrecordedSpell = new LossSpell({
      quietMs: o.lossQuietMs ?? DEFAULTS.lossQuietMs,
      began: () => o.error?.(`calls the kernel saw and the wire did not are over their budget (${o.burst} at once, then `
        + `${o.perMinute} a minute): the next ones are counted (stats.calls_unseen and calls_unseen_unrecorded), not written`),
      ended: (n, fromMs, toMs, stopped) => o.notice?.(`${stopped ? 'the agent stopped' : 'calls the kernel saw and the wire did not are written again'}: `
        + `${n} were counted, not written, between ${new Date(fromMs).toISOString()} and ${new Date(toMs).toISOString()}`),
    });
  }

  handle(e: ConnectEvent, atMs: number, kind: UnseenKind, process: Promise<ProcessInfo>, untilMs?: number): void {
    if (e.newState !== TCP_ESTABLISHED) return; // never connected: no request was sent
    if (kind !== 'no_request' && this.o.unreachable(e)) {
      this.counts.not_captured++;
      this.filtered++;
      return;
    }
    // The wire showed the connection but no request on it: lost only if capture was losing then.
    const reason = kind === 'no_request' ? this.o.reasonDuring(atMs, untilMs) : this.o.reasonAt(atMs);
    if (reason === null) return;
    // Whether the wire showed it is not known (its sighting was forgotten): with capture up and not
    // dropping then, the wire showed it, and it carried no call the wire did not record.
    if (kind === 'wire_forgotten' && reason === 'not_captured') return;
    if (e.tgid === this.o.selfPid) {
      this.o.onSelf();
      return;
    }
    this.counts[reason]++;
    const now = Date.now();
    if (!this.budget.take(now)) {
      this.unrecorded++;
      this.unrecordedSpell.grew(1, now, now);
      return;
    }
    const job = process.catch((): ProcessInfo => ({ attribution: 'none', reason: 'the kernel event could not be read' })).then((p) => {
      const rec = buildUnseenRecord({ atMs, reason, connection: this.o.connection(e),
        process: redactProcess(p, this.o.redact, this.o.redactArgv?.bind(this.o)) });
      this.o.emit(rec); // fitted to one CloudWatch event where its line is made, like every call (fit.ts callLine)
    });
    this.inFlight.add(job);
    void job.finally(() => this.inFlight.delete(job));
  }

  /** Wait until every record already decided is emitted. */
  async flush(): Promise<void> {
    while (this.inFlight.size > 0) await Promise.all([...this.inFlight]);
  }

  /** No more connections come (the agent stops): calls counted but not written until now are said to have ended. */
  end(): void {
    this.unrecordedSpell.end();
  }
}
