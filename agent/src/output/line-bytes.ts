/**
 * Lines as bytes: each JSON line is encoded to UTF-8 once, into a chunk outside the JS heap, and every
 * destination that takes it (stdout and the log file for `run`; stdout and --log-file for `read`)
 * writes views of those same bytes. No destination joins strings or encodes the text again, and the
 * byte size of each line (what stdout's bound and the log file's rotation count) comes from the
 * encoding itself.
 *
 * A chunk is never written over: when a line does not fit in what is left of it, a new one is taken,
 * and an old one lives as long as a destination still holds a view of it.
 */

/**
 * Bytes of a chunk lines are encoded into (a larger line gets a chunk of its own size). Small enough
 * that a chunk is filled, written and dead within a young-generation GC or two at thousands of
 * records a second (~12 ms at 5,000 req/s), so glibc reuses its memory at once: 256 KiB chunks lived
 * ~50 ms, and cost more CPU per call and more RSS (bench/RESULTS.md, round 6).
 */
export const LINE_CHUNK_BYTES = 64 * 1024;

const NO_CHUNK = Buffer.alloc(0);

/**
 * Encodes lines one after the other into chunks. After encode(), `chunk`, `start` and `end` say where
 * the line's bytes (its newline included) are: three fields rather than a view object per line.
 */
export class LineEncoder {
  chunk: Buffer = NO_CHUNK;
  start = 0;
  end = 0;

  /**
   * text, then a newline unless it ends with one already, as UTF-8 after the previous line; returns
   * its size in bytes. A UTF-16 unit takes at most 3 bytes of UTF-8, so room for 3 per unit is made.
   */
  encode(text: string): number {
    const most = text.length * 3 + 1;
    let at = this.end;
    if (at + most > this.chunk.length) {
      this.chunk = Buffer.allocUnsafe(Math.max(LINE_CHUNK_BYTES, most));
      at = 0;
    }
    this.start = at;
    at += this.chunk.write(text, at, 'utf8');
    if (text.charCodeAt(text.length - 1) !== 0x0a) this.chunk[at++] = 0x0a;
    this.end = at;
    return at - this.start;
  }
}

/**
 * The bytes of lines one destination has taken and not yet written, oldest first: views of the
 * encoder's chunks, consecutive lines of one chunk kept as one view.
 */
export class ByteRuns {
  /** Bytes held. */
  bytes = 0;
  private parts: Buffer[] = [];
  /** The run being extended: bytes [start, end) of chunk (not yet a view in parts). */
  private chunk: Buffer | null = null;
  private start = 0;
  private end = 0;

  add(chunk: Buffer, start: number, end: number): void {
    this.bytes += end - start;
    if (chunk === this.chunk && start === this.end) {
      this.end = end;
      return;
    }
    this.closeRun();
    this.chunk = chunk;
    this.start = start;
    this.end = end;
  }

  private closeRun(): void {
    if (this.chunk !== null && this.end > this.start) this.parts.push(this.chunk.subarray(this.start, this.end));
    this.chunk = null;
  }

  /**
   * Everything held, as one buffer: a view when it is one run, else one copy (which then replaces
   * the views, so asking again does not copy again and the chunks are no longer held). Kept.
   */
  peek(): Buffer {
    this.closeRun();
    if (this.parts.length === 0) return NO_CHUNK;
    if (this.parts.length > 1) this.parts = [Buffer.concat(this.parts, this.bytes)];
    return this.parts[0];
  }

  /** Everything held, as its views (oldest first, none copied), and no longer held. */
  takeParts(): Buffer[] {
    this.closeRun();
    const parts = this.parts;
    this.clear();
    return parts;
  }

  /** Everything held, as one buffer (see peek), and no longer held. */
  take(): Buffer {
    const all = this.peek();
    this.clear();
    return all;
  }

  /** Forget the oldest n bytes (whole lines: the caller knows their sizes). */
  dropFront(n: number): void {
    if (n >= this.bytes) {
      this.clear();
      return;
    }
    this.closeRun();
    this.bytes -= n;
    let k = 0;
    while (n > 0 && n >= this.parts[k].length) n -= this.parts[k++].length;
    this.parts = this.parts.slice(k);
    if (n > 0) this.parts[0] = this.parts[0].subarray(n);
  }

  clear(): void {
    this.parts = [];
    this.chunk = null;
    this.bytes = 0;
  }
}
