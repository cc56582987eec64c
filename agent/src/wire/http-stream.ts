/**
 * Incremental HTTP/1.x parser over one reassembled direction of a connection. It keeps only the bytes
 * of a message head (bounded); bodies are counted and dropped, never stored (IMDS responses hold
 * IAM credentials). Handles pipelining, keep-alive, chunked bodies, and resynchronises after a gap or
 * garbage instead of throwing.
 */
import {
  type Ambiguity, BodyFraming, looksLikeRequestStart, looksLikeResponseStart, parseRequestHead, parseResponseHead,
  RequestHead, ResponseHead, TOKEN_LINE_RE,
} from './http-head.js';

export interface HttpStreamOptions {
  kind: 'request' | 'response';
  maxHeaderBytes: number;
  onMessage(head: RequestHead | ResponseHead): void;
  /** Called with header values that are secrets (tokens), so they can be redacted elsewhere. */
  onSecret?(value: string): void;
  /** For responses: the method of the request this response answers (HEAD has no body). */
  requestMethod?(): string | null;
  /**
   * A message already emitted (its number, counting from 1 in onMessage order) turned out ambiguous:
   * bytes of it were contradicted below HTTP (a conflicting TCP overlap, urgent data).
   */
  onAmbiguity?(message: number, why: Ambiguity): void;
}

type State =
  | { s: 'head' }
  | { s: 'skip-head' }
  | { s: 'body'; left: number }
  | { s: 'chunk-size' }
  | { s: 'chunk-data'; left: number }
  | { s: 'trailer' }
  | { s: 'until-close' };

/** The states without data, one object each (states are never changed, only replaced). */
const HEAD: State = { s: 'head' };
const SKIP_HEAD: State = { s: 'skip-head' };
const CHUNK_SIZE: State = { s: 'chunk-size' };
const TRAILER: State = { s: 'trailer' };
const UNTIL_CLOSE: State = { s: 'until-close' };

const MAX_CHUNK_LINE = 1024;
/** Nothing held (never written to: one for every stream). */
const EMPTY = Buffer.alloc(0);
/** Longest line kept while skipping the rest of a cut head (to find token values in it). */
const MAX_SKIP_LINE = 8192;
/** Emitted messages remembered with their stream offsets, for ambiguities found after the fact. */
const RECENT_MESSAGES = 8;

/**
 * Where a message head ends: the first empty line, a line being ended by LF with an optional CR
 * before it (as lenient servers read heads: Python's http.server, Go's textproto; strict ones reject
 * bare LFs outright). `textEnd` excludes the last line's line ending, `next` is the first byte after
 * the blank line. Null when no end is held yet.
 */
export function findHeadEnd(b: Buffer, from = 0): { textEnd: number; next: number; crlf: boolean } | null {
  for (let i = b.indexOf(0x0a, from); i >= 0; i = b.indexOf(0x0a, i + 1)) {
    let next = -1;
    if (b[i + 1] === 0x0a) next = i + 2;
    else if (b[i + 1] === 0x0d && b[i + 2] === 0x0a) next = i + 3;
    if (next < 0) continue;
    const cr = i > 0 && b[i - 1] === 0x0d;
    return { textEnd: cr ? i - 1 : i, next, crlf: cr && next === i + 3 };
  }
  return null;
}

function ignore(): void {}

export class HttpStream {
  private state: State = HEAD;
  private buf: Buffer = EMPTY;
  private resyncing = false;
  /** Stream offset of buf[0]. */
  private offset = 0;
  /** Where the head being read starts (stream offset), or null between messages. */
  private headStart: number | null = null;
  /** An ambiguity found below HTTP for the head being read (or the next one). */
  private pendingAmbiguity: Ambiguity | null = null;
  private emitted = 0;
  /** An earlier message was ambiguous or malformed: every later head is ambiguous too. */
  private tainted = false;
  private readonly recent: Array<{ n: number; start: number }> = [];
  /** Skipping the rest of a head: the current line so far (bounded), and whether it began mid-line. */
  private skipLine = '';
  private skipLineLong = false;
  private skipMidLine = false;
  /** How far the head being read was already searched for its end. */
  private headScan = 0;
  malformed = 0;
  truncatedHeads = 0;

  constructor(private readonly opts: HttpStreamOptions) {}

  /** Bytes held (an incomplete message head, or the line being skipped). */
  get buffered(): number {
    return this.buf.length + this.skipLine.length;
  }

