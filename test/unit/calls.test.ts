import { describe, it, expect, vi } from 'vitest';
import { PendingCalls, Waits } from '../../agent/src/pipeline/calls.js';
import { classify } from '../../agent/src/classify.js';
import { parseRequestHead } from '../../agent/src/wire/http-head.js';
import type { Conn } from '../../agent/src/wire/flows.js';
import type { CallRecord, ProcessInfo } from '../../agent/src/record.js';
import { Redactor } from '../../agent/src/redact.js';
import { recordJson } from '../../agent/src/output/record-json.js';

const conn = { id: 7, client: '10.0.0.5', cport: 40000, server: '169.254.169.254', sport: 80 } as Conn;

function calls(out: CallRecord[]): PendingCalls {
  return new PendingCalls({
    responseWaitMs: 60_000, attributionWaitMs: 1000, maxPending: 10, redact: (s) => s,
    connection: () => ({ src: conn.client, sport: conn.cport, dst: conn.server, dport: conn.sport, interface: 'eth0', family: 'ipv4' }),
    attribution: async () => ({ attribution: 'none', reason: 'test' }),
    emit: (r) => out.push(r), isLocalAddress: () => true,
  });
}

describe('PendingCalls.amend: an ambiguity found after the head was read', () => {
  it('turns a waiting IMDSv2 call (not to be written) into a written IMDSv1 call that names the ambiguity', async () => {
    const out: CallRecord[] = [];
    const p = calls(out);
    const head = parseRequestHead('GET /latest/meta-data/ HTTP/1.1\r\nX-aws-ec2-metadata-token: AAAAAAAAAAAA', false, () => undefined)!;
    const cls = classify(head);
    expect(cls.imdsVersion).toBe('v2');
    p.add(conn, head, 1, cls, new Date(0), false);
    const change = p.amend(conn, 1, 'tcp_overlap_conflict', (v) => v === 'v1');
    expect(change).toMatchObject({ before: { imdsVersion: 'v2' }, after: { imdsVersion: 'v1', provider: 'aws' }, first: true });
    expect(p.amend(conn, 1, 'tcp_urgent', (v) => v === 'v1')!.first).toBe(false);
    p.response(conn, 1, 200);
    await p.flush();
    expect(out).toHaveLength(1);
    expect(out[0]).toMatchObject({ imds_version: 'v1', request: { token_present: true, ambiguity: 'tcp_overlap_conflict' }, response: { status: 200 } });
  });

  it('a call no longer waiting cannot be amended', async () => {
    const out: CallRecord[] = [];
    const p = calls(out);
    const head = parseRequestHead('GET /latest/ HTTP/1.1', false, () => undefined)!;
    p.add(conn, head, 1, classify(head), new Date(0), true);
    p.response(conn, 1, 200);
    expect(p.amend(conn, 1, 'tcp_urgent', () => true)).toBeNull();
    await p.flush();
    expect(out[0].request.ambiguity).toBeUndefined();
  });
});

