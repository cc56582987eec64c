/**
 * `imds-tracer fleet`, through the real SDK clients pointed (endpoint override) at a fake of
 * CloudWatch Logs Insights and CloudWatch GetMetricData (test/cloudwatch/fake-insights.ts).
 */
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runFleet, parseWhen, type FleetOptions } from '../../agent/src/fleet/cli.js';
import { renderCsv, type FleetInstance } from '../../agent/src/fleet/view.js';
import { FLEET_QUERIES } from '../../agent/src/fleet/queries.js';
import { periodFor } from '../../agent/src/fleet/metrics.js';
import { FakeInsights } from './fake-insights.js';

const NOW = Date.now();
const ago = (h: number): string => new Date(NOW - h * 3600_000).toISOString();
const A = 'i-0aaaaaaaaaaaaaaa1'; // two v1 callers; AWS counted more than were recorded
const B = 'i-0bbbbbbbbbbbbbbb2'; // ready; AWS agrees
const C = 'i-0ccccccccccccccc3'; // enforced: a caller broken; one unreadable call
const H = 'web-1.internal';      // a log stream that is not an instance id

function call(time: string, exe: string, over: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    event: 'imds_call', time, imds_version: 'v1', provider: 'aws',
    request: { method: 'GET', path: '/latest/meta-data/instance-id', user_agent: 'curl/7.88.1' }, response: { status: 200 },
    process: { attribution: 'ebpf', pid: 9, comm: exe.split('/').pop(), exe },
    sdk: { name: 'curl', version: '7.88.1', imdsv2_min: null, advice: 'no AWS SDK: the code calls IMDS itself: add the token PUT' },
    ...over,
  };
}

let fake: FakeInsights;
const saved = { ...process.env };

beforeAll(async () => {
  fake = new FakeInsights();
  await fake.start();
  Object.assign(process.env, { AWS_ACCESS_KEY_ID: 'AKIDFAKEFLEET', AWS_SECRET_ACCESS_KEY: 'fake-secret', AWS_REGION: 'us-east-1' });
  const g = 'imds-tracer';
  for (const s of [A, B, C, H]) fake.add(g, s, { event: 'ready', time: ago(24 * 6) });
  for (let i = 0; i < 5; i++) {
    fake.add(g, A, call(ago(30 - i), '/usr/bin/python3', {
      request: { method: 'GET', path: '/latest/meta-data/iam/security-credentials/r', user_agent: 'Botocore/1.12.0 Python/3.6.9 Linux/4.15' },
      sdk: { name: 'botocore', version: '1.12.0', imdsv2_min: '1.13.25', advice: 'upgrade botocore to ≥ 1.13.25' },
    }));
  }
  // A record written before the sdk field: the advice is worked out from its User-Agent.
  const old = call(ago(20), '/opt/app/bin/poller', { request: { method: 'GET', path: '/latest/meta-data/', user_agent: 'aws-sdk-go/1.20.0 (go1.12; linux; amd64)' } });
  delete old.sdk;
  fake.add(g, A, old);
  fake.add(g, B, call(ago(10), '/usr/bin/curl', { imds_version: 'v2' }));
  fake.add(g, B, { event: 'stats', time: ago(1) });
  fake.add(g, C, call(ago(5), '/usr/bin/curl', { response: { status: 401 } }));
  fake.add(g, C, { event: 'imds_call', time: ago(4), imds_version: null, provider: 'aws', wire_reason: 'no_request_seen' });
  fake.add(g, H, { event: 'stats', time: ago(2) });
  fake.add(g, 'i-0ddddddddddddddd4', call(ago(24 * 30), '/usr/bin/curl')); // outside the window
  fake.metadataNoToken.set(A, [[NOW - 30 * 3600_000, 4], [NOW - 20 * 3600_000, 5]]); // 9 counted, 6 recorded
  fake.metadataNoToken.set(B, [[NOW - 10 * 3600_000, 0]]);
});
afterAll(async () => {
  process.env = saved;
  await fake?.stop();
});

function opts(over: Partial<FleetOptions> = {}): FleetOptions {
  return { logGroup: 'imds-tracer', since: '7d', logsEndpoint: fake.endpoint, cloudwatchEndpoint: fake.endpoint, metrics: true,
    json: true, csv: false, failOnV1: false, pollMs: 10, ...over };
}

