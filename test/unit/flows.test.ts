import { describe, it, expect } from 'vitest';
import { FlowTable, type Conn, type FlowHandlers, type FlowLimits } from '../../agent/src/wire/flows.js';
import type { RequestHead, ResponseHead } from '../../agent/src/wire/http-head.js';
import type { TcpSegment } from '../../agent/src/wire/packet.js';
import { decodeFrame } from '../../agent/src/wire/packet.js';
import { Conversation, IMDS4, IMDS6, frame, req, res, segment } from './frames.js';

const TOKEN = 'AQAEAHZhbHVlLW9mLXRoZS10b2tlbi0xMjM0NTY3ODkw';

interface Ev {
  opens: Conn[];
  closes: Conn[];
  requests: Array<{ conn: Conn; head: RequestHead; seq: number; ts: number }>;
  responses: Array<{ conn: Conn; head: ResponseHead; reqSeq: number | null }>;
  secrets: string[];
}

function table(limits: Partial<FlowLimits> = {}, more: Partial<FlowHandlers> = {}): { t: FlowTable; ev: Ev } {
  const ev: Ev = { opens: [], closes: [], requests: [], responses: [], secrets: [] };
  const t = new FlowTable({
    isServer: (addr, port) => port === 80 && (addr === IMDS4 || addr === IMDS6),
    onOpen: (c) => ev.opens.push(c),
    onClose: (c) => ev.closes.push(c),
    onRequest: (conn, head, seq, ts) => ev.requests.push({ conn, head, seq, ts }),
    onResponse: (conn, head, reqSeq) => ev.responses.push({ conn, head, reqSeq }),
    onSecret: (v) => ev.secrets.push(v),
    ...more,
  }, {
    maxFlows: 100, maxOutOfOrderSegments: 16, maxBufferedBytesPerDirection: 65536, maxHeaderBytes: 8192,
    flowIdleMs: 60_000, ...limits,
  });
  return { t, ev };
}

function feed(t: FlowTable, segs: TcpSegment[], ts = 1000, iface: string | null = 'eth0'): void {
  for (const s of segs) t.handle(s, ts, iface);
}

const GETMD = req('GET', '/latest/meta-data/');

/** A complete connection: handshake, one request, one response, both FINs, last ACK. */
function whole(c: Conversation, request = GETMD, response = res(200, 'ami-id\nhostname')): TcpSegment[] {
  return [c.syn(), c.synAck(), c.clientAck(), c.send(request), c.reply(response), c.clientFin(), c.serverFin(), c.clientAck()];
}

