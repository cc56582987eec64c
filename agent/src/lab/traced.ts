/**
 * The tracer as a child process inside a lab namespace: spawned, awaited until its `ready` record,
 * its JSON lines parsed as they come, stopped with SIGTERM. Used by the demo and the tests.
 */
import type { ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import type { Lab } from './netns.js';
import { DEFAULTS } from '../defaults.js';

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
  const proc = lab.spawn(lab.instanceNs, process.execPath, [...DEFAULTS.agentNodeFlags, join(lab.repoRoot, 'dist', 'cli.js'), 'run', ...args],
    { stdio: ['ignore', 'pipe', 'pipe'], env });
  return attachTracer(proc, readyTimeoutMs);
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
