/**
 * A C helper process of the agent (native/imds_capture, the eBPF loader bpf/.output/imds_connect), in
 * one place: how it is started, how long it lives, why it failed, how it is stopped and restarted.
 *
 * - Spawned in a process group of its own (detached): a terminal's Ctrl-C reaches the agent only,
 *   which stops its helpers itself. Its stdin stays a pipe: when the agent is gone the helper reads
 *   EOF and exits by itself.
 * - Its stdout is framed records (include/imds_frame.h), decoded by the caller; the first one is the
 *   handshake (the capture is open, the program is attached), which the caller marks with `ready()`.
 * - Its failure reason is the last line it wrote to stderr (a bounded tail is kept).
 * - `stop()`: stdin closed (or a signal), a bounded wait, then SIGKILL.
 * - `HelperRestarts`: the restarts of a helper that died, with the shared RestartBackoff.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { RestartBackoff } from './backoff.js';

/** The stderr kept per helper (the tail), for its failure reason. */
const STDERR_TAIL = 16384;

export interface HelperProcessOptions {
  /** A chunk of the helper's stdout (framed records). */
  onStdout(chunk: Buffer): void;
  /** A complete line the helper wrote to stderr (trailing blanks removed). */
  onStderrLine?(line: string): void;
  /** The helper could not be started (ENOENT, EACCES, ...); 'close' may not follow. */
  onSpawnError?(err: NodeJS.ErrnoException): void;
  /** The helper is gone and its stdout read to the end ('close'). */
  onClose(code: number | null, signal: NodeJS.Signals | null): void;
}

export class HelperProcess {
  readonly child: ChildProcess;
  /** When the helper sent its handshake (ms since the epoch), 0 before. */
  readyAt = 0;
  /** Whether it has exited (or could not be started). */
  exited = false;
  private stderrTail = '';
  private partialLine = '';
  private readonly done: Promise<void>;

  constructor(command: string, args: string[], o: HelperProcessOptions) {
    this.child = spawn(command, args, { stdio: ['pipe', 'pipe', 'pipe'], detached: true });
    let closed = (): void => {};
    this.done = new Promise<void>((r) => { closed = r; });
    // Never let a broken pipe to the helper's stdin crash the agent.
    this.child.stdin?.on('error', () => {});
    this.child.stderr!.setEncoding('utf8');
    this.child.stderr!.on('data', (chunk: string) => {
      this.stderrTail = (this.stderrTail + chunk).slice(-STDERR_TAIL);
      this.partialLine += chunk;
      let nl: number;
      while ((nl = this.partialLine.indexOf('\n')) !== -1) {
        const line = this.partialLine.slice(0, nl).trimEnd();
        this.partialLine = this.partialLine.slice(nl + 1);
        if (line.length > 0) o.onStderrLine?.(line);
      }
    });
    this.child.stdout!.on('data', (chunk: Buffer) => o.onStdout(chunk));
    this.child.once('error', (err: NodeJS.ErrnoException) => {
      this.stderrTail += `${err.message}\n`;
      if (this.child.pid === undefined) {
        this.exited = true;
        closed();
      }
      o.onSpawnError?.(err);
    });
    // 'close', not 'exit': every record still in the pipe has been read by then.
    this.child.once('close', (code, signal) => {
      this.exited = true;
      o.onClose(code, signal);
      closed();
    });
  }

  /** The handshake (first record) arrived. */
  ready(now = Date.now()): void {
    this.readyAt = now;
  }

  get isReady(): boolean {
    return this.readyAt > 0;
  }

  /** The lines the helper wrote to stderr (the last 16 KiB), non-empty, trimmed. */
  stderrLines(): string[] {
    return this.stderrTail.split('\n').map((l) => l.trim()).filter((l) => l.length > 0);
  }

  /** Its failure reason: the last line it wrote to stderr, else how it ended. */
  failureReason(code: number | null, signal: NodeJS.Signals | null): string {
    return this.stderrLines().at(-1) ?? `exit ${code ?? signal}`;
  }

  /** Kill it now (a corrupt stream, no handshake in time). */
  kill(): void {
    this.child.kill('SIGKILL');
  }

  /**
   * Stop: close its stdin (it hands over what it holds, then exits) or send it a signal; SIGKILL after
   * graceMs; resolves once it is gone and its stdout is read.
   */
  async stop(how: 'eof' | NodeJS.Signals, graceMs: number): Promise<void> {
    if (this.exited || this.child.exitCode !== null || this.child.signalCode !== null) return;
    if (how === 'eof') this.child.stdin?.end(); else this.child.kill(how);
    const timer = setTimeout(() => { if (!this.exited) this.child.kill('SIGKILL'); }, graceMs);
    try {
      await this.done;
    } finally {
      clearTimeout(timer);
    }
  }

  /** Resolves once the helper is gone (or could not be started). */
  closed(): Promise<void> {
    return this.done;
  }
}

/**
 * The restarts of a helper that died: at once after one that ran for stableMs, with growing delays
 * (the shared RestartBackoff) while restarts keep failing; cancelled when the agent stops.
 */
export class HelperRestarts {
  private readonly backoff: RestartBackoff;
  private timer: NodeJS.Timeout | null = null;

  constructor(baseMs: number, maxMs: number, stableMs: number, private readonly unref = false) {
    this.backoff = new RestartBackoff(baseMs, maxMs, stableMs);
  }

  /** The helper ended after running ranMs (since its handshake). */
  ended(ranMs: number): void {
    this.backoff.ended(ranMs);
  }

  /** Run start after the next delay. */
  schedule(start: () => void): void {
    const delay = this.backoff.next();
    this.timer = setTimeout(() => {
      this.timer = null;
      start();
    }, delay);
    if (this.unref) this.timer.unref();
  }

  cancel(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
  }
}