describe('FlowTable: one connection', () => {
  it('knows when the client has sent all it will: its FIN, not the server\'s; not an idle close', () => {
    const { t, ev } = table();
    const probe = new Conversation('10.0.0.5', 40010, IMDS4, 80, 1000, 5000);
    feed(t, [probe.syn(), probe.synAck(), probe.clientAck()]);
    expect(ev.opens[0].clientDone).toBe(false);
    feed(t, [probe.serverFin()]);
    expect(ev.opens[0].clientDone).toBe(false);
    feed(t, [probe.clientFin()]);
    expect(ev.opens[0].clientDone).toBe(true);
    const idle = new Conversation('10.0.0.6', 40011, IMDS4, 80, 2000, 6000);
    feed(t, [idle.syn(), idle.synAck(), idle.clientAck()], 1000);
    t.sweep(1000 + 60_001);
    expect(ev.opens[1]).toMatchObject({ closed: true, clientDone: false });
  });

  it('reports open, request, response (matched) and close', () => {
    const { t, ev } = table();
    const c = new Conversation('10.0.0.5', 40001, IMDS4, 80, 1000, 5000);
    feed(t, [c.syn(), c.synAck(), c.clientAck(), c.send(GETMD)], 1234, 'eth0');
    expect(ev.opens).toHaveLength(1);
    const conn = ev.opens[0];
    expect(conn).toMatchObject({
      family: 4, client: '10.0.0.5', cport: 40001, server: IMDS4, sport: 80, iface: 'eth0', synSeen: true,
      clientIsn: 1000, natViewOf: null, closed: false, openedAt: 1234,
    });
    expect(ev.requests).toHaveLength(1);
    expect(ev.requests[0].head.target).toBe('/latest/meta-data/');
    expect(ev.requests[0].seq).toBe(1);
    expect(ev.requests[0].ts).toBe(1234);
    expect(conn.awaiting).toEqual([{ method: 'GET', seq: 1 }]);
    feed(t, [c.reply(res(200, 'ami-id'))]);
    expect(ev.responses).toHaveLength(1);
    expect(ev.responses[0].head.status).toBe(200);
    expect(ev.responses[0].reqSeq).toBe(1);
    expect(conn.awaiting).toEqual([]);
    feed(t, [c.clientFin(), c.serverFin()]);
    expect(ev.closes).toEqual([conn]);
    expect(conn.closed).toBe(true);
    expect(t.size).toBe(0);
  });

  it('a server-side address as source is the server: direction comes from isServer', () => {
    const { t, ev } = table();
    const c = new Conversation('10.0.0.5', 40002, IMDS4, 80, 1, 2);
    feed(t, [c.synAck()]);
    expect(ev.opens[0]).toMatchObject({ client: '10.0.0.5', cport: 40002, server: IMDS4, synSeen: false, clientIsn: null });
  });

  it('IPv6 connections to fd00:ec2::254', () => {
    const { t, ev } = table();
    const c = new Conversation('fd00::2', 50000, IMDS6, 80, 77, 88);
    feed(t, whole(c));
    expect(ev.opens[0].family).toBe(6);
    expect(ev.requests.map((r) => r.head.target)).toEqual(['/latest/meta-data/']);
    expect(ev.responses.map((r) => r.reqSeq)).toEqual([1]);
  });

  it('works from decoded frames end to end', () => {
    const { t, ev } = table();
    const c = new Conversation('10.0.0.5', 40003, IMDS4, 80, 0xfffffff0, 9);
    for (const s of whole(c)) {
      const bytes = frame('LINKTYPE_LINUX_SLL', { ...s, flags: s.flags, payload: s.payload }, 4);
      const d = decodeFrame('LINKTYPE_LINUX_SLL', bytes);
      expect(d).not.toBeNull();
      t.handle(d!, 1, null);
    }
    expect(ev.requests).toHaveLength(1);
    expect(ev.responses).toHaveLength(1);
    expect(ev.closes).toHaveLength(1);
  });

  it('traffic not involving a metadata server endpoint is ignored', () => {
    const { t, ev } = table();
    const c = new Conversation('10.0.0.5', 40004, '10.9.9.9', 80, 1, 2);
    feed(t, whole(c));
    const d = new Conversation('10.0.0.5', 40005, IMDS4, 8080, 1, 2);
    feed(t, whole(d));
    expect(ev.opens).toHaveLength(0);
    expect(t.size).toBe(0);
  });

  it('pipelined requests are matched to responses first in, first out', () => {
    const { t, ev } = table();
    const c = new Conversation('10.0.0.5', 40010, IMDS4, 80, 10, 20);
    feed(t, [c.syn(), c.synAck(), c.send(req('GET', '/a') + req('GET', '/b') + req('GET', '/c'))]);
    expect(ev.requests.map((r) => [r.head.target, r.seq])).toEqual([['/a', 1], ['/b', 2], ['/c', 3]]);
    feed(t, [c.reply(res(200, 'A') + res(404, 'B')), c.reply(res(200, 'C'))]);
    expect(ev.responses.map((r) => [r.head.status, r.reqSeq])).toEqual([[200, 1], [404, 2], [200, 3]]);
  });

  it('keep-alive: sequential requests on one connection get increasing numbers', () => {
    const { t, ev } = table();
    const c = new Conversation('10.0.0.5', 40011, IMDS4, 80, 10, 20);
    feed(t, [c.syn(), c.synAck()]);
    for (const p of ['/1', '/2', '/3']) feed(t, [c.send(req('GET', p)), c.reply(res(200, p))]);
    expect(ev.requests.map((r) => r.seq)).toEqual([1, 2, 3]);
    expect(ev.responses.map((r) => r.reqSeq)).toEqual([1, 2, 3]);
    expect(ev.opens[0].requests).toBe(3);
  });

  it('a HEAD response is bodyless, so the following response still parses', () => {
    const { t, ev } = table();
    const c = new Conversation('10.0.0.5', 40012, IMDS4, 80, 10, 20);
    feed(t, [c.syn(), c.synAck(), c.send(req('HEAD', '/latest/') + req('GET', '/latest/'))]);
    feed(t, [c.reply('HTTP/1.1 200 OK\r\nContent-Length: 40\r\n\r\n' + res(200, 'x'))]);
    expect(ev.responses.map((r) => r.reqSeq)).toEqual([1, 2]);
  });

  it('a 1xx interim response does not consume the waiting request', () => {
    const { t, ev } = table();
    const c = new Conversation('10.0.0.5', 40013, IMDS4, 80, 10, 20);
    feed(t, [c.syn(), c.synAck(), c.send(req('PUT', '/latest/api/token', { 'X-aws-ec2-metadata-token-ttl-seconds': '21600' }) + req('GET', '/x'))]);
    feed(t, [c.reply('HTTP/1.1 100 Continue\r\n\r\n'), c.reply(res(200, 'TOKEN')), c.reply(res(200, 'x'))]);
    expect(ev.responses.map((r) => [r.head.status, r.reqSeq])).toEqual([[100, 1], [200, 1], [200, 2]]);
  });

  it('a response with nothing awaiting is reported with a null request', () => {
    const { t, ev } = table();
    const c = new Conversation('10.0.0.5', 40014, IMDS4, 80, 10, 20);
    feed(t, [c.syn(), c.synAck(), c.reply(res(400, ''))]);
    expect(ev.responses.map((r) => r.reqSeq)).toEqual([null]);
  });

  it('token values go to onSecret', () => {
    const { t, ev } = table();
    const c = new Conversation('10.0.0.5', 40015, IMDS4, 80, 10, 20);
    feed(t, [c.syn(), c.synAck(), c.send(req('GET', '/latest/meta-data/', { 'x-aws-ec2-metadata-token': TOKEN }))]);
    expect(ev.secrets).toEqual([TOKEN]);
    expect(ev.requests[0].head.tokenPresent).toBe(true);
  });

  it('out-of-order and retransmitted request segments are reassembled', () => {
    const { t, ev } = table();
    const c = new Conversation('10.0.0.5', 40016, IMDS4, 80, 0xfffffffa, 20);
    feed(t, [c.syn(), c.synAck()]);
    const a = c.send(GETMD.slice(0, 10));
    const b = c.send(GETMD.slice(10, 25));
    const d = c.send(GETMD.slice(25));
    feed(t, [d, b, b, a, d]);
    expect(ev.requests.map((r) => r.head.target)).toEqual(['/latest/meta-data/']);
  });

  it('a connection picked up mid-stream (no SYN) is still followed', () => {
    const { t, ev } = table();
    const c = new Conversation('10.0.0.5', 40017, IMDS4, 80, 123456, 654321);
    feed(t, [c.send(GETMD), c.reply(res(200, 'x'))]);
    expect(ev.opens).toHaveLength(1);
    expect(ev.opens[0].synSeen).toBe(false);
    expect(ev.requests).toHaveLength(1);
    expect(ev.responses.map((r) => r.reqSeq)).toEqual([1]);
  });
});

