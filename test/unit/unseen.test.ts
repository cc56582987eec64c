/**
 * Connections the kernel saw and the wire did not: which events are unseen (join.ts), why
 * (capture/timeline.ts), and what becomes of them (unseen.ts: records within a budget, counts beyond).
 */
import { describe, expect, it } from 'vitest';
import { JoinTable, type UnseenKind } from '../../agent/src/attribution/ebpf/join.js';
import { CaptureTimeline } from '../../agent/src/capture/timeline.js';
import { Budget, buildUnseenRecord, UnseenCalls } from '../../agent/src/pipeline/unseen.js';
import { validate } from '../../agent/src/schema.js';
import type { ConnectEvent } from '../../agent/src/attribution/ebpf/events.js';
import type { CallRecord } from '../../agent/src/record.js';
import { Redactor } from '../../agent/src/redact.js';

const ev = (sport: number, id = String(sport)) => ({ saddr: '169.254.10.2', sport, daddr: '169.254.169.254', dport: 80, netnsIno: 1, id });
const tuple = (cport: number, client = '169.254.10.2') => ({ client, cport, server: '169.254.169.254', sport: 80 });

function table() {
  const unseen: Array<{ id: string; at: number; kind: UnseenKind }> = [];
  const t = new JoinTable<ReturnType<typeof ev>>(10_000, 100, 1, (e, at, kind) => unseen.push({ id: e.id, at, kind }));
  return { t, unseen };
}

