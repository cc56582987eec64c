/** `report` lists the calls the kernel saw but capture could not read as callers of unknown version. */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { Aggregator } from '../../agent/src/report/aggregate.js';
import { runReport } from '../../agent/src/report/cli.js';

const curl = { attribution: 'ebpf', pid: 700, comm: 'curl', exe: null, argv: ['curl', 'http://169.254.169.254/latest/meta-data/'], uid: 0, user: 'root',
  cgroup: '/', container: null, systemd_unit: null };
const unseen = (time: string) => ({ event: 'imds_call', time, imds_version: null, provider: 'unknown', request: null, response: { status: null },
  connection: { src: '169.254.10.2', sport: 40000, dst: '169.254.169.254', dport: 80, interface: 'eth0', family: 'ipv4' },
  process: curl, wire_reason: 'capture_gap' });
const v1 = (time: string) => ({ ...unseen(time), imds_version: 'v1', provider: 'aws', wire_reason: undefined, response: { status: 200 },
  request: { method: 'GET', path: '/latest/meta-data/', http_version: '1.1', token_present: false, token_request: false, user_agent: 'curl/7.88.1' } });

describe('report: calls of unknown version', () => {
  it('are their own caller group, listed with the IMDSv1 callers (they may be IMDSv1)', () => {
    const a = new Aggregator({ includeV2: false, maxPaths: 5 });
    for (const r of [unseen('2026-11-28T15:00:01.000Z'), unseen('2026-11-28T15:00:02.000Z'), v1('2026-11-28T15:00:03.000Z')]) a.add(r);
    const groups = a.result();
    expect(groups.map((g) => [g.imds_version, g.exe, g.count, g.paths])).toEqual([['unknown', 'curl', 2, []], ['v1', 'curl', 1, ['/latest/meta-data/']]]);
    expect(groups[0].statuses).toEqual([{ status: null, count: 2 }]);
    // Another cloud's probe (imds_version null without wire_reason) is still not listed.
    const b = new Aggregator({ includeV2: false, maxPaths: 5 });
    b.add({ ...v1('2026-11-28T15:00:03.000Z'), imds_version: null, provider: 'gce' });
    expect(b.result()).toEqual([]);
  });

  it('the table shows the version column and the summary says how many were of unknown version', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'imdst-report-'));
    try {
      const file = join(dir, 'calls.jsonl');
      writeFileSync(file, [unseen('2026-11-28T15:00:01.000Z'), v1('2026-11-28T15:00:03.000Z')].map((r) => JSON.stringify(r)).join('\n') + '\n');
      let text = '';
      expect(await runReport([file], { json: false, includeV2: false, maxPaths: 5 }, () => undefined, (t) => { text += t; })).toBe(0);
      const lines = text.split('\n');
      expect(lines[0]).toMatch(/^CALLS\s+IMDS\s+EXECUTABLE/);
      expect(lines.some((l) => /^1\s+unknown\s+curl\s/.test(l))).toBe(true);
      expect(text).toMatch(/2 IMDSv1 calls from 2 distinct callers in 1 file \(1 of unknown version: .*may be IMDSv1\)/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
