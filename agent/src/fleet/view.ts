/**
 * The fleet view, pure: the Insights rows and the MetadataNoToken sums → one verdict per instance,
 * with its IMDSv1 callers and their SDK advice, and the cross-check against AWS's own counter.
 *
 * Per instance (a log stream):
 *  - ready: no IMDSv1 call, no unreadable call, and AWS counted no IMDSv1 call the agent did not record;
 *  - not ready: IMDSv1 callers (those with calls answered 401 are "broken by enforcement"), unreadable
 *    calls, or unseen calls.
 * Cross-check: MetadataNoToken counts IMDS calls answered without a token (so not the 401s); it is
 * compared with the IMDSv1 calls recorded minus those answered 401. More on AWS's side means calls
 * the agent did not see (agent down, not installed for a while, or a gap); the view says so.
 */
import { identifySdk } from '../advice/sdk.js';
import type { Row } from './insights.js';
import { INSTANCE_ID } from './metrics.js';

export interface FleetCaller {
  executable: string;
  calls: number;
  rejected: number;
  last_seen: string | null;
  sdk: { name: string; version: string | null; advice: string };
}

export interface FleetInstance {
  instance: string;
  verdict: 'ready' | 'not_ready';
  summary: string;
  first_record: string | null;
  last_record: string | null;
  v1_calls: number;
  rejected_calls: number;
  unreadable_calls: number;
  callers: FleetCaller[];
  /** AWS's MetadataNoToken sum over the window; null when the stream is not an instance id or the metric was not read. */
  metadata_no_token: number | null;
  /** MetadataNoToken minus the IMDSv1 calls recorded that were not answered 401 (> 0: calls the agent did not see). */
  unseen_calls: number | null;
  cross_check: string;
}

const num = (v: string | undefined): number => (v === undefined || v === '' ? 0 : Number(v) || 0);
const plural = (n: number, w: string): string => `${n} ${w}${n === 1 ? '' : 's'}`;

export interface FleetRows {
  callers: Row[];
  rejected: Row[];
  coverage: Row[];
  unreadable: Row[];
}

export function fleetView(rows: FleetRows, metric: Map<string, number> | null): FleetInstance[] {
  const byInstance = new Map<string, FleetInstance>();
  const get = (id: string): FleetInstance => {
    let f = byInstance.get(id);
    if (!f) {
      f = { instance: id, verdict: 'ready', summary: '', first_record: null, last_record: null, v1_calls: 0, rejected_calls: 0,
        unreadable_calls: 0, callers: [], metadata_no_token: null, unseen_calls: null, cross_check: '' };
      byInstance.set(id, f);
    }
    return f;
  };
  for (const r of rows.coverage) {
    if (!r.instance) continue;
    const f = get(r.instance);
    f.first_record = r.first_record ?? null;
    f.last_record = r.last_record ?? null;
  }
  const rejected = new Map(rows.rejected.map((r) => [`${r.instance}\u0000${r.executable}`, num(r.rejected)]));
  for (const r of rows.callers) {
    if (!r.instance) continue;
    const f = get(r.instance);
    const calls = num(r.calls);
    const rej = rejected.get(`${r.instance}\u0000${r.executable}`) ?? 0;
    const sdk = r.sdk_name
      ? { name: r.sdk_name, version: r.sdk_version || null, advice: r.advice ?? '' }
      : (({ name, version, advice }) => ({ name, version, advice }))(identifySdk({ imdsVersion: 'v1', userAgent: r.user_agent || null, exe: r.executable }));
    f.callers.push({ executable: r.executable ?? '(caller not identified)', calls, rejected: rej, last_seen: r.last_seen ?? null, sdk });
    f.v1_calls += calls;
    f.rejected_calls += rej;
  }
  for (const r of rows.unreadable) if (r.instance) get(r.instance).unreadable_calls += num(r.unreadable);

  for (const f of byInstance.values()) {
    f.callers.sort((a, b) => b.calls - a.calls || a.executable.localeCompare(b.executable));
    const answered = f.v1_calls - f.rejected_calls;
    if (!INSTANCE_ID.test(f.instance)) {
      f.cross_check = 'not compared: the log stream is not an instance id';
    } else if (!metric) {
      f.cross_check = 'not compared: MetadataNoToken not read';
    } else {
      const m = metric.get(f.instance) ?? 0;
      f.metadata_no_token = m;
      f.unseen_calls = m - answered;
      f.cross_check = m > answered
        ? `AWS counted ${m} IMDSv1 calls, the agent recorded ${answered}: ${m - answered} not seen (agent down, not installed, or a gap)`
        : m < answered
          ? `the agent recorded ${answered} IMDSv1 calls, AWS counted ${m} (metric delay or the window's edges)`
          : `matches MetadataNoToken (${m})`;
    }
    const broken = f.callers.filter((c) => c.rejected > 0).length;
    const blocking = [
      ...(f.callers.length - broken > 0 ? [plural(f.callers.length - broken, 'caller')] : []),
      ...(broken > 0 ? [`${plural(broken, 'caller')} broken by enforcement`] : []),
      ...(f.unreadable_calls > 0 ? [`could not read ${plural(f.unreadable_calls, 'call')}`] : []),
      ...(f.unseen_calls !== null && f.unseen_calls > 0 ? [`${plural(f.unseen_calls, 'IMDSv1 call')} AWS counted that the agent did not see`] : []),
    ];
    f.verdict = blocking.length === 0 ? 'ready' : 'not_ready';
    f.summary = blocking.length === 0
      ? `ready for HttpTokens=required: no IMDSv1 call since ${f.first_record ?? '(no records)'}`
      : `not ready: ${blocking.join('; ')}`;
  }
  return [...byInstance.values()].sort((a, b) => (a.verdict === b.verdict ? 0 : a.verdict === 'not_ready' ? -1 : 1)
    || b.v1_calls - a.v1_calls || a.instance.localeCompare(b.instance));
}

