import { describe, expect, it } from 'vitest';
import {
  Aggregator, containerName, formatPaths, formatStatuses, normaliseCommand, NOT_IDENTIFIED,
} from '../../agent/src/report/aggregate.js';
import { renderReport } from '../../agent/src/report/cli.js';
import { describeReadError } from '../../agent/src/report/cli.js';
import { LineSplitter, ReadError, readJsonLines, siblingsOldestFirst } from '../../agent/src/report/files.js';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';

type P = Record<string, unknown>;
function call(time: string, path: string, status: number | null, proc: P, over: P = {}): P {
  return {
    event: 'imds_call', time, imds_version: 'v1', provider: 'aws',
    request: { method: 'GET', path, http_version: '1.1', token_present: false, token_request: false, user_agent: null },
    response: { status }, connection: {}, process: proc, ...over,
  };
}
const legacy: P = { attribution: 'proc', pid: 10, comm: 'python3', exe: '/usr/bin/python3.11', argv: ['python3', '/opt/legacy/agent.py', '--poll'],
  uid: 998, user: 'legacy', container: null, systemd_unit: 'legacy-agent.service' };
const docker: P = { attribution: 'ebpf', pid: 20, comm: 'node', exe: null, argv: ['node', 'server.js'], uid: 1000, user: null,
  container: { runtime: 'docker', id: '4f5e6d7c8b9a0f1e2d3c4b5a69788796a5b4c3d2e1f0a9b8c7d6e5f4a3b2c1d0' }, systemd_unit: null };
const none = (ua: string | null): [P, P] => [{ attribution: 'none', reason: 'gone' }, { request: { method: 'GET', path: '/latest/meta-data/', http_version: '1.1', token_present: false, token_request: false, user_agent: ua } }];

describe('normaliseCommand', () => {
  it.each([
    [['python3', '/opt/a.py', '--poll'], 'python3 /opt/a.py --poll'],
    [['sh', '-c', 'curl   -s\n  http://169.254.169.254/ '], "sh -c 'curl -s http://169.254.169.254/'"], // whitespace collapsed, quoted
    [['aws', 's3', 'cp', '/tmp/tmp.Xa9d1', 's3://b/'], 'aws s3 cp /tmp/tmp.Xa9d1 s3://b/'], // nothing identifying dropped
    [['curl', '-H', 'X-Token: [REDACTED]'], "curl -H 'X-Token: [REDACTED]'"],
  ])('%j → %s', (argv, cmd) => expect(normaliseCommand(argv)).toBe(cmd));
});

describe('containerName', () => {
  it.each([
    [null, null],
    [{ runtime: 'docker', id: 'abcdef0123456789abcdef' }, 'abcdef012345'],
    [{ runtime: 'kubernetes', id: null, pod_uid: 'pod-1' }, 'pod-1'],
    [{ runtime: 'ecs', id: null, task_id: 'task-9' }, 'task-9'],
    [{ runtime: 'podman', id: null }, 'podman'],
  ])('%j → %s', (c, name) => expect(containerName(c)).toBe(name));
});

describe('formatting', () => {
  it('statuses and paths', () => {
    expect(formatStatuses([{ status: 200, count: 12 }, { status: 401, count: 3 }, { status: null, count: 1 }])).toBe('200×12 401×3 -×1');
    expect(formatPaths({ paths: ['/a', '/b'], paths_more: 0 })).toBe('/a /b');
    expect(formatPaths({ paths: ['/a', '/b'], paths_more: 4 })).toBe('/a /b +4 more');
  });
});

