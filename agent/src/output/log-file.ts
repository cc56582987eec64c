/**
 * The JSON lines log file, written through a SonicBoom (pino's destination). Lines are batched and
 * written once per tick, synchronously — pino's own default for a file destination — so a record is
 * on disk in the order it was made, rotation happens exactly between lines, and a write that fails
 * part-way is cut back to a whole line. Memory is bounded: lines wait (maxPendingBytes) only while
 * the file cannot be written (directory deleted or unwritable, disk full); the failure is reported
 * once and writing resumes — reopening the file — when it can; past the bound the oldest lines are
 * dropped and counted (`dropped`, stats.records_dropped.log_file). Directory 0700, file 0600.
 *
 * With maxBytes, the file is rotated (rotation.ts) between lines, before a line would take it past
 * that size; reopen() (SIGHUP) closes and reopens the path (SonicBoom's reopen), for an external
 * logrotate.
 *
 * Lines wait as bytes: writeBytes takes a line already encoded (a view of a line-bytes.ts chunk, the
 * same bytes stdout writes), with its size, which is what rotation plans with and what the bound
 * counts; write(line) encodes a string itself.
 */
import { closeSync, fchmodSync, fstatSync, ftruncateSync, mkdirSync, statSync } from 'node:fs';
import { dirname } from 'node:path';
import SonicBoomModule, { type SonicBoom } from 'sonic-boom';

const SonicBoomCtor = SonicBoomModule as unknown as typeof SonicBoom; // a CommonJS module: its export is the class
import { planChunks, rotateFiles } from './rotation.js';
import { ByteRuns } from './line-bytes.js';

/** SonicBoom's public fields its type declarations leave out. */
type Boom = SonicBoom & { fd: number; destroyed: boolean };

export interface LogFileOptions {
  path: string;
  dirMode: number;
  fileMode: number;
  /** Lines kept while the file cannot be written; the oldest are dropped (and counted) beyond it. */
  maxPendingBytes?: number;
  retryMs?: number;
  /** Pending lines are written at once (not at the next tick) when they reach this many bytes; 256 KiB. */
  batchBytes?: number;
  /** Rotate before a line would take the file past this size; no rotation when absent. */
  maxBytes?: number;
  /** Rotated files kept (`path.1` … `path.N`); default 5. */
  files?: number;
  onError(message: string): void;
  onRecovered?(message: string): void;
  /** Something worth knowing that is not a failure (the file was removed and is made again). */
  onNotice?(message: string): void;
}

export class LogFile {
  private boom: Boom | null = null;
  /** The bytes of the lines waiting to be written, oldest first. */
  private readonly pending = new ByteRuns();
  /** The size in bytes of each waiting line, oldest first. */
  private sizes: number[] = [];
  private timer: NodeJS.Timeout | null = null;
  private failing = false;
  dropped = 0;
  errors = 0;
  rotations = 0;
  private rotationFailing = false;

  constructor(private readonly o: LogFileOptions) {}

  /** Open now, so a bad path is reported at start; throws with a clear message. */
  open(): void {
    mkdirSync(dirname(this.o.path), { recursive: true, mode: this.o.dirMode });
    const boom = new SonicBoomCtor({ dest: this.o.path, mkdir: true, mode: this.o.fileMode, sync: true, append: true, contentMode: 'buffer' }) as Boom;
    // A failed write throws from write() (caught below); a late close error is not a crash.
    boom.on('error', (err: Error) => { this.lastError = err; });
    fchmodSync(boom.fd, this.o.fileMode); // an existing file too
    this.boom = boom;
  }

  private lastError: Error | null = null;

  /** The descriptor of the open file, or null. */
  private get fd(): number | null {
    return this.boom && this.boom.fd >= 0 ? this.boom.fd : null;
  }

  /**
   * Close the file now (its lines already written: every write is synchronous). Not SonicBoom's
   * destroy(): it fsyncs first, in the thread pool, at every rotation — measured to cost the
   * writing thread ~40 % more CPU while it runs; the kernel writes the pages back as for any file.
   */
  private closeFile(): void {
    const boom = this.boom;
    this.boom = null;
    if (!boom || boom.destroyed || boom.fd < 0) return;
    boom.destroyed = true; // this SonicBoom is never used again
    try { closeSync(boom.fd); } catch { /* closing anyway */ }
  }

  /** A line (its newline included). */
  write(line: string): void {
    const b = Buffer.from(line, 'utf8');
    this.writeBytes(b, 0, b.length);
  }

  /** A line already encoded: bytes [start, end) of chunk, its newline included; not copied. */
  writeBytes(chunk: Buffer, start: number, end: number): void {
    this.pending.add(chunk, start, end);
    this.sizes.push(end - start);
    // A burst between two ticks is written at once rather than held: only a failing file holds lines.
    if (!this.failing && !this.flushing && this.pending.bytes >= (this.o.batchBytes ?? 256 * 1024)) {
      this.flush();
      return;
    }
    const max = this.o.maxPendingBytes ?? 4 * 1024 * 1024;
    if (this.pending.bytes > max && this.sizes.length > 1) {
      let lines = 0;
      let bytes = 0;
      while (this.pending.bytes - bytes > max && this.sizes.length - lines > 1) bytes += this.sizes[lines++];
      this.forget(lines);
      this.dropped += lines;
      if (!this.dropReported) {
        this.dropReported = true; // once per failure: the error record itself waits with the other lines
        this.o.onError(`log file ${this.o.path} cannot be written for too long: the oldest waiting lines are dropped beyond ${max} bytes (counted in stats.records_dropped.log_file)`);
      }
    }
    if (!this.timer && !this.failing) this.timer = setTimeout(() => this.flush(), 0);
  }