describe('FlowTable: the same connection seen twice', () => {
  it('every segment captured on two interfaces: one connection, each message once', () => {
    const { t, ev } = table();
    const c = new Conversation('172.17.0.2', 40100, IMDS4, 80, 1111, 2222);
    for (const s of whole(c)) { t.handle(s, 1, 'veth0'); t.handle(s, 1, 'docker0'); }
    expect(ev.opens).toHaveLength(1);
    expect(ev.requests).toHaveLength(1);
    expect(ev.responses).toHaveLength(1);
    expect(ev.closes).toHaveLength(1);
    expect(t.size).toBe(0);
    expect(t.stats.duplicateBytes).toBeGreaterThanOrEqual(GETMD.length);
  });

  it('a duplicated client FIN does not close the connection before the response', () => {
    const { t, ev } = table();
    const c = new Conversation('172.17.0.2', 40101, IMDS4, 80, 1111, 2222);
    // The client half-closes right after its request (shutdown(SHUT_WR)); seen on two interfaces.
    const early = [c.syn(), c.synAck(), c.send(GETMD)];
    const fin = c.clientFin();
    for (const s of early) { t.handle(s, 1, 'veth0'); t.handle(s, 1, 'docker0'); }
    t.handle(fin, 1, 'veth0');
    t.handle(fin, 1, 'docker0');
    expect(ev.closes).toHaveLength(0);
    const resp = c.reply(res(200, 'ami'));
    t.handle(resp, 1, 'veth0');
    expect(ev.responses.map((r) => r.reqSeq)).toEqual([1]);
    t.handle(c.serverFin(), 1, 'veth0');
    expect(ev.closes).toHaveLength(1);
  });

  it('a retransmitted FIN from one side does not close the connection', () => {
    const { t, ev } = table();
    const c = new Conversation('10.0.0.5', 40102, IMDS4, 80, 1, 2);
    feed(t, [c.syn(), c.synAck(), c.send(GETMD)]);
    const fin = c.clientFin();
    feed(t, [fin, fin]);
    expect(ev.closes).toHaveLength(0);
    expect(t.size).toBe(1);
  });

  it('segments trailing a closed connection (last ACK, late FIN copies) open nothing', () => {
    const { t, ev } = table();
    const c = new Conversation('10.0.0.5', 40103, IMDS4, 80, 1, 2);
    feed(t, whole(c)); // ends with the client's last ACK after both FINs
    expect(ev.opens).toHaveLength(1);
    expect(ev.closes).toHaveLength(1);
    expect(t.size).toBe(0);
  });

  it('NAT: the post-NAT view (same client ISN, same server, other tuple, within 5 s) is not reported', () => {
    const { t, ev } = table();
    const pre = new Conversation('172.17.0.2', 40200, IMDS4, 80, 0xabcdef01, 3333);
    const post = new Conversation('10.0.0.5', 61000, IMDS4, 80, 0xabcdef01, 3333);
    const a = whole(pre);
    const b = whole(post);
    for (let i = 0; i < a.length; i++) { t.handle(a[i], 10_000 + i, 'docker0'); t.handle(b[i], 10_000 + i, 'eth0'); }
    expect(ev.opens.map((c) => c.client)).toEqual(['172.17.0.2']);
    expect(ev.requests.map((r) => r.conn.client)).toEqual(['172.17.0.2']);
    expect(ev.responses).toHaveLength(1);
    expect(ev.closes.map((c) => c.client)).toEqual(['172.17.0.2']);
    expect(t.stats.natDuplicates).toBe(1);
  });

  it('NAT: the first sequence numbers kept to find NAT views are bounded, whatever the rate; the newest still find their views', () => {
    const { t, ev } = table(); // maxFlows 100: at most 400 kept
    const byIsn = (): number => (t as unknown as { isnCount: number }).isnCount;
    for (let i = 0; i < 5000; i++) t.handle(new Conversation('10.0.0.5', 10_000 + i, IMDS4, 80, 7_000_000 + i, 1).syn(), 1_000 + i / 10, null);
    expect(byIsn()).toBeLessThanOrEqual(400); // 5,000 connections in 0.5 s: all still inside the 5 s window
    t.handle(new Conversation('172.17.0.9', 50_000, IMDS4, 80, 7_000_000 + 4999, 1).syn(), 1_600, null);
    expect(t.stats.natDuplicates).toBe(1);
    expect(ev.opens).toHaveLength(5000);
  });

  it('NAT: the post-NAT conn records which connection it is a view of', () => {
    const { t, ev } = table();
    const pre = new Conversation('172.17.0.2', 40201, IMDS4, 80, 42, 1);
    const post = new Conversation('10.0.0.5', 61001, IMDS4, 80, 42, 1);
    t.handle(pre.syn(), 0, null);
    t.handle(post.syn(), 4_999, null);
    expect(ev.opens).toHaveLength(1);
    expect(t.size).toBe(2);
    t.closeAll();
    expect(ev.closes).toHaveLength(1);
    expect(ev.closes[0].id).toBe(ev.opens[0].id);
  });

  it('NAT: the same ISN 5 s or more later is a different connection', () => {
    const { t, ev } = table();
    const first = new Conversation('172.17.0.2', 40202, IMDS4, 80, 42, 1);
    const later = new Conversation('10.0.0.5', 61002, IMDS4, 80, 42, 1);
    feed(t, whole(first), 0);
    feed(t, whole(later), 5_000);
    expect(ev.opens.map((c) => c.client)).toEqual(['172.17.0.2', '10.0.0.5']);
    expect(ev.requests).toHaveLength(2);
  });

  it('NAT: first connections with the same ISN to two servers are both kept; each finds its own view, and one expiring leaves the other', () => {
    const { t, ev } = table();
    t.handle(new Conversation('172.17.0.2', 40204, IMDS4, 80, 0xfffffff0, 1).syn(), 0, null);
    t.handle(new Conversation('172.17.0.3', 40205, IMDS6, 80, 0xfffffff0, 1).syn(), 3_000, null);
    expect(ev.opens).toHaveLength(2);
    t.handle(new Conversation('10.0.0.5', 61004, IMDS4, 80, 0xfffffff0, 1).syn(), 4_000, null); // view of the first
    expect(t.stats.natDuplicates).toBe(1);
    t.handle(new Conversation('10.0.0.5', 61005, IMDS6, 80, 0xfffffff0, 1).syn(), 6_000, null); // the first expired: view of the second
    expect(t.stats.natDuplicates).toBe(2);
    t.handle(new Conversation('10.0.0.6', 61006, IMDS4, 80, 0xfffffff0, 1).syn(), 6_001, null); // the first is gone: a new one
    expect(t.stats.natDuplicates).toBe(2);
    expect(ev.opens.map((c) => c.client)).toEqual(['172.17.0.2', '172.17.0.3', '10.0.0.6']);
    expect((t as unknown as { isnCount: number }).isnCount).toBe(2);
  });

  it('a connection closed with a request unanswered keeps no method waiting for an answer (it may be kept 5 s for NAT)', () => {
    const { t, ev } = table();
    const c = new Conversation('10.0.0.5', 40206, IMDS4, 80, 77, 1);
    feed(t, [c.syn(), c.synAck(), c.send(GETMD)]);
    expect(ev.opens[0].awaiting).toHaveLength(1);
    feed(t, [c.clientRst()]);
    expect(ev.closes[0].awaiting).toHaveLength(0);
  });

  it('NAT: the same ISN to a different server port is a different connection', () => {
    const { t, ev } = table();
    const a = new Conversation('172.17.0.2', 40203, IMDS4, 80, 42, 1);
    const b = new Conversation('10.0.0.5', 61003, IMDS6, 80, 42, 1);
    feed(t, whole(a), 0);
    feed(t, whole(b), 1);
    expect(ev.opens).toHaveLength(2);
  });
});

