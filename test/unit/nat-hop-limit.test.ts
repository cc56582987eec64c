/**
 * Capture on the host NIC alone must say what `-i any` says: NATed connections joined to their kernel
 * event by ISN, the address they left with, the answer's TTL, and a token answer that dies at the
 * forward (hop limit 1) reported as not reaching the caller.
 */
import { describe, expect, it } from 'vitest';
import { JoinTable, noEventReason } from '../../agent/src/attribution/join.js';
import { decodeFrame } from '../../agent/src/wire/packet.js';
import { FlowTable, type Conn } from '../../agent/src/wire/flows.js';
import type { ResponseHead } from '../../agent/src/wire/http-head.js';
import type { TcpSegment } from '../../agent/src/wire/packet.js';
import { answerDropped } from '../../agent/src/hop-limit.js';
import { PendingCalls } from '../../agent/src/calls.js';
import { classify } from '../../agent/src/classify.js';
import { parseRequestHead } from '../../agent/src/wire/http-head.js';
import { interfaceFor, isHostAddress } from '../../agent/src/capture/interfaces.js';
import type { CallRecord, ConnectionInfo, ProcessInfo } from '../../agent/src/record.js';
import { validate } from '../../agent/src/schema.js';
import { Conversation, IMDS4, frame, req, res } from './frames.js';
import { AF_INET, CONNECT_EVENT_FIELDS as F, CONNECT_EVENT_SIZE, REC_CONNECT, decodeConnectEvent } from '../../agent/src/ebpf/events.js';

const CONTAINER = '172.17.0.2';
const NIC = '10.0.0.5';

describe('decodeFrame: IP TTL and hop limit', () => {
  it('reads the IPv4 TTL and the IPv6 hop limit', () => {
    const seg = { src: IMDS4, dst: NIC, sport: 80, dport: 40000, seq: 1, flags: { ack: true } };
    const v4 = frame('RAW', seg);
    expect(decodeFrame('RAW', v4)!.ttl).toBe(64);
    v4[8] = 1;
    expect(decodeFrame('RAW', v4)!.ttl).toBe(1);
    const v6 = frame('ETHERNET', { ...seg, src: 'fd00:ec2::254', dst: 'fd00:ec2::2' });
    expect(decodeFrame('ETHERNET', v6)!.ttl).toBe(64);
    v6[14 + 7] = 1;
    expect(decodeFrame('ETHERNET', v6)!.ttl).toBe(1);
  });
});

type Ev = { event: { id: string; saddr: string; sport: number; daddr: string; dport: number; netnsIno: number; isn?: number | null } };
const ev = (over: Partial<Ev['event']> = {}): Ev['event'] => ({
  id: 'a', saddr: CONTAINER, sport: 40200, daddr: IMDS4, dport: 80, netnsIno: 9, isn: 0xabcdef01, ...over,
});
const natWire = { client: NIC, cport: 61000, server: IMDS4, sport: 80, isn: 0xabcdef01 };

