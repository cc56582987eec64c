/**
 * The JSON lines log file. Lines are batched and written synchronously once per tick, so a record is
 * on disk in the order it was made. When writing fails (directory deleted or unwritable, disk full)
 * the lines are kept (bounded), the failure is reported once, and writing resumes — reopening the
 * file — when it can. Directory 0700, file 0600.
 */
import { closeSync, fchmodSync, mkdirSync, openSync, writeSync } from 'node:fs';
import { dirname } from 'node:path';

export interface LogFileOptions {
  path: string;
  dirMode: number;
  fileMode: number;
  /** Lines kept while the file cannot be written; the oldest are dropped (and counted) beyond it. */
  maxPendingBytes?: number;
  retryMs?: number;
  onError(message: string): void;
  onRecovered?(message: string): void;
}

export class LogFile {
  private fd: number | null = null;
  private pending: string[] = [];
  private pendingBytes = 0;
  private timer: NodeJS.Timeout | null = null;
  private failing = false;
  dropped = 0;
  errors = 0;

  constructor(private readonly o: LogFileOptions) {}

  /** Open now, so a bad path is reported at start; throws with a clear message. */
  open(): void {
    mkdirSync(dirname(this.o.path), { recursive: true, mode: this.o.dirMode });
    this.fd = openSync(this.o.path, 'a', this.o.fileMode);
    fchmodSync(this.fd, this.o.fileMode);
  }

  write(line: string): void {
    this.pending.push(line);
    this.pendingBytes += line.length;
    const max = this.o.maxPendingBytes ?? 16 * 1024 * 1024;
    while (this.pendingBytes > max && this.pending.length > 1) {
      this.pendingBytes -= (this.pending.shift() as string).length;
      this.dropped++;
    }
    if (!this.timer && !this.failing) this.timer = setTimeout(() => this.flush(), 0);
  }

  /** Write everything pending; returns false (and keeps the lines) if the file cannot be written. */
  flush(): boolean {
    if (this.timer) { clearTimeout(this.timer); this.timer = null; }
    if (this.pending.length === 0) return true;
    try {
      if (this.fd === null) this.open();
      const data = Buffer.from(this.pending.join(''));
      let off = 0;
      while (off < data.length) off += writeSync(this.fd as number, data, off);
      this.pending = [];
      this.pendingBytes = 0;
      if (this.failing) {
        this.failing = false;
        this.o.onRecovered?.(`log file ${this.o.path} writable again`);
      }
      return true;
    } catch (err) {
      this.fail(err as NodeJS.ErrnoException);
      return false;
    }
  }

  private fail(err: NodeJS.ErrnoException): void {
    this.errors++;
    if (this.fd !== null) {
      try { closeSync(this.fd); } catch { /* already bad */ }
      this.fd = null;
    }
    if (!this.failing) this.o.onError(`cannot write log file ${this.o.path}: ${err.message}; keeping records in memory and retrying`);
    this.failing = true;
    // A partial write may have landed: the next attempt rewrites whole lines from a fresh open.
    this.timer = setTimeout(() => this.flush(), this.o.retryMs ?? 1000);
    this.timer.unref();
  }

  close(): void {
    this.flush();
    if (this.timer) { clearTimeout(this.timer); this.timer = null; }
    if (this.fd !== null) closeSync(this.fd);
    this.fd = null;
  }
}