describe('FlowTable: tuple reuse, closing, bounds', () => {
  it('a SYN with a new ISN on a live tuple closes the old connection and opens a new one', () => {
    const { t, ev } = table();
    const one = new Conversation('10.0.0.5', 40300, IMDS4, 80, 1000, 1);
    feed(t, [one.syn(), one.synAck(), one.send(req('GET', '/first'))]);
    const two = new Conversation('10.0.0.5', 40300, IMDS4, 80, 900_000, 2);
    feed(t, [two.syn(), two.synAck(), two.send(req('GET', '/second')), two.reply(res(200, 'x'))]);
    expect(ev.opens).toHaveLength(2);
    expect(ev.closes).toEqual([ev.opens[0]]);
    expect(ev.requests.map((r) => [r.conn.id, r.head.target, r.seq])).toEqual([
      [ev.opens[0].id, '/first', 1], [ev.opens[1].id, '/second', 1],
    ]);
    expect(ev.responses[0].conn.id).toBe(ev.opens[1].id);
    expect(ev.opens[1].clientIsn).toBe(900_000);
  });

  it('a retransmitted SYN (same ISN) does not reset the connection', () => {
    const { t, ev } = table();
    const c = new Conversation('10.0.0.5', 40301, IMDS4, 80, 1000, 1);
    feed(t, [c.syn(), c.syn(), c.synAck(), c.syn(), c.send(GETMD)]);
    expect(ev.opens).toHaveLength(1);
    expect(ev.closes).toHaveLength(0);
    expect(ev.requests).toHaveLength(1);
  });

  it('a new SYN on a tuple first seen mid-stream starts a new connection', () => {
    const { t, ev } = table();
    const old = new Conversation('10.0.0.5', 40302, IMDS4, 80, 0x10000000, 1);
    feed(t, [old.send(req('GET', '/old'))]);
    const fresh = new Conversation('10.0.0.5', 40302, IMDS4, 80, 0x90000000, 2);
    feed(t, [fresh.syn(), fresh.synAck(), fresh.send(req('GET', '/new'))]);
    expect(ev.requests.map((r) => r.head.target)).toEqual(['/old', '/new']);
  });

  it('RST closes the connection (from either side)', () => {
    const { t, ev } = table();
    const c = new Conversation('10.0.0.5', 40303, IMDS4, 80, 1, 2);
    feed(t, [c.syn(), c.synAck(), c.send(GETMD), c.clientRst()]);
    expect(ev.closes).toHaveLength(1);
    expect(t.size).toBe(0);
    const d = new Conversation('10.0.0.5', 40304, IMDS4, 80, 5, 6);
    feed(t, [d.syn(), d.synAck()]);
    t.handle(segment({ src: IMDS4, dst: '10.0.0.5', sport: 80, dport: 40304, seq: d.sseq, flags: { rst: true, ack: true } }), 1, null);
    expect(ev.closes).toHaveLength(2);
  });

  it('a stray RST or server FIN for an unknown connection opens nothing', () => {
    const { t, ev } = table();
    const c = new Conversation('10.0.0.5', 40305, IMDS4, 80, 1, 2);
    feed(t, [c.clientRst(), c.serverFin()]);
    expect(ev.opens).toHaveLength(0);
    expect(t.size).toBe(0);
  });

  it('evicts the oldest connection when maxFlows is reached', () => {
    const { t, ev } = table({ maxFlows: 2 });
    const cs = [1, 2, 3].map((i) => new Conversation('10.0.0.5', 41000 + i, IMDS4, 80, i * 1000, 1));
    for (const c of cs) feed(t, [c.syn()]);
    expect(t.size).toBe(2);
    expect(t.stats.flowsEvicted).toBe(1);
    expect(ev.closes.map((c) => c.cport)).toEqual([41001]);
    // The survivors still work.
    feed(t, [cs[2].send(GETMD), cs[1].send(GETMD)]);
    expect(ev.requests.map((r) => r.conn.cport)).toEqual([41003, 41002]);
  });

  it('sweep closes idle connections only', () => {
    const { t, ev } = table({ flowIdleMs: 1000 });
    const a = new Conversation('10.0.0.5', 42001, IMDS4, 80, 1, 1);
    const b = new Conversation('10.0.0.5', 42002, IMDS4, 80, 2, 1);
    t.handle(a.syn(), 0, null);
    t.handle(b.syn(), 0, null);
    t.handle(b.send('GET /'), 900, null);
    t.sweep(1000);
    expect(ev.closes).toHaveLength(0);
    t.sweep(1001);
    expect(ev.closes.map((c) => c.cport)).toEqual([42001]);
    t.sweep(1901);
    expect(ev.closes.map((c) => c.cport)).toEqual([42001, 42002]);
    expect(t.size).toBe(0);
  });

  it('sweep forgets old ISNs, so a NAT match needs the 5 s window', () => {
    const { t, ev } = table();
    const a = new Conversation('172.17.0.2', 42003, IMDS4, 80, 777, 1);
    const b = new Conversation('10.0.0.5', 62003, IMDS4, 80, 777, 1);
    t.handle(a.syn(), 0, null);
    t.sweep(6000);
    t.handle(b.syn(), 4000, null); // within 5 s of the first, but the record is gone
    expect(ev.opens).toHaveLength(2);
  });

  it('stats gather duplicate bytes, gaps and malformed counts on close', () => {
    const { t } = table({ maxOutOfOrderSegments: 1 });
    const c = new Conversation('10.0.0.5', 42004, IMDS4, 80, 1, 1);
    feed(t, [c.syn(), c.synAck()]);
    const first = c.send('GET /a HTTP/1.1\r\n');
    feed(t, [first, first]);
    c.send('lost bytes');
    feed(t, [c.send('x'), c.send('y')]);
    feed(t, [c.send('\r\n\x00\x01garbage\r\n\r\n')]);
    t.closeAll();
    expect(t.stats.duplicateBytes).toBe(first.payload.length);
    expect(t.stats.gaps).toBe(1);
    expect(t.stats.flows).toBe(1);
  });

  it('closeAll closes every connection once', () => {
    const { t, ev } = table();
    for (let i = 0; i < 5; i++) t.handle(new Conversation('10.0.0.5', 43000 + i, IMDS4, 80, i + 1, 1).syn(), 0, null);
    t.closeAll();
    t.closeAll();
    expect(ev.closes).toHaveLength(5);
    expect(t.size).toBe(0);
  });
});

