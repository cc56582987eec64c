import { afterEach, describe, expect, it, vi } from 'vitest';
import { recordJson } from '../../agent/src/output/record-json.js';
import { Redactor } from '../../agent/src/redact.js';
import { frozenCopy } from '../../agent/src/redact.js';

const caller = () => new Redactor().process({
  attribution: 'ebpf', pid: 7, comm: 'python3', exe: '/usr/bin/python3', argv: ['python3', 'x.py', '--password', 'hunter2'],
  ancestors: [{ pid: 6, comm: 'sh', argv: ['sh', '-c', 'é "quoted" \u2028'], argv_truncated: true }, { pid: 1, comm: 'init', argv: null }],
  container: { runtime: 'docker', id: 'x', k8s: { namespace: 'n', pod: 'p', container: null } },
});

const record = (process: object, extra: Record<string, unknown> = {}) => ({
  event: 'imds_call', time: '2026-12-03T00:00:00.000Z', imds_version: 'v1', provider: 'aws',
  request: { method: 'GET', path: '/latest/meta-data/\u0001', http_version: '1.1', token_present: false, token_request: false, user_agent: null },
  response: { status: 200 }, connection: { src: '10.0.0.1', sport: 1, dst: '169.254.169.254', dport: 80, interface: 'eth0', family: 'ipv4' },
  process, ...extra,
});

afterEach(() => vi.restoreAllMocks());

describe('recordJson: JSON.stringify\'s bytes, a frozen part\'s JSON made once', () => {
  it('the same bytes as JSON.stringify: frozen and plain parts, undefined values left out, key order kept', () => {
    const p = caller();
    expect(Object.isFrozen(p)).toBe(true);
    const sdk = Object.freeze({ name: 'botocore', version: '1.2', imdsv2_min: '1.13.25', advice: 'uses IMDSv2 — upgrade ≥ …' });
    for (const rec of [
      record(p), record(p, { v1_reason: 'token_put_unanswered', sdk }), record(p, { sdk: undefined, truncated: [] }),
      record({ attribution: 'none', reason: 'attribution timed out' }), record(JSON.parse(JSON.stringify(p))),
      { process: p, event: 'imds_call', request: null },
    ]) {
      expect(recordJson(rec)).toBe(JSON.stringify(rec));
      expect(recordJson(rec)).toBe(JSON.stringify(rec)); // again, from the cache
    }
  });

  it('a deeply frozen part is stringified once, however many records carry it', () => {
    const p = caller();
    const stringify = vi.spyOn(JSON, 'stringify');
    recordJson(record(p));
    const first = stringify.mock.calls.filter(([v]) => v === p).length;
    for (let i = 0; i < 5; i++) recordJson(record(p));
    expect(first).toBe(1);
    expect(stringify.mock.calls.filter(([v]) => v === p).length).toBe(1);
  });

  it('a frozen part holding something that is not frozen is written anew each time (its JSON can change)', () => {
    const inner = { argv: ['a'] };
    const p = Object.freeze({ attribution: 'ebpf', pid: 1, ancestors: [inner] });
    expect(recordJson(record(p))).toBe(JSON.stringify(record(p)));
    inner.argv.push('b');
    expect(recordJson(record(p))).toContain('"argv":["a","b"]');
    expect(recordJson(record(p))).toBe(JSON.stringify(record(p)));
    const deep = frozenCopy({ a: [1, { b: 2 }] });
    expect(recordJson({ deep })).toBe('{"deep":{"a":[1,{"b":2}]}}');
  });
});
