/**
 * The tracer as a child process inside a lab namespace: spawned, awaited until its `ready` record,
 * its JSON lines parsed as they come, stopped with SIGTERM. Used by the demo and the tests.
 */
import type { ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Lab } from './netns.js';

export interface TracedRecord { [k: string]: any }

export interface TracerProcess {
  proc: ChildProcess;
  records: TracedRecord[];
  stderr(): string;
  /** The first record (seen or to come) matching pred. */
  next(pred: (r: TracedRecord) => boolean, timeoutMs?: number, what?: string): Promise<TracedRecord>;
  /** Resolves when n records match pred. */
  count(pred: (r: TracedRecord) => boolean, n: number, timeoutMs?: number, what?: string): Promise<TracedRecord[]>;
  /** SIGTERM and wait for exit; resolves with the exit code. */
  stop(): Promise<number | null>;
  exited: Promise<number | null>;
}

export async function startTracer(lab: Lab, args: string[], readyTimeoutMs = 20_000,
  env: NodeJS.ProcessEnv = process.env): Promise<TracerProcess> {
  const proc = lab.spawn(lab.instanceNs, process.execPath, [...agentNodeFlags(lab.repoRoot), join(lab.repoRoot, 'dist', 'cli.js'), 'run', ...args],
    { stdio: ['ignore', 'pipe', 'pipe'], env });
  return attachTracer(proc, readyTimeoutMs);
}

/**
 * The node flags the agent ships with (DEFAULTS.agentNodeFlags), as its command starts node: from the
 * first line of bin/imds-tracer.js (test/unit/node-flags.test.ts keeps it equal to the defaults). Read,
 * not imported: the lab is not part of the agent and imports none of it.
 */
export function agentNodeFlags(repoRoot: string): string[] {
  const first = readFileSync(join(repoRoot, 'bin', 'imds-tracer.js'), 'utf8').split('\n')[0];
  const m = /^#!\/usr\/bin\/env -S node\b(.*)$/.exec(first);
  if (!m) throw new Error(`bin/imds-tracer.js: no node flags on its first line: ${first}`);
  return m[1].trim().split(/\s+/).filter(Boolean);
}

/** Follow a tracer started some other way (e.g. inside a private mount namespace). */
export async function attachTracer(proc: ChildProcess, readyTimeoutMs = 20_000): Promise<TracerProcess> {
  const records: TracedRecord[] = [];
  let err = '';
  let buf = '';
  let waiters: Array<() => void> = [];
  proc.stderr?.on('data', (b: Buffer) => { err += b.toString(); });
  proc.stdout?.on('data', (b: Buffer) => {
    buf += b.toString();
    let nl: number;
    while ((nl = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, nl);
      buf = buf.slice(nl + 1);
      if (!line.trim()) continue;
      try { records.push(JSON.parse(line)); } catch { err += `unparsable stdout line: ${line}\n`; }
    }
    const w = waiters;
    waiters = [];
    for (const f of w) f();
  });
  const exited = new Promise<number | null>((resolve) => proc.once('exit', (code) => {
    const w = waiters;
    waiters = [];
    for (const f of w) f();
    resolve(code);
  }));
  const count = (match: (r: TracedRecord) => boolean, n: number, timeoutMs = 20_000, what = 'records') =>
    new Promise<TracedRecord[]>((resolve, reject) => {
      // A record the predicate cannot read (e.g. `request: null` on a call the wire did not show) does not match.
      const pred = (r: TracedRecord): boolean => { try { return match(r); } catch { return false; } };
      const timer = setTimeout(() => reject(new Error(`timed out waiting for ${n} ${what}; have ${records.filter(pred).length}; stderr: ${err.slice(-500)}`)), timeoutMs);
      const check = (): void => {
        const got = records.filter(pred);
        if (got.length >= n) { clearTimeout(timer); resolve(got); return; }
        if (proc.exitCode !== null || proc.signalCode !== null) {
          clearTimeout(timer);
          reject(new Error(`tracer exited (${proc.exitCode ?? proc.signalCode}) before ${n} ${what}: ${err.slice(-500)}`));
          return;
        }
        waiters.push(check);
      };
      check();
    });
  const t: TracerProcess = {
    proc, records, exited,
    stderr: () => err,
    count,
    next: async (pred, timeoutMs, what) => (await count(pred, 1, timeoutMs, what))[0],
    stop: async () => {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGTERM');
      return exited;
    },
  };
  await t.next((r) => r.event === 'ready', readyTimeoutMs, 'the ready record');
  return t;
}