describe('JoinTable: NATed connections join by destination and ISN', () => {
  it('joins the post-NAT wire connection to the pre-NAT event by ISN, saying so', () => {
    const t = new JoinTable(10_000, 100, 1);
    t.add(ev(), 1000);
    expect(t.join(natWire, 1100)).toMatchObject({ event: { id: 'a' }, by: 'isn' });
    expect(t.find({ ...natWire, isn: 0xabcdef02 }, 1100)).toBeNull(); // another ISN
    expect(t.find({ ...natWire, sport: 8080 }, 1100)).toBeNull(); // another destination port
    expect(t.find({ ...natWire, server: 'fd00:ec2::254' }, 1100)).toBeNull(); // another destination
    expect(t.find(natWire, 1000 + 10_001)).toBeNull(); // outside the window
    expect(t.find({ ...natWire, isn: null }, 1100)).toBeNull(); // no SYN seen: nothing to join by
  });

  it('a decoded kernel record (ConnectEvent.isn) joins its NATed wire connection', () => {
    const b = Buffer.alloc(CONNECT_EVENT_SIZE);
    b.writeUInt32LE(REC_CONNECT, F.type[0]);
    b.writeUInt32LE(CONNECT_EVENT_SIZE, F.size[0]);
    b.writeUInt32LE(4242, F.tgid[0]);
    b.writeUInt32LE(9, F.netns_ino[0]);
    b.writeUInt16LE(AF_INET, F.family[0]);
    b.writeUInt16LE(40200, F.sport[0]);
    b.writeUInt16LE(80, F.dport[0]);
    Buffer.from([172, 17, 0, 2]).copy(b, F.saddr[0]);
    Buffer.from([169, 254, 169, 254]).copy(b, F.daddr[0]);
    b.writeUInt32LE(0xabcdef01, F.isn[0]);
    const e = decodeConnectEvent(b);
    expect(e).toMatchObject({ saddr: CONTAINER, sport: 40200, daddr: IMDS4, dport: 80, isn: 0xabcdef01 });
    const t = new JoinTable(10_000, 100, 1);
    t.add(e, 1000);
    expect(t.join(natWire, 1000)).toMatchObject({ event: { tgid: 4242 }, by: 'isn' });
  });

  it('prefers the 4-tuple; an event without an ISN never joins by ISN', () => {
    const t = new JoinTable(10_000, 100, 1);
    t.add(ev({ id: 'nat', sport: 40300, isn: 7 }), 1000);
    t.add(ev({ id: 'tuple', saddr: NIC, sport: 61000, isn: 8 }), 1000);
    expect(t.join({ ...natWire, isn: 7 }, 1000)).toMatchObject({ event: { id: 'tuple' }, by: 'tuple' });
    const u = new JoinTable(10_000, 100, 1);
    u.add(ev({ isn: undefined }), 1000);
    expect(u.find(natWire, 1000)).toBeNull();
    expect(u.find({ client: CONTAINER, cport: 40200, server: IMDS4, sport: 80 }, 1000)?.id).toBe('a');
  });

  it('counts the events near a connection that nothing joined, with and without an ISN', () => {
    const t = new JoinTable(10_000, 100, 1);
    t.add(ev({ id: 'x', sport: 1, isn: undefined }), 1000);
    t.add(ev({ id: 'y', sport: 2, isn: 5 }), 1000);
    t.add(ev({ id: 'z', sport: 3, isn: 6, dport: 8080 }), 1000);
    t.add(ev({ id: 'w', sport: 4, isn: 7 }), 50_000);
    expect(t.unjoined(IMDS4, 80, 1000)).toEqual({ count: 2, withoutIsn: 1 });
    t.find({ ...natWire, isn: 5 }, 1000);
    expect(t.unjoined(IMDS4, 80, 1000)).toEqual({ count: 1, withoutIsn: 1 });
  });

  it('eviction and sweep forget events in the ISN index too', () => {
    const t = new JoinTable(1000, 2, 1);
    for (let i = 0; i < 3; i++) t.add(ev({ id: String(i), sport: 40000 + i, isn: 100 + i }), 10 * i);
    expect(t.evicted).toBe(1);
    expect(t.find({ ...natWire, isn: 100 }, 0)).toBeNull();
    expect(t.find({ ...natWire, isn: 101 }, 10)?.id).toBe('1');
    t.sweep(100_000);
    expect(t.size).toBe(0);
    expect(t.find({ ...natWire, isn: 102 }, 20)).toBeNull();
  });
});

