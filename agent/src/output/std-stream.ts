/**
 * stdout and stderr with a bound: a reader that stops reading (a paused pipe, a stuck journal) must
 * not grow the agent's memory. Lines wait in the stream's own buffer (libuv: written as the reader
 * takes them) up to maxBytes; past that a line is dropped and counted, and the owner is told once
 * per episode (onDropStart) and again when the reader has caught up (onRecovered).
 *
 * With `batch` (stdout), lines written in one turn of the event loop go to the stream together, in one write at the end of
 * the turn (setImmediate): a write to a pipe is a system call, and one per record was a sixth of the
 * agent's CPU under load. They wait for nothing else: flush() (the exit path) writes them first, and
 * an exit that does not wait (a crash) writes them synchronously from the 'exit' event. A batched
 * stream takes lines as bytes already encoded (writeBytes: views of line-bytes.ts chunks, shared with
 * the log file); the turn's views are written as one buffer. While the reader is behind, that buffer
 * is a copy, so bytes waiting for it do not hold whole chunks of other lines.
 *
 * Why not a SonicBoom on fd 1: SonicBoom writes with fs.write, in libuv's thread pool, on the
 * blocking pipe; a reader that never reads pins that thread, and process exit waits for it forever
 * (measured). A libuv stream writes non-blocking from the event loop and process.exit() never waits
 * for it; an exit by an empty event loop does wait for a write still in flight (measured, Node 20
 * and 24: a reader that never reads holds the process after flush()'s bounded wait).
 */
import type { Writable } from 'node:stream';
import { ByteRuns } from './line-bytes.js';

export interface BoundedStreamOptions {
  stream: Writable;
  /** Bytes allowed to wait for the reader; a line past that is dropped. */
  maxBytes: number;
  /** Lines of one turn written together at its end (stdout: the records); else each at once (stderr). */
  batch?: boolean;
  onDropStart?(): void;
  onRecovered?(dropped: number): void;
}

export class BoundedStream {
  /** Lines dropped since start because the reader was behind. */
  dropped = 0;
  private episodeDrops = 0;
  private broken = false;
  /** Bytes of this turn's lines, not yet handed to the stream (batch). */
  private readonly turn = new ByteRuns();
  private scheduled: NodeJS.Immediate | null = null;
  private readonly writeTurn = (): void => {
    this.scheduled = null;
    pendingAtExit.delete(this);
    if (this.turn.bytes === 0) return;
    const s = this.o.stream;
    const parts = this.turn.takeParts();
    if (this.broken || s.destroyed) return;
    // Behind: the write waits in the stream, so it holds only its own bytes, not the chunks they are in.
    const behind = s.writableLength > 0;
    // A turn spanning two chunks goes as one writev of its views (corked), not copied into one buffer.
    if (parts.length > 1) s.cork();
    for (const p of parts) s.write(behind && p.length < p.buffer.byteLength ? Buffer.from(p) : p);
    if (parts.length > 1) s.uncork();
  };

  constructor(private readonly o: BoundedStreamOptions) {
    // A reader that went away (EPIPE) is not a crash: what would have gone there is counted.
    o.stream.on('error', () => { this.broken = true; });
    o.stream.on('drain', () => {
      if (this.episodeDrops === 0) return;
      const n = this.episodeDrops;
      this.episodeDrops = 0;
      this.o.onRecovered?.(n);
    });
  }

  /** Bytes waiting for the reader (this turn's lines included). */
  get waitingBytes(): number {
    return this.o.stream.writableLength + this.turn.bytes;
  }

  /** A line (its newline included): at once, or with the turn's lines when batched. */
  write(line: string): boolean {
    if (!this.o.batch) {
      if (!this.admit(Buffer.byteLength(line))) return false;
      this.o.stream.write(line);
      return true;
    }
    const b = Buffer.from(line, 'utf8');
    return this.writeBytes(b, 0, b.length);
  }

  /** A line already encoded: bytes [start, end) of chunk, its newline included, written at the turn's end. */
  writeBytes(chunk: Buffer, start: number, end: number): boolean {
    if (!this.admit(end - start)) return false;
    this.turn.add(chunk, start, end);
    if (!this.scheduled) {
      this.scheduled = setImmediate(this.writeTurn);
      pendingAtExit.add(this);
    }
    return true;
  }

  /** Whether a line of this many bytes may wait for the reader; if not, it is counted as dropped. */
  private admit(bytes: number): boolean {
    const s = this.o.stream;
    if (this.broken || s.destroyed || s.writableLength + this.turn.bytes + bytes > this.o.maxBytes) {
      this.dropped++;
      if (this.episodeDrops++ === 0 && !this.broken) this.o.onDropStart?.();
      return false;
    }
    return true;
  }

  /** This turn's lines to the stream now. */
  writeNow(): void {
    if (this.scheduled) clearImmediate(this.scheduled);
    this.writeTurn();
  }

  /**
   * Resolves once what waits has reached the reader, or after timeoutMs (true when it all went).
   * Not on 'drain': a stream emits it only after a write() that returned false, so less than its
   * highWaterMark (16 KiB) waiting for a slow reader never brings one. An empty write's callback
   * runs once every write before it is done. The timer holds the process: when the last write ends
   * and nothing else is left, an awaited promise nothing can settle ends Node with exit status 13
   * ("unsettled top-level await") instead of the status the agent returns.
   */
  flush(timeoutMs: number): Promise<boolean> {
    this.writeNow();
    const s = this.o.stream;
    if (this.broken || s.destroyed || s.writableEnded || s.writableLength === 0) return Promise.resolve(true);
    return new Promise((resolve) => {
      const timer = setTimeout(() => resolve(false), timeoutMs);
      s.write('', (err) => { clearTimeout(timer); resolve(!err); });
    });
  }
}

/**
 * Streams with lines of the current turn: written out if the process exits before the turn ends
 * (process.exit(), an uncaught exception); a stream is here only while it has such lines.
 */
const pendingAtExit = new Set<BoundedStream>();
process.on('exit', () => {
  for (const b of pendingAtExit) b.writeNow();
});
