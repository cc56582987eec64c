/**
 * The capture process's supervisor, with a stand-in helper (a shell script speaking the framing):
 * a capture process that dies is restarted at once; one that dies again soon after its restart is
 * restarted with backoff. Each gap is one error and one notice, with its times. Timers are faked
 * (only setTimeout), so "at once" is a timer of 0 ms, not a measured time; the processes are real.
 * Packets dropped are one error when the drop counters start to grow and one notice with the count
 * when they stop (or capture stops).
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync, chmodSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { SupervisedCapture } from '../../agent/src/capture/supervised.js';

/** until(cond) resolves once cond holds, checked again at each wake() (the supervisor's callbacks): no sleeps. */
function waiter(): { wake(): void; until(cond: () => boolean): Promise<void> } {
  let waiting: (() => void) | null = null;
  return {
    wake: () => { const w = waiting; waiting = null; w?.(); },
    until: (cond) => new Promise((resolve) => {
      const check = (): void => { if (cond()) resolve(); else waiting = check; };
      check();
    }),
  };
}

describe('SupervisedCapture restarts', () => {
  let dir = '';
  let cap: SupervisedCapture | null = null;
  afterEach(async () => {
    vi.useRealTimers();
    await cap?.close();
    for (const pid of pids()) { try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ } }
    if (dir) rmSync(dir, { recursive: true, force: true });
  });
  const pids = (): number[] => {
    try { return readFileSync(join(dir, 'pids'), 'utf8').trim().split('\n').filter(Boolean).map(Number); } catch { return []; }
  };

  it('restarts at once after a death, with backoff after a second one soon after; one error and one notice per gap', async () => {
    dir = mkdtempSync(join(tmpdir(), 'imdst-sup-'));
    const helper = join(dir, 'helper.sh');
    // OPEN record: type 1, length 8, "ETHERNET"; then stay until killed.
    writeFileSync(helper, `#!/bin/sh\necho $$ >> '${dir}/pids'\nprintf '\\001\\000\\000\\000\\020\\000\\000\\000ETHERNET'\nexec sleep 600\n`);
    chmodSync(helper, 0o755);
    const errors: string[] = [];
    const notices: string[] = [];
    const downs: number[] = [];
    const { wake, until } = waiter();
    cap = await SupervisedCapture.open({
      device: 'lab0', filter: 'tcp', bufferBytes: 1, helper, onFrame: () => undefined, stableMs: 60_000,
      onError: (m) => { errors.push(m); wake(); }, onNotice: (m) => { notices.push(m); wake(); },
      onDown: (at) => { downs.push(at); },
    });
    await until(() => pids().length === 1);
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] });

    process.kill(pids()[0], 'SIGKILL');
    await until(() => errors.length === 1);
    expect(errors[0]).toMatch(/^capture on lab0 stopped at \d{4}-.*Z \(exit SIGKILL\); .*restarting$/);
    expect(downs).toHaveLength(1);
    vi.advanceTimersByTime(0); // the first restart is at once
    expect(vi.getTimerCount()).toBe(0);
    await until(() => notices.length === 1);
    expect(notices[0]).toMatch(/^capture on lab0 resumed at \d{4}-.*Z; it was down from \d{4}-.*Z \(\d+ ms\)$/);

    await until(() => pids().length === 2);
    process.kill(pids()[1], 'SIGKILL'); // dies again soon after its restart
    await until(() => errors.length === 2);
    vi.advanceTimersByTime(0);
    expect(vi.getTimerCount()).toBe(1); // backing off
    vi.advanceTimersByTime(500);
    expect(vi.getTimerCount()).toBe(0);
    await until(() => notices.length === 2);
    expect([errors.length, notices.length]).toEqual([2, 2]);
  });

  it('drops: one error when the counters start to grow, one notice with the count once quiet or when capture stops', async () => {
    dir = mkdtempSync(join(tmpdir(), 'imdst-sup-'));
    const go = join(dir, 'go');
    expect(spawnSync('mkfifo', [go]).status).toBe(0);
    // STATS record: type 3, length 24, then received, dropped (kernel), dropped (interface), dropped
    // (the helper's queue), u32 big endian each.
    const stats = (recv: number, drop: number, queue: number, ifDrop = 0): string =>
      `printf '\\003\\000\\000\\000\\030\\000\\000\\000'; printf '\\000\\000\\000\\${recv.toString(8)}\\000\\000\\000\\${drop.toString(8)}`
      + `\\000\\000\\000\\${ifDrop.toString(8)}\\000\\000\\000\\${queue.toString(8)}'\n`;
    const helper = join(dir, 'helper.sh');
    writeFileSync(helper, `#!/bin/sh\necho $$ >> '${dir}/pids'\nprintf '\\001\\000\\000\\000\\020\\000\\000\\000ETHERNET'\n`
      + stats(10, 0, 0) + stats(50, 0, 0, 7) // the interface's own drops: not the agent falling behind
      + stats(100, 3, 2, 7) + stats(200, 4, 5, 7) // 5 lost, then 9
      + `read x < '${go}'\n` + stats(250, 6, 5, 7) // 2 more, after the notice
      + 'exec cat > /dev/null\n'); // until the agent closes its stdin
    chmodSync(helper, 0o755);
    const errors: string[] = [];
    const notices: string[] = [];
    const dropsAt: number[] = [];
    const { wake, until } = waiter();
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] });
    cap = await SupervisedCapture.open({
      device: 'lab0', filter: 'tcp', bufferBytes: 1, helper, onFrame: () => undefined,
      onError: (m) => { errors.push(m); wake(); }, onNotice: (m) => { notices.push(m); wake(); },
      onDrops: (_from, to) => { dropsAt.push(to); wake(); },
    });
    await until(() => dropsAt.length === 3); // every drop, the interface's too, marks the capture timeline
    expect(errors).toHaveLength(1);
    expect(errors[0]).toMatch(/^capture on lab0 is dropping packets: .*stats\.pcap\.dropped/);
    vi.advanceTimersByTime(9_999);
    expect(notices).toEqual([]);
    vi.advanceTimersByTime(1); // DEFAULTS.lossQuietMs after the last drop counted
    expect(notices).toHaveLength(1);
    expect(notices[0]).toMatch(/^capture on lab0 keeps up again: 9 packets were dropped between \d{4}-\S+Z and \d{4}-\S+Z$/);

    writeFileSync(go, 'go\n');
    await until(() => errors.length === 2); // drops again: a new error
    expect(errors[1]).toMatch(/^capture on lab0 is dropping packets/);
    await cap.close();
    cap = null;
    expect(notices).toHaveLength(2);
    expect(notices[1]).toMatch(/^capture on lab0 stopped: 2 packets were dropped between \d{4}-\S+Z and \d{4}-\S+Z$/);
  });
});
