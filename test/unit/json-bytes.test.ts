/**
 * output/json-bytes.ts writes the bytes of JSON.stringify: checked against JSON.stringify itself on
 * random records (call records' shape, with any UTF-16 text: unicode, lone surrogates, control
 * characters, quotes, backslashes), on random JSON-like values, and on anything fast-check makes
 * (which it must either write identically or refuse).
 */
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { JSON_NO_ROOM, JSON_UNSUPPORTED, writeJson, writeJsonString } from '../../agent/src/output/json-bytes.js';

const RUNS = Number(process.env.IMDS_TRACER_FUZZ_CASES) || 2000;

/** What writeJson writes for v in a buffer of `room` bytes (null: no room), or 'unsupported'. */
function written(v: unknown, room = 1 << 20): Buffer | null | 'unsupported' {
  const buf = Buffer.alloc(3 + room + 8, 0xee);
  const end = writeJson(buf, 3, 3 + room, v);
  if (end === JSON_UNSUPPORTED) return 'unsupported';
  if (end === JSON_NO_ROOM) return null;
  expect(buf.subarray(3 + room)).toEqual(Buffer.alloc(8, 0xee)); // nothing past the end given
  return buf.subarray(3, end);
}

const expected = (v: unknown): Buffer => Buffer.from(JSON.stringify(v), 'utf8');

/** Any UTF-16 code unit: lone surrogates, control characters, quotes and backslashes included. */
const anyUnit = fc.oneof(
  fc.integer({ min: 0, max: 0xffff }),
  fc.integer({ min: 0, max: 0x7f }),
  fc.integer({ min: 0xd800, max: 0xdfff }),
  fc.constantFrom(0x22, 0x5c, 0x7f, 0x2028, 0x2029, 0xfeff, 0x00),
).map((c) => String.fromCharCode(c));
const text = fc.oneof(
  fc.string({ unit: anyUnit, maxLength: 40 }),
  fc.string({ unit: 'binary', maxLength: 20 }),
  fc.string({ maxLength: 20 }),
);
const num = fc.oneof(fc.integer(), fc.double(), fc.constantFrom(0, -0, NaN, Infinity, -Infinity, 1e21, 5e-324, 65535));
const maybe = <T>(a: fc.Arbitrary<T>): fc.Arbitrary<T | null | undefined> => fc.oneof(a, fc.constant(null), fc.constant(undefined));

const callRecord = fc.record({
  event: fc.constant('imds_call'),
  time: fc.date({ noInvalidDate: true }).map((d) => d.toISOString()),
  imds_version: fc.constantFrom('v1', 'v2', null),
  provider: fc.constantFrom('aws', 'gce', 'unknown'),
  request: maybe(fc.record({
    method: text, path: text, http_version: text, token_present: fc.boolean(), token_request: fc.boolean(),
    token_ttl_seconds: maybe(num), user_agent: maybe(text), headers_truncated: fc.option(fc.boolean(), { nil: undefined }),
    ambiguity: fc.option(text, { nil: undefined }),
  })),
  response: fc.record({ status: maybe(num), ttl: maybe(num) }),
  connection: fc.record({ src: text, sport: num, dst: text, dport: num, interface: text, family: fc.constantFrom('ipv4', 'ipv6') }),
  process: fc.record({
    attribution: fc.constantFrom('ebpf', 'proc', 'none'), pid: maybe(num), comm: maybe(text), exe: maybe(text),
    argv: maybe(fc.array(maybe(text), { maxLength: 6 })), uid: maybe(num), user: maybe(text),
    ancestors: maybe(fc.array(fc.record({ pid: num, comm: text, argv: maybe(fc.array(text, { maxLength: 4 })) }), { maxLength: 4 })),
    container: maybe(fc.record({ runtime: text, id: maybe(text), k8s: maybe(fc.record({ namespace: text, pod: text, container: maybe(text) })) })),
    reason: fc.option(text, { nil: undefined }),
  }, { requiredKeys: ['attribution'] }),
  sdk: fc.option(fc.record({ name: text, version: maybe(text), imdsv2_min: maybe(text), advice: text }), { nil: undefined }),
  truncated: fc.option(fc.array(text, { maxLength: 3 }), { nil: undefined }),
}, { requiredKeys: ['event', 'time', 'imds_version', 'provider', 'response', 'connection', 'process'] });

/** JSON-like values: odd keys (integer-like, empty, escaped), undefined in objects and arrays. */
const jsonLike = fc.letrec((tie) => ({
  value: fc.oneof({ depthSize: 'small' },
    text, num, fc.boolean(), fc.constant(null), fc.constant(undefined),
    fc.array(tie('value'), { maxLength: 5 }),
    fc.dictionary(fc.oneof(text, fc.constantFrom('0', '1', '10', '-1', '01', '4294967295', '')), tie('value'), { maxKeys: 5 })),
})).value.filter((v) => v !== undefined);

describe('JSON written straight into a buffer', () => {
  it('call records: the bytes of JSON.stringify', () => {
    fc.assert(fc.property(callRecord, (rec) => {
      expect(written(rec)).toEqual(expected(rec));
    }), { numRuns: RUNS });
  });

  it('JSON-like values (integer-like keys, undefined, NaN, -0, nesting): the bytes of JSON.stringify', () => {
    fc.assert(fc.property(jsonLike, (v) => {
      expect(written(v)).toEqual(expected(v));
    }), { numRuns: RUNS });
  });

  it('anything else: the bytes of JSON.stringify, or refused (never different bytes)', () => {
    fc.assert(fc.property(fc.anything({ withDate: true, withMap: true, withSet: true, withTypedArray: true, withNullPrototype: true,
      withSparseArray: true, withBoxedValues: true, withObjectString: true }), (v) => {
      if (v === undefined || typeof v === 'bigint') return;
      const out = written(v);
      if (out !== 'unsupported') expect(out).toEqual(expected(v));
    }), { numRuns: RUNS });
  });

  it('too little room: says so, at every size short of the value, and never writes past the end', () => {
    fc.assert(fc.property(callRecord, fc.nat(4000), (rec, cut) => {
      const full = expected(rec);
      const room = cut % full.length;
      expect(written(rec, room)).toBeNull();
      expect(written(rec, full.length)).toEqual(full);
    }), { numRuns: Math.min(RUNS, 500) });
  });

  it('escapes as JSON.stringify does: quotes, backslashes, control characters, lone surrogates', () => {
    const s = 'a"b\\c\b\f\n\r\t\u0000\u001f\u007f\u2028é€😀\ud800x\udc00\udbff';
    const buf = Buffer.alloc(200);
    const end = writeJsonString(buf, 0, 200, s);
    expect(buf.subarray(0, end).toString('utf8')).toBe(JSON.stringify(s));
    expect(buf.subarray(0, end).toString('latin1')).toContain('\\ud800x\\udc00\\udbff');
    expect(buf.subarray(0, end).toString('latin1')).toContain('\\u0000\\u001f');
  });

  it('leaves out what JSON.stringify leaves out: undefined, functions and symbols (null in arrays)', () => {
    const v = { a: undefined, b: () => 1, c: Symbol('x'), d: [undefined, () => 1, Symbol('y'), 1], [Symbol('k')]: 2, e: 'x' };
    expect(written(v)).toEqual(expected(v));
  });

  it('refuses what JSON.stringify would write through toJSON or a class', () => {
    expect(written({ a: new Date(0) })).toBe('unsupported');
    expect(written({ toJSON: () => 1 })).toBe('unsupported');
    expect(written([new Map()])).toBe('unsupported');
    expect(written({ a: 1n })).toBe('unsupported');
  });
});
