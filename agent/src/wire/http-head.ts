/**
 * Parsing of one HTTP/1.x message head (start line + headers). Pure. Header values that are secrets
 * (the IMDSv2 token) are handed to onSecret and never kept in the returned object.
 */
export interface RequestHead {
  kind: 'request';
  method: string;
  target: string;
  version: string;
  tokenPresent: boolean;
  /** X-aws-ec2-metadata-token-ttl-seconds as sent (number when numeric). */
  tokenTtlSeconds: number | null;
  userAgent: string | null;
  host: string | null;
  forwardedFor: boolean;
  /** Other clouds' markers: GCE "Metadata-Flavor", Azure/others "Metadata". */
  metadataFlavor: string | null;
  metadataHeader: string | null;
  headerCount: number;
  headersTruncated: boolean;
  /**
   * Why this head cannot be trusted to say what the server saw (the first reason found), or null:
   * see Ambiguity. An ambiguous AWS request is IMDSv1 whatever its headers say.
   */
  ambiguity: Ambiguity | null;
  /** The connection ends after this request (HTTP/1.0 without keep-alive, or Connection: close). */
  connectionClose: boolean;
  body: BodyFraming;
}

/**
 * Ways a request head can mean different things to different HTTP parsers (RFC 9112 servers reject or
 * read them differently), or to the tracer and the server (TCP tricks, a head cut at the bound).
 */
export type Ambiguity =
  | 'bare_lf' // a line ended by LF alone (lenient servers accept it, strict ones reject the request)
  | 'bare_cr' // a CR not followed by LF
  | 'obs_fold' // a line starting with SP/HTAB: a folded continuation, or whitespace after the start line
  | 'space_before_colon' // "name : value" (RFC 9112 §5.1: reject)
  | 'invalid_header_line' // a header line without a colon, or with an empty name
  | 'invalid_header_name' // a name with characters outside tchar
  | 'invalid_header_value' // control characters in a value
  | 'duplicate_token' // more than one X-aws-ec2-metadata-token header
  | 'empty_token' // an X-aws-ec2-metadata-token header with an empty value
  | 'conflicting_framing' // Content-Length and Transfer-Encoding, differing or bad Content-Length
  | 'request_line_whitespace' // the request line's parts separated by more than one SP (or by HTAB)
  | 'nonstandard_method' // not a method of RFC 9110 (methods are case-sensitive: "put" is not PUT)
  | 'head_truncated' // the head was longer than maxHeaderBytes and parsed in part
  | 'head_incomplete' // the client closed its side before the blank line (lenient servers serve it at EOF)
  | 'follows_ambiguous' // an earlier message on the connection was ambiguous, malformed or asked to
  //                       close the connection: servers may have stopped there, or disagree on where
  //                       this message starts
  | 'tcp_overlap_conflict' // a TCP segment overlapping bytes of this request carried different bytes
  | 'tcp_urgent'; // TCP urgent data pointed into this request (the server drops that byte)

export const AMBIGUITIES: readonly Ambiguity[] = [
  'bare_lf', 'bare_cr', 'obs_fold', 'space_before_colon', 'invalid_header_line', 'invalid_header_name',
  'invalid_header_value', 'duplicate_token', 'empty_token', 'conflicting_framing', 'request_line_whitespace',
  'nonstandard_method', 'head_truncated', 'head_incomplete', 'follows_ambiguous', 'tcp_overlap_conflict', 'tcp_urgent',
];

/** How the stream delimited a head: facts the head's text alone does not show. */
export interface HeadContext {
  /** The blank line ending the head was not CRLF CRLF (a bare LF in the terminator). */
  bareLfTerminator?: boolean;
  /** Found below HTTP (TCP), before this head was parsed: it wins over anything the parser finds. */
  ambiguity?: Ambiguity | null;
}

export interface ResponseHead {
  kind: 'response';
  status: number;
  version: string;
  headerCount: number;
  headersTruncated: boolean;
  body: BodyFraming;
}

export type BodyFraming = { type: 'none' } | { type: 'length'; length: number } | { type: 'chunked' }
  | { type: 'until-close' };

