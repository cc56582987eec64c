/**
 * Faults of the log file on a real (small) filesystem: the disk fills up, the filesystem
 * turns read-only. An error record on stdout, tracing goes on, writing resumes when it can, and
 * nothing already written is lost or cut. The agent runs in a private mount namespace with its own
 * tmpfs, so the host's mounts are never touched.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLab, labSupported, IMDS_V4, type Lab } from '../../lab/netns.js';
import { attachTracer, type TracerProcess } from '../../lab/traced.js';

const support = labSupported();

describe.skipIf(!support.ok)(`log file faults${support.ok ? '' : ` (skipped: ${support.reason})`}`, () => {
  let lab: Lab;
  let tracer: TracerProcess;
  const mnt = mkdtempSync(join(tmpdir(), 'imdst-small-'));
  let seen: (rel: string) => string;

  beforeAll(async () => {
    lab = await createLab();
    await lab.startImds();
    const cli = join(lab.repoRoot, 'dist', 'cli.js');
    const script = `mount -t tmpfs -o size=128k imdst-tmpfs ${mnt} && head -c 118784 /dev/zero > ${mnt}/filler`
      + ` && exec ${process.execPath} ${cli} run --log-file ${mnt}/logs/calls.jsonl --stats-interval 3600 --backend proc`;
    const proc = lab.spawn(lab.instanceNs, 'unshare', ['-m', '--propagation', 'private', 'sh', '-c', script],
      { stdio: ['ignore', 'pipe', 'pipe'] });
    tracer = await attachTracer(proc);
    seen = (rel) => readFileSync(`/proc/${proc.pid}/root${mnt}/${rel}`, 'utf8');
  });

  afterAll(async () => {
    await tracer?.stop();
    await lab?.destroy();
    rmSync(mnt, { recursive: true, force: true });
  });

  const call = async (tag: string): Promise<void> => {
    const r = await lab.exec(lab.instanceNs, 'curl', ['-s', '-o', '/dev/null', `http://${IMDS_V4}/latest/meta-data/${tag}`]);
    expect(r.exitCode).toBe(0);
    await tracer.next((x) => x.event === 'imds_call' && x.request.path.endsWith(`/${tag}`), 10_000, tag);
  };

  const callsInFile = (): string[] => {
    const lines = seen('logs/calls.jsonl').split('\n');
    expect(lines.pop()).toBe('');
    return lines.map((l) => JSON.parse(l)) // throws on half a line
      .filter((r) => r.event === 'imds_call').map((r) => r.request.path);
  };

  /** Every call record the agent printed since `from` reaches the file, exactly once, in order. */
  const fileHoldsEverything = async (from = 0): Promise<void> => {
    const printed = tracer.records.filter((r) => r.event === 'imds_call').map((r) => r.request.path).slice(from);
    // The file is written once per tick after stdout: poll for it (bounded), then compare exactly.
    for (let i = 0; i < 100 && callsInFile().length < printed.length; i++) await new Promise((r) => setTimeout(r, 20));
    expect(callsInFile()).toEqual(printed);
  };

  it('the disk fills up: an error on stdout, tracing goes on, writing resumes when space is freed', async () => {
    let i = 0;
    while (!tracer.records.some((r) => r.event === 'error' && /ENOSPC/.test(r.message)) && i < 200) await call(`fill-${i++}`);
    const err = await tracer.next((r) => r.event === 'error' && r.component === 'log-file', 1000, 'the ENOSPC error');
    expect(err.message).toMatch(/^cannot write log file .*calls\.jsonl: ENOSPC: .*keeping records in memory and retrying$/);
    for (let k = 0; k < 3; k++) await call(`while-full-${k}`);
    execFileSync('rm', [`/proc/${tracer.proc.pid}/root${mnt}/filler`]);
    await tracer.next((r) => r.event === 'notice' && /writable again/.test(r.message), 10_000, 'the recovery notice');
    await call('after-space-freed');
    await fileHoldsEverything();
  });

  it('its directory is deleted: a notice, and the calls that follow are in a new file', async () => {
    const before = tracer.records.filter((r) => r.event === 'imds_call').length;
    execFileSync('rm', ['-rf', `/proc/${tracer.proc.pid}/root${mnt}/logs`]);
    await call('after-delete-1');
    await tracer.next((r) => r.event === 'notice' && /was removed or replaced/.test(r.message), 10_000, 'the notice');
    await call('after-delete-2');
    await fileHoldsEverything(before);
    expect(tracer.proc.exitCode).toBeNull();
  });
});
