/**
 * JSON written as UTF-8 straight into a Buffer: the same bytes as
 * `Buffer.from(JSON.stringify(value))`, without the string JSON.stringify builds (V8 grows it in
 * parts, ~3.4 KB of heap for a call record of ~0.8 KB) nor the copy of it. For plain records only:
 * plain objects (own enumerable keys, insertion order), arrays, strings, finite or not numbers,
 * booleans, null and undefined. Anything else (a toJSON method, a Date, a Map, a bigint, a class
 * instance) makes it give up and say so: the caller then uses JSON.stringify.
 *
 * Strings are escaped exactly as JSON.stringify escapes them: `"` and `\`, the control characters
 * below U+0020 (`\b \t \n \f \r`, the rest `\u00xx` in lower-case hex), lone surrogates as `\udxxx`
 * (well-formed JSON.stringify); every other character as its UTF-8 bytes.
 */

/** The value did not fit in the room left: nothing after `pos` is meaningful. */
export const JSON_NO_ROOM = -1;
/** The value holds something this writer does not do (see above): use JSON.stringify. */
export const JSON_UNSUPPORTED = -2;

const HEX = [0x30, 0x31, 0x32, 0x33, 0x34, 0x35, 0x36, 0x37, 0x38, 0x39, 0x61, 0x62, 0x63, 0x64, 0x65, 0x66];

/** Short escapes JSON.stringify uses for control characters (0: none, `\u00xx` then). */
const SHORT_ESCAPE = new Uint8Array(0x20);
SHORT_ESCAPE[0x08] = 0x62; // \b
SHORT_ESCAPE[0x09] = 0x74; // \t
SHORT_ESCAPE[0x0a] = 0x6e; // \n
SHORT_ESCAPE[0x0c] = 0x66; // \f
SHORT_ESCAPE[0x0d] = 0x72; // \r

/** `\uXXXX` for a code unit, lower-case hex as JSON.stringify writes it. */
function writeUnicodeEscape(buf: Buffer, pos: number, end: number, c: number): number {
  if (pos + 6 > end) return JSON_NO_ROOM;
  buf[pos] = 0x5c;
  buf[pos + 1] = 0x75;
  buf[pos + 2] = HEX[(c >> 12) & 15];
  buf[pos + 3] = HEX[(c >> 8) & 15];
  buf[pos + 4] = HEX[(c >> 4) & 15];
  buf[pos + 5] = HEX[c & 15];
  return pos + 6;
}

/** Longer strings than this are checked (one regular expression) and copied whole when plain. */
const PLAIN_COPY_MIN = 24;
const NEEDS_ESCAPE_OR_UTF8 = /[^\x20\x21\x23-\x5b\x5d-\x7e]/;

/** A JSON string (quoted, escaped) at pos; the position after it, or JSON_NO_ROOM. */
export function writeJsonString(buf: Buffer, pos: number, end: number, s: string): number {
  const n = s.length;
  if (n > PLAIN_COPY_MIN && !NEEDS_ESCAPE_OR_UTF8.test(s)) {
    // Printable ASCII, nothing to escape: one copy (latin1 is ASCII's bytes here).
    if (pos + n + 2 > end) return JSON_NO_ROOM;
    buf[pos] = 0x22;
    buf.write(s, pos + 1, n, 'latin1');
    buf[pos + n + 1] = 0x22;
    return pos + n + 2;
  }
  if (pos >= end) return JSON_NO_ROOM;
  buf[pos++] = 0x22;
  for (let i = 0; i < n; i++) {
    const c = s.charCodeAt(i);
    if (c >= 0x20 && c < 0x80 && c !== 0x22 && c !== 0x5c) {
      if (pos >= end) return JSON_NO_ROOM;
      buf[pos++] = c;
    } else if (c < 0x80) {
      if (c === 0x22 || c === 0x5c || SHORT_ESCAPE[c] !== 0) {
        if (pos + 2 > end) return JSON_NO_ROOM;
        buf[pos] = 0x5c;
        buf[pos + 1] = c < 0x20 ? SHORT_ESCAPE[c] : c;
        pos += 2;
      } else {
        pos = writeUnicodeEscape(buf, pos, end, c);
        if (pos < 0) return pos;
      }
    } else if (c < 0x800) {
      if (pos + 2 > end) return JSON_NO_ROOM;
      buf[pos] = 0xc0 | (c >> 6);
      buf[pos + 1] = 0x80 | (c & 0x3f);
      pos += 2;
    } else if (c >= 0xd800 && c <= 0xdfff) {
      const d = i + 1 < n ? s.charCodeAt(i + 1) : 0;
      if (c <= 0xdbff && d >= 0xdc00 && d <= 0xdfff) {
        const cp = 0x10000 + ((c - 0xd800) << 10) + (d - 0xdc00);
        if (pos + 4 > end) return JSON_NO_ROOM;
        buf[pos] = 0xf0 | (cp >> 18);
        buf[pos + 1] = 0x80 | ((cp >> 12) & 0x3f);
        buf[pos + 2] = 0x80 | ((cp >> 6) & 0x3f);
        buf[pos + 3] = 0x80 | (cp & 0x3f);
        pos += 4;
        i++;
      } else {
        pos = writeUnicodeEscape(buf, pos, end, c); // a lone surrogate
        if (pos < 0) return pos;
      }
    } else {
      if (pos + 3 > end) return JSON_NO_ROOM;
      buf[pos] = 0xe0 | (c >> 12);
      buf[pos + 1] = 0x80 | ((c >> 6) & 0x3f);
      buf[pos + 2] = 0x80 | (c & 0x3f);
      pos += 3;
    }
  }
  if (pos >= end) return JSON_NO_ROOM;
  buf[pos++] = 0x22;
  return pos;
}