  push(data: Buffer): void {
    this.buf = this.buf.length ? Buffer.concat([this.buf, data]) : data;
    for (let guard = 0; this.buf.length > 0 && guard < 100_000; guard++) {
      if (!this.step()) break;
    }
  }

  /** Bytes were lost: forget the partial message and look for the next message start. */
  gap(): void {
    this.offset += this.buf.length;
    this.buf = EMPTY;
    this.state = HEAD;
    this.resyncing = true;
    this.headStart = null;
    this.pendingAmbiguity = null;
    this.skipLine = '';
    this.headScan = 0;
  }

  /**
   * Bytes at stream offset `at` (counted over every byte pushed) were contradicted below HTTP. The
   * message holding them is ambiguous: the head being read (or the next one, for an offset not yet
   * read), or one already emitted.
   */
  ambiguous(at: number, why: Ambiguity): void {
    const here = this.headStart ?? this.offset;
    if (at >= here) { // in the head being read, or in bytes not read yet
      this.pendingAmbiguity ??= why;
      return;
    }
    for (let i = this.recent.length - 1; i >= 0; i--) {
      if (this.recent[i].start <= at) {
        this.tainted = true;
        this.opts.onAmbiguity?.(this.recent[i].n, why);
        return;
      }
    }
  }

  /**
   * The sender closed its side. A request head still being read is all it sent: lenient servers
   * (Python's http.server) serve it at end of input, so it is reported, as ambiguous.
   */
  end(): void {
    if (this.opts.kind !== 'request' || this.state.s !== 'head' || this.headStart === null || this.buf.length === 0) return;
    let text = this.buf.toString('latin1');
    text = text.endsWith('\r\n') ? text.slice(0, -2) : text.endsWith('\n') ? text.slice(0, -1) : text;
    this.consume(this.buf.length);
    this.pendingAmbiguity ??= this.tainted ? 'follows_ambiguous' : 'head_incomplete';
    this.emit(text, false, false);
  }

