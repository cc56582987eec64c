/**
 * `imds-tracer report`, the pure part: fold JSON-lines records into the distinct callers a person
 * must fix. A caller is (IMDS version, executable — `process.exe`, else `comm` —, normalised command
 * line, user, container, systemd unit). Login sessions are one unit: `session-N.scope` under
 * `user-UID.slice` (a new scope for every SSH login or cron run) groups as
 * `user-UID.slice/session-*.scope` (`process.systemd_unit_group`, or worked out from the cgroup for
 * records written before that field). Calls whose caller was not identified
 * (`attribution: "none"`) are grouped by their User-Agent instead, so they still point somewhere.
 *
 * Command-line normalisation is deliberately small: every argument has its whitespace runs collapsed
 * to one space and is trimmed, then the arguments are joined as a shell would read them back (token
 * values were already redacted by the agent). Nothing that identifies the program is dropped, so two
 * runs with different arguments (e.g. different temp paths) are two lines.
 */
import { shellJoin } from '../format/table.js';
import { unitGroup } from '../attribution/proc-parse.js';
import type { CallerAdvice, GroupEnricher } from '../advice/callers.js';

export const NOT_IDENTIFIED = '(caller not identified)';

export interface StatusCount {
  /** HTTP status, or null when no answer was seen. */
  status: number | null;
  count: number;
}

/** One line of the report. Field names are a contract (`report --json`): add, never rename. */
export interface ReportGroup {
  /** "unknown": calls the kernel saw whose request capture could not read (`wire_reason`); they may be IMDSv1. */
  imds_version: 'v1' | 'v2' | 'unknown';
  /** `process.exe`, else `process.comm`; null for an unidentified caller. */
  exe: string | null;
  /** The normalised command line; null when the argv is unknown. */
  command: string | null;
  /** User name, else the numeric uid as a string. */
  user: string | null;
  /** Container id (first 12 characters), else pod UID / task id / runtime; null on the host. */
  container: string | null;
  /** The unit; login sessions grouped as `user-UID.slice/session-*.scope`. */
  systemd_unit: string | null;
  /** With an unidentified caller: the User-Agent that groups its calls (null: none sent). */
  user_agent: string | null;
  /** Distinct paths, sorted, at most maxPaths of them. */
  paths: string[];
  /** Distinct paths not listed in `paths`. */
  paths_more: number;
  count: number;
  first_seen: string;
  last_seen: string;
  /** Sorted by status, no answer (null) last. */
  statuses: StatusCount[];
  /** How the calls' callers were found: "ebpf", "proc", "none", or several joined with "+". */
  attribution: string;
  /** The SDK and what to do (the latest call's `sdk`), and the caller's rates (throttling risk). */
  sdk?: CallerAdvice['sdk'];
  rates?: CallerAdvice['rates'];
  /** The container's names when the agent found them (see SCHEMA.md `process.container`). */
  container_name?: CallerAdvice['container_name'];
}

export interface AggregateOptions {
  includeV2: boolean;
  maxPaths: number;
  /** Per-caller advice (SDK, rates) folded alongside. */
  enrich?: GroupEnricher;
}

interface Acc {
  key: string;
  group: Omit<ReportGroup, 'paths' | 'paths_more' | 'statuses' | 'attribution' | 'first_seen' | 'last_seen' | 'count'>;
  paths: Set<string>;
  statuses: Map<number | null, number>;
  attributions: Set<string>;
  first: number;
  last: number;
  firstIso: string;
  lastIso: string;
}

type Json = Record<string, unknown>;
const str = (v: unknown): string | null => (typeof v === 'string' ? v : null);

/** One argument's whitespace runs collapsed; the arguments joined as a shell would read them. */
export function normaliseCommand(argv: readonly string[]): string {
  return shellJoin(argv.map((a) => a.replace(/\s+/g, ' ').trim()));
}

/** `{runtime, id, pod_uid, task_id}` → a short name: the 12-character id, else what is known. */
export function containerName(c: unknown): string | null {
  if (!c || typeof c !== 'object') return null;
  const o = c as Json;
  const id = str(o.id);
  if (id) return id.slice(0, 12);
  return str(o.pod_uid) ?? str(o.task_id) ?? str(o.runtime);
}

