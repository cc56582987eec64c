/** `imds-tracer doctor`: the report, as text lines or one JSON object, and the exit status. Pure. */
import type { CheckResult } from './checks.js';

export interface DoctorReport {
  /** false when tracing cannot work (some check FAILed). */
  ok: boolean;
  summary: { pass: number; warn: number; fail: number };
  checks: CheckResult[];
}

export function summarize(checks: CheckResult[]): DoctorReport {
  const count = (s: CheckResult['status']): number => checks.filter((c) => c.status === s).length;
  const summary = { pass: count('PASS'), warn: count('WARN'), fail: count('FAIL') };
  return { ok: summary.fail === 0, summary, checks };
}

/** 1 when tracing cannot work (a FAIL), else 0 (warnings included). */
export function exitStatus(report: DoctorReport): number {
  return report.ok ? 0 : 1;
}

/**
 * One line per check: `STATUS  title: detail`, then for WARN and FAIL an indented `fix:` line;
 * a last line says whether tracing can work.
 */
export function formatText(report: DoctorReport): string[] {
  const lines: string[] = [];
  for (const c of report.checks) {
    lines.push(`${c.status.padEnd(4)}  ${c.title}: ${c.detail}`);
    if (c.status !== 'PASS' && c.fix) lines.push(`      fix: ${c.fix}`);
  }
  const { pass, warn, fail } = report.summary;
  const counts = `${pass} passed, ${warn} warning${warn === 1 ? '' : 's'}, ${fail} failed`;
  lines.push(report.ok
    ? `doctor: ${counts}: tracing can work${warn ? ' (see the warnings)' : ''}.`
    : `doctor: ${counts}: tracing cannot work until the failures are fixed.`);
  return lines;
}

export function formatJson(report: DoctorReport): string {
  return JSON.stringify(report);
}