describe('FlowTable: TCP tricks that would fake a token header', () => {
  function tableWithAmb() {
    const amb: Array<[number, number, string]> = [];
    const { t, ev } = table({}, { onAmbiguity: (c, n, w) => { amb.push([c.id, n, w]); } });
    return { t, ev, amb };
  }
  const WITH = `GET /latest/meta-data/ HTTP/1.1\r\nX-aws-ec2-metadata-token: ${TOKEN}\r\n\r\n`;
  const WITHOUT = `GET /latest/meta-data/ HTTP/1.1\r\nX-aws-ec2-metadata-tokex: ${TOKEN}\r\n\r\n`;

  it('a first copy carrying the token header, then the copy the server kept without it: the request is ambiguous', () => {
    const { t, ev, amb } = tableWithAmb();
    const c = new Conversation('10.0.0.5', 40001, IMDS4, 80, 1000, 5000);
    feed(t, [c.syn(), c.synAck(), c.clientAck()]);
    const seq = c.cseq;
    feed(t, [c.send(WITH)]); // e.g. a bad checksum or TTL 1: the server never gets it
    c.cseq = seq;
    feed(t, [c.send(WITHOUT)]);
    expect(ev.requests).toHaveLength(1);
    expect(amb).toEqual([[ev.requests[0].conn.id, 1, 'tcp_overlap_conflict']]);
    expect(t.stats.overlapConflicts).toBe(1);
  });

  it('a conflicting copy of part of a head still being read marks that head when it completes', () => {
    const { t, ev, amb } = tableWithAmb();
    const c = new Conversation('10.0.0.5', 40002, IMDS4, 80, 1000, 5000);
    feed(t, [c.syn(), c.synAck(), c.clientAck()]);
    const seq = c.cseq;
    feed(t, [c.send(WITH.slice(0, 60))]);
    c.cseq = seq;
    feed(t, [c.send(WITHOUT.slice(0, 60)), c.send(WITH.slice(60))]);
    expect(ev.requests).toHaveLength(1);
    expect(ev.requests[0].head.ambiguity).toBe('tcp_overlap_conflict');
    expect(amb).toEqual([]);
  });

  it('retransmitted identical copies, and copies of bytes the server acknowledged, are not ambiguous', () => {
    const { t, ev, amb } = tableWithAmb();
    const c = new Conversation('10.0.0.5', 40003, IMDS4, 80, 1000, 5000);
    feed(t, [c.syn(), c.synAck(), c.clientAck()]);
    const seq = c.cseq;
    feed(t, [c.send(WITH)]);
    c.cseq = seq;
    feed(t, [c.send(WITH), c.reply(res(200, 'x'))]); // the reply acknowledges the request
    c.cseq = seq;
    feed(t, [c.send(WITHOUT)]);
    expect(ev.requests).toHaveLength(1);
    expect(ev.requests[0].head.ambiguity).toBeNull();
    expect(amb).toEqual([]);
    expect(t.stats.overlapConflicts).toBe(0);
  });

  it('urgent data pointing into a head: the request is ambiguous (tcp_urgent), counted', () => {
    const { t, ev } = tableWithAmb();
    const c = new Conversation('10.0.0.5', 40004, IMDS4, 80, 1000, 5000);
    feed(t, [c.syn(), c.synAck(), c.clientAck()]);
    // The byte before the colon ("x") is urgent: the server drops it and reads the token header.
    const head = `GET /latest/meta-data/ HTTP/1.1\r\nX-aws-ec2-metadata-tokenx: ${TOKEN}\r\n\r\n`;
    const s = c.send(head, { ack: true, psh: true, urg: true });
    s.urgent = head.indexOf('x:') + 1;
    feed(t, [s]);
    expect(ev.requests[0].head.ambiguity).toBe('tcp_urgent');
    expect(t.stats.urgent).toBe(1);
  });

  it('the unacknowledged window counts in the table\'s buffered bytes and is freed by the server\'s ACK', () => {
    const { t } = table();
    const c = new Conversation('10.0.0.5', 40005, IMDS4, 80, 1000, 5000);
    feed(t, [c.syn(), c.synAck(), c.clientAck(), c.send(GETMD)]);
    expect(t.stats.bufferedBytes).toBe(GETMD.length);
    feed(t, [c.reply(res(200, 'x')), c.clientAck()]);
    expect(t.stats.bufferedBytes).toBe(0);
  });
});

