/**
 * The helper process of both C helpers, with shell stand-ins: its own process group, the failure
 * reason from its last stderr line, a stop by stdin EOF (or SIGKILL once the bounded wait is over).
 */
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { HelperProcess } from '../../agent/src/helper-process.js';

function run(script: string, onLine?: (l: string) => void) {
  const out: Buffer[] = [];
  let ended: { code: number | null; signal: NodeJS.Signals | null } | null = null;
  const h = new HelperProcess('/bin/sh', ['-c', script], {
    onStdout: (c) => { out.push(c); }, onStderrLine: onLine,
    onClose: (code, signal) => { ended = { code, signal }; },
  });
  return { h, out, ended: () => ended };
}

describe('helper process', () => {
  it('runs in a process group of its own and ends on stdin EOF, its stdout read to the end', async () => {
    const { h, out, ended } = run('printf hello; cat >/dev/null; printf bye');
    const pgid = Number(readFileSync(`/proc/${h.child.pid}/stat`, 'utf8').split(') ')[1].split(' ')[2]);
    expect(pgid).toBe(h.child.pid); // not the agent's group: a terminal's Ctrl-C does not reach it
    await h.stop('eof', 10_000);
    expect(Buffer.concat(out).toString()).toBe('hellobye');
    expect(ended()).toEqual({ code: 0, signal: null });
  });

  it('its failure reason is the last line it wrote to stderr; each line is handed on', async () => {
    const lines: string[] = [];
    const { h, ended } = run('echo first >&2; echo "cannot open eth9: No such device" >&2; exit 3', (l) => lines.push(l));
    await h.closed();
    expect(ended()).toEqual({ code: 3, signal: null });
    expect(h.failureReason(3, null)).toBe('cannot open eth9: No such device');
    expect(lines).toEqual(['first', 'cannot open eth9: No such device']);
  });

  it('a helper that ignores the stop is killed once the bounded wait is over', async () => {
    const { h, out, ended } = run('trap "" TERM; printf r; exec sleep 600 >/dev/null 2>&1 </dev/null');
    await new Promise<void>((resolve) => { const check = (): void => { if (out.length) resolve(); else h.child.stdout!.once('data', check); }; check(); });
    await h.stop('SIGTERM', 200);
    expect(ended()).toEqual({ code: null, signal: 'SIGKILL' });
  });
});