describe('JoinTable: events the wire did not show', () => {
  it('an event no wire connection joined is unseen once the window has passed twice, not before', () => {
    const { t, unseen } = table();
    t.add(ev(40000), 1000);
    t.sweep(1000 + 20_000);
    expect(unseen).toEqual([]);
    t.sweep(1000 + 20_001);
    expect(unseen).toEqual([{ id: '40000', at: 1000, kind: 'no_wire' }]);
    t.sweep(100_000);
    expect(unseen).toHaveLength(1); // decided once
  });

  it('a wire connection joins its event whether it comes before or after it; it is then never unseen', () => {
    const { t, unseen } = table();
    t.wire(tuple(40000), 1000, { requests: 1 }); // packets before the event
    t.add(ev(40000), 1001);
    t.add(ev(40001), 2000);
    t.wire(tuple(40001, '::ffff:169.254.10.2'), 2001, { requests: 1 }); // event before the packets
    t.sweep(100_000, true);
    expect(unseen).toEqual([]);
    expect(t.paired).toBe(0); // joined, not merely stood for
  });

  it('a NATed wire connection joins its event by destination and ISN (another 4-tuple)', () => {
    const unseen: Array<{ id: string; kind: UnseenKind }> = [];
    const t = new JoinTable<ReturnType<typeof ev> & { isn: number }>(10_000, 100, 1, (e, _at, kind) => unseen.push({ id: e.id, kind }));
    t.add({ ...ev(40000, 'nat'), saddr: '172.17.0.2', isn: 123456 }, 1000);
    t.add({ ...ev(40001, 'nat-empty'), saddr: '172.17.0.2', isn: 777 }, 1000);
    t.wire({ ...tuple(61000, '10.0.0.5'), isn: 123456 }, 1001, { requests: 1 });
    t.wire({ ...tuple(61001, '10.0.0.5'), isn: 777 }, 1001, { requests: 0 });
    t.sweep(100_000, true);
    expect(t.paired).toBe(0);
    expect(unseen).toEqual([{ id: 'nat-empty', kind: 'no_request' }]);
  });

  it('an event that comes after its port\'s wire connection was dropped for the bound is not known unseen: wire_forgotten, counted', () => {
    const unseen: Array<{ id: string; kind: UnseenKind }> = [];
    const t = new JoinTable<ReturnType<typeof ev>>(10_000, 100, 1, (e, _at, kind) => unseen.push({ id: e.id, kind }), 1000, 3);
    for (let i = 0; i < 5; i++) t.wire(tuple(41000 + i), 1000 + i, { requests: 1 }); // the two oldest dropped for the bound of 3
    for (let i = 2; i < 5; i++) t.add(ev(41000 + i), 1000 + i); // the kept ones join their events
    t.add(ev(41000, 'forgotten'), 1000); // its wire connection was one of the dropped
    t.add(ev(41001, 'same port, in the window'), 1001 + 10_000);
    t.add(ev(41001, 'same port, past the window'), 1001 + 10_001);
    t.add(ev(46000, 'another port'), 1002); // nothing of its port was dropped: the wire did not show it
    t.sweep(100_000, true);
    expect(unseen).toEqual([
      { id: 'forgotten', kind: 'wire_forgotten' }, { id: 'another port', kind: 'no_wire' },
      { id: 'same port, in the window', kind: 'wire_forgotten' }, { id: 'same port, past the window', kind: 'no_wire' },
    ]);
    expect(t.wireForgotten).toBe(2);
  });

  it('at a high rate of connections, an event that comes at once is judged as ever: sightings dropped since do not matter', () => {
    const unseen: Array<{ id: string; kind: UnseenKind }> = [];
    const t = new JoinTable<ReturnType<typeof ev>>(10_000, 100, 1, (e, _at, kind) => unseen.push({ id: e.id, kind }), 1000, 3);
    t.add({ ...ev(50000, 'not captured'), daddr: 'fd00:ec2::254' }, 1000); // over an interface not captured
    for (let i = 0; i < 10; i++) t.wire(tuple(42000 + i), 1000 + i, { requests: 1 }); // many others (to another address), dropped for the bound
    t.add({ ...ev(50001, 'not captured, after the drops'), daddr: 'fd00:ec2::254' }, 1010); // its port lost nothing
    t.sweep(100_000, true);
    expect(unseen).toEqual([{ id: 'not captured', kind: 'no_wire' }, { id: 'not captured, after the drops', kind: 'no_wire' }]);
    expect(t.wireForgotten).toBe(0);
  });

  it('a wire connection with the same 4-tuple outside the window is another connection', () => {
    const { t, unseen } = table();
    t.wire(tuple(40000), 1000, { requests: 1 });
    t.add(ev(40000), 1000 + 10_001);
    t.sweep(100_000, true);
    expect(unseen.map((u) => u.kind)).toEqual(['no_wire']);
  });

  it('a wire connection that carried no request hands its event over as no_request (read when decided)', () => {
    const { t, unseen } = table();
    const later = { requests: 0 };
    t.wire(tuple(40000), 1000, { requests: 0 });
    t.add(ev(40000), 1000);
    t.wire(tuple(40001), 1000, later);
    t.add(ev(40001), 1000);
    later.requests = 1; // its request came after the SYN
    t.sweep(100_000, true);
    expect(unseen).toEqual([{ id: '40000', at: 1000, kind: 'no_request' }]);
  });

  it('a connection without a request whose client the wire saw finish says until when a request could have come', () => {
    const got: Array<{ id: string; kind: UnseenKind; until: number | undefined }> = [];
    const t = new JoinTable<ReturnType<typeof ev>>(10_000, 100, 1, (e, _at, kind, _d, until) => got.push({ id: e.id, kind, until }));
    t.wire(tuple(40000), 1000, { requests: 0, clientDone: true, lastSeen: 1500 }); // connect, then FIN: nothing sent
    t.add(ev(40000, 'probe'), 1000);
    t.wire(tuple(40001), 1000, { requests: 0, clientDone: false, lastSeen: 1200 }); // still open when decided
    t.add(ev(40001, 'open'), 1000);
    t.sweep(100_000, true);
    expect(got).toEqual([{ id: 'probe', kind: 'no_request', until: 1500 }, { id: 'open', kind: 'no_request', until: undefined }]);
    // Capture closed (the agent stopping) after the probe's end is no reason it lost a request; the
    // open connection could still have sent one.
    const tl = new CaptureTimeline(250, 1000);
    tl.closed(5000);
    expect(tl.reasonDuring(1000, 1500)).toBeNull();
    expect(tl.reasonDuring(1000, 1000 + 10_000)).toBe('capture_gap');
  });

  it('a wire connection that joined no event stands for one unjoined event to the same server at the same moment (NAT), once', () => {
    const { t, unseen } = table();
    t.wire(tuple(61000, '10.0.0.5'), 1000, { requests: 1 }); // the post-NAT view
    t.add(ev(40000, 'container'), 1000); // the container's own 4-tuple, on an interface not captured
    t.add(ev(40001, 'other'), 1001);
    t.add(ev(40002, 'later'), 5000);
    t.sweep(100_000, true);
    expect(t.paired).toBe(1);
    expect(unseen.map((u) => u.id).sort()).toEqual(['later', 'other']);
  });

  it('decides every event at once with `all` (at exit)', () => {
    const { t, unseen } = table();
    t.add(ev(40000), 99_999);
    t.sweep(100_000, true);
    expect(unseen).toHaveLength(1);
    expect(t.size).toBe(0);
  });
});