describe('PendingCalls: the wait for the caller (one timer for every record)', () => {
  function waiting(out: CallRecord[], attribution: (c: Conn) => Promise<ProcessInfo>): PendingCalls {
    return new PendingCalls({
      responseWaitMs: 60_000, attributionWaitMs: 40, maxPending: 100, redact: (s) => s,
      connection: (c) => ({ src: c.client, sport: c.cport, dst: c.server, dport: c.sport, interface: 'eth0', family: 'ipv4' }),
      attribution, emit: (r) => out.push(r), isLocalAddress: () => true,
    });
  }
  const head = parseRequestHead('GET /latest/meta-data/ HTTP/1.1', false, () => undefined)!;

  it('callers that never answer: every record says attribution timed out; those that answer late still name theirs', async () => {
    const out: CallRecord[] = [];
    const late: Array<() => void> = [];
    const p = waiting(out, (c) => c.id % 2 === 0
      ? new Promise<ProcessInfo>(() => undefined) // never answers
      : new Promise<ProcessInfo>((resolve) => { late.push(() => resolve({ attribution: 'proc', pid: c.id })); }));
    for (let id = 1; id <= 6; id++) {
      const c = { ...conn, id, cport: 40000 + id } as Conn;
      p.add(c, head, 1, classify(head), new Date(id), true);
      p.response(c, 1, 200);
    }
    for (const answer of late) answer();
    await p.flush();
    expect(out.map((r) => [r.connection.sport, r.process])).toEqual([
      [40001, { attribution: 'proc', pid: 1 }], [40003, { attribution: 'proc', pid: 3 }], [40005, { attribution: 'proc', pid: 5 }],
      [40002, { attribution: 'none', reason: 'attribution timed out' }], [40004, { attribution: 'none', reason: 'attribution timed out' }],
      [40006, { attribution: 'none', reason: 'attribution timed out' }],
    ]);
  });

  it('a burst faster than attribution: past maxAttributing waiting records, the next are written at once, unattributed, counted', async () => {
    const out: CallRecord[] = [];
    const answers: Array<() => void> = [];
    const p = new PendingCalls({
      responseWaitMs: 60_000, attributionWaitMs: 60_000, maxPending: 100, maxAttributing: 3, redact: (s) => s,
      connection: (c) => ({ src: c.client, sport: c.cport, dst: c.server, dport: c.sport, interface: 'eth0', family: 'ipv4' }),
      attribution: (c) => new Promise<ProcessInfo>((resolve) => { answers.push(() => resolve({ attribution: 'proc', pid: c.id })); }),
      emit: (r) => out.push(r), isLocalAddress: () => true,
    });
    for (let id = 1; id <= 5; id++) {
      const c = { ...conn, id, cport: 40000 + id } as Conn;
      p.add(c, head, 1, classify(head), new Date(id), true);
      p.response(c, 1, 200);
    }
    await Promise.resolve();
    // Three wait for their caller; the fourth and fifth did not wait: written already, and counted.
    expect(out.map((r) => [r.connection.sport, r.process])).toEqual([
      [40004, { attribution: 'none', reason: 'too many calls waiting for their caller (overload)' }],
      [40005, { attribution: 'none', reason: 'too many calls waiting for their caller (overload)' }],
    ]);
    expect(p.unattributedOverload).toBe(2);
    for (const answer of answers) answer();
    await p.flush();
    expect(out.slice(2).map((r) => r.process)).toEqual([1, 2, 3].map((pid) => ({ attribution: 'proc', pid })));
  });

  it('Waits: fires in order after its time, never when answered, and again after the queue emptied', () => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] });
    try {
      let clock = 0;
      const fired: number[] = [];
      const w = new Waits(20, () => clock);
      const a = w.add(() => fired.push(1));
      clock = 5;
      w.add(() => fired.push(2));
      w.add(() => fired.push(3));
      w.answered(a);
      expect(w.size).toBe(2);
      clock = 20;
      vi.advanceTimersByTime(20);
      expect(fired).toEqual([]); // 2 and 3 are due at 25
      clock = 25;
      vi.advanceTimersByTime(5);
      expect(fired).toEqual([2, 3]);
      expect(w.size).toBe(0);
      w.add(() => fired.push(4)); // the queue emptied: a new timer
      clock = 45;
      vi.advanceTimersByTime(20);
      expect(fired).toEqual([2, 3, 4]);
    } finally {
      vi.useRealTimers();
    }
  });

  it('Waits: a timer set for a wait answered since fires nothing early for a later wait (by the clock given)', () => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] });
    try {
      let clock = 0;
      const fired: string[] = [];
      const w = new Waits(30, () => clock);
      const a = w.add(() => fired.push('a')); // due at 30: the timer is set for it
      w.answered(a);
      clock = 20;
      w.add(() => fired.push('b')); // due at 50
      vi.advanceTimersByTime(30); // the timer set for a fires: b is not due yet
      expect(fired).toEqual([]);
      clock = 50;
      vi.advanceTimersByTime(30);
      expect(fired).toEqual(['b']);
      expect(w.size).toBe(0);
    } finally {
      vi.useRealTimers();
    }
  });
});