async function run(o: FleetOptions): Promise<{ code: number; out: string; err: string[] }> {
  let out = '';
  const err: string[] = [];
  const code = await runFleet(o, (l) => err.push(l), (t) => { out += t; });
  return { code, out, err };
}

describe('fleet (SDK against the fake)', () => {
  it('per instance: verdict, callers with SDK advice, the MetadataNoToken cross-check; progress on stderr', async () => {
    const r = await run(opts());
    expect(r.code, r.err.join('\n')).toBe(0);
    const view = JSON.parse(r.out) as FleetInstance[];
    expect(view.map((f) => [f.instance, f.verdict])).toEqual([
      [A, 'not_ready'], [C, 'not_ready'], [B, 'ready'], [H, 'ready'],
    ]);
    const a = view[0];
    expect(a.callers).toEqual([
      { executable: '/usr/bin/python3', calls: 5, rejected: 0, last_seen: expect.any(String), sdk: { name: 'botocore', version: '1.12.0', advice: 'upgrade botocore to ≥ 1.13.25' } },
      { executable: '/opt/app/bin/poller', calls: 1, rejected: 0, last_seen: expect.any(String), sdk: { name: 'aws-sdk-go', version: '1.20.0', advice: 'upgrade aws-sdk-go to ≥ 1.25.38' } },
    ]);
    expect(a).toMatchObject({ v1_calls: 6, metadata_no_token: 9, unseen_calls: 3,
      summary: 'not ready: 2 callers; 3 IMDSv1 calls AWS counted that the agent did not see',
      cross_check: 'AWS counted 9 IMDSv1 calls, the agent recorded 6: 3 not seen (agent down, not installed, or a gap)' });
    expect(view[1]).toMatchObject({ summary: 'not ready: 1 caller broken by enforcement; could not read 1 call', rejected_calls: 1, metadata_no_token: 0, unseen_calls: 0 });
    expect(view[2]).toMatchObject({ summary: expect.stringMatching(/^ready for HttpTokens=required: no IMDSv1 call since \d{4}-/), cross_check: 'matches MetadataNoToken (0)' });
    expect(view[3]).toMatchObject({ metadata_no_token: null, cross_check: 'not compared: the log stream is not an instance id' });
    // Every query ran over the same window, and the metric over it too, per instance id.
    expect(fake.queries.map((q) => q.queryString)).toEqual(Object.values(FLEET_QUERIES));
    const win = fake.queries[0];
    expect(fake.queries.every((q) => q.startTime === win.startTime && q.endTime === win.endTime)).toBe(true);
    expect(win.endTime - win.startTime).toBeGreaterThanOrEqual(7 * 86400);
    const m = fake.metricRequests.at(-1)!;
    expect(Math.abs(m.StartTime - win.startTime)).toBeLessThanOrEqual(1);
    expect(m.MetricDataQueries.map((q: any) => q.MetricStat.Metric.Dimensions[0].Value).sort()).toEqual([A, B, C].sort());
    expect(r.err.some((l) => /^imds-tracer fleet: callers query Running: /.test(l))).toBe(true);
    expect(r.err.some((l) => /^imds-tracer fleet: callers query Complete: \d+ records scanned, 3 matched/.test(l))).toBe(true);
  });

  it('--csv: a row per instance and caller; --fail-on-v1 exits 3; the table', async () => {
    const csv = await run(opts({ json: false, csv: true, failOnV1: true }));
    expect(csv.code).toBe(3);
    const lines = csv.out.trimEnd().split('\r\n');
    expect(lines[0]).toBe('instance,verdict,summary,executable,calls,rejected,sdk,sdk_version,advice,v1_calls,unreadable_calls,metadata_no_token,unseen_calls,first_record,last_record');
    expect(lines).toHaveLength(1 + 2 + 1 + 1 + 1);
    expect(lines[1]).toMatch(new RegExp(`^${A},not_ready,not ready: 2 callers; 3 IMDSv1 calls AWS counted that the agent did not see,/usr/bin/python3,5,0,botocore,1\\.12\\.0,upgrade botocore to ≥ 1\\.13\\.25,6,0,9,3,`));
    const table = await run(opts({ json: false }));
    expect(table.out).toContain(`${A}  not ready: 2 callers`);
    expect(table.out).toContain('  5× /usr/bin/python3 — botocore 1.12.0: upgrade botocore to ≥ 1.13.25');
    expect(table.out.trimEnd().split('\n').at(-1)).toBe('4 instances: 2 ready, 2 not ready');
  });

  it('GetMetricData refused: said on stderr, the view without the cross-check; --no-metrics skips it', async () => {
    fake.failMetrics = true;
    try {
      const r = await run(opts());
      expect(r.code).toBe(0);
      expect(r.err.join('\n')).toMatch(/MetadataNoToken not read \(GetMetricData: User is not authorized/);
      expect((JSON.parse(r.out) as FleetInstance[])[0].cross_check).toBe('not compared: MetadataNoToken not read');
    } finally {
      fake.failMetrics = false;
    }
    const before = fake.metricRequests.length;
    await run(opts({ metrics: false }));
    expect(fake.metricRequests.length).toBe(before);
  });

  it('a missing log group or a bad window: a sentence, exit 1 or 2', async () => {
    const r = await run(opts({ logGroup: 'nope' }));
    expect(r.code).toBe(1);
    expect(r.err.join('\n')).toMatch(/Log group does not exist/);
    expect((await run(opts({ since: 'yesterday' }))).code).toBe(2);
    expect(parseWhen('12h', 1_000_000_000)).toBe(1_000_000_000 - 12 * 3600_000);
    expect(parseWhen('2026-11-01T00:00:00Z', 0)).toBe(Date.UTC(2026, 10, 1));
  });

  it('docs/cloudwatch.md shows the four queries verbatim', async () => {
    const { readFileSync } = await import('node:fs');
    const doc = readFileSync(new URL('../../docs/cloudwatch.md', import.meta.url), 'utf8');
    for (const q of Object.values(FLEET_QUERIES)) expect(doc).toContain(`\`\`\`\n${q}\n\`\`\``);
  });

  it('GetMetricData periods CloudWatch accepts: multiples of 300, of 3600 past 63 days; at most 1,440 points', () => {
    const d = 86400_000;
    expect(periodFor(7 * d)).toBe(600);
    expect(periodFor(d)).toBe(300);
    expect(periodFor(30 * d)).toBe(1800);
    expect(periodFor(90 * d)).toBe(7200);
    expect(periodFor(d, 70 * d)).toBe(3600);
    for (const w of [1, 7, 30, 62, 64, 200]) expect((w * d) / 1000 / periodFor(w * d)).toBeLessThanOrEqual(1440);
  });

  it('CSV quoting (RFC 4180)', () => {
    const f: FleetInstance = { instance: 'i-1', verdict: 'not_ready', summary: 'a, "b"', first_record: null, last_record: null, v1_calls: 0,
      rejected_calls: 0, unreadable_calls: 0, callers: [], metadata_no_token: null, unseen_calls: null, cross_check: '' };
    expect(renderCsv([f]).split('\r\n')[1]).toBe('i-1,not_ready,"a, ""b""",,,,,,,0,0,,,,');
  });

  it('the built CLI: imds-tracer fleet --log-group … --since 7d --json (commander options, exit status)', async () => {
    const cli = join(import.meta.dirname, '../../dist/cli.js');
    const r = await new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
      execFile(process.execPath, [cli, 'fleet', '--log-group', 'imds-tracer', '--since', '7d', '--json', '--fail-on-v1',
        '--logs-endpoint', fake.endpoint, '--cloudwatch-endpoint', fake.endpoint], { env: process.env },
      (err, stdout, stderr) => resolve({ code: err ? (err as { code?: number }).code ?? 1 : 0, stdout, stderr }));
    });
    expect(r.code, r.stderr).toBe(3);
    expect((JSON.parse(r.stdout) as FleetInstance[]).map((f) => f.instance)).toEqual([A, C, B, H]);
    expect(r.stderr).toMatch(/unreadable query Complete/);
  }, 30_000);
});
