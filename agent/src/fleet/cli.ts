/**
 * `imds-tracer fleet`: the fleet view computed where the records already are (CloudWatch Logs):
 * four Logs Insights queries through the SDK (progress on stderr while they run), AWS's own
 * MetadataNoToken counter per instance over the same window (GetMetricData), one verdict per instance.
 */
import { CloudWatchLogsClient } from '@aws-sdk/client-cloudwatch-logs';
import { CloudWatchClient } from '@aws-sdk/client-cloudwatch';
import { DEFAULTS } from '../defaults.js';
import { FLEET_QUERIES, type FleetQueryName } from './queries.js';
import { runInsightsQuery, type Row } from './insights.js';
import { metadataNoToken, INSTANCE_ID } from './metrics.js';
import { fleetView, renderCsv, renderFleet, type FleetRows } from './view.js';

export interface FleetOptions {
  logGroup: string;
  since: string;
  until?: string;
  region?: string;
  logsEndpoint?: string;
  cloudwatchEndpoint?: string;
  /** false with --no-metrics: no MetadataNoToken cross-check. */
  metrics: boolean;
  json: boolean;
  csv: boolean;
  failOnV1: boolean;
  /** Tests: a shorter poll interval. */
  pollMs?: number;
}

export const EXIT_FLEET_NOT_READY = 3;

/** `7d`, `12h`, `30m`, `90s`, `2w` before `now`, or an ISO 8601 time; null when neither. */
export function parseWhen(v: string, now: number): number | null {
  const m = /^(\d+)([smhdw])$/.exec(v.trim());
  if (m) return now - Number(m[1]) * { s: 1e3, m: 60e3, h: 3600e3, d: 86400e3, w: 604800e3 }[m[2] as 's']!;
  if (!/^\d{4}-\d\d-\d\d/.test(v)) return null;
  const t = Date.parse(v);
  return Number.isNaN(t) ? null : t;
}

export async function runFleet(o: FleetOptions, say: (l: string) => void, out: (t: string) => void = (t) => { process.stdout.write(t); }): Promise<number> {
  const now = Date.now();
  const start = parseWhen(o.since, now);
  const end = o.until ? parseWhen(o.until, now) : now;
  if (start === null || end === null || start >= end) {
    say('imds-tracer fleet: --since/--until take a duration before now (7d, 12h, 30m) or an ISO 8601 time, --since before --until');
    return 2;
  }
  if (o.json && o.csv) { say('imds-tracer fleet: choose one of --json and --csv'); return 2; }
  // Our own credentials must never come from IMDSv1 (the SDK's fallback is off).
  process.env.AWS_EC2_METADATA_V1_DISABLED ??= 'true';
  const common = { region: o.region, maxAttempts: 5 };
  const logs = new CloudWatchLogsClient({ ...common, ...(o.logsEndpoint ? { endpoint: o.logsEndpoint } : {}) });
  const cw = new CloudWatchClient({ ...common, ...(o.cloudwatchEndpoint ? { endpoint: o.cloudwatchEndpoint } : {}) });
  try {
    const rows = {} as FleetRows;
    for (const name of Object.keys(FLEET_QUERIES) as FleetQueryName[]) {
      rows[name] = await runInsightsQuery(logs, {
        logGroup: o.logGroup, start, end, query: FLEET_QUERIES[name], name,
        pollMs: o.pollMs ?? DEFAULTS.fleet.pollMs, timeoutMs: DEFAULTS.fleet.queryTimeoutMs, progress: say,
      }) as Row[];
    }
    let metric: Map<string, number> | null = null;
    if (o.metrics) {
      const ids = [...new Set([...rows.coverage, ...rows.callers].map((r) => r.instance).filter((i) => i && INSTANCE_ID.test(i)))];
      try {
        metric = await metadataNoToken(cw, ids, start, end);
      } catch (err) {
        say(`imds-tracer fleet: MetadataNoToken not read (GetMetricData: ${(err as Error).message}); no cross-check`);
      }
    }
    const view = fleetView(rows, metric);
    out(o.json ? `${JSON.stringify(view, null, 2)}\n` : o.csv ? renderCsv(view) : `${renderFleet(view)}\n`);
    return o.failOnV1 && view.some((f) => f.verdict !== 'ready') ? EXIT_FLEET_NOT_READY : 0;
  } catch (err) {
    say(`imds-tracer fleet: ${(err as Error).message}`);
    return 1;
  } finally {
    logs.destroy();
    cw.destroy();
  }
}