describe('FlowTable: a head the client never finished', () => {
  it('the client closes its side before the blank line: the request is reported, head_incomplete', () => {
    const { t, ev } = table();
    const c = new Conversation('10.0.0.5', 40010, IMDS4, 80, 1000, 5000);
    feed(t, [c.syn(), c.synAck(), c.clientAck(), c.send(`GET /latest/meta-data/ HTTP/1.1\r\nX-aws-ec2-metadata-token: ${TOKEN}\r\n`)]);
    expect(ev.requests).toHaveLength(0);
    feed(t, [c.clientFin()]);
    expect(ev.requests).toHaveLength(1);
    expect(ev.requests[0].head).toMatchObject({ target: '/latest/meta-data/', tokenPresent: true, ambiguity: 'head_incomplete' });
    expect(ev.secrets).toEqual([TOKEN]);
  });

  it('not while bytes before the FIN are missing (the FIN sent again once they are in), nor for a complete head, nor twice', () => {
    const { t, ev } = table();
    const c = new Conversation('10.0.0.5', 40011, IMDS4, 80, 1000, 5000);
    feed(t, [c.syn(), c.synAck(), c.clientAck(), c.send(GETMD)]);
    const lost = c.send('GET /x HTTP/1.1\r\n');
    const finSeq = c.cseq + 'Host: y\r\n'.length;
    feed(t, [c.send('Host: y\r\n'), c.clientFin()]);
    expect(ev.requests.map((r) => r.head.ambiguity)).toEqual([null]);
    feed(t, [lost]);
    c.cseq = finSeq;
    feed(t, [c.clientFin()]);
    c.cseq = finSeq;
    feed(t, [c.clientFin()]);
    expect(ev.requests.map((r) => [r.head.target, r.head.ambiguity])).toEqual([['/latest/meta-data/', null], ['/x', 'head_incomplete']]);
  });
});