  /** Write everything pending; returns false (and keeps the lines) if the file cannot be written. */
  flush(): boolean {
    if (this.flushing) return true; // a line written by our own notice/error callbacks waits for the next tick
    this.flushing = true;
    try {
      return this.flushNow();
    } finally {
      this.flushing = false;
      if (this.sizes.length > 0 && !this.timer && !this.failing) this.timer = setTimeout(() => this.flush(), 0);
    }
  }

  private flushing = false;
  private dropReported = false;

  private flushNow(): boolean {
    if (this.timer) { clearTimeout(this.timer); this.timer = null; }
    if (this.sizes.length === 0) return true;
    let done = 0; // lines wholly written
    try {
      // The file's size: where a failed write is cut back to, what rotation plans from (one fstat).
      let size = this.followPath();
      if (size < 0) {
        this.open();
        size = fstatSync(this.fd as number).size;
      }
      const data = this.pending.peek();
      if (!this.o.maxBytes) {
        this.writeAll(data, size);
        done = this.sizes.length;
      } else {
        // Each file's run of lines is a slice of the same bytes (no copy per file or line).
        const sizes = this.sizes;
        const runs = planChunks(sizes, size, this.o.maxBytes);
        let at = 0;
        runs.forEach((run, k) => {
          if (k > 0) {
            this.rotate();
            size = fstatSync(this.fd as number).size; // 0, or the same file when the rename failed
          }
          let bytes = 0;
          for (const i of run) bytes += sizes[i];
          if (bytes > 0) this.writeAll(data.subarray(at, at + bytes), size);
          at += bytes;
          done += run.length;
        });
      }
      this.forget(done);
      if (this.failing) {
        this.failing = false;
        this.dropReported = false;
        this.o.onRecovered?.(`log file ${this.o.path} writable again`);
      }
      return true;
    } catch (err) {
      this.forget(done);
      this.fail(err as NodeJS.ErrnoException);
      return false;
    }
  }

  /**
   * Whole lines or nothing: if a write fails part-way (disk full), the file is cut back to where it
   * was (start: its size before this write), so the retry does not leave half a line before the
   * whole one.
   */
  private writeAll(data: Buffer, start: number): void {
    const boom = this.boom as Boom;
    const fd = boom.fd;
    this.lastError = null;
    try {
      boom.write(data as unknown as string); // contentMode buffer, sync: the whole buffer is written (or it throws) before it returns
    } catch (err) {
      this.lastError = err as Error;
    }
    if (this.lastError) {
      const err = this.lastError;
      try { ftruncateSync(fd, start); } catch { /* nothing more to do */ }
      throw err;
    }
  }

  /**
   * If the file (or its directory) was removed or replaced behind the agent's back, writing to the
   * open descriptor would go nowhere anyone can read: reopen the path (making the directory again).
   * Returns the open file's size, or -1 when there is no open file (closed here, or before).
   */
  private followPath(): number {
    if (this.fd === null) return -1;
    try {
      const open = fstatSync(this.fd);
      if (statSync(this.o.path).ino === open.ino) return open.size;
    } catch { /* removed */ }
    this.closeFile();
    this.o.onNotice?.(`log file ${this.o.path} was removed or replaced; writing to a new one`);
    return -1;
  }

  /** The oldest `lines` waiting lines are gone (written, or dropped). */
  private forget(lines: number): void {
    if (lines >= this.sizes.length) {
      this.pending.clear();
      this.sizes = [];
      return;
    }
    let bytes = 0;
    for (let i = 0; i < lines; i++) bytes += this.sizes[i];
    this.pending.dropFront(bytes);
    this.sizes = this.sizes.slice(lines);
  }

  /** Close the full file, shift the rotated ones, open a fresh one (0600). A failed rename is reported
   * once and writing goes on in the same file (nothing is lost); the next rotation tries again. */
  private rotate(): void {
    this.closeFile();
    try {
      rotateFiles(this.o.path, this.o.files ?? 5);
      this.rotations++;
      this.rotationFailing = false;
    } catch (err) {
      if (!this.rotationFailing) {
        this.o.onError(`cannot rotate log file ${this.o.path}: ${(err as Error).message}; writing on past the size limit`);
      }
      this.rotationFailing = true;
    }
    this.open();
  }

  /** Write what is pending, then close and reopen the path (SIGHUP, after an external logrotate). */
  reopen(): void {
    this.flush();
    if (this.failing) return; // the retry reopens the file by itself
    try {
      const boom = this.boom;
      if (!boom || boom.destroyed) {
        this.open();
        return;
      }
      mkdirSync(dirname(this.o.path), { recursive: true, mode: this.o.dirMode });
      boom.reopen(); // sync: the path is open (0600) when it returns; the old descriptor is closed after
      fchmodSync(boom.fd, this.o.fileMode);
    } catch (err) {
      this.fail(err as NodeJS.ErrnoException);
    }
  }

  private fail(err: NodeJS.ErrnoException): void {
    this.errors++;
    this.closeFile();
    const first = !this.failing;
    this.failing = true; // before onError: its own error record waits with the other lines
    if (first) this.o.onError(`cannot write log file ${this.o.path}: ${err.message}; keeping records in memory and retrying`);
    // A partial write may have landed: the next attempt rewrites whole lines from a fresh open.
    this.timer = setTimeout(() => this.flush(), this.o.retryMs ?? 1000);
    this.timer.unref();
  }

  close(): void {
    this.flush();
    if (this.timer) { clearTimeout(this.timer); this.timer = null; }
    this.closeFile();
  }
}