describe('CaptureTimeline', () => {
  it('names the gap (from when packets were lost), drops, and otherwise not captured', () => {
    const tl = new CaptureTimeline(250, 1000);
    expect(tl.reasonAt(5000)).toBe('not_captured');
    tl.down(10_000, 9_000);
    expect(tl.isDown).toBe(true);
    expect(tl.reasonAt(9_500)).toBe('capture_gap'); // queued in the dead helper
    expect(tl.reasonAt(50_000)).toBe('capture_gap'); // still down
    expect(tl.up(12_000)).toBe(2000);
    expect(tl.reasonAt(11_000)).toBe('capture_gap');
    expect(tl.reasonAt(12_200)).toBe('capture_gap'); // within the clocks' slack
    expect(tl.reasonAt(13_000)).toBe('not_captured');
    expect(tl.reasonAt(8_000)).toBe('not_captured');
    tl.dropped(20_000, 21_000);
    expect(tl.reasonAt(19_500)).toBe('capture_dropped');
    expect(tl.reasonAt(21_900)).toBe('capture_dropped');
    expect(tl.reasonAt(23_000)).toBe('not_captured');
    tl.closed(30_000);
    expect(tl.reasonAt(30_100)).toBe('capture_gap');
  });

  it('a connection between two readings that showed drops, just before the close: dropped, not the close', () => {
    const tl = new CaptureTimeline(250, 1000);
    tl.dropped(40_000, 45_000);
    tl.closed(45_100);
    expect(tl.reasonAt(44_950)).toBe('capture_dropped'); // within the close's slack, but made while capture dropped
    expect(tl.reasonAt(45_050)).toBe('capture_gap'); // after the last reading: the close's slack decides
    expect(tl.reasonAt(45_200)).toBe('capture_gap');
    expect(tl.reasonDuring(44_000, 44_990)).toBe('capture_dropped');
    expect(tl.reasonDuring(45_050, 45_300)).toBe('capture_gap');
  });

  it('a connection whose SYN was seen but whose request was not: lost if capture stopped or dropped while it lasted', () => {
    const tl = new CaptureTimeline(250, 1000);
    tl.down(10_000, 9_600); // the SYN at 9_000 was handed over; the request after it died with the helper
    tl.up(10_500);
    expect(tl.reasonAt(9_000)).toBe('not_captured');
    expect(tl.reasonDuring(9_000, 19_000)).toBe('capture_gap');
    expect(tl.reasonDuring(11_000, 21_000)).toBeNull();
    tl.dropped(30_000, 31_000);
    expect(tl.reasonDuring(25_000, 35_000)).toBe('capture_dropped');
    tl.closed(50_000);
    expect(tl.reasonDuring(45_000, 55_000)).toBe('capture_gap');
  });

  it('counts gaps and their time, the current one included, and not a second down', () => {
    const tl = new CaptureTimeline();
    tl.down(1000);
    tl.down(1500);
    expect(tl.gapCount()).toBe(1);
    expect(tl.gapMs(1700)).toBe(700);
    tl.up(2000);
    expect(tl.up(2500)).toBeNull();
    tl.down(3000);
    expect(tl.gapCount()).toBe(2);
    expect(tl.gapMs(3500)).toBe(1500);
  });
});

