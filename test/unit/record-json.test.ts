import { afterEach, describe, expect, it, vi } from 'vitest';
import { recordJson, sharedCopy } from '../../agent/src/output/record-json.js';
import { Redactor } from '../../agent/src/redact.js';

const caller = () => new Redactor().process({
  attribution: 'ebpf', pid: 7, comm: 'python3', exe: '/usr/bin/python3', argv: ['python3', 'x.py', '--password', 'hunter2'],
  ancestors: [{ pid: 6, comm: 'sh', argv: ['sh', '-c', 'é "quoted" \u2028'], argv_truncated: true }, { pid: 1, comm: 'init', argv: null }],
  container: { runtime: 'docker', id: 'x', k8s: { namespace: 'n', pod: 'p', container: null } },
});

const record = (process: object, extra: Record<string, unknown> = {}) => ({
  event: 'imds_call', time: '2026-12-03T00:00:00.000Z', imds_version: 'v1', provider: 'aws',
  request: { method: 'GET', path: '/latest/meta-data/\u0001', http_version: '1.1', token_present: false, token_request: false, user_agent: null },
  response: { status: 200 },
  connection: sharedCopy({ src: '10.0.0.1', sport: 1, dst: '169.254.169.254', dport: 80, interface: 'eth0', family: 'ipv4' }),
  process, ...extra,
});

const isDeeplyFrozen = (v: unknown): boolean => typeof v !== 'object' || v === null
  || (Object.isFrozen(v) && Object.values(v).every(isDeeplyFrozen));

afterEach(() => vi.restoreAllMocks());

describe('recordJson: JSON.stringify\'s bytes, a shared part\'s JSON made once', () => {
  it('the same bytes as JSON.stringify: shared and plain parts, undefined values left out, key order kept', () => {
    const p = caller();
    const sdk = sharedCopy({ name: 'botocore', version: '1.2', imdsv2_min: '1.13.25', advice: 'uses IMDSv2 — upgrade ≥ …' });
    for (const rec of [
      record(p), record(p, { v1_reason: 'token_put_unanswered', sdk }), record(p, { sdk: undefined, truncated: [] }),
      record({ attribution: 'none', reason: 'attribution timed out' }), record(JSON.parse(JSON.stringify(p))),
      { process: p, event: 'imds_call', request: null },
    ]) {
      expect(recordJson(rec)).toBe(JSON.stringify(rec));
      expect(recordJson(rec)).toBe(JSON.stringify(rec)); // again, its shared parts' JSON already made
    }
  });

  it('a shared part is stringified once, however many records carry it', () => {
    const p = caller();
    const stringify = vi.spyOn(JSON, 'stringify');
    recordJson(record(p));
    const first = stringify.mock.calls.filter(([v]) => v === p).length;
    for (let i = 0; i < 5; i++) recordJson(record(p));
    expect(first).toBe(1);
    expect(stringify.mock.calls.filter(([v]) => v === p).length).toBe(1);
  });

  it('a shared copy: deeply frozen, equal to what it copies, its JSON out of sight; a copy of it is a plain part', () => {
    const inner = { argv: ['a'] };
    const original = { attribution: 'ebpf', pid: 1, ancestors: [inner], container: null };
    const shared = sharedCopy(original);
    expect(isDeeplyFrozen(shared)).toBe(true);
    expect(shared).toEqual(original);
    expect(Object.keys(shared)).toEqual(Object.keys(original));
    recordJson({ process: shared }); // its JSON made and kept
    expect(JSON.stringify(shared)).toBe(JSON.stringify(original));
    inner.argv.push('b'); // the original changing does not change the copy
    expect(recordJson({ process: shared })).toBe('{"process":{"attribution":"ebpf","pid":1,"ancestors":[{"argv":["a"]}],"container":null}}');
    // Neither a spread nor a structured clone carries the copy's JSON: changed, it is written anew.
    for (const copy of [{ ...shared, pid: 2 }, Object.assign(structuredClone(shared), { pid: 2 })]) {
      expect(recordJson({ process: copy })).toBe(JSON.stringify({ process: copy }));
      expect(recordJson({ process: copy })).toContain('"pid":2');
    }
  });

  it('a frozen object that is not a shared copy is written anew each time', () => {
    const stringify = vi.spyOn(JSON, 'stringify');
    const p = Object.freeze({ attribution: 'none', reason: 'x' });
    for (let i = 0; i < 3; i++) recordJson({ process: p });
    expect(stringify.mock.calls.filter(([v]) => v === p).length).toBe(3);
  });
});