/** ASCII text (a number, a literal) at pos. */
function writeAscii(buf: Buffer, pos: number, end: number, s: string): number {
  const n = s.length;
  if (pos + n > end) return JSON_NO_ROOM;
  for (let i = 0; i < n; i++) buf[pos + i] = s.charCodeAt(i);
  return pos + n;
}

/** Whether JSON.stringify leaves this out of an object (writes null for it in an array). */
const skipped = (v: unknown): boolean => v === undefined || typeof v === 'function' || typeof v === 'symbol';

/**
 * `value` as JSON.stringify would write it, in UTF-8 at buf[pos..end): the position after it,
 * JSON_NO_ROOM (it did not fit), or JSON_UNSUPPORTED (see the module's comment). `value` itself
 * must not be one JSON.stringify leaves out (undefined, a function, a symbol).
 */
export function writeJson(buf: Buffer, pos: number, end: number, value: unknown): number {
  switch (typeof value) {
    case 'string':
      return writeJsonString(buf, pos, end, value);
    case 'number':
      return writeAscii(buf, pos, end, Number.isFinite(value) ? String(value) : 'null');
    case 'boolean':
      return writeAscii(buf, pos, end, value ? 'true' : 'false');
    case 'object':
      break;
    default:
      return JSON_UNSUPPORTED;
  }
  if (value === null) return writeAscii(buf, pos, end, 'null');
  if (Array.isArray(value)) {
    if (pos >= end) return JSON_NO_ROOM;
    buf[pos++] = 0x5b;
    for (let i = 0; i < value.length; i++) {
      if (i > 0) {
        if (pos >= end) return JSON_NO_ROOM;
        buf[pos++] = 0x2c;
      }
      const v: unknown = value[i];
      pos = skipped(v) ? writeAscii(buf, pos, end, 'null') : writeJson(buf, pos, end, v);
      if (pos < 0) return pos;
    }
    if (pos >= end) return JSON_NO_ROOM;
    buf[pos++] = 0x5d;
    return pos;
  }
  const proto: unknown = Object.getPrototypeOf(value);
  if (proto !== Object.prototype && proto !== null) return JSON_UNSUPPORTED;
  const obj = value as Record<string, unknown>;
  if (typeof obj.toJSON === 'function') return JSON_UNSUPPORTED;
  if (pos >= end) return JSON_NO_ROOM;
  buf[pos++] = 0x7b;
  let first = true;
  for (const k in obj) {
    // for-in on a plain object walks its own enumerable string keys in JSON.stringify's order
    // (integer keys first, then insertion order), then the prototype's: Object.prototype has none.
    if (!Object.prototype.hasOwnProperty.call(obj, k)) continue;
    const v = obj[k];
    if (skipped(v)) continue;
    if (!first) {
      if (pos >= end) return JSON_NO_ROOM;
      buf[pos++] = 0x2c;
    }
    first = false;
    pos = writeJsonString(buf, pos, end, k);
    if (pos < 0) return pos;
    if (pos >= end) return JSON_NO_ROOM;
    buf[pos++] = 0x3a;
    pos = writeJson(buf, pos, end, v);
    if (pos < 0) return pos;
  }
  if (pos >= end) return JSON_NO_ROOM;
  buf[pos++] = 0x7d;
  return pos;
}