describe('Aggregator', () => {
  it('groups by caller, counts, first/last seen in any order, statuses, distinct sorted paths capped', () => {
    const a = new Aggregator({ includeV2: false, maxPaths: 2 });
    a.add(call('2026-11-28T15:00:05.000Z', '/latest/meta-data/iam/security-credentials/', 200, legacy));
    a.add(call('2026-11-28T15:00:01.000Z', '/latest/meta-data/instance-id', 200, legacy)); // earlier, read later
    a.add(call('2026-11-28T15:00:09.000Z', '/latest/meta-data/instance-id', 401, legacy));
    a.add(call('2026-11-28T15:00:07.000Z', '/latest/meta-data/placement/region', null, legacy));
    a.add(call('2026-11-28T15:00:03.000Z', '/latest/user-data', 200, docker));
    const [g1, g2] = a.result();
    expect(g1).toEqual({
      imds_version: 'v1', exe: '/usr/bin/python3.11', command: 'python3 /opt/legacy/agent.py --poll', user: 'legacy',
      container: null, systemd_unit: 'legacy-agent.service', user_agent: null,
      paths: ['/latest/meta-data/iam/security-credentials/', '/latest/meta-data/instance-id'], paths_more: 1,
      count: 4, first_seen: '2026-11-28T15:00:01.000Z', last_seen: '2026-11-28T15:00:09.000Z',
      statuses: [{ status: 200, count: 2 }, { status: 401, count: 1 }, { status: null, count: 1 }], attribution: 'proc',
    });
    expect(g2).toMatchObject({ exe: 'node', command: 'node server.js', user: '1000', container: '4f5e6d7c8b9a', count: 1, attribution: 'ebpf' });
  });

  it('the same program attributed two ways is one caller; a different argv or user is another', () => {
    const a = new Aggregator({ includeV2: false, maxPaths: 5 });
    a.add(call('2026-11-28T15:00:01.000Z', '/p', 200, legacy));
    a.add(call('2026-11-28T15:00:02.000Z', '/p', 200, { ...legacy, attribution: 'ebpf', pid: 99 }));
    a.add(call('2026-11-28T15:00:03.000Z', '/p', 200, { ...legacy, argv: ['python3', '/opt/legacy/agent.py', '--once'] }));
    a.add(call('2026-11-28T15:00:04.000Z', '/p', 200, { ...legacy, user: 'root', uid: 0 }));
    const r = a.result();
    expect(r.map((g) => [g.count, g.attribution, g.command, g.user])).toEqual([
      [2, 'ebpf+proc', 'python3 /opt/legacy/agent.py --poll', 'legacy'],
      [1, 'proc', 'python3 /opt/legacy/agent.py --poll', 'root'], // ties: most recent first
      [1, 'proc', 'python3 /opt/legacy/agent.py --once', 'legacy'],
    ]);
  });

  it('unidentified callers are grouped by User-Agent', () => {
    const a = new Aggregator({ includeV2: false, maxPaths: 5 });
    const [p, o] = none('Python-urllib/3.11');
    a.add(call('2026-11-28T15:00:01.000Z', '/x', 200, p, o));
    a.add(call('2026-11-28T15:00:02.000Z', '/x', 200, p, o));
    const [q, o2] = none(null);
    a.add(call('2026-11-28T15:00:03.000Z', '/x', 200, q, o2));
    const r = a.result();
    expect(r.map((g) => [g.count, g.exe, g.user_agent, g.attribution])).toEqual([
      [2, null, 'Python-urllib/3.11', 'none'], [1, null, null, 'none'],
    ]);
    expect(renderReport(r, false)).toContain(`${NOT_IDENTIFIED}  User-Agent: Python-urllib/3.11`);
  });

  it('v1 only by default; v2 with includeV2 (a separate group); other records, providers and bad times are ignored', () => {
    const recs = [
      call('2026-11-28T15:00:01.000Z', '/p', 200, legacy),
      call('2026-11-28T15:00:02.000Z', '/p', 200, legacy, { imds_version: 'v2' }),
      call('2026-11-28T15:00:03.000Z', '/computeMetadata/v1/', 404, legacy, { imds_version: null, provider: 'gce' }),
      call('not a time', '/p', 200, legacy),
      { event: 'stats', time: '2026-11-28T15:00:00.000Z' }, null, 42, 'text',
    ];
    const v1 = new Aggregator({ includeV2: false, maxPaths: 5 });
    recs.forEach((r) => v1.add(r));
    expect(v1.result().map((g) => [g.imds_version, g.count])).toEqual([['v1', 1]]);
    expect([v1.calls, v1.ignored]).toEqual([1, 7]);
    const both = new Aggregator({ includeV2: true, maxPaths: 5 });
    recs.forEach((r) => both.add(r));
    expect(both.result().map((g) => g.imds_version).sort()).toEqual(['v1', 'v2']);
  });

  it('the table: one row per caller, most calls first', () => {
    const a = new Aggregator({ includeV2: false, maxPaths: 5 });
    a.add(call('2026-11-28T15:00:03.000Z', '/latest/user-data', 200, docker));
    a.add(call('2026-11-28T15:00:01.000Z', '/a', 200, legacy));
    a.add(call('2026-11-28T15:00:02.000Z', '/a', 401, legacy));
    const lines = renderReport(a.result(), false).split('\n');
    expect(lines[0]).toMatch(/^CALLS\s+EXECUTABLE\s+COMMAND\s+USER\s+WHERE\s+STATUSES\s+FIRST SEEN\s+LAST SEEN\s+PATHS$/);
    expect(lines[1]).toMatch(/^2\s+\/usr\/bin\/python3\.11\s+python3 \/opt\/legacy\/agent\.py --poll\s+legacy\s+unit legacy-agent\.service\s+200×1 401×1\s+2026-11-28 15:00:01Z\s+2026-11-28 15:00:02Z\s+\/a$/);
    expect(lines[2]).toMatch(/^1\s+node\s+node server\.js\s+1000\s+container 4f5e6d7c8b9a\s+200×1/);
  });
});

