/**
 * Incremental HTTP/1.x parser over one reassembled direction of a connection. It keeps only the bytes
 * of a message head (bounded); bodies are counted and dropped, never stored (IMDS responses hold
 * IAM credentials). Handles pipelining, keep-alive, chunked bodies, and resynchronises after a gap or
 * garbage instead of throwing.
 */
import {
  BodyFraming, looksLikeRequestStart, looksLikeResponseStart, parseRequestHead, parseResponseHead,
  RequestHead, ResponseHead,
} from './http-head.js';

export interface HttpStreamOptions {
  kind: 'request' | 'response';
  maxHeaderBytes: number;
  onMessage(head: RequestHead | ResponseHead): void;
  /** Called with header values that are secrets (tokens), so they can be redacted elsewhere. */
  onSecret?(value: string): void;
  /** For responses: the method of the request this response answers (HEAD has no body). */
  requestMethod?(): string | null;
}

type State =
  | { s: 'head' }
  | { s: 'skip-head' }
  | { s: 'body'; left: number }
  | { s: 'chunk-size' }
  | { s: 'chunk-data'; left: number }
  | { s: 'trailer' }
  | { s: 'until-close' };

const CRLFCRLF = Buffer.from('\r\n\r\n');
const MAX_CHUNK_LINE = 1024;

export class HttpStream {
  private state: State = { s: 'head' };
  private buf: Buffer = Buffer.alloc(0);
  private resyncing = false;
  malformed = 0;
  truncatedHeads = 0;

  constructor(private readonly opts: HttpStreamOptions) {}

  /** Bytes held (an incomplete message head). */
  get buffered(): number {
    return this.buf.length;
  }

  push(data: Buffer): void {
    this.buf = this.buf.length ? Buffer.concat([this.buf, data]) : data;
    for (let guard = 0; this.buf.length > 0 && guard < 100_000; guard++) {
      if (!this.step()) break;
    }
  }

  /** Bytes were lost: forget the partial message and look for the next message start. */
  gap(): void {
    this.buf = Buffer.alloc(0);
    this.state = { s: 'head' };
    this.resyncing = true;
  }

  private startsMessage(b: Buffer): boolean {
    return this.opts.kind === 'request' ? looksLikeRequestStart(b) : looksLikeResponseStart(b);
  }

  /** Consume what can be consumed; false when more bytes are needed. */
  private step(): boolean {
    const st = this.state;
    switch (st.s) {
      case 'head': return this.stepHead();
      case 'skip-head': return this.stepSkipHead();
      case 'body': return this.consumeBody(st.left, (left) => ({ s: 'body', left }), { s: 'head' });
      case 'chunk-data':
        return this.consumeBody(st.left, (left) => ({ s: 'chunk-data', left }), { s: 'chunk-size' });
      case 'chunk-size': return this.stepChunkSize();
      case 'trailer': return this.stepTrailer();
      case 'until-close': this.buf = Buffer.alloc(0); return false;
    }
  }

  private stepHead(): boolean {
    // Tolerate stray CRLFs between messages (RFC 9112 §2.2).
    let lead = 0;
    while (lead < this.buf.length && (this.buf[lead] === 0x0d || this.buf[lead] === 0x0a)) lead++;
    if (lead) this.buf = this.buf.subarray(lead);
    if (this.buf.length === 0) return false;
    if (!this.startsMessage(this.buf)) {
      if (!this.resyncing) this.malformed++;
      this.resyncing = false;
      this.state = { s: 'skip-head' };
      return true;
    }
    this.resyncing = false;
    const end = this.buf.indexOf(CRLFCRLF);
    if (end < 0) {
      if (this.buf.length <= this.opts.maxHeaderBytes) return false;
      // Oversized head: parse what we hold, then skip to its end.
      this.truncatedHeads++;
      const text = this.buf.subarray(0, this.opts.maxHeaderBytes).toString('latin1');
      this.buf = this.buf.subarray(this.opts.maxHeaderBytes);
      const cut = text.lastIndexOf('\r\n'); // parse whole lines only
      this.emit(cut > 0 ? text.slice(0, cut) : text, true);
      this.state = { s: 'skip-head' };
      return true;
    }
    const text = this.buf.subarray(0, end).toString('latin1');
    this.buf = this.buf.subarray(end + 4);
    const framing = this.emit(text, false);
    this.state = framing ? this.afterHead(framing) : { s: 'head' };
    return true;
  }

  /** Drop bytes up to the end of the current (unusable) head, then parse again. */
  private stepSkipHead(): boolean {
    const end = this.buf.indexOf(CRLFCRLF);
    if (end < 0) {
      // Keep the last 3 bytes: the terminator may straddle two pushes.
      if (this.buf.length > 3) this.buf = this.buf.subarray(this.buf.length - 3);
      // A new message may start right here after a gap.
      return false;
    }
    this.buf = this.buf.subarray(end + 4);
    this.state = { s: 'head' };
    return true;
  }

  private emit(text: string, truncated: boolean): BodyFraming | null {
    const secret = this.opts.onSecret ?? (() => undefined);
    const head = this.opts.kind === 'request'
      ? parseRequestHead(text, truncated, secret)
      : parseResponseHead(text, truncated, this.opts.requestMethod?.() ?? null);
    if (!head) {
      this.malformed++;
      return null;
    }
    this.opts.onMessage(head);
    return head.body;
  }

  private afterHead(f: BodyFraming): State {
    switch (f.type) {
      case 'none': return { s: 'head' };
      case 'length': return { s: 'body', left: f.length };
      case 'chunked': return { s: 'chunk-size' };
      case 'until-close': return { s: 'until-close' };
    }
  }

  private consumeBody(left: number, more: (left: number) => State, done: State): boolean {
    const n = Math.min(left, this.buf.length);
    this.buf = this.buf.subarray(n);
    this.state = left - n > 0 ? more(left - n) : done;
    return left - n === 0;
  }

  private stepChunkSize(): boolean {
    const nl = this.buf.indexOf('\r\n');
    if (nl < 0) {
      // A chunk-size line is bounded like a head: never hold more than maxHeaderBytes of it.
      if (this.buf.length > Math.min(MAX_CHUNK_LINE, this.opts.maxHeaderBytes)) { this.malformed++; this.gap(); }
      return false;
    }
    const line = this.buf.subarray(0, nl).toString('latin1');
    this.buf = this.buf.subarray(nl + 2);
    const m = /^([0-9a-fA-F]{1,8})/.exec(line);
    if (!m) {
      this.malformed++;
      this.gap();
      return true;
    }
    const size = parseInt(m[1], 16);
    this.state = size === 0 ? { s: 'trailer' } : { s: 'chunk-data', left: size + 2 };
    return true;
  }

  private stepTrailer(): boolean {
    const nl = this.buf.indexOf('\r\n');
    if (nl < 0) {
      if (this.buf.length > this.opts.maxHeaderBytes) { this.malformed++; this.gap(); }
      return false;
    }
    this.buf = this.buf.subarray(nl + 2);
    if (nl === 0) this.state = { s: 'head' };
    return true;
  }
}
