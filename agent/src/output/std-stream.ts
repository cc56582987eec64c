/**
 * stdout and stderr with a bound: a reader that stops reading (a paused pipe, a stuck journal) must
 * not grow the agent's memory. Lines wait in the stream's own buffer (libuv: written as the reader
 * takes them) up to maxBytes; past that a line is dropped and counted, and the owner is told once
 * per episode (onDropStart) and again when the reader has caught up (onRecovered).
 *
 * Why not a SonicBoom on fd 1: SonicBoom writes with fs.write, in libuv's thread pool, on the
 * blocking pipe; a reader that never reads pins that thread, and process exit waits for it forever
 * (measured). A libuv stream writes non-blocking from the event loop and process.exit() never waits
 * for it; an exit by an empty event loop does wait for a write still in flight (measured, Node 20
 * and 24: a reader that never reads holds the process after flush()'s bounded wait).
 */
import type { Writable } from 'node:stream';

export interface BoundedStreamOptions {
  stream: Writable;
  /** Bytes allowed to wait for the reader; a line past that is dropped. */
  maxBytes: number;
  onDropStart?(): void;
  onRecovered?(dropped: number): void;
}

export class BoundedStream {
  /** Lines dropped since start because the reader was behind. */
  dropped = 0;
  private episodeDrops = 0;
  private broken = false;

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

  /** Bytes waiting for the reader. */
  get waitingBytes(): number {
    return this.o.stream.writableLength;
  }

  write(line: string): boolean {
    const s = this.o.stream;
    if (this.broken || s.destroyed || s.writableLength + line.length > this.o.maxBytes) {
      this.dropped++;
      if (this.episodeDrops++ === 0 && !this.broken) this.o.onDropStart?.();
      return false;
    }
    s.write(line);
    return true;
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
    const s = this.o.stream;
    if (this.broken || s.destroyed || s.writableEnded || s.writableLength === 0) return Promise.resolve(true);
    return new Promise((resolve) => {
      const timer = setTimeout(() => resolve(false), timeoutMs);
      s.write('', (err) => { clearTimeout(timer); resolve(!err); });
    });
  }
}