const connect = (over: Partial<ConnectEvent> = {}): ConnectEvent => ({
  pid: 700, tgid: 700, ppid: 1, uid: 0, gid: 0, comm: 'curl', parentComm: 'sh', ancestors: [], cgroupId: '1', netnsIno: 1,
  family: 4, saddr: '169.254.10.2', daddr: '169.254.169.254', sport: 40000, dport: 80, tsSynNs: '0', tsEmitNs: '0',
  argv: ['curl', 'http://169.254.169.254/latest/meta-data/'], argvTruncated: false, argvError: false, v4Mapped: false,
  newState: 1, newStateName: 'ESTABLISHED', ...over,
});

function calls(reason: 'capture_gap' | 'not_captured' = 'capture_gap', burst = 2) {
  const out: CallRecord[] = [];
  const said: string[] = [];
  let self = 0;
  const u = new UnseenCalls({
    burst, perMinute: 60, reasonAt: () => reason, reasonDuring: () => (reason === 'not_captured' ? null : reason), redact: (s) => s.replace('secret', '[REDACTED]'),
    connection: (e) => ({ src: e.saddr, sport: e.sport, dst: e.daddr, dport: e.dport, interface: 'eth0', family: 'ipv4' }),
    unreachable: (e) => e.netnsIno === 99, selfPid: 4242, onSelf: () => { self++; }, emit: (r) => out.push(r),
    error: (m) => said.push(`error: ${m}`), notice: (m) => said.push(`notice: ${m}`),
  });
  return { u, out, said, self: () => self };
}
const proc = (pid = 700) => Promise.resolve({ attribution: 'ebpf' as const, pid, comm: 'curl', argv: ['curl', '-H', 'secret'] });

