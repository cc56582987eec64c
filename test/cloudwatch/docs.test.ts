/** docs/cloudwatch.md stays true: its agent configuration parses and ships the agent's log file, and
 * every record field its queries name exists in the schema. */
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { DEFAULTS } from '../../agent/src/defaults.js';
import { SCHEMAS, type Spec } from '../../agent/src/schema.js';

const doc = readFileSync(new URL('../../docs/cloudwatch.md', import.meta.url), 'utf8');

/** Every dotted field path of a record kind. */
function paths(spec: Spec, prefix = ''): string[] {
  if (typeof spec === 'string' || 'enum' in spec || 'array' in spec) return [prefix];
  if ('anyOf' in spec) return [prefix, ...spec.anyOf.flatMap((s) => paths(s, prefix))];
  return [prefix, ...Object.entries(spec.object).flatMap(([k, s]) => paths(s, prefix ? `${prefix}.${k}` : k))];
}
const known = new Set(Object.values(SCHEMAS).flatMap((s) => paths(s)));

describe('docs/cloudwatch.md', () => {
  it('the amazon-cloudwatch-agent configuration is JSON that ships the log file to one stream per instance', () => {
    const json = [...doc.matchAll(/```json\n([\s\S]*?)\n```/g)].map((m) => JSON.parse(m[1]));
    expect(json).toHaveLength(1);
    const entry = json[0].logs.logs_collected.files.collect_list[0];
    expect(entry).toMatchObject({ file_path: DEFAULTS.logFile, log_stream_name: '{instance_id}' });
  });

  it('the Insights queries name only fields the records have', () => {
    // Fenced blocks with no language are the queries (walk the fences: an opening one, then its close).
    const queries: string[] = [];
    let open: { lang: string; lines: string[] } | null = null;
    for (const line of doc.split('\n')) {
      if (line.startsWith('```')) {
        if (open) { if (open.lang === '') queries.push(open.lines.join('\n')); open = null; } else open = { lang: line.slice(3), lines: [] };
      } else open?.lines.push(line);
    }
    expect(queries.length).toBeGreaterThanOrEqual(4);
    const fields = new Set(queries.join('\n').match(/\b(?:event|imds_version|v1_reason|time|cpu_percent|rss_bytes|calls_dropped|(?:request|response|process|connection|cloudwatch)\.[a-z_.]+)\b/g));
    for (const f of ['process.exe', 'imds_version', 'response.status', 'process.container.id']) expect(fields).toContain(f);
    for (const f of fields) expect(known, f).toContain(f);
  });
});
