/**
 * One program is one caller: short-lived callers named by the kernel carry the executable's path
 * walked in the kernel (not `null` because /proc was read after they exited), and login sessions
 * (`session-N.scope` under `user-UID.slice`) group as one unit. Five runs of the same command, each
 * from its own "login", are one row of `imds-tracer report` with count 5.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, realpathSync, rmdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLab, labSupported, IMDS_V4, type Lab } from '../../lab/netns.js';
import { attachTracer, type TracerProcess } from '../../lab/traced.js';
import { cgroup2Mount } from '../../agent/src/attribution/ebpf/cgroup-paths.js';
import { validate } from '../../agent/src/schema.js';

const support = labSupported();
type Rec = Record<string, any>;

describe.skipIf(!support.ok)(`one program, one caller (eBPF)${support.ok ? '' : ` (skipped: ${support.reason})`}`, () => {
  let lab: Lab;
  let tracer: TracerProcess;
  let cgParent = '';
  const scopes: string[] = [];
  let dir = '';

  beforeAll(async () => {
    lab = await createLab();
    await lab.startImds({});
    const mount = cgroup2Mount(readFileSync('/proc/self/mountinfo', 'utf8'));
    if (!mount) throw new Error('no cgroup2 mount: the session cgroups cannot be made');
    cgParent = join(mount, `imdst-${lab.id}`);
    for (let n = 1; n <= 5; n++) {
      const scope = join(cgParent, 'user.slice', 'user-4242.slice', `session-${900 + n}.scope`);
      mkdirSync(scope, { recursive: true });
      scopes.push(scope);
    }
    dir = mkdtempSync(join(tmpdir(), 'imdst-callers-'));
    // `ip netns exec` gives the agent a fresh /sys without cgroup2: mount it there, as on a host, so
    // the cgroup of a caller that is gone is found by its id.
    const cli = join(lab.repoRoot, 'dist', 'cli.js');
    tracer = await attachTracer(lab.spawn(lab.instanceNs, 'sh', ['-c',
      `mount -t cgroup2 cgroup2 /sys/fs/cgroup && exec "$0" "$@"`, process.execPath, cli, 'run',
      '--no-log-file', '--backend', 'ebpf', '--stats-interval', '3600'], { stdio: ['ignore', 'pipe', 'pipe'] }));
  });

  afterAll(async () => {
    await tracer?.stop();
    await lab?.destroy();
    for (const s of scopes) { try { rmdirSync(s); } catch { /* gone */ } }
    for (const d of ['user.slice/user-4242.slice', 'user.slice', '']) {
      try { if (cgParent) rmdirSync(join(cgParent, d)); } catch { /* gone */ }
    }
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('five short-lived curls, each from its own login session: exe from the kernel, one report row, count 5', async () => {
    const curl = realpathSync(execFileSync('sh', ['-c', 'command -v curl'], { encoding: 'utf8' }).trim());
    const url = `http://${IMDS_V4}/latest/meta-data/instance-id`;
    const pids: number[] = [];
    // The agent is frozen while the callers run: when it reads /proc they are all gone, as a busy
    // agent finds them. (The loader and the capture keep their records and packets meanwhile.)
    process.kill(tracer.proc.pid as number, 'SIGSTOP');
    try {
      await runSessions();
    } finally {
      process.kill(tracer.proc.pid as number, 'SIGCONT');
    }
    for (const pid of pids) expect(() => process.kill(pid, 0)).toThrow(); // exited before the agent looked
    async function runSessions(): Promise<void> {
    for (const scope of scopes) {
      // Like a login: the shell joins its session scope, then execs the program, which exits at once.
      const child = lab.spawn(lab.instanceNs, 'sh', ['-c', `read go && exec curl -s -o /dev/null --max-time 10 ${url}`],
        { stdio: ['pipe', 'ignore', 'inherit'] });
      writeFileSync(join(scope, 'cgroup.procs'), String(child.pid));
      const exited = new Promise<number | null>((resolve) => child.once('exit', resolve));
      child.stdin!.end('go\n');
      expect(await exited).toBe(0);
      pids.push(child.pid as number);
    }
    }
    const isMine = (r: Rec): boolean => r.event === 'imds_call' && pids.includes(r.process?.pid);
    const recs = await tracer.count(isMine, 5, 15_000, 'session calls');
    recs.forEach((r, i) => {
      expect(validate(r)).toEqual([]);
      expect(r.process).toMatchObject({ attribution: 'ebpf', comm: 'curl', exe: curl });
      expect(r.process.exe_truncated).toBeUndefined();
      // The record's unit is unchanged (a contract); the group says it is a login session.
      expect(r.process.systemd_unit).toMatch(/^session-90\d\.scope$/);
      expect(r.process.systemd_unit_group).toBe('user-4242.slice/session-*.scope');
      expect(r.process.cgroup).toContain(`/user-4242.slice/session-90`);
      void i;
    });
    const log = join(dir, 'calls.jsonl');
    writeFileSync(log, recs.map((r) => JSON.stringify(r)).join('\n') + '\n');
    const report = spawnSync(process.execPath, [join(lab.repoRoot, 'dist', 'cli.js'), 'report', '--json', log], { encoding: 'utf8' });
    expect(report.status, report.stderr).toBe(0);
    const groups = JSON.parse(report.stdout) as Rec[];
    expect(groups).toHaveLength(1);
    expect(groups[0]).toMatchObject({
      count: 5, exe: curl, systemd_unit: 'user-4242.slice/session-*.scope', attribution: 'ebpf',
    });
  });
});
