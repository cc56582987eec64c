/** `imds-tracer report [files…]`: read JSON lines, print the distinct IMDSv1 callers (table or JSON). */
import { DEFAULTS } from '../defaults.js';
import { renderTable } from '../format/table.js';
import { Aggregator, formatPaths, formatStatuses, NOT_IDENTIFIED, type ReportGroup } from './aggregate.js';
import { defaultFiles, readJsonLines, ReadError, type ReadCounts } from './files.js';
import { CallerAdvisor } from '../advice/callers.js';
import { VerdictInput } from '../advice/verdict.js';
import { renderAdvice, renderVerdict } from '../advice/render.js';

export interface ReportOptions {
  json: boolean;
  includeV2: boolean;
  maxPaths: number;
  /** With no files named: this file and its rotated siblings (default: the agent's log file). */
  logFile?: string;
  /** Print whether HttpTokens=required is safe here (see advice/verdict.ts). */
  verdict?: boolean;
  /** Exit 3 when any IMDSv1 (or unreadable) call is in the files read. */
  failOnV1?: boolean;
}

/** `report --fail-on-v1`: IMDSv1 calls (or calls that could not be read) in the files read. */
export const EXIT_V1_FOUND = 3;

export async function runReport(files: string[], o: ReportOptions, say: (line: string) => void,
  out: (text: string) => void = (t) => { process.stdout.write(t); }): Promise<number> {
  const logFile = o.logFile ?? DEFAULTS.logFile;
  const paths = files.length > 0 ? files : defaultFiles(logFile);
  if (paths.length === 0) {
    say(`imds-tracer report: no log file at ${logFile} (nor rotated ones); name the files to read`);
    return 1;
  }
  const agg = new Aggregator({ includeV2: o.includeV2, maxPaths: o.maxPaths, enrich: new CallerAdvisor() });
  const verdictInput = new VerdictInput();
  const counts: ReadCounts = { lines: 0, unparsable: 0 };
  // A file that cannot be read (or stops part-way: a truncated .gz) is named with the reason; the
  // report covers everything that could be read, and fails only when nothing could.
  let readable = 0;
  let failed = 0;
  for (const p of paths) {
    try {
      await readJsonLines(p, (r) => { agg.add(r); verdictInput.add(r); }, counts);
      readable++;
    } catch (err) {
      const e = err instanceof ReadError ? err : new ReadError(p, 0, err as Error);
      failed++;
      if (e.linesRead > 0) readable++;
      say(`imds-tracer report: cannot read ${p}: ${describeReadError(e.reason)}${e.linesRead > 0
        ? ` (the ${e.linesRead} line${e.linesRead === 1 ? '' : 's'} read before that are in the report)` : ''}`);
    }
  }
  if (readable === 0) {
    say(`imds-tracer report: nothing could be read (${paths.length} file${paths.length === 1 ? '' : 's'})`);
    return 1;
  }
  const groups = agg.result();
  if (counts.unparsable > 0) say(`imds-tracer report: skipped ${counts.unparsable} unparsable line${counts.unparsable === 1 ? '' : 's'}`);
  verdictInput.filesNotRead = failed;
  const verdict = verdictInput.verdict(groups);
  const status = o.failOnV1 && (verdict.callers.length + verdict.broken_by_enforcement.length + verdict.unreadable_calls > 0)
    ? EXIT_V1_FOUND : 0;
  if (o.verdict) {
    out(o.json ? `${JSON.stringify(verdict, null, 2)}\n` : `${renderVerdict(verdict)}\n`);
    return status;
  }
  if (o.json) {
    out(`${JSON.stringify(groups, null, 2)}\n`);
    return status;
  }
  const kind = o.includeV2 ? 'IMDS' : 'IMDSv1';
  const notRead = failed > 0 ? `, ${failed} of them not read to the end` : '';
  const unknown = groups.filter((g) => g.imds_version === 'unknown').reduce((n, g) => n + g.count, 0);
  const summary = `${agg.calls} ${kind} call${agg.calls === 1 ? '' : 's'} from ${groups.length} distinct caller${groups.length === 1 ? '' : 's'} in ${paths.length} file${paths.length === 1 ? '' : 's'}${notRead}`
    + (unknown ? ` (${unknown} of unknown version: seen by the kernel while capture could not read them; they may be IMDSv1)` : '');
  out(groups.length === 0 ? `No ${kind} calls found (${paths.length} file${paths.length === 1 ? '' : 's'} read${notRead}).\n`
    : `${renderReport(groups, o.includeV2 || unknown > 0)}\n\nWhat to do:\n${renderAdvice(groups)}\n\n${summary}\n`);
  return status;
}

/** A read error in words: zlib's names for a cut or damaged .gz, the system's message otherwise. Pure. */
export function describeReadError(err: Error & { code?: string }): string {
  if (err.code === 'Z_BUF_ERROR' || /unexpected end of file/i.test(err.message)) return 'truncated gzip data (unexpected end of file)';
  if (err.code === 'Z_DATA_ERROR') return `corrupt gzip data (${err.message})`;
  return err.message;
}

/** The table: one row per caller, most calls first. Pure. */
export function renderReport(groups: readonly ReportGroup[], withVersion: boolean): string {
  const headers = ['CALLS', ...(withVersion ? ['IMDS'] : []), 'EXECUTABLE', 'COMMAND', 'USER', 'WHERE', 'STATUSES',
    'FIRST SEEN', 'LAST SEEN', 'PATHS'];
  const rows = groups.map((g) => [
    String(g.count),
    ...(withVersion ? [g.imds_version] : []),
    g.exe ?? (g.attribution === 'none' ? NOT_IDENTIFIED : '?'),
    g.attribution === 'none' ? `User-Agent: ${g.user_agent ?? '(none)'}` : (g.command ?? '?'),
    g.user ?? '-',
    g.container ? `container ${g.container}` : g.systemd_unit ? `unit ${g.systemd_unit}` : '-',
    formatStatuses(g.statuses),
    shortTime(g.first_seen),
    shortTime(g.last_seen),
  ]);
  // PATHS goes last and is never clipped (the other columns are, at 60 characters).
  const table = renderTable(headers, rows.map((r) => [...r, '']), 60).split('\n');
  const at = table[0].length - 'PATHS'.length;
  return table.map((l, i) => (i === 0 ? l : `${l.padEnd(at)}${formatPaths(groups[i - 1])}`)).join('\n');
}

function shortTime(iso: string): string {
  return iso.replace('T', ' ').replace(/\.\d+Z$/, 'Z');
}