describe('UnseenCalls', () => {
  it('makes a record valid against the schema, with the kernel\'s caller (redacted) and the reason', async () => {
    const { u, out } = calls();
    u.handle(connect(), Date.parse('2026-11-28T15:00:00Z'), 'no_wire', proc());
    await u.flush();
    expect(out).toEqual([{
      event: 'imds_call', time: '2026-11-28T15:00:00.000Z', imds_version: null, provider: 'unknown', request: null,
      response: { status: null }, connection: { src: '169.254.10.2', sport: 40000, dst: '169.254.169.254', dport: 80, interface: 'eth0', family: 'ipv4' },
      process: { attribution: 'ebpf', pid: 700, comm: 'curl', argv: ['curl', '-H', '[REDACTED]'] }, wire_reason: 'capture_gap',
    }]);
    expect(validate(out[0])).toEqual([]);
    expect(u.counts).toEqual({ capture_gap: 1, capture_dropped: 0, not_captured: 0 });
  });

  it('beyond its budget counts without a record; the budget refills with time', async () => {
    const b = new Budget(2, 60);
    expect([b.take(0), b.take(0), b.take(0), b.take(999), b.take(1000)]).toEqual([true, true, false, false, true]);
    const { u, out, said } = calls('capture_gap', 2);
    for (let i = 0; i < 5; i++) u.handle(connect({ sport: 40000 + i }), 1000, 'no_wire', proc());
    await u.flush();
    expect(out).toHaveLength(2);
    expect(u.counts.capture_gap).toBe(5);
    expect(u.unrecorded).toBe(3);
    // Said once when it starts, and with the count when the agent stops.
    expect(said).toHaveLength(1);
    expect(said[0]).toMatch(/^error: calls the kernel saw and the wire did not are over their budget \(2 at once, then 60 a minute\)/);
    u.end();
    expect(said).toHaveLength(2);
    expect(said[1]).toMatch(/^notice: the agent stopped: 3 were counted, not written, between \S+Z and \S+Z$/);
  });

  it('an event whose wire sighting was forgotten is a call only if capture was losing then', async () => {
    const fine = calls('not_captured');
    fine.u.handle(connect(), 1000, 'wire_forgotten', proc());
    await fine.u.flush();
    expect(fine.out).toEqual([]);
    expect(fine.u.counts).toEqual({ capture_gap: 0, capture_dropped: 0, not_captured: 0 });
    const losing = calls('capture_gap');
    losing.u.handle(connect(), 1000, 'wire_forgotten', proc());
    await losing.u.flush();
    expect(losing.out.map((r) => r.wire_reason)).toEqual(['capture_gap']);
  });

  it('a connection from a namespace judged unreachable from the capture is counted as not captured and filtered, not recorded', async () => {
    const { u, out } = calls('capture_gap');
    u.handle(connect({ netnsIno: 99 }), 1000, 'no_wire', proc());
    await u.flush();
    expect(out).toEqual([]);
    expect([u.counts.not_captured, u.counts.capture_gap, u.filtered]).toEqual([1, 0, 1]);
  });

  it('a connection that never got established is no call; the agent\'s own is counted as its own', async () => {
    const { u, out, self } = calls();
    u.handle(connect({ newState: 7, newStateName: 'CLOSE' }), 1000, 'no_wire', proc());
    u.handle(connect({ tgid: 4242 }), 1000, 'no_wire', proc(4242));
    await u.flush();
    expect(out).toEqual([]);
    expect(self()).toBe(1);
    expect(u.counts).toEqual({ capture_gap: 0, capture_dropped: 0, not_captured: 0 });
  });

  it('a connection the wire showed without a request is a call only if capture was losing packets then', async () => {
    const fine = calls('not_captured');
    fine.u.handle(connect(), 1000, 'no_request', proc());
    const losing = calls('capture_gap');
    losing.u.handle(connect(), 1000, 'no_request', proc());
    await fine.u.flush();
    await losing.u.flush();
    expect(fine.out).toEqual([]);
    expect(losing.out.map((r) => r.wire_reason)).toEqual(['capture_gap']);
  });

  it('a token on the command line is redacted though the wire never showed it', async () => {
    const redactor = new Redactor();
    const out: CallRecord[] = [];
    const u = new UnseenCalls({
      burst: 10, perMinute: 60, reasonAt: () => 'capture_gap', reasonDuring: () => 'capture_gap', redact: (s) => redactor.text(s),
      connection: (e) => ({ src: e.saddr, sport: e.sport, dst: e.daddr, dport: e.dport, interface: 'eth0', family: 'ipv4' }),
      unreachable: () => false, selfPid: 1, onSelf: () => undefined, emit: (r) => out.push(r),
    });
    const token = 'AQAEAOfS1x2bq0c7dHhBsXeTfa3cr0TZyq2wvF_gX5JoQ2pLm9N==';
    u.handle(connect(), 1000, 'no_wire', Promise.resolve({ attribution: 'ebpf', pid: 700, comm: 'python3', argv: ['python3', 'get.py', token],
      ancestors: [{ pid: 1, comm: 'sh', argv: ['sh', '-c', `python3 get.py ${token}`] }] }));
    await u.flush();
    expect(JSON.stringify(out)).not.toContain('AQAEAOfS');
    expect(out[0].process.argv).toEqual(['python3', 'get.py', '[REDACTED]']);
  });

  it('the record shape: request null exactly when wire_reason says why', () => {
    const rec = buildUnseenRecord({ atMs: 0, reason: 'not_captured', process: { attribution: 'none', reason: 'x' },
      connection: { src: 'a', sport: 1, dst: 'b', dport: 80, interface: 'any', family: 'ipv4' } });
    expect(validate(rec)).toEqual([]);
    const { wire_reason: _dropped, ...withoutReason } = rec;
    expect(validate(withoutReason)).toEqual(['$.request: null exactly when wire_reason is present']);
  });
});