describe('PendingCalls: a caller known already (a kept-alive connection)', () => {
  const head = parseRequestHead('GET /latest/meta-data/ HTTP/1.1', false, () => undefined)!;
  const known = (pid: number): ProcessInfo => ({ attribution: 'proc', pid });

  function withKnown(out: CallRecord[], now: (c: Conn) => ProcessInfo | undefined, later: (c: Conn) => Promise<ProcessInfo>): PendingCalls {
    return new PendingCalls({
      responseWaitMs: 60_000, attributionWaitMs: 60_000, maxPending: 100, redact: (s) => s,
      connection: (c) => ({ src: c.client, sport: c.cport, dst: c.server, dport: c.sport, interface: 'eth0', family: 'ipv4' }),
      attribution: later, attributionNow: now, emit: (r) => out.push(r), isLocalAddress: () => true,
    });
  }

  it('its record is made when the answer is seen, in the same turn', async () => {
    const out: CallRecord[] = [];
    const p = withKnown(out, (c) => known(c.id), () => new Promise(() => undefined));
    p.add(conn, head, 1, classify(head), new Date(0), true);
    p.response(conn, 1, 200);
    expect(out.map((r) => [r.process, r.response.status])).toEqual([[known(7), 200]]);
    await p.flush();
    expect(out).toHaveLength(1);
  });

  it('while a record waits for its caller, the next ones take the same path (none overtakes it in its turn)', async () => {
    const out: CallRecord[] = [];
    let answer: (p: ProcessInfo) => void = () => undefined;
    const p = withKnown(out, (c) => (c.id === 1 ? undefined : known(c.id)),
      (c) => (c.id === 1 ? new Promise<ProcessInfo>((resolve) => { answer = resolve; }) : Promise.resolve(known(c.id))));
    for (const id of [1, 2, 3]) {
      const c = { ...conn, id, cport: 40000 + id } as Conn;
      p.add(c, head, 1, classify(head), new Date(id), true);
      p.response(c, 1, 200);
    }
    expect(out).toEqual([]); // connection 1's caller is still being looked up: 2 and 3 wait behind it
    answer(known(1));
    await p.flush();
    expect(out.map((r) => [r.connection.sport, r.process.pid]).sort()).toEqual([[40001, 1], [40002, 2], [40003, 3]]);
  });

  it('a token request still being attributed may explain the next IMDSv1 call: that call waits for it', async () => {
    const out: CallRecord[] = [];
    let answer: (p: ProcessInfo) => void = () => undefined;
    const put = { ...conn, id: 1, cport: 40001 } as Conn;
    const get = { ...conn, id: 2, cport: 40002 } as Conn;
    const p = withKnown(out, (c) => (c.id === 1 ? undefined : known(99)),
      (c) => (c.id === 1 ? new Promise<ProcessInfo>((resolve) => { answer = resolve; }) : Promise.resolve(known(99))));
    const putHead = parseRequestHead('PUT /latest/api/token HTTP/1.1\r\nX-aws-ec2-metadata-token-ttl-seconds: 60', false, () => undefined)!;
    p.add(put, putHead, 1, classify(putHead), new Date(1), false);
    p.response(put, 1, 403);
    p.add(get, head, 1, classify(head), new Date(2), true);
    p.response(get, 1, 200);
    answer(known(99));
    await p.flush();
    expect(out.map((r) => [r.process.pid, r.v1_reason])).toEqual([[99, 'token_put_refused']]);
  });
});

describe('PendingCalls: calls waiting on one connection and over all', () => {
  const head = (path: string) => parseRequestHead(`GET ${path} HTTP/1.1`, false, () => undefined)!;

  it('pipelined calls answered out of order, the rest ended by the close; past maxPending the oldest goes first', async () => {
    const out: CallRecord[] = [];
    const p = calls(out);
    const c = { id: 8, client: '10.0.0.5', cport: 40000, server: '169.254.169.254', sport: 80 } as Conn;
    const other = { id: 9, client: '10.0.0.5', cport: 40001, server: '169.254.169.254', sport: 80 } as Conn;
    for (const [i, path] of ['/a', '/b', '/c'].entries()) p.add(c, head(path), i + 1, classify(head(path)), new Date(i), true);
    p.add(other, head('/x'), 1, classify(head('/x')), new Date(3), true);
    p.response(c, 2, 404);
    p.response(c, 2, 200); // answered already: nothing
    expect(p.size).toBe(3);
    expect(p.amend(c, 3, 'tcp_urgent', () => true)).not.toBeNull();
    p.closed(c);
    expect(p.size).toBe(1);
    expect(c.waiting).toBeUndefined(); // a closed connection may be kept a while (NAT): not its list
    p.response(other, 1, 200);
    await p.flush();
    expect(out.map((r) => [r.request.path, r.response.status])).toEqual([['/b', 404], ['/a', null], ['/c', null], ['/x', 200]]);
    for (let i = 1; i <= 11; i++) p.add(other, head(`/${i}`), i + 1, classify(head(`/${i}`)), new Date(10 + i), true);
    expect(p.forced).toBe(1);
    expect(p.size).toBe(10);
    p.response(other, 12, 200);
    p.response(other, 3, 200);
    await p.flush();
    expect(out.map((r) => [r.request.path, r.response.status]).slice(4)).toEqual([
      ['/1', null], ['/11', 200], ['/2', 200], ...[3, 4, 5, 6, 7, 8, 9, 10].map((i) => [`/${i}`, null])]);
    expect(p.size).toBe(0);
  });
});

