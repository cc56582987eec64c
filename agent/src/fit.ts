/**
 * The last guard before a call record is written: no record may be larger than a CloudWatch Logs
 * event may be (a larger one would be written to the log file but never reach the fleet view). An
 * oversized record is shrunk, biggest field first, until it fits — never dropped. Every shortened
 * field is named in `truncated`; a shortened argv also sets its `argv_truncated`. Pure.
 *
 * Where it runs: callLine, when a call record is made into its JSON line (RecordWriter for `run`,
 * read's line output), so the guard decides from the line itself and most records are not walked.
 */
import { recordJson } from './output/record-json.js';
import type { Ancestor, CallRecord } from './record.js';

const bytes = (v: unknown): number => Buffer.byteLength(JSON.stringify(v) ?? '');

/**
 * Whether v, as JSON.stringify writes it in UTF-8, surely takes at most `limit` bytes: an upper
 * bound summed over a walk of v, without building the JSON (the hot path: nearly every record is
 * far below the bound). A UTF-16 unit of a string takes at most 6 bytes (`\u001f`, a lone
 * surrogate's `\udfff`; UTF-8 needs at most 3), a number at most 25 characters. False also for
 * anything the walk does not know (then the caller measures the JSON itself).
 */
export function jsonBytesAtMost(v: unknown, limit: number): boolean {
  return boundOf(v, limit) <= limit;
}

/** An upper bound of v's JSON size in bytes, or Infinity (over budget, or a value the walk does not know). */
function boundOf(v: unknown, budget: number): number {
  switch (typeof v) {
    case 'string': return 2 + 6 * v.length;
    case 'number': return 25;
    case 'boolean': return 5;
    case 'undefined': return 9;
    case 'object': {
      if (v === null) return 4;
      let n = 2;
      if (Array.isArray(v)) {
        for (let i = 0; i < v.length; i++) {
          n += boundOf(v[i], budget - n) + 1;
          if (n > budget) return Infinity;
        }
        return n;
      }
      if (Object.getPrototypeOf(v) !== Object.prototype) return Infinity; // toJSON, Map, Date, ...: measured exactly
      for (const k in v) {
        n += 4 + 6 * k.length + boundOf((v as Record<string, unknown>)[k], budget - n);
        if (n > budget) return Infinity;
      }
      return n;
    }
    default: return Infinity;
  }
}

/** s cut to at most n UTF-8 bytes, never in the middle of a character. */
export function cutUtf8(s: string, n: number): string {
  const b = Buffer.from(s, 'utf8');
  if (b.length <= n) return s;
  let end = Math.max(0, n);
  while (end > 0 && (b[end] & 0xc0) === 0x80) end--; // do not split a multi-byte character
  return b.subarray(0, end).toString('utf8');
}

/** argv cut to at most n bytes of NUL-separated arguments (as the kernel and /proc bounds do). */
export function cutArgv(argv: string[], n: number): string[] {
  const out: string[] = [];
  let left = n;
  for (const a of argv) {
    const size = Buffer.byteLength(a) + 1;
    if (size <= left) {
      out.push(a);
      left -= size;
      continue;
    }
    if (left > 1) out.push(cutUtf8(a, left - 1));
    break;
  }
  return out;
}

interface Field {
  name: string;
  size: number;
  /** Shrink this field to about half its size. */
  shrink(): void;
}

function fields(rec: CallRecord): Field[] {
  const out: Field[] = [];
  const str = (name: string, get: () => string | null | undefined, set: (v: string) => void): void => {
    const v = get();
    if (typeof v === 'string' && v.length > 0) out.push({ name, size: bytes(v), shrink: () => set(cutUtf8(v, Math.floor(Buffer.byteLength(v) / 2))) });
  };
  const req = rec.request; // null on a call the wire did not show
  if (req) str('request.path', () => req.path, (v) => { req.path = v; });
  if (req) str('request.user_agent', () => req.user_agent, (v) => { req.user_agent = v; });
  const p = rec.process;
  str('process.exe', () => p.exe, (v) => { p.exe = v; });
  str('process.cgroup', () => p.cgroup, (v) => { p.cgroup = v; });
  str('process.systemd_unit', () => p.systemd_unit, (v) => { p.systemd_unit = v; });
  str('process.reason', () => p.reason, (v) => { p.reason = v; });
  str('process.comm', () => p.comm, (v) => { p.comm = v; });
  if (p.argv && p.argv.length > 0) {
    const argv = p.argv;
    out.push({ name: 'process.argv', size: bytes(argv), shrink: () => {
      p.argv = cutArgv(argv, Math.floor(argvBytes(argv) / 2));
      p.argv_truncated = true;
    } });
  }
  const ancestors = p.ancestors ?? [];
  ancestors.forEach((a: Ancestor, i) => {
    const argv = a.argv;
    if (!argv || argv.length === 0) return;
    out.push({ name: `process.ancestors[${i}].argv`, size: bytes(argv), shrink: () => {
      a.argv = cutArgv(argv, Math.floor(argvBytes(argv) / 2));
      a.argv_truncated = true;
    } });
  });
  if (ancestors.length > 1) {
    out.push({ name: 'process.ancestors', size: bytes(ancestors), shrink: () => {
      p.ancestors = ancestors.slice(0, Math.ceil(ancestors.length / 2));
    } });
  }
  return out;
}

const argvBytes = (argv: string[]): number => argv.reduce((n, a) => n + Buffer.byteLength(a) + 1, 0);

/**
 * rec if it fits in maxBytes (as one JSON line without its newline); else a copy shrunk to fit:
 * the biggest field halved, again and again, each shortened field named in `truncated`.
 */
export function fitCallRecord(rec: CallRecord, maxBytes: number): CallRecord {
  if (jsonBytesAtMost(rec, maxBytes) || bytes(rec) <= maxBytes) return rec;
  const out = structuredClone(rec);
  const names = new Set(out.truncated ?? []);
  out.truncated = [];
  for (let round = 0; round < 10_000; round++) {
    out.truncated = [...names];
    if (bytes(out) <= maxBytes) return out;
    const biggest = fields(out).sort((a, b) => b.size - a.size)[0];
    if (!biggest || biggest.size <= 2) break;
    biggest.shrink();
    names.add(biggest.name.replace(/\[\d+\]/, '[]'));
  }
  out.truncated = [...names];
  return out;
}

/**
 * The JSON line of a call record (no newline), at most maxBytes of UTF-8: the guard every call record
 * passes on its way out. The line (JSON.stringify's bytes, made by recordJson: a caller's frozen
 * description is written once, not once per record) decides: a string of n UTF-16 units takes at most
 * 3n bytes of UTF-8 (JSON.stringify escapes lone surrogates), so a short line fits without measuring;
 * a longer one is measured exactly, and only one over the bound is shrunk (fitCallRecord) and made again.
 */
export function callLine(rec: CallRecord, maxBytes: number): string {
  const line = recordJson(rec);
  if (3 * line.length <= maxBytes || Buffer.byteLength(line) <= maxBytes) return line;
  return JSON.stringify(fitCallRecord(rec, maxBytes));
}
