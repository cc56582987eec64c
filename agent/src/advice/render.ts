/** Text for people: the per-caller advice under the report's table, and the verdict. Pure. */
import { formatStatuses, NOT_IDENTIFIED, type ReportGroup } from '../report/aggregate.js';
import { describeRates } from './rates.js';
import type { Verdict } from './verdict.js';

function who(g: ReportGroup): string {
  const name = g.exe ?? (g.attribution === 'none' ? `${NOT_IDENTIFIED} User-Agent: ${g.user_agent ?? '(none)'}` : '?');
  const where = g.container ? `container ${g.container_name ? `${g.container_name} (${g.container})` : g.container}`
    : g.systemd_unit ? `unit ${g.systemd_unit}` : null;
  return [name, g.command && g.command !== g.exe ? `(${g.command.length > 80 ? `${g.command.slice(0, 79)}…` : g.command})` : null,
    g.user ? `user ${g.user}` : null, where].filter(Boolean).join(' ');
}

function sdkLabel(g: ReportGroup): string {
  if (!g.sdk) return '';
  return g.sdk.name === 'unknown' ? 'SDK unknown' : `${g.sdk.name}${g.sdk.version ? ` ${g.sdk.version}` : ''}`;
}

/** One block per caller: who, SDK, what to do, rates. */
export function renderAdvice(groups: readonly ReportGroup[]): string {
  const lines: string[] = [];
  groups.forEach((g, i) => {
    lines.push(`${i + 1}. ${who(g)} [${g.imds_version}, ${g.count} call${g.count === 1 ? '' : 's'}, ${formatStatuses(g.statuses)}]`);
    if (g.sdk) lines.push(`   ${sdkLabel(g)}: ${g.sdk.advice}`);
    if (g.rates) lines.push(`   ${describeRates(g.rates)}`);
  });
  return lines.join('\n');
}

export function renderVerdict(v: Verdict): string {
  const out = [v.summary];
  if (v.first_record) out.push(`records read: ${v.first_record} → ${v.last_record} (${v.days_traced} days)`);
  if (v.callers.length > 0) out.push('', `IMDSv1 callers (HttpTokens=required would break them):`, renderAdvice(v.callers));
  if (v.broken_by_enforcement.length > 0) {
    out.push('', 'broken by enforcement (IMDSv1 calls answered 401: the MetadataNoTokenRejected callers):',
      renderAdvice(v.broken_by_enforcement));
  }
  if (v.unreadable_calls > 0) {
    out.push('', `could not read ${v.unreadable_calls} call${v.unreadable_calls === 1 ? '' : 's'} (counted as IMDSv1 until shown otherwise): ${Object.entries(v.unreadable_reasons).map(([r, n]) => `${r}×${n}`).join(' ')}`);
  }
  return out.join('\n');
}