const TOKEN_HEADER = 'x-aws-ec2-metadata-token';
const TTL_HEADER = 'x-aws-ec2-metadata-token-ttl-seconds';
const METHOD_RE = /^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,32}$/;
const TCHARS_RE = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;
/** RFC 9110 §9 and PATCH (RFC 5789): the methods every server knows; others are refused by strict ones. */
const STANDARD_METHODS = new Set(['GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'CONNECT', 'OPTIONS', 'TRACE', 'PATCH']);
// Control characters other than HTAB are invalid in a field value (RFC 9110 §5.5); obs-text is allowed.
const BAD_VALUE_RE = /[\x00-\x08\x0a-\x1f\x7f]/;
/** A token header line however it is spelled (leading or inner whitespace, any case): for redaction only. */
export const TOKEN_LINE_RE = /^[ \t]*x-aws-ec2-metadata-token[ \t]*:(.*)$/is;
/** The token header's name anywhere (as TOKEN_LINE_RE matches it: any case): a head without it has no token line. */
const TOKEN_NAME_RE = /x-aws-ec2-metadata-token/i;
/** TOKEN_NAME_RE searching on from its lastIndex. */
const TOKEN_NAME_SEARCH_RE = /x-aws-ec2-metadata-token/gi;
const MAX_FIELD = 512;
/** A request head's body until its headers are read (then replaced by its own object). */
const NO_BODY_YET: BodyFraming = Object.freeze({ type: 'none' });

export function looksLikeRequestStart(b: Buffer): boolean {
  // Method token then a space, within the first 33 bytes (or fewer bytes that are all token chars).
  const n = Math.min(b.length, 33);
  for (let i = 0; i < n; i++) {
    const c = b[i];
    if (c === 0x20) return i > 0;
    if (c < 0x21 || c > 0x7e) return false;
  }
  return n < 33;
}

export function looksLikeResponseStart(b: Buffer): boolean {
  const p = 'HTTP/';
  for (let i = 0; i < Math.min(b.length, p.length); i++) if (b[i] !== p.charCodeAt(i)) return false;
  return true;
}

function cap(s: string): string {
  return s.length > MAX_FIELD ? s.slice(0, MAX_FIELD) : s;
}

/** s without leading and trailing SP and HTAB (the same string when there are none). */
function trimOws(s: string): string {
  let a = 0;
  let b = s.length;
  while (a < b && (s.charCodeAt(a) === 0x20 || s.charCodeAt(a) === 0x09)) a++;
  while (b > a && (s.charCodeAt(b - 1) === 0x20 || s.charCodeAt(b - 1) === 0x09)) b--;
  return a === 0 && b === s.length ? s : s.slice(a, b);
}

/**
 * The request line: strictly "method SP target SP HTTP/d.d"; leniently (as Python's http.server and
 * llhttp do) parts separated by runs of whitespace, which is served but ambiguous. Null when not a
 * request line at all.
 */
function requestLine(line: string): { parts: string[]; ambiguous: boolean } | null {
  const strict = line.split(' ');
  if (isRequestLine(strict)) return { parts: strict, ambiguous: false };
  const loose = line.split(/[ \t\v\f]+/).filter((p) => p.length > 0);
  return isRequestLine(loose) ? { parts: loose, ambiguous: true } : null;
}

/** Method, target, version: a request line's parts. */
function isRequestLine(p: string[]): boolean {
  return p.length === 3 && METHOD_RE.test(p[0]) && /^HTTP\/\d\.\d$/.test(p[2]) && p[1].length > 0;
}

/** A request head's text as parsed lately: its head (null: not a request), and its token values in order. */
interface ParsedHead {
  head: RequestHead | null;
  secrets: string[];
}

/**
 * Request heads parsed lately, by their whole text: a client sends the same head again and again (the
 * same path, User-Agent and token), and a head's parse depends on nothing but its text when nothing
 * below HTTP made it ambiguous. Bounded: heads of at most PARSED_TEXT_MAX characters, PARSED_MAX of
 * them (then forgotten all at once). The heads are frozen: every call of that text shares one.
 */
const parsedHeads = new Map<string, ParsedHead>();
const PARSED_MAX = 64;
const PARSED_TEXT_MAX = 1024;

/**
 * One request head: `text` is the head without its final blank line, lines ended by CRLF (or, in a
 * head from a lenient client, LF). Every token value seen, however its line is spelled, goes to
 * onSecret (so it is redacted); only a head every RFC 9112 server reads the same way is unambiguous.
 * The head returned is frozen (a head of the same text may be the same object).
 */
export function parseRequestHead(text: string, truncated: boolean,
  onSecret: (value: string) => void, ctx: HeadContext = {}): RequestHead | null {
  const plain = !truncated && !ctx.bareLfTerminator && !ctx.ambiguity && text.length <= PARSED_TEXT_MAX;
  if (plain) {
    const seen = parsedHeads.get(text);
    if (seen !== undefined) {
      for (let i = 0; i < seen.secrets.length; i++) onSecret(seen.secrets[i]); // redacted as the first time
      return seen.head;
    }
  }
  const secrets: string[] = [];
  const head = parseHead(text, truncated, (v) => { secrets.push(v); onSecret(v); }, ctx);
  if (head) { Object.freeze(head.body); Object.freeze(head); }
  if (plain) {
    if (parsedHeads.size >= PARSED_MAX) parsedHeads.clear();
    parsedHeads.set(text, { head, secrets });
  }
  return head;
}

/** parseRequestHead's parse itself, every time. */
function parseHead(text: string, truncated: boolean,
  onSecret: (value: string) => void, ctx: HeadContext): RequestHead | null {
  // Token values first, from every line however it is spelled (even in a head that does not parse).
  tokenValues(text, onSecret);
  // Lines are read in place, by their bounds in text (no array of lines, no copy of each).
  const firstLf = text.indexOf('\n');
  const raw0 = firstLf < 0 ? text : text.slice(0, firstLf);
  const first = raw0.endsWith('\r') ? raw0.slice(0, -1) : raw0;
  const rl = requestLine(first.includes('\r') ? '' : first);
  if (!rl) return null;
  const parts = rl.parts;
  // The first reason found wins (`ambiguity ??= …` below: no closure made per head).
  let ambiguity: Ambiguity | null = ctx.ambiguity ?? null;
  const head: RequestHead = {
    kind: 'request', method: parts[0], target: cap(parts[1]), version: parts[2].slice(5),
    tokenPresent: false, tokenTtlSeconds: null, userAgent: null, host: null, forwardedFor: false,
    metadataFlavor: null, metadataHeader: null, headerCount: 0, headersTruncated: truncated,
    ambiguity: null, connectionClose: false, body: NO_BODY_YET,
  };
  let connection = '';
  if (firstLf >= 0 && !raw0.endsWith('\r')) ambiguity ??= 'bare_lf';
  if (rl.ambiguous) ambiguity ??= 'request_line_whitespace';
  if (!STANDARD_METHODS.has(parts[0])) ambiguity ??= 'nonstandard_method';
  // Made only for a head with Content-Length or Transfer-Encoding (most requests have neither).
  let framing: Framing | null = null;
  let tokens = 0;
  // The next CR and colon at or after a line's start (found once, not searched again for every line).
  let nextCr = -1;
  let nextColon = -1;
  for (let start = firstLf + 1; firstLf >= 0 && start <= text.length;) {
    // This line is text[start, end) without its line ending; the next one starts at `after`.
    const lf = text.indexOf('\n', start);
    const last = lf < 0;
    let end = last ? text.length : lf;
    const after = end + 1;
    if (end > start && text.charCodeAt(end - 1) === 0x0d) end--;
    else if (!last) ambiguity ??= 'bare_lf';
    if (nextCr < start) nextCr = indexOrInfinity(text, '\r', start);
    if (nextCr < end) ambiguity ??= 'bare_cr';
    if (end === start) { ambiguity ??= 'bare_cr'; start = after; continue; } // an empty line within a head: it held CR CR LF
    const c0 = text.charCodeAt(start);
    if (c0 === 0x20 || c0 === 0x09) { ambiguity ??= 'obs_fold'; start = after; continue; }
    if (nextColon < start) nextColon = indexOrInfinity(text, ':', start);
    const colon = nextColon;
    if (colon >= end || colon === start) { ambiguity ??= 'invalid_header_line'; start = after; continue; }
    const rawName = text.slice(start, colon);
    const trimmedName = trimOws(rawName);
    // (Lowercasing keeps a latin1 string's length: the name differs from its trimmed self only by whitespace.)
    if (trimmedName.length !== rawName.length) ambiguity ??= 'space_before_colon';
    else if (!TCHARS_RE.test(rawName)) ambiguity ??= 'invalid_header_name';
    const name = trimmedName.toLowerCase();
    const value = owsTrimmedSlice(text, colon + 1, end);
    start = after;
    if (BAD_VALUE_RE.test(value)) ambiguity ??= 'invalid_header_value';
    head.headerCount++;
    switch (name) {
      case TOKEN_HEADER:
        head.tokenPresent = true;
        if (++tokens > 1) ambiguity ??= 'duplicate_token';
        if (!value) ambiguity ??= 'empty_token';
        break;
      case TTL_HEADER: head.tokenTtlSeconds = /^\d{1,9}$/.test(value) ? Number(value) : null; break;
      case 'user-agent': head.userAgent = cap(value); break;
      case 'host': head.host = cap(value); break;
      case 'x-forwarded-for': head.forwardedFor = true; break;
      case 'metadata-flavor': head.metadataFlavor = cap(value); break;
      case 'metadata': head.metadataHeader = cap(value); break;
      case 'connection': connection += `,${value}`; break;
      case 'content-length':
      case 'transfer-encoding': (framing ??= new Framing()).see(name, value); break;
    }
  }
  head.connectionClose = /(?:^|,)[ \t]*close[ \t]*(?:,|$)/i.test(connection)
    || (head.version === '1.0' && !/(?:^|,)[ \t]*keep-alive[ \t]*(?:,|$)/i.test(connection));
  if (framing?.conflicting) ambiguity ??= 'conflicting_framing';
  if (ctx.bareLfTerminator) ambiguity ??= 'bare_lf';
  if (truncated) ambiguity ??= 'head_truncated';
  head.ambiguity = ambiguity;
  head.body = framing ? framing.forRequest() : { type: 'none' };
  return head;
}

/**
 * Every token header's value in text, in order, to onSecret: from each line (split at CR and at LF)
 * holding the header's name, however the line is spelled. A head without the name anywhere has none.
 */
function tokenValues(text: string, onSecret: (value: string) => void): void {
  if (!TOKEN_NAME_RE.test(text)) return;
  TOKEN_NAME_SEARCH_RE.lastIndex = 0;
  for (let m = TOKEN_NAME_SEARCH_RE.exec(text); m !== null; m = TOKEN_NAME_SEARCH_RE.exec(text)) {
    let start = m.index;
    while (start > 0 && text.charCodeAt(start - 1) !== 0x0d && text.charCodeAt(start - 1) !== 0x0a) start--;
    let end = m.index + m[0].length;
    while (end < text.length && text.charCodeAt(end) !== 0x0d && text.charCodeAt(end) !== 0x0a) end++;
    const secret = TOKEN_LINE_RE.exec(text.slice(start, end));
    const v = secret ? trimOws(secret[1]) : '';
    if (v) onSecret(v);
    TOKEN_NAME_SEARCH_RE.lastIndex = end; // the next line holding the name
  }
}

/** Where `what` next occurs in s from `from` on; Infinity when it does not. */
function indexOrInfinity(s: string, what: string, from: number): number {
  const i = s.indexOf(what, from);
  return i < 0 ? Infinity : i;
}

/** s[start, end) without leading and trailing SP and HTAB (as trimOws(s.slice(start, end))). */
function owsTrimmedSlice(s: string, start: number, end: number): string {
  while (start < end && (s.charCodeAt(start) === 0x20 || s.charCodeAt(start) === 0x09)) start++;
  while (end > start && (s.charCodeAt(end - 1) === 0x20 || s.charCodeAt(end - 1) === 0x09)) end--;
  return s.slice(start, end);
}

/**
 * Response heads parsed lately, by their whole text, as request heads are (parsedHeads): a server
 * answers the same way again and again (IMDS: the same headers, its Date changing once a second).
 * Only heads whose parse depends on their text alone: not cut short, not the answer to a HEAD.
 */
const parsedResponses = new Map<string, ResponseHead | null>();

/** A response head (its text as a request head's), frozen: a head of the same text may be the same object. */
export function parseResponseHead(text: string, truncated: boolean, requestMethod: string | null)
  : ResponseHead | null {
  const plain = !truncated && requestMethod !== 'HEAD' && text.length <= PARSED_TEXT_MAX;
  if (plain) {
    const seen = parsedResponses.get(text);
    if (seen !== undefined) return seen;
  }
  const head = parseResponse(text, truncated, requestMethod);
  if (head) { Object.freeze(head.body); Object.freeze(head); }
  if (plain) {
    if (parsedResponses.size >= PARSED_MAX) parsedResponses.clear();
    parsedResponses.set(text, head);
  }
  return head;
}

/** parseResponseHead's parse itself, every time. */
function parseResponse(text: string, truncated: boolean, requestMethod: string | null): ResponseHead | null {
  // Lines as split(/\r?\n/) gives them, read in place: text[start, end), the next from `after`.
  const firstLf = text.indexOf('\n');
  const firstEnd = firstLf < 0 ? text.length : firstLf > 0 && text.charCodeAt(firstLf - 1) === 0x0d ? firstLf - 1 : firstLf;
  const status = statusOf(text, firstEnd);
  if (status < 0) return null;
  const framing = new Framing();
  let headerCount = 0;
  let nextColon = -1; // the next colon at or after a line's start (found once, not for every line)
  for (let start = firstLf + 1; firstLf >= 0 && start <= text.length;) {
    const lf = text.indexOf('\n', start);
    let end = lf < 0 ? text.length : lf;
    const after = end + 1;
    if (lf >= 0 && end > start && text.charCodeAt(end - 1) === 0x0d) end--;
    if (nextColon < start) nextColon = indexOrInfinity(text, ':', start);
    const colon = nextColon;
    if (colon > start && colon < end) {
      headerCount++;
      // Only the body's framing is read from a response: other headers' values are not needed, and a
      // name is not made into a string of its own unless it is one of the two.
      const name = framingHeaderAt(text, start, colon);
      if (name !== null) framing.see(name, text.slice(colon + 1, end).trim());
    }
    start = after;
  }
  const bodyless = requestMethod === 'HEAD' || status < 200 || status === 204 || status === 304;
  return {
    kind: 'response', status, version: text.slice(5, 8), headerCount, headersTruncated: truncated,
    body: bodyless ? { type: 'none' } : framing.forResponse(),
  };
}

const isDigit = (c: number): boolean => c >= 0x30 && c <= 0x39;

/**
 * The status of a status line text[0, end) as /^HTTP\/(\d\.\d) (\d{3})(?: .*)?$/ reads it (the reason,
 * if any, after one SP and without a line terminator: CR, LF), or -1 when it is not one.
 */
function statusOf(text: string, end: number): number {
  if (end < 12 || !text.startsWith('HTTP/') || !isDigit(text.charCodeAt(5)) || text.charCodeAt(6) !== 0x2e
    || !isDigit(text.charCodeAt(7)) || text.charCodeAt(8) !== 0x20) return -1;
  const a = text.charCodeAt(9), b = text.charCodeAt(10), c = text.charCodeAt(11);
  if (!isDigit(a) || !isDigit(b) || !isDigit(c)) return -1;
  if (end > 12) {
    if (text.charCodeAt(12) !== 0x20) return -1;
    for (let i = 13; i < end; i++) {
      const x = text.charCodeAt(i);
      if (x === 0x0d || x === 0x0a) return -1;
    }
  }
  return (a - 0x30) * 100 + (b - 0x30) * 10 + (c - 0x30);
}

/** Whitespace as String.prototype.trim() removes it, within latin1 (what a head's text holds). */
const isTrimmed = (c: number): boolean => (c >= 0x09 && c <= 0x0d) || c === 0x20 || c === 0xa0;

/**
 * The header name text[start, colon), trimmed and lowercased, when it is content-length or
 * transfer-encoding (as `text.slice(start, colon).trim().toLowerCase()` compares); else null.
 * In latin1 only A-Z lowercase to ASCII letters, so a byte compare with 0x20 set on letters suffices.
 */
function framingHeaderAt(text: string, start: number, colon: number): 'content-length' | 'transfer-encoding' | null {
  while (start < colon && isTrimmed(text.charCodeAt(start))) start++;
  while (colon > start && isTrimmed(text.charCodeAt(colon - 1))) colon--;
  const n = colon - start;
  const want = n === 14 ? 'content-length' : n === 17 ? 'transfer-encoding' : null;
  if (want === null) return null;
  for (let i = 0; i < n; i++) {
    const c = text.charCodeAt(start + i);
    const lower = c >= 0x41 && c <= 0x5a ? c | 0x20 : c;
    if (lower !== want.charCodeAt(i)) return null;
  }
  return want;
}

class Framing {
  private length: number | null = null;
  private chunked = false;
  /** Content-Length with Transfer-Encoding, two or a malformed Content-Length, or a request
   * Transfer-Encoding whose last coding is not chunked: servers disagree on (or reject) the body. */
  conflicting = false;
  private te = false;

  see(name: string, value: string): void {
    if (name === 'content-length') {
      const ok = /^\d{1,15}$/.test(value);
      // Even two equal ones: RFC 9110 lets a server merge them, llhttp refuses the request.
      if (!ok || this.length !== null) this.conflicting = true;
      if (ok) this.length = Number(value);
      if (this.te) this.conflicting = true;
    }
    if (name === 'transfer-encoding') {
      if (this.length !== null || this.te) this.conflicting = true;
      this.te = true;
      if (!/(?:^|,)[ \t]*chunked[ \t]*$/i.test(value)) this.conflicting = true;
      if (/chunked/i.test(value)) this.chunked = true;
    }
  }

  forRequest(): BodyFraming {
    if (this.chunked) return { type: 'chunked' };
    if (this.length) return { type: 'length', length: this.length };
    return { type: 'none' };
  }

  forResponse(): BodyFraming {
    if (this.chunked) return { type: 'chunked' };
    if (this.length !== null) return this.length ? { type: 'length', length: this.length } : { type: 'none' };
    return { type: 'until-close' };
  }
}