describe('siblingsOldestFirst', () => {
  it('the rotated files by number (highest = oldest first), .gz too, the live file last; others ignored', () => {
    expect(siblingsOldestFirst('/var/log/x/calls.jsonl',
      ['calls.jsonl', 'calls.jsonl.1', 'calls.jsonl.10', 'calls.jsonl.2.gz', 'calls.jsonl.bak', 'calls.jsonl.1.tmp', 'other.jsonl.3']))
      .toEqual(['/var/log/x/calls.jsonl.10', '/var/log/x/calls.jsonl.2.gz', '/var/log/x/calls.jsonl.1', '/var/log/x/calls.jsonl']);
    expect(siblingsOldestFirst('/l/calls.jsonl', ['calls.jsonl.1'])).toEqual(['/l/calls.jsonl.1']);
    expect(siblingsOldestFirst('/l/calls.jsonl', [])).toEqual([]);
  });
});

describe('reading files', () => {
  it('LineSplitter: lines across chunks, CRLF, the text after the last newline held for rest()', () => {
    const got: string[] = [];
    const s = new LineSplitter();
    s.push('{"a":1}\n{"b"', (l) => got.push(l));
    s.push(':2}\r\n\n{"c', (l) => got.push(l));
    expect(got).toEqual(['{"a":1}', '{"b":2}', '']);
    expect(s.rest()).toBe('{"c');
    expect(s.rest()).toBe('');
  });

  it('a truncated .gz: every record before the cut is handed on, then a ReadError says how far and why', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'report-unit-'));
    try {
      const lines = Array.from({ length: 3000 }, (_, i) => JSON.stringify({ n: i, pad: 'x'.repeat(40 + (i * 7919) % 50) }));
      const gz = gzipSync(`${lines.join('\n')}\n`);
      const path = join(dir, 'calls.jsonl.2.gz');
      writeFileSync(path, gz.subarray(0, gz.length - 200));
      const seen: number[] = [];
      const counts = { lines: 0, unparsable: 0 };
      const err = await readJsonLines(path, (r) => seen.push((r as { n: number }).n), counts).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(ReadError);
      expect(describeReadError((err as ReadError).reason)).toBe('truncated gzip data (unexpected end of file)');
      expect((err as ReadError).linesRead).toBe(counts.lines);
      expect(seen.length).toBeGreaterThan(2000);
      expect(seen).toEqual(seen.map((_, i) => i)); // in order, none missing before the cut
      expect(counts.lines - seen.length).toBe(counts.unparsable); // at most the line cut in two
      expect(counts.unparsable).toBeLessThanOrEqual(1);
      // The whole file reads to its end with nothing lost.
      writeFileSync(path, gz);
      const all: unknown[] = [];
      await readJsonLines(path, (r) => all.push(r), { lines: 0, unparsable: 0 });
      expect(all).toHaveLength(3000);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('a last line without its newline is read', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'report-unit-'));
    try {
      const path = join(dir, 'calls.jsonl');
      writeFileSync(path, '{"n":1}\n{"n":2}');
      const all: unknown[] = [];
      await readJsonLines(path, (r) => all.push(r), { lines: 0, unparsable: 0 });
      expect(all).toEqual([{ n: 1 }, { n: 2 }]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('Aggregator: login sessions are one caller', () => {
  const session = (n: number, extra: P = {}): P => ({
    attribution: 'ebpf', pid: 100 + n, comm: 'curl', exe: '/usr/bin/curl', argv: ['curl', '-s', 'http://169.254.169.254/'],
    uid: 1000, user: 'alice', container: null, cgroup: `/user.slice/user-1000.slice/session-${n}.scope`,
    systemd_unit: `session-${n}.scope`, ...extra,
  });
  it('five SSH logins running the same command are one row (with or without systemd_unit_group)', () => {
    const a = new Aggregator({ includeV2: false, maxPaths: 5 });
    for (let n = 1; n <= 3; n++) a.add(call(`2026-11-28T15:00:0${n}.000Z`, '/latest/meta-data/instance-id', 200, session(n)));
    for (let n = 4; n <= 5; n++) {
      a.add(call(`2026-11-28T15:00:0${n}.000Z`, '/latest/meta-data/instance-id', 200,
        session(n, { systemd_unit_group: 'user-1000.slice/session-*.scope' })));
    }
    const groups = a.result();
    expect(groups).toHaveLength(1);
    expect(groups[0]).toMatchObject({ count: 5, systemd_unit: 'user-1000.slice/session-*.scope', exe: '/usr/bin/curl' });
  });
  it('other users\' sessions and real units stay apart', () => {
    const a = new Aggregator({ includeV2: false, maxPaths: 5 });
    a.add(call('2026-11-28T15:00:01.000Z', '/x', 200, session(1)));
    a.add(call('2026-11-28T15:00:02.000Z', '/x', 200, session(2, { cgroup: '/user.slice/user-1001.slice/session-2.scope' })));
    a.add(call('2026-11-28T15:00:03.000Z', '/x', 200, session(3, { cgroup: '/system.slice/cron.service', systemd_unit: 'cron.service' })));
    expect(a.result().map((g) => g.systemd_unit).sort()).toEqual([
      'cron.service', 'user-1000.slice/session-*.scope', 'user-1001.slice/session-*.scope']);
  });
});
