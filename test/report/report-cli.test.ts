/**
 * `imds-tracer report`, end to end: the built CLI (dist/cli.js; `npx tsc -p tsconfig.json`) on
 * fixture files made here — a rotated set (one gzipped), a garbage line, records of other kinds,
 * and one large file read as a stream.
 */
import { spawnSync } from 'node:child_process';
import { createWriteStream, existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { once } from 'node:events';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const ROOT = join(import.meta.dirname, '../..');
const CLI = join(ROOT, 'dist/cli.js');
let dir = '';

type P = Record<string, unknown>;
const proc = (exe: string, argv: string[], user: string, extra: P = {}): P => ({
  attribution: 'proc', pid: 1, comm: exe.split('/').pop(), exe, argv, uid: 1, user, ppid: 1, ancestors: [],
  cgroup: '/', container: null, systemd_unit: null, ...extra,
});
function call(time: string, path: string, status: number | null, p: P, over: P = {}): string {
  return JSON.stringify({
    event: 'imds_call', time, imds_version: 'v1', provider: 'aws',
    request: { method: 'GET', path, http_version: '1.1', token_present: false, token_request: false, user_agent: 'curl/7.88.1' },
    response: { status }, connection: { src: '10.0.0.5', sport: 40000, dst: '169.254.169.254', dport: 80, interface: 'eth0', family: 'ipv4' },
    process: p, ...over,
  });
}
const LEGACY = proc('/usr/bin/python3.11', ['python3', '/opt/legacy/agent.py', '--poll'], 'legacy', { systemd_unit: 'legacy-agent.service' });
const CURL = proc('/usr/bin/curl', ['curl', '-s', 'http://169.254.169.254/latest/meta-data/'], 'root',
  { container: { runtime: 'docker', id: '0123456789abcdef0123456789abcdef' } });

function run(args: string[]): { code: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [CLI, 'report', ...args], { encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'report-'));
  const base = join(dir, 'calls.jsonl');
  // Oldest (.2, gzipped) → .1 → live file.
  writeFileSync(`${base}.2.gz`, gzipSync([
    JSON.stringify({ event: 'ready', time: '2026-11-28T10:00:00.000Z' }),
    call('2026-11-28T10:00:01.000Z', '/latest/meta-data/iam/security-credentials/', 200, LEGACY),
    call('2026-11-28T10:00:02.000Z', '/latest/meta-data/instance-id', 200, LEGACY),
  ].join('\n') + '\n'));
  writeFileSync(`${base}.1`, [
    call('2026-11-28T11:00:00.000Z', '/latest/meta-data/instance-id', 401, LEGACY),
    '{"event":"imds_call","time":"2026-11-28T11:00:01', // a line cut short (a crash mid-write)
    call('2026-11-28T11:00:02.000Z', '/latest/meta-data/', 200, CURL),
  ].join('\n') + '\n');
  writeFileSync(base, [
    'garbage that is not JSON',
    call('2026-11-28T12:00:00.000Z', '/latest/api/token', 200, CURL, { imds_version: 'v2', request: { method: 'PUT', path: '/latest/api/token', http_version: '1.1', token_present: false, token_request: true, token_ttl_seconds: 60, user_agent: null } }),
    call('2026-11-28T12:00:01.000Z', '/latest/meta-data/placement/region', 200, { attribution: 'none', reason: 'socket not found' }),
    JSON.stringify({ event: 'stats', time: '2026-11-28T12:00:02.000Z' }),
    call('2026-11-28T12:00:03.000Z', '/latest/meta-data/iam/info', 200, LEGACY),
  ].join('\n') + '\n');
});
afterAll(() => { if (dir) rmSync(dir, { recursive: true, force: true }); });