export function renderFleet(list: readonly FleetInstance[]): string {
  const out: string[] = [];
  for (const f of list) {
    out.push(`${f.instance}  ${f.summary}`);
    out.push(`  traced ${f.first_record ?? '?'} → ${f.last_record ?? '?'}; MetadataNoToken: ${f.cross_check}`);
    for (const c of f.callers) {
      out.push(`  ${c.calls}× ${c.executable}${c.rejected > 0 ? ` (${c.rejected} answered 401: broken by enforcement)` : ''} — ${c.sdk.name}${c.sdk.version ? ` ${c.sdk.version}` : ''}: ${c.sdk.advice}`);
    }
  }
  const ready = list.filter((f) => f.verdict === 'ready').length;
  out.push('', `${list.length} instance${list.length === 1 ? '' : 's'}: ${ready} ready, ${list.length - ready} not ready`);
  return out.join('\n');
}

function csvCell(v: unknown): string {
  const s = v === null || v === undefined ? '' : String(v);
  return /[",\n\r]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
}

export const CSV_COLUMNS = ['instance', 'verdict', 'summary', 'executable', 'calls', 'rejected', 'sdk', 'sdk_version', 'advice',
  'v1_calls', 'unreadable_calls', 'metadata_no_token', 'unseen_calls', 'first_record', 'last_record'] as const;

/** One row per instance and caller (an instance without callers: one row, caller columns empty). RFC 4180. */
export function renderCsv(list: readonly FleetInstance[]): string {
  const lines = [CSV_COLUMNS.join(',')];
  for (const f of list) {
    const base = { instance: f.instance, verdict: f.verdict, summary: f.summary, v1_calls: f.v1_calls, unreadable_calls: f.unreadable_calls,
      metadata_no_token: f.metadata_no_token, unseen_calls: f.unseen_calls, first_record: f.first_record, last_record: f.last_record };
    const rows = f.callers.length > 0
      ? f.callers.map((c) => ({ ...base, executable: c.executable, calls: c.calls, rejected: c.rejected, sdk: c.sdk.name, sdk_version: c.sdk.version, advice: c.sdk.advice }))
      : [base];
    for (const r of rows) lines.push(CSV_COLUMNS.map((k) => csvCell((r as Record<string, unknown>)[k])).join(','));
  }
  return `${lines.join('\r\n')}\r\n`;
}