describe('PendingCalls: records of one caller with the redactor\'s remembered description', () => {
  const head = parseRequestHead('GET /latest/meta-data/ HTTP/1.1\r\nUser-Agent: aws-cli/2.15.0 Python/3.11.6', false, () => undefined)!;
  const caller: ProcessInfo = {
    attribution: 'ebpf', pid: 42, comm: 'aws', exe: '/usr/bin/aws', argv: ['aws', 's3', 'ls', '--password', 'hunter2hunter2'],
    ancestors: [{ pid: 1, comm: 'sh', argv: ['sh', '-c', 'aws s3 ls'] }], container: { runtime: 'docker', id: 'abc' },
  };

  function run(redactor: Redactor | null, proc: ProcessInfo, maxRecordBytes?: number): CallRecord[] {
    const out: CallRecord[] = [];
    const p = new PendingCalls({
      responseWaitMs: 60_000, attributionWaitMs: 60_000, maxPending: 100, redact: (s) => s, maxRecordBytes,
      redactArgv: redactor ? (a) => redactor.argv(a) : undefined,
      redactProcess: redactor ? (x) => redactor.process(x) : undefined,
      connection: (c) => ({ src: c.client, sport: c.cport, dst: c.server, dport: c.sport, interface: 'eth0', family: 'ipv4' }),
      attribution: () => new Promise(() => undefined), attributionNow: () => proc, emit: (r) => out.push(r), isLocalAddress: () => true,
    });
    for (const seq of [1, 2, 3]) {
      p.add(conn, head, seq, classify(head), new Date(seq), true);
      p.response(conn, seq, 200);
    }
    return out;
  }

  /** Every object reachable from rec, by identity. */
  const objectsOf = (v: unknown, into = new Set<object>()): Set<object> => {
    if (typeof v === 'object' && v !== null && !into.has(v)) {
      into.add(v);
      for (const x of Object.values(v)) objectsOf(x, into);
    }
    return into;
  };

  it('the same lines as a copy per record; records share the remembered description, and no object that can be changed', () => {
    const r = new Redactor();
    const remembered = run(r, caller);
    expect(remembered.map((x) => JSON.stringify(x))).toEqual(run(null, caller).map((x) => JSON.stringify(x)));
    expect(JSON.stringify(remembered)).not.toContain('hunter2hunter2');
    expect(remembered[0].process).toBe(remembered[1].process); // the remembered description itself, shared: it is frozen
    expect(remembered.map((x) => recordJson(x))).toEqual(remembered.map((x) => JSON.stringify(x))); // its JSON made once
    const seen = new Map<object, number>();
    remembered.forEach((rec, i) => {
      for (const o of objectsOf(rec)) {
        if (seen.has(o) && seen.get(o) !== i) expect(Object.isFrozen(o)).toBe(true);
        seen.set(o, i);
      }
    });
  });

  it('a record too large is shortened in a copy: the remembered description stays whole', () => {
    const r = new Redactor();
    const big: ProcessInfo = { ...caller, argv: ['aws', 'x'.repeat(300_000)] };
    const [first] = run(r, big, 100_000);
    expect(first.truncated).toContain('process.argv');
    expect(r.process(big).argv![1]).toHaveLength(300_000);
  });
});