describe.skipIf(!existsSync(CLI))('report (built CLI)', () => {
  it('--json over a rotated set (one gzipped): the distinct v1 callers, garbage skipped and counted', () => {
    const base = join(dir, 'calls.jsonl');
    const r = run(['--json', `${base}.2.gz`, `${base}.1`, base]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toContain('skipped 2 unparsable lines');
    const groups = JSON.parse(r.stdout) as P[];
    expect(groups).toEqual([
      {
        imds_version: 'v1', exe: '/usr/bin/python3.11', command: 'python3 /opt/legacy/agent.py --poll', user: 'legacy',
        container: null, systemd_unit: 'legacy-agent.service', user_agent: null,
        paths: ['/latest/meta-data/iam/info', '/latest/meta-data/iam/security-credentials/', '/latest/meta-data/instance-id'],
        paths_more: 0, count: 4, first_seen: '2026-11-28T10:00:01.000Z', last_seen: '2026-11-28T12:00:03.000Z',
        statuses: [{ status: 200, count: 3 }, { status: 401, count: 1 }], attribution: 'proc',
        // The latest call's SDK (its User-Agent here is curl's) and the caller's rates.
        sdk: { name: 'curl', version: '7.88.1', imdsv2_min: null, advice: 'no AWS SDK: the code calls IMDS itself: add the token PUT' },
        rates: { peak_per_second: 1, peak_per_minute: 2, throttled: 0, credential_fetches: 0, credential_fetches_peak_per_minute: 0, credentials_not_cached: false },
      },
      // Ties on count: the most recently seen first.
      expect.objectContaining({ exe: null, attribution: 'none', user_agent: 'curl/7.88.1', count: 1 }),
      expect.objectContaining({ exe: '/usr/bin/curl', container: '0123456789ab', count: 1, user: 'root' }),
    ]);
    // The contract's field names are all there.
    for (const f of ['exe', 'command', 'user', 'container', 'systemd_unit', 'paths', 'count', 'first_seen', 'last_seen', 'statuses', 'attribution']) {
      expect(groups[0]).toHaveProperty(f);
    }
  });

  it('with no files: the log file named by --log-file and its rotated siblings; --include-v2 adds v2 callers', () => {
    const r = run(['--json', '--include-v2', '--log-file', join(dir, 'calls.jsonl')]);
    expect(r.code, r.stderr).toBe(0);
    const groups = JSON.parse(r.stdout) as P[];
    expect(groups.map((g) => [g.imds_version, g.exe, g.count])).toEqual([
      ['v1', '/usr/bin/python3.11', 4], ['v1', null, 1], ['v2', '/usr/bin/curl', 1], ['v1', '/usr/bin/curl', 1],
    ]);
  });

  it('the default output is a readable table, most calls first, with a summary', () => {
    const r = run(['--max-paths', '1', '--log-file', join(dir, 'calls.jsonl')]);
    expect(r.code, r.stderr).toBe(0);
    const lines = r.stdout.trimEnd().split('\n');
    expect(lines[0]).toMatch(/^CALLS\s+EXECUTABLE\s+COMMAND/);
    expect(lines[1]).toMatch(/^4\s+\/usr\/bin\/python3\.11\s+python3 \/opt\/legacy\/agent\.py --poll\s+legacy\s+unit legacy-agent\.service\s+200×3 401×1\s+2026-11-28 10:00:01Z\s+2026-11-28 12:00:03Z\s+\/latest\/meta-data\/iam\/info \+2 more$/);
    expect(r.stdout).toContain('(caller not identified)  User-Agent: curl/7.88.1');
    expect(lines.at(-1)).toBe('6 IMDSv1 calls from 3 distinct callers in 3 files');
  });

  it('a missing file or an empty default set is an error sentence, exit 1', () => {
    const missing = run([join(dir, 'nope.jsonl')]);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toMatch(/cannot read .*nope\.jsonl: ENOENT/);
    const none = run(['--log-file', join(dir, 'empty', 'calls.jsonl')]);
    expect(none.code).toBe(1);
    expect(none.stderr).toMatch(/no log file at .*empty\/calls\.jsonl \(nor rotated ones\); name the files to read/);
  });

  it('a truncated rotated .gz: its readable part is reported, the file is named with why, exit 0', () => {
    const cut = join(dir, 'cut.jsonl.3.gz');
    const lines = Array.from({ length: 2000 }, (_, i) =>
      call(new Date(Date.UTC(2026, 10, 27, 0, 0, i)).toISOString(), `/latest/meta-data/p${i % 7}`, 200, LEGACY));
    const gz = gzipSync(`${lines.join('\n')}\n`);
    writeFileSync(cut, gz.subarray(0, Math.floor(gz.length * 0.6))); // rotation interrupted: no end
    const good = join(dir, 'calls.jsonl.1');
    const r = run(['--json', cut, good, join(dir, 'nope.jsonl')]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/cannot read .*cut\.jsonl\.3\.gz: truncated gzip data \(unexpected end of file\) \(the \d+ lines read before that are in the report\)/);
    expect(r.stderr).toMatch(/cannot read .*nope\.jsonl: ENOENT/);
    const groups = JSON.parse(r.stdout) as P[];
    const legacy = groups.find((g) => g.exe === '/usr/bin/python3.11');
    // Part of the cut file (far more than the 1 call of calls.jsonl.1), never more than it holds.
    expect(legacy?.count).toBeGreaterThan(100);
    expect(legacy?.count).toBeLessThan(2001);
    expect(legacy?.first_seen).toBe('2026-11-27T00:00:00.000Z');
    expect(groups.find((g) => g.exe === '/usr/bin/curl')).toMatchObject({ count: 1 }); // the other file too
    const table = run([cut, good]);
    expect(table.code, table.stderr).toBe(0);
    expect(table.stdout.trimEnd().split('\n').at(-1)).toMatch(/ in 2 files, 1 of them not read to the end$/);
  });

  it('nothing readable (a missing file, a .gz cut inside its header): each named, exit 1', () => {
    const header = join(dir, 'header.jsonl.4.gz');
    writeFileSync(header, gzipSync('x').subarray(0, 5));
    const r = run([header, join(dir, 'nope.jsonl')]);
    expect(r.code).toBe(1);
    expect(r.stdout).toBe('');
    expect(r.stderr).toMatch(/cannot read .*header\.jsonl\.4\.gz: truncated gzip data/);
    expect(r.stderr).toMatch(/cannot read .*nope\.jsonl: ENOENT/);
    expect(r.stderr).toContain('nothing could be read (2 files)');
  });

  it('reads a large file as a stream (200,000 records)', async () => {
    const big = join(dir, 'big.jsonl');
    const out = createWriteStream(big);
    for (let i = 0; i < 200_000; i++) {
      const p = i % 3 === 0 ? CURL : LEGACY;
      if (!out.write(`${call(new Date(Date.UTC(2026, 10, 28, 0, 0, 0, i)).toISOString(), `/latest/meta-data/p${i % 50}`, i % 10 === 0 ? 401 : 200, p)}\n`)) {
        await once(out, 'drain');
      }
    }
    out.end();
    await once(out, 'finish');
    const r = run(['--json', big]);
    expect(r.code, r.stderr).toBe(0);
    const groups = JSON.parse(r.stdout) as P[];
    expect(groups.map((g) => [g.exe, g.count, g.paths_more])).toEqual([['/usr/bin/python3.11', 133_333, 45], ['/usr/bin/curl', 66_667, 45]]);
    expect(groups[1].statuses).toEqual([{ status: 200, count: 60_000 }, { status: 401, count: 6667 }]);
  });
});