  /** Drop n bytes from the front of buf. */
  private consume(n: number): void {
    this.buf = n === this.buf.length ? EMPTY : this.buf.subarray(n);
    this.offset += n;
    this.headScan = Math.max(0, this.headScan - n);
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
      case 'body': return this.consumeBody(st.left, false);
      case 'chunk-data': return this.consumeBody(st.left, true);
      case 'chunk-size': return this.stepChunkSize();
      case 'trailer': return this.stepTrailer();
      case 'until-close': this.consume(this.buf.length); return false;
    }
  }

  private stepHead(): boolean {
    // Tolerate stray CRLFs between messages (RFC 9112 §2.2).
    let lead = 0;
    while (lead < this.buf.length && (this.buf[lead] === 0x0d || this.buf[lead] === 0x0a)) lead++;
    if (lead) this.consume(lead);
    if (this.buf.length === 0) return false;
    if (!this.startsMessage(this.buf)) {
      if (!this.resyncing) { this.malformed++; this.tainted = true; }
      this.resyncing = false;
      this.startSkip(true);
      return true;
    }
    this.resyncing = false;
    this.headStart ??= this.offset;
    const max = this.opts.maxHeaderBytes;
    const window = this.buf.length > max + 3 ? this.buf.subarray(0, max + 3) : this.buf;
    const end = findHeadEnd(window, this.headScan);
    if (!end || end.textEnd > max) {
      this.headScan = Math.max(0, window.length - 3);
      if (this.buf.length <= max) return false;
      // Oversized head: parse its whole lines within the bound, then skip to its end, still reading
      // the skipped lines for token values (so they are redacted wherever they appear).
      this.truncatedHeads++;
      const lf = this.buf.subarray(0, max).lastIndexOf(0x0a);
      const keep = lf > 0 ? lf : max;
      let text = this.buf.subarray(0, keep).toString('latin1');
      if (text.endsWith('\r')) text = text.slice(0, -1);
      this.consume(lf > 0 ? lf + 1 : max);
      this.emit(text, true, false);
      this.startSkip(lf <= 0);
      return true;
    }
    const text = this.buf.toString('latin1', 0, end.textEnd);
    this.consume(end.next);
    this.headScan = 0;
    const framing = this.emit(text, false, !end.crlf);
    this.state = framing ? this.afterHead(framing) : HEAD;
    return true;
  }

  private startSkip(midLine: boolean): void {
    this.state = SKIP_HEAD;
    this.headScan = 0;
    this.skipLine = '';
    this.skipLineLong = false;
    this.skipMidLine = midLine;
  }

  /**
   * Drop bytes up to the end of the current (unusable or cut) head, then parse again. Lines are read
   * as they go by: a token header among them still gives its value to onSecret.
   */
  private stepSkipHead(): boolean {
    const bound = Math.min(MAX_SKIP_LINE, this.opts.maxHeaderBytes);
    for (;;) {
      const lf = this.buf.indexOf(0x0a);
      if (lf < 0) {
        this.addSkipped(this.buf, bound);
        this.consume(this.buf.length);
        return false;
      }
      this.addSkipped(this.buf.subarray(0, lf), bound);
      this.consume(lf + 1);
      let line = this.skipLine;
      if (line.endsWith('\r')) line = line.slice(0, -1);
      const blank = line === '' && !this.skipLineLong && !this.skipMidLine;
      if (!this.skipLineLong && !this.skipMidLine) {
        for (const part of line.split('\r')) {
          const secret = TOKEN_LINE_RE.exec(part);
          const v = secret ? secret[1].replace(/^[ \t]+|[ \t]+$/g, '') : '';
          if (v) this.opts.onSecret?.(v);
        }
      }
      this.skipLine = '';
      this.skipLineLong = false;
      this.skipMidLine = false;
      if (blank) {
        this.state = HEAD;
        this.headStart = null;
        this.pendingAmbiguity = null;
        return true;
      }
    }
  }

  private addSkipped(b: Buffer, bound: number): void {
    if (this.skipLineLong || b.length === 0) return;
    if (this.skipLine.length + b.length > bound) {
      this.skipLine = '';
      this.skipLineLong = true;
      return;
    }
    this.skipLine += b.toString('latin1');
  }

  private emit(text: string, truncated: boolean, bareLfTerminator: boolean): BodyFraming | null {
    const secret = this.opts.onSecret ?? ignore;
    const start = this.headStart ?? this.offset;
    const head = this.opts.kind === 'request'
      ? parseRequestHead(text, truncated, secret,
        { bareLfTerminator, ambiguity: this.pendingAmbiguity ?? (this.tainted ? 'follows_ambiguous' : null) })
      : parseResponseHead(text, truncated, this.opts.requestMethod?.() ?? null);
    this.headStart = null;
    this.pendingAmbiguity = null;
    if (!head) {
      this.malformed++;
      this.tainted = true;
      return null;
    }
    if (head.kind === 'request' && (head.ambiguity || head.connectionClose)) this.tainted = true;
    this.emitted++;
    this.recent.push({ n: this.emitted, start });
    if (this.recent.length > RECENT_MESSAGES) this.recent.shift();
    this.opts.onMessage(head);
    return head.body;
  }

  private afterHead(f: BodyFraming): State {
    switch (f.type) {
      case 'none': return HEAD;
      case 'length': return { s: 'body', left: f.length };
      case 'chunked': return CHUNK_SIZE;
      case 'until-close': return UNTIL_CLOSE;
    }
  }

  /** Drop body bytes (of a chunk when `chunk`): `left` of them are still due. */
  private consumeBody(left: number, chunk: boolean): boolean {
    const n = Math.min(left, this.buf.length);
    this.consume(n);
    const rest = left - n;
    if (rest > 0) this.state = chunk ? { s: 'chunk-data', left: rest } : { s: 'body', left: rest };
    else this.state = chunk ? CHUNK_SIZE : HEAD;
    return rest === 0;
  }

  private stepChunkSize(): boolean {
    const nl = this.buf.indexOf('\r\n');
    if (nl < 0) {
      // A chunk-size line is bounded like a head: never hold more than maxHeaderBytes of it.
      if (this.buf.length > Math.min(MAX_CHUNK_LINE, this.opts.maxHeaderBytes)) { this.malformed++; this.gap(); }
      return false;
    }
    const line = this.buf.subarray(0, nl).toString('latin1');
    this.consume(nl + 2);
    const m = /^([0-9a-fA-F]{1,8})/.exec(line);
    if (!m) {
      this.malformed++;
      this.gap();
      return true;
    }
    const size = parseInt(m[1], 16);
    this.state = size === 0 ? TRAILER : { s: 'chunk-data', left: size + 2 };
    return true;
  }

  private stepTrailer(): boolean {
    const nl = this.buf.indexOf('\r\n');
    if (nl < 0) {
      if (this.buf.length > this.opts.maxHeaderBytes) { this.malformed++; this.gap(); }
      return false;
    }
    this.consume(nl + 2);
    if (nl === 0) this.state = HEAD;
    return true;
  }
}
