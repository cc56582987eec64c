/**
 * `report --verdict`: can this instance switch to HttpTokens=required? Pure: fed every record of the
 * files read (any kind: their times bound what was traced), then the report's IMDSv1 groups.
 *
 * Rules (README "Verdict"):
 *  - ready: not one IMDSv1 call and not one unreadable call in the records read: "ready for
 *    HttpTokens=required: no IMDSv1 call since <first record> (N days traced)";
 *  - an IMDSv1 caller none of whose calls was answered 401 blocks: "not ready: K callers";
 *  - an IMDSv1 caller with calls answered 401 is "broken by enforcement": tokens are already
 *    required and its calls are rejected (AWS counts them as MetadataNoTokenRejected); it needs the
 *    same fix, and blocks readiness too;
 *  - a call the agent could not read (`imds_version: null` with a `wire_reason`: the kernel saw the
 *    connection, the wire did not show its request) may have been IMDSv1: it blocks readiness,
 *    "not ready: could not read N calls";
 *  - no record at all proves nothing: "not ready: no records in the files read";
 *  - a file not read to the end (damaged, truncated .gz) may hide IMDSv1 calls: "N files not read
 *    to the end" blocks too.
 */
import type { ReportGroup } from '../report/aggregate.js';

export type VerdictStatus = 'ready' | 'not_ready';

export interface Verdict {
  status: VerdictStatus;
  /** The verdict in one line. */
  summary: string;
  /** The earliest and latest record of any kind in the files read (null: none). */
  first_record: string | null;
  last_record: string | null;
  /** From the first to the last record, in days (one decimal). */
  days_traced: number;
  /** IMDSv1 callers that enforcement would break (none of their calls answered 401). */
  callers: ReportGroup[];
  /** IMDSv1 callers whose calls were answered 401: already broken by enforcement. */
  broken_by_enforcement: ReportGroup[];
  /** Calls whose version could not be read, by `wire_reason`. */
  unreadable_calls: number;
  unreadable_reasons: Record<string, number>;
  /** Files that could not be read to the end (their reasons are on stderr). */
  files_not_read: number;
}

type Json = Record<string, unknown>;

export class VerdictInput {
  private first: { t: number; iso: string } | null = null;
  private last: { t: number; iso: string } | null = null;
  unreadable = 0;
  /** Files that could not be read to the end (set by the caller). */
  filesNotRead = 0;
  readonly reasons = new Map<string, number>();

  add(rec: unknown): void {
    if (!rec || typeof rec !== 'object') return;
    const r = rec as Json;
    const iso = typeof r.time === 'string' ? r.time : null;
    const t = iso ? Date.parse(iso) : NaN;
    if (iso && !Number.isNaN(t)) {
      if (!this.first || t < this.first.t) this.first = { t, iso };
      if (!this.last || t > this.last.t) this.last = { t, iso };
    }
    if (r.event === 'imds_call' && r.imds_version === null && typeof r.wire_reason === 'string') {
      this.unreadable++;
      this.reasons.set(r.wire_reason, (this.reasons.get(r.wire_reason) ?? 0) + 1);
    }
  }

  /** The verdict over the report's groups (IMDSv2 groups are passed over). */
  verdict(groups: readonly ReportGroup[]): Verdict {
    const v1 = groups.filter((g) => g.imds_version === 'v1');
    const rejected = (g: ReportGroup): boolean => g.statuses.some((s) => s.status === 401);
    const callers = v1.filter((g) => !rejected(g));
    const broken = v1.filter(rejected);
    const days = this.first && this.last ? Math.round((this.last.t - this.first.t) / 8_640_000) / 10 : 0;
    const plural = (n: number, w: string): string => `${n} ${w}${n === 1 ? '' : 's'}`;
    const blocking = [
      ...(callers.length > 0 ? [plural(callers.length, 'caller')] : []),
      ...(broken.length > 0 ? [`${plural(broken.length, 'caller')} broken by enforcement`] : []),
      ...(this.unreadable > 0 ? [`could not read ${plural(this.unreadable, 'call')}`] : []),
    ];
    if (this.filesNotRead > 0) blocking.push(`${plural(this.filesNotRead, 'file')} not read to the end`);
    if (!this.first) blocking.push('no records in the files read');
    const since = this.first ? this.first.iso : '(no records)';
    return {
      status: blocking.length === 0 ? 'ready' : 'not_ready',
      summary: blocking.length === 0
        ? `ready for HttpTokens=required: no IMDSv1 call since ${since} (${days} days traced)`
        : `not ready: ${blocking.join('; ')}`,
      first_record: this.first?.iso ?? null,
      last_record: this.last?.iso ?? null,
      days_traced: days,
      callers,
      broken_by_enforcement: broken,
      unreadable_calls: this.unreadable,
      unreadable_reasons: Object.fromEntries(this.reasons),
      files_not_read: this.filesNotRead,
    };
  }
}
