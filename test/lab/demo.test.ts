/**
 * The README's "see it work" command, end to end through the built CLI: the demo builds its lab,
 * names the callers, prints the table, removes the lab; and `report` over its log lists the IMDSv1
 * callers. No token or credential from the lab's IMDS appears anywhere.
 */
import { mkdtempSync, readFileSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { labSupported, listNamespaces } from '../../lab/netns.js';
import { DEFAULT_CANARY } from '../../lab/imds-server.js';
import { ROOT } from '../../agent/src/paths.js';
import { CLI } from '../helpers/repo.js';

const support = labSupported();

describe.skipIf(!support.ok)(`imds-tracer demo${support.ok ? '' : ` (skipped: ${support.reason})`}`, () => {
  it('finds the IMDSv1 callers it made, names them, cleans up, leaks nothing', async () => {
    const log = join(mkdtempSync(join(tmpdir(), 'imdst-demo-')), 'calls.jsonl');
    const before = await listNamespaces();
    const demo = spawnSync(process.execPath, [CLI, 'demo', '--keep-log', log], { encoding: 'utf8', timeout: 60_000 });
    expect(demo.status, demo.stderr).toBe(0);
    expect(demo.stdout).toMatch(/4 IMDSv1 calls found \(4 made\)/);
    expect(demo.stdout).toMatch(/^v1\s+200\s+GET \/latest\/meta-data\/instance-id\s+curl \[\d+\]\s+(ebpf|proc)\s+curl -s http/m);
    expect(demo.stdout).toMatch(/^v1\s+200\s+GET \/latest\/meta-data\/iam\/security-credentials\/\s+python3 \[\d+\]\s+(ebpf|proc)\s+.*python3 -c/m);
    expect(await listNamespaces()).toEqual(before);

    const report = spawnSync(process.execPath, [CLI, 'report', '--json', log], { encoding: 'utf8' });
    expect(report.status, report.stderr).toBe(0);
    // (Calls of unknown version are other labs' calls, seen by the kernel program only.)
    const groups = (JSON.parse(report.stdout) as Array<Record<string, any>>).filter((g) => g.imds_version !== 'unknown');
    expect(groups.reduce((n, g) => n + g.count, 0)).toBe(4);
    expect(groups.map((g) => g.exe).sort()).toEqual(expect.arrayContaining(['/usr/bin/curl', '/usr/bin/wget']));
    // Named in the kernel, a caller's executable is known even when it exited before /proc was read.
    const calls = readFileSync(log, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l) as Record<string, any>)
      .filter((r) => r.event === 'imds_call' && r.process?.attribution === 'ebpf');
    for (const c of calls) expect(c.process.exe, JSON.stringify(c.process)).toMatch(/^\//);
    const table = spawnSync(process.execPath, [CLI, 'report', log], { encoding: 'utf8' });
    expect(table.status).toBe(0);

    for (const text of [demo.stdout, demo.stderr, readFileSync(log, 'utf8'), report.stdout, table.stdout, table.stderr]) {
      expect(text).not.toContain(DEFAULT_CANARY);
    }
  });
});
