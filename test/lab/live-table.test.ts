/**
 * `run --format table`, and `run` on a terminal (a pty from script(1)): readable lines on stdout
 * while the log file keeps the JSON lines. The default on a pipe stays JSON (every other lab test
 * reads stdout as JSON lines).
 */
import type { ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLab, labSupported, type Lab } from '../../lab/netns.js';
import { curlV1 } from '../helpers/clients.js';

const support = labSupported();

/** stdout as text, and a wait for a line matching a pattern. */
function follow(proc: ChildProcess): { text(): string; line(re: RegExp, timeoutMs?: number): Promise<string> } {
  let text = '';
  let waiters: Array<() => void> = [];
  proc.stdout!.on('data', (b: Buffer) => { text += b.toString(); const w = waiters; waiters = []; w.forEach((f) => f()); });
  proc.once('exit', () => { const w = waiters; waiters = []; w.forEach((f) => f()); });
  return {
    text: () => text,
    line: (re, timeoutMs = 20_000) => new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no line matching ${re} in: ${text.slice(-800)}`)), timeoutMs);
      const check = (): void => {
        const l = text.split(/\r?\n/).find((x) => re.test(x));
        if (l !== undefined) { clearTimeout(timer); resolve(l); return; }
        if (proc.exitCode !== null || proc.signalCode !== null) { clearTimeout(timer); reject(new Error(`exited before ${re}: ${text.slice(-800)}`)); return; }
        waiters.push(check);
      };
      check();
    }),
  };
}

describe.skipIf(!support.ok)(`live table${support.ok ? '' : ` (skipped: ${support.reason})`}`, () => {
  let lab: Lab;
  let dir = '';
  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'live-'));
    lab = await createLab();
    await lab.startImds({});
  });
  afterAll(async () => {
    await lab?.destroy();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  const cases: Array<[string, (log: string) => [string, string[]]]> = [
    ['--format table on a pipe', (log) => [process.execPath, [join(lab.repoRoot, 'dist/cli.js'), 'run', '--format', 'table', '--log-file', log, '--stats-interval', '3600']]],
    // script(1) gives the agent a terminal: the default (auto) is then the table.
    ['the default on a terminal', (log) => ['script', ['-qfec', `exec ${process.execPath} ${join(lab.repoRoot, 'dist/cli.js')} run --log-file ${log} --stats-interval 3600`, '/dev/null']]],
  ];

  it.each(cases)('%s: one readable line per call; the log file keeps JSON lines', async (_name, cmd) => {
    const log = join(dir, `${_name.replace(/\W+/g, '-')}.jsonl`);
    const [bin, args] = cmd(log);
    const proc = lab.spawn(lab.instanceNs, bin, args, { stdio: ['pipe', 'pipe', 'pipe'] });
    const out = follow(proc);
    const exited = new Promise<number | null>((r) => proc.once('exit', (c) => r(c)));
    let pid = -1;
    try {
      await out.line(/^TIME\s+VER\s+STATUS\s+PID\s+CALLER\s+PATH\s+ADVICE/);
      const curl = await curlV1(lab);
      expect(curl.exitCode).toBe(0);
      const row = await out.line(new RegExp(`^\\d\\d:\\d\\d:\\d\\d v1\\s+200\\s+${curl.pid}\\s+curl\\b.*\\/latest\\/meta-data\\/instance-id\\s+curl \\d[\\d.]*: no AWS SDK: the code calls IMDS itself: add the token PUT`));
      expect(row).not.toContain('{');
      pid = curl.pid;
    } finally {
      if (bin === 'script') proc.stdin!.write('\x03'); // Ctrl-C on the terminal: SIGINT to the agent
      else proc.kill('SIGTERM');
    }
    expect(await exited).toBe(0);
    expect(out.text()).not.toMatch(/^\{"event"/m);
    // The log file, complete once the agent has exited, holds the same call as a JSON line.
    const json = readFileSync(log, 'utf8').trim().split('\n').map((l) => JSON.parse(l));
    expect(json.find((r) => r.event === 'imds_call' && r.process.pid === pid)).toMatchObject({ imds_version: 'v1', sdk: { name: 'curl' } });
  });
});
