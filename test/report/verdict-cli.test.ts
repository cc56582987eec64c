/**
 * `report --verdict`, `--fail-on-v1`, and the per-caller advice (SDK, rates, 429s, credentials not
 * cached), end to end through the built CLI on fixture files.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { gzipSync } from 'node:zlib';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const ROOT = join(import.meta.dirname, '../..');
const CLI = join(ROOT, 'dist/cli.js');
let dir = '';

type P = Record<string, unknown>;
const proc = (exe: string, argv: string[], extra: P = {}): P => ({
  attribution: 'ebpf', pid: 7, comm: exe.split('/').pop(), exe, argv, uid: 0, user: 'root', ppid: 1, ancestors: [],
  cgroup: '/system.slice/x.service', container: null, systemd_unit: 'x.service', ...extra,
});
function call(time: string, over: { version?: 'v1' | 'v2' | null; path?: string; status?: number | null; ua?: string | null; p?: P; extra?: P } = {}): string {
  return JSON.stringify({
    event: 'imds_call', time, imds_version: over.version === undefined ? 'v1' : over.version, provider: 'aws',
    request: { method: 'GET', path: over.path ?? '/latest/meta-data/instance-id', http_version: '1.1', token_present: over.version === 'v2', token_request: false, user_agent: over.ua ?? null },
    response: { status: over.status === undefined ? 200 : over.status },
    connection: { src: '10.0.0.5', sport: 40000, dst: '169.254.169.254', dport: 80, interface: 'eth0', family: 'ipv4' },
    process: over.p ?? proc('/usr/bin/python3', ['python3', '/opt/app.py']), ...over.extra,
  });
}
const OLD_BOTO = 'Boto3/1.9.0 Python/3.7.3 Linux/4.14.77 Botocore/1.12.0';
const POLLER = proc('/usr/bin/python3', ['python3', '/opt/poller.py'], { systemd_unit: 'poller.service' });
const LEGACY = proc('/opt/legacy/bin/agent', ['/opt/legacy/bin/agent'], { systemd_unit: 'legacy.service' });
const IN_POD = proc('/usr/bin/curl', ['curl', 'http://169.254.169.254/'], { systemd_unit: null,
  container: { runtime: 'containerd', id: 'b2'.repeat(32), pod_uid: '5f0c9e2a-7d1b-4c3e-9a8f-1b2c3d4e5f60',
    k8s: { namespace: 'payments', pod: 'api-7d4b9c-xk2lp', container: 'api' } } });

function run(args: string[]): { code: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [CLI, 'report', ...args], { encoding: 'utf8' });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'verdict-'));
  // A rotated file cut short (its gzip stream truncated): the lines before the cut are read.
  const gz = gzipSync(`${JSON.stringify({ event: 'ready', time: '2026-11-20T00:00:00.000Z' })}\n${'{"event":"stats","time":"2026-11-20T00:00:01.000Z"}\n'.repeat(2000)}`);
  writeFileSync(join(dir, 'cut.jsonl.1.gz'), gz.subarray(0, Math.floor(gz.length / 2)));
  writeFileSync(join(dir, 'ready.jsonl'), [
    JSON.stringify({ event: 'ready', time: '2026-11-25T00:00:00.000Z' }),
    call('2026-11-26T00:00:00.000Z', { version: 'v2', ua: 'aws-sdk-go/1.50.0 (go1.21; linux; amd64)' }),
    JSON.stringify({ event: 'stats', time: '2026-11-28T00:00:00.000Z' }),
  ].join('\n') + '\n');
  const lines = [JSON.stringify({ event: 'ready', time: '2026-11-28T00:00:00.000Z' })];
  // An old boto3 polling its role's credentials 30 times in one minute, throttled 4 times.
  for (let i = 0; i < 30; i++) {
    lines.push(call(`2026-11-28T10:00:${String(i).padStart(2, '0')}.500Z`, {
      path: '/latest/meta-data/iam/security-credentials/app-role', status: i >= 26 ? 429 : 200, ua: OLD_BOTO, p: POLLER,
    }));
  }
  // A caller already rejected by enforcement.
  lines.push(call('2026-11-28T11:00:00.000Z', { status: 401, ua: 'curl/7.88.1', p: LEGACY }));
  lines.push(call('2026-11-28T11:00:01.000Z', { status: 401, ua: 'curl/7.88.1', p: LEGACY }));
  // A caller in a Kubernetes pod, named by the agent.
  lines.push(call('2026-11-28T11:30:00.000Z', { ua: 'curl/7.88.1', p: IN_POD }));
  // A connection the kernel saw and the wire did not show.
  lines.push(call('2026-11-28T12:00:00.000Z', { version: null, status: null, extra: { wire_reason: 'no_request_seen' } }));
  writeFileSync(join(dir, 'not-ready.jsonl'), `${lines.join('\n')}\n`);
});
afterAll(() => { if (dir) rmSync(dir, { recursive: true, force: true }); });

describe.skipIf(!existsSync(CLI))('report --verdict (built CLI)', () => {
  it('ready: no IMDSv1 call since the first record, days traced; --fail-on-v1 exits 0', () => {
    const r = run(['--verdict', '--fail-on-v1', join(dir, 'ready.jsonl')]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout.split('\n')[0]).toBe('ready for HttpTokens=required: no IMDSv1 call since 2026-11-25T00:00:00.000Z (3 days traced)');
  });

  it('not ready: the callers with their SDK advice, the broken ones, the unreadable calls; --fail-on-v1 exits 3', () => {
    const r = run(['--verdict', '--fail-on-v1', join(dir, 'not-ready.jsonl')]);
    expect(r.code, r.stderr).toBe(3);
    expect(r.stdout.split('\n')[0]).toBe('not ready: 2 callers; 1 caller broken by enforcement; could not read 1 call');
    expect(r.stdout).toContain('/usr/bin/curl (curl http://169.254.169.254/) user root container payments/api-7d4b9c-xk2lp/api (b2b2b2b2b2b2)');
    expect(r.stdout).toContain('boto3 1.9.0: upgrade boto3 to ≥ 1.12.6 and botocore to ≥ 1.13.25');
    expect(r.stdout).toMatch(/broken by enforcement \(IMDSv1 calls answered 401[^\n]*\n1\. \/opt\/legacy\/bin\/agent/);
    expect(r.stdout).toContain('could not read 1 call (counted as IMDSv1 until shown otherwise): no_request_seen×1');
    // Without --fail-on-v1 the verdict is printed and the exit status is 0.
    expect(run(['--verdict', join(dir, 'not-ready.jsonl')]).code).toBe(0);
    expect(run(['--fail-on-v1', '--json', join(dir, 'not-ready.jsonl')]).code).toBe(3);
  });

  it('--verdict --json: the verdict object', () => {
    const r = run(['--verdict', '--json', join(dir, 'not-ready.jsonl')]);
    const v = JSON.parse(r.stdout);
    expect(v).toMatchObject({
      status: 'not_ready', first_record: '2026-11-28T00:00:00.000Z', last_record: '2026-11-28T12:00:00.000Z',
      unreadable_calls: 1, unreadable_reasons: { no_request_seen: 1 },
    });
    expect(v.callers.map((g: P) => g.command)).toEqual(['python3 /opt/poller.py', 'curl http://169.254.169.254/']);
    expect(v.callers[1].container_name).toBe('payments/api-7d4b9c-xk2lp/api');
    expect(v.broken_by_enforcement.map((g: P) => g.exe)).toEqual(['/opt/legacy/bin/agent']);
  });

  it('the report shows rates, 429s, and a caller fetching credentials on every call', () => {
    const r = run([join(dir, 'not-ready.jsonl')]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain('peak 1/s 30/min, throttled (429) ×4; fetches credentials 30 times a minute instead of caching them');
    const groups = JSON.parse(run(['--json', join(dir, 'not-ready.jsonl')]).stdout);
    expect(groups[0].rates).toEqual({ peak_per_second: 1, peak_per_minute: 30, throttled: 4, credential_fetches: 30,
      credential_fetches_peak_per_minute: 30, credentials_not_cached: true });
    expect(groups.filter((g: P) => (g.rates as P).credentials_not_cached)).toHaveLength(1);
  });

  it('a file not read to the end blocks readiness (it may hide IMDSv1 calls)', () => {
    const r = run(['--verdict', '--json', join(dir, 'cut.jsonl.1.gz'), join(dir, 'ready.jsonl')]);
    expect(r.stderr).toMatch(/cannot read .*cut\.jsonl\.1\.gz/);
    const v = JSON.parse(r.stdout);
    expect(v).toMatchObject({ status: 'not_ready', summary: 'not ready: 1 file not read to the end', files_not_read: 1,
      first_record: '2026-11-20T00:00:00.000Z' });
  });
});