/** Folds records in any order (first/last seen compare times). */
export class Aggregator {
  private readonly groups = new Map<string, Acc>();
  /** imds_call records counted, and records of other kinds or versions passed over. */
  calls = 0;
  ignored = 0;

  constructor(private readonly o: AggregateOptions) {}

  add(rec: unknown): void {
    if (!rec || typeof rec !== 'object' || (rec as Json).event !== 'imds_call') { this.ignored++; return; }
    const r = rec as Json;
    const version = r.imds_version === null && typeof r.wire_reason === 'string' ? 'unknown' : r.imds_version;
    if (!(version === 'v1' || version === 'unknown' || (version === 'v2' && this.o.includeV2))) { this.ignored++; return; }
    const t = Date.parse(str(r.time) ?? '');
    if (Number.isNaN(t)) { this.ignored++; return; }
    const request = (r.request ?? {}) as Json;
    const p = (r.process ?? {}) as Json;
    const attribution = str(p.attribution) ?? 'none';
    const identified = attribution !== 'none';
    const argv = Array.isArray(p.argv) && p.argv.every((a) => typeof a === 'string') ? (p.argv as string[]) : null;
    const group: Acc['group'] = identified
      ? {
        imds_version: version,
        exe: str(p.exe) ?? str(p.comm),
        command: argv ? normaliseCommand(argv) : null,
        user: str(p.user) ?? (typeof p.uid === 'number' ? String(p.uid) : null),
        container: containerName(p.container),
        systemd_unit: str(p.systemd_unit_group) ?? unitGroup(str(p.systemd_unit), str(p.cgroup)),
        user_agent: null,
      }
      : {
        imds_version: version, exe: null, command: null, user: null, container: null, systemd_unit: null,
        user_agent: str(request.user_agent),
      };
    const key = JSON.stringify([identified, ...Object.values(group)]);
    let acc = this.groups.get(key);
    if (!acc) {
      acc = { key, group, paths: new Set(), statuses: new Map(), attributions: new Set(), first: t, last: t,
        firstIso: r.time as string, lastIso: r.time as string };
      this.groups.set(key, acc);
    }
    this.calls++;
    this.o.enrich?.add(key, r, t);
    const path = str(request.path);
    if (path !== null) acc.paths.add(path);
    const status = typeof (r.response as Json | undefined)?.status === 'number' ? (r.response as Json).status as number : null;
    acc.statuses.set(status, (acc.statuses.get(status) ?? 0) + 1);
    acc.attributions.add(attribution);
    if (t < acc.first) { acc.first = t; acc.firstIso = r.time as string; }
    if (t > acc.last) { acc.last = t; acc.lastIso = r.time as string; }
  }

  /** The groups, most calls first (then most recent, then by executable). */
  result(): ReportGroup[] {
    const out = [...this.groups.values()].map((a): ReportGroup & { _last: number } => {
      const paths = [...a.paths].sort();
      const listed = paths.slice(0, this.o.maxPaths);
      return {
        ...a.group,
        paths: listed,
        paths_more: paths.length - listed.length,
        count: [...a.statuses.values()].reduce((s, n) => s + n, 0),
        first_seen: a.firstIso,
        last_seen: a.lastIso,
        statuses: [...a.statuses].map(([status, count]) => ({ status, count }))
          .sort((x, y) => (x.status ?? Infinity) - (y.status ?? Infinity)),
        attribution: [...a.attributions].sort().join('+'),
        ...this.o.enrich?.fields(a.key),
        _last: a.last,
      };
    });
    out.sort((x, y) => y.count - x.count || y._last - x._last || (x.exe ?? '\uffff').localeCompare(y.exe ?? '\uffff')
      || (x.command ?? '').localeCompare(y.command ?? ''));
    return out.map(({ _last, ...g }) => g);
  }
}

/** `200×12 401×3 -×1` (no answer seen: `-`). */
export function formatStatuses(s: readonly StatusCount[]): string {
  return s.map((x) => `${x.status ?? '-'}×${x.count}`).join(' ');
}

/** Listed paths, then `+N more`. */
export function formatPaths(g: Pick<ReportGroup, 'paths' | 'paths_more'>): string {
  return [...g.paths, ...(g.paths_more > 0 ? [`+${g.paths_more} more`] : [])].join(' ');
}