describe('noEventReason: says what is true', () => {
  const none = { count: 0, withoutIsn: 0 };
  const dst = '169.254.169.254:80';
  it('loader down', () => {
    expect(noEventReason({ loaderUp: false, wireIsn: true, unjoined: none, dst })).toBe('no kernel connect event (the eBPF loader was down)');
  });
  it('an event exists but carries no ISN: says the event is there, not that there is none', () => {
    const r = noEventReason({ loaderUp: true, wireIsn: true, unjoined: { count: 1, withoutIsn: 1 }, dst });
    expect(r).toMatch(/^1 kernel connect event to 169\.254\.169\.254:80 near this time not joined/);
    expect(r).toMatch(/no initial sequence number/);
    expect(r).not.toMatch(/older than the agent/);
  });
  it('events exist but match neither the 4-tuple nor the ISN', () => {
    expect(noEventReason({ loaderUp: true, wireIsn: true, unjoined: { count: 2, withoutIsn: 0 }, dst }))
      .toMatch(/^2 kernel connect events .* none has this connection's 4-tuple or its initial sequence number$/);
  });
  it('events exist but the wire never saw the SYN', () => {
    expect(noEventReason({ loaderUp: true, wireIsn: false, unjoined: { count: 1, withoutIsn: 0 }, dst }))
      .toMatch(/its SYN was not captured/);
  });
  it('no event at all', () => {
    expect(noEventReason({ loaderUp: true, wireIsn: false, unjoined: none, dst })).toMatch(/began before the agent/);
    expect(noEventReason({ loaderUp: true, wireIsn: true, unjoined: none, dst })).toMatch(/events_lost/);
  });
});

interface Resp { conn: Conn; head: ResponseHead; seq: number | null; ttl: number | null }

function flowTable(): { t: FlowTable; opens: Conn[]; responses: Resp[] } {
  const opens: Conn[] = [];
  const responses: Resp[] = [];
  const t = new FlowTable({
    isServer: (addr, port) => port === 80 && addr === IMDS4,
    onOpen: (c) => opens.push(c), onClose: () => {}, onRequest: () => {}, onSecret: () => {},
    onResponse: (conn, head, seq, _ts, ttl) => responses.push({ conn, head, seq, ttl }),
  }, {
    maxFlows: 100, maxOutOfOrderSegments: 16, maxBufferedBytesPerDirection: 65536, maxHeaderBytes: 8192,
    flowIdleMs: 60_000, maxBufferedBytesTotal: 1 << 24,
  });
  return { t, opens, responses };
}

const withTtl = (s: TcpSegment, ttl: number): TcpSegment => ({ ...s, ttl });
const PUT = req('PUT', '/latest/api/token', { 'X-aws-ec2-metadata-token-ttl-seconds': '21600' });

describe('FlowTable: the views of a NATed connection (-i any)', () => {
  it('the pre-NAT connection learns how it left; an answer seen only after NAT (it died at the forward) answers it, with its TTL', () => {
    const { t, opens, responses } = flowTable();
    const pre = new Conversation(CONTAINER, 40200, IMDS4, 80, 0xabcdef01, 3333);
    const post = new Conversation(NIC, 61000, IMDS4, 80, 0xabcdef01, 3333);
    t.handle(pre.syn(), 1, 'docker0');
    t.handle(post.syn(), 2, 'eth0');
    t.handle(post.synAck(), 3, 'eth0');
    t.handle(pre.synAck(), 4, 'docker0');
    t.handle(pre.send(PUT), 5, 'docker0');
    t.handle(post.send(PUT), 6, 'eth0');
    t.handle(withTtl(post.reply(res(200, 'token')), 1), 7, 'eth0'); // never shows on the bridge
    expect(opens).toHaveLength(1);
    expect(opens[0].nat).toEqual({ client: NIC, cport: 61000, iface: 'eth0' });
    expect(responses).toHaveLength(1);
    expect(responses[0]).toMatchObject({ conn: opens[0], seq: 1, ttl: 1, head: { status: 200 } });
  });

  it('an answer seen on both views is reported once, with the TTL of the first view', () => {
    const { t, opens, responses } = flowTable();
    const pre = new Conversation(CONTAINER, 40201, IMDS4, 80, 77, 3333);
    const post = new Conversation(NIC, 61001, IMDS4, 80, 77, 3333);
    for (const [a, b] of [[pre.syn(), post.syn()], [pre.send(PUT), post.send(PUT)]] as const) {
      t.handle(a, 1, 'docker0');
      t.handle(b, 1, 'eth0');
    }
    t.handle(withTtl(post.reply(res(200, 'token')), 2), 2, 'eth0');
    t.handle(withTtl(pre.reply(res(200, 'token')), 1), 3, 'docker0');
    t.handle(pre.send(req('GET', '/latest/meta-data/')), 4, 'docker0');
    t.handle(post.send(req('GET', '/latest/meta-data/')), 4, 'eth0');
    t.handle(withTtl(pre.reply(res(404)), 63), 5, 'docker0'); // a view may also come first the other way
    t.handle(withTtl(post.reply(res(404)), 64), 6, 'eth0');
    expect(responses.map((r) => [r.conn.id, r.seq, r.ttl, r.head.status])).toEqual([
      [opens[0].id, 1, 2, 200], [opens[0].id, 2, 63, 404],
    ]);
  });
});

describe('hop limit: an answer with TTL 1 reaches the host but not a forwarded caller', () => {
  it('answerDropped', () => {
    expect(answerDropped(1, false)).toBe('hop_limit');
    expect(answerDropped(0, false)).toBe('hop_limit');
    expect(answerDropped(1, true)).toBeNull(); // the host's own process gets it
    expect(answerDropped(2, false)).toBeNull();
    expect(answerDropped(null, false)).toBeNull();
  });

  it('isHostAddress: the host\'s own addresses, not its subnets', () => {
    const table = {
      eth0: [{ address: NIC, netmask: '255.255.255.0', family: 'IPv4', mac: '', internal: false, cidr: `${NIC}/24` }],
      docker0: [{ address: '172.17.0.1', netmask: '255.255.0.0', family: 'IPv4', mac: '', internal: false, cidr: '172.17.0.1/16' }],
    } as const;
    expect(isHostAddress(NIC, table as never)).toBe(true);
    expect(isHostAddress('172.17.0.1', table as never)).toBe(true);
    expect(isHostAddress(CONTAINER, table as never)).toBe(false);
  });

  it('connection.interface is the host interface holding src: the most specific subnet (a bridge inside the NIC\'s)', () => {
    const net = (address: string, bits: number) => ({ address, netmask: '', family: 'IPv4', mac: '', internal: false, cidr: `${address}/${bits}` });
    const table = { 'vi-x': [net('169.254.10.2', 16)], br0: [net('169.254.20.1', 24)] };
    expect(interfaceFor('169.254.20.2', table as never)).toBe('br0');
    expect(interfaceFor('169.254.10.2', table as never)).toBe('vi-x');
    expect(interfaceFor('169.254.30.4', table as never)).toBe('vi-x');
    const reversed = { br0: table.br0, 'vi-x': table['vi-x'] };
    expect(interfaceFor('169.254.20.2', reversed as never)).toBe('br0');
  });

  const head = (method: string, target: string, headers: Record<string, string> = {}) =>
    parseRequestHead(req(method, target, headers).replace(/\r\n\r\n$/, ''), false, () => {})!;

  async function run(src: string, natSrc: string | null, ttl: number | null) {
    const recs: CallRecord[] = [];
    let nextId = 1;
    const conn = (client: string): Conn => ({
      id: nextId++, key: '', family: 4, client, cport: 40000 + nextId, server: IMDS4, sport: 80, iface: 'eth0',
      openedAt: 0, lastSeen: 0, synSeen: true, clientIsn: nextId, natViewOf: null, awaiting: [], requests: 1, closed: false,
    });
    const proc: ProcessInfo = { attribution: 'ebpf', pid: 4242, comm: 'python3', argv: ['python3'] };
    const calls = new PendingCalls({
      responseWaitMs: 50, attributionWaitMs: 1000, maxPending: 10, redact: (s) => s,
      connection: (c): ConnectionInfo => ({
        src: c.client, sport: c.cport, dst: IMDS4, dport: 80, interface: 'docker0', family: 'ipv4',
        ...(natSrc ? { nat: { src: natSrc, sport: 61000, interface: 'eth0' } } : {}),
      }),
      isLocalAddress: (a) => a === NIC,
      attribution: async () => proc,
      emit: (r) => recs.push(r),
    });
    const putHead = head('PUT', '/latest/api/token', { 'X-aws-ec2-metadata-token-ttl-seconds': '21600' });
    const put = conn(src);
    calls.add(put, putHead, 1, classify(putHead), new Date(1000));
    await new Promise((r) => setImmediate(r)); // the PUT's caller is known
    calls.response(put, 1, 200, ttl);
    const getHead = head('GET', '/latest/meta-data/iam/security-credentials/');
    const get = conn(src);
    calls.add(get, getHead, 1, classify(getHead), new Date(2000));
    calls.response(get, 1, 200, 64);
    await calls.flush();
    for (const r of recs) expect(validate(r)).toEqual([]);
    return { put: recs.find((r) => r.request.token_request)!, get: recs.find((r) => !r.request.token_request)! };
  }

  it('a container\'s token PUT answered with TTL 1: not 200 but dropped; its IMDSv1 fallback says why', async () => {
    const { put, get } = await run(CONTAINER, NIC, 1);
    expect(put.response).toEqual({ status: null, ttl: 1, dropped: 'hop_limit' });
    expect(get.response).toEqual({ status: 200 }); // the TTL is recorded on token requests only
    expect(get.v1_reason).toBe('token_put_unanswered');
  });

  it('the host\'s own token PUT with TTL 1 is answered (nothing forwards it)', async () => {
    const { put, get } = await run(NIC, null, 1);
    expect(put.response).toEqual({ status: 200, ttl: 1 });
    expect(get.v1_reason).toBeUndefined();
  });

  it('a container\'s token PUT with TTL 2 is answered (one forward leaves it 1)', async () => {
    const { put, get } = await run(CONTAINER, NIC, 2);
    expect(put.response).toEqual({ status: 200, ttl: 2 });
    expect(get.v1_reason).toBeUndefined();
  });
});
