/**
 * Property-based tests (fast-check) for the pure wire modules and the classifier.
 */
import { afterAll, beforeAll, describe, it, expect } from 'vitest';
import fc from 'fast-check';
import http from 'node:http';
import net, { type AddressInfo } from 'node:net';
import { decodeFrame, decodeFrameUnchecked } from '../../agent/src/wire/packet.js';
import { ipv6ToString } from '../../agent/src/net.js';
import { TcpStream } from '../../agent/src/wire/tcp-stream.js';
import { HttpStream } from '../../agent/src/wire/http-stream.js';
import { parseRequestHead, type RequestHead, type ResponseHead } from '../../agent/src/wire/http-head.js';
import { FlowTable } from '../../agent/src/wire/flows.js';
import { classify } from '../../agent/src/classify.js';
import { ipv6FromBytes } from '../../agent/src/attribution/proc/parse.js';
import {
  ETH_P_IP, ETH_P_IPV6, ethernet, ipv4, ipv6, nullLink, sll, sll2, splitStream, tcp, IMDS4, IMDS6,
  type ExtHeader, type Link, type Piece,
} from './frames.js';

/** Cases per property: 2,000 in the normal test run; the fuzz run (npm run fuzz) sets IMDS_TRACER_FUZZ_CASES. */
const RUNS = Number(process.env.IMDS_TRACER_FUZZ_CASES) || 2000;
const LINKS: Link[] = ['ETHERNET', 'LINKTYPE_LINUX_SLL', 'LINUX_SLL2', 'RAW', 'NULL'];

// ---------------------------------------------------------------------------------------------------
// Arbitraries

const v4Addr = fc.tuple(fc.nat(255), fc.nat(255), fc.nat(255), fc.nat(255)).map((o) => o.join('.'));
const v6Words = fc.array(fc.oneof(fc.constant(0), fc.constant(0), fc.nat(0xffff)), { minLength: 8, maxLength: 8 });
const v6Addr = v6Words.map((w) => ipv6ToString(Buffer.from(wordsToBytes(w)), 0));

function wordsToBytes(w: number[]): number[] {
  return w.flatMap((x) => [x >> 8, x & 0xff]);
}

interface FrameSpec {
  link: Link;
  v6: boolean;
  src: string;
  dst: string;
  sport: number;
  dport: number;
  seq: number;
  ack: number;
  flagBits: number;
  payload: Uint8Array;
  vlans: number[];
  ext: ExtHeader[];
  ihl: number;
  pktType: number;
}

const frameSpec: fc.Arbitrary<FrameSpec> = fc.record({
  link: fc.constantFrom(...LINKS),
  v6: fc.boolean(),
  src4: v4Addr, dst4: v4Addr, src6: v6Addr, dst6: v6Addr,
  sport: fc.nat(65535), dport: fc.nat(65535),
  seq: fc.nat(0xffffffff), ack: fc.nat(0xffffffff),
  flagBits: fc.nat(31),
  payload: fc.uint8Array({ maxLength: 120 }),
  vlans: fc.array(fc.nat(4095), { maxLength: 2 }),
  ext: fc.array(fc.record({ type: fc.constantFrom(0, 43, 60), len8: fc.nat(2) }), { maxLength: 3 }),
  ihl: fc.integer({ min: 5, max: 15 }),
  pktType: fc.nat(4),
}).map((r) => ({
  link: r.link, v6: r.v6, src: r.v6 ? r.src6 : r.src4, dst: r.v6 ? r.dst6 : r.dst4, sport: r.sport, dport: r.dport,
  seq: r.seq, ack: r.ack, flagBits: r.flagBits, payload: r.payload, vlans: r.vlans, ext: r.ext, ihl: r.ihl,
  pktType: r.pktType,
}));

function build(s: FrameSpec): Buffer {
  const f = s.flagBits;
  const t = tcp({
    sport: s.sport, dport: s.dport, seq: s.seq, ack: s.ack, payload: Buffer.from(s.payload),
    flags: { fin: !!(f & 1), syn: !!(f & 2), rst: !!(f & 4), psh: !!(f & 8), ack: !!(f & 16) },
  });
  const ip = s.v6 ? ipv6({ src: s.src, dst: s.dst, ext: s.ext }, t) : ipv4({ src: s.src, dst: s.dst, ihl: s.ihl }, t);
  const et = s.v6 ? ETH_P_IPV6 : ETH_P_IP;
  switch (s.link) {
    case 'ETHERNET': return ethernet(et, ip, s.vlans);
    case 'LINKTYPE_LINUX_SLL': return sll(s.pktType, et, ip);
    case 'LINUX_SLL2': return sll2(s.pktType, et, ip);
    case 'RAW': return ip;
    case 'NULL': return nullLink(s.v6 ? 6 : 4, ip);
  }
}

// HTTP request streams

const TOKEN_NAME = fc.mixedCase(fc.constant('x-aws-ec2-metadata-token'));
const tokenValue = fc.stringMatching(/^[A-Za-z0-9+/_=-]{8,60}$/);
const plainValue = fc.stringMatching(/^[!-~]([ -~]{0,30}[!-~])?$/);
const headerName = fc.stringMatching(/^[A-Za-z][A-Za-z0-9-]{0,20}$/)
  .filter((n) => !/^(content-length|transfer-encoding)$/i.test(n));
const header = fc.oneof(
  fc.tuple(TOKEN_NAME, tokenValue).map(([n, v]) => `${n}: ${v}`),
  fc.constantFrom('X-aws-ec2-metadata-token-ttl-seconds: 21600', 'Host: 169.254.169.254', 'User-Agent: aws-cli/2.15',
    'Accept: */*', 'Connection: keep-alive', 'Metadata-Flavor: Google', 'Metadata: true', 'X-Forwarded-For: 1.2.3.4'),
  fc.tuple(headerName, plainValue).map(([n, v]) => `${n}: ${v}`),
);
const target = fc.oneof(
  fc.constantFrom('/', '/latest/meta-data/', '/latest/api/token', '/2009-04-04/meta-data/instance-id', '/1.0/',
    '/computeMetadata/v1/', '/metadata/instance?api-version=2021-02-01', '/opc/v2/instance/', 'http://169.254.169.254/latest/'),
  fc.stringMatching(/^\/[!-~]{0,60}$/),
);
const method = fc.constantFrom('GET', 'PUT', 'HEAD', 'POST', 'DELETE', 'OPTIONS');
const body = fc.option(fc.record({
  data: fc.uint8Array({ minLength: 1, maxLength: 80 }).map((u) => Buffer.from(u).toString('latin1')),
  chunked: fc.boolean(),
  chunkCuts: fc.array(fc.nat(80), { maxLength: 4 }),
}), { nil: undefined });

const request = fc.record({ method, target, headers: fc.array(header, { maxLength: 8 }), body, leadingCrlf: fc.boolean() })
  .map(({ method: m, target: t, headers, body: b, leadingCrlf }) => {
    const lines = [`${m} ${t} HTTP/1.1`, ...headers];
    let tail = '';
    if (b && b.chunked) {
      lines.push('Transfer-Encoding: chunked');
      const cuts = [...new Set(b.chunkCuts.filter((c) => c > 0 && c < b.data.length))].sort((x, y) => x - y);
      let prev = 0;
      for (const c of [...cuts, b.data.length]) {
        const part = b.data.slice(prev, c);
        tail += `${part.length.toString(16)}\r\n${part}\r\n`;
        prev = c;
      }
      tail += '0\r\n\r\n';
    } else if (b) {
      lines.push(`Content-Length: ${b.data.length}`);
      tail = b.data;
    }
    return `${leadingCrlf ? '\r\n' : ''}${lines.join('\r\n')}\r\n\r\n${tail}`;
  });

const requestStream = fc.array(request, { minLength: 1, maxLength: 6 }).map((rs) => Buffer.from(rs.join(''), 'latin1'));

/** What a request stream parses to (heads and secrets, in order), and how many heads were malformed. */
function parsed(pushes: Buffer[], stats?: { malformed: number }): string[] {
  const out: string[] = [];
  const s = new HttpStream({
    kind: 'request', maxHeaderBytes: 8192,
    onMessage: (h) => out.push(JSON.stringify(h)),
    onSecret: (v) => out.push(`secret:${v}`),
  });
  for (const p of pushes) s.push(p);
  if (stats) stats.malformed += s.malformed;
  return out;
}

// ---------------------------------------------------------------------------------------------------

describe('property: decodeFrame', () => {
  it('never throws on arbitrary bytes, for every link type (without the safety net of its catch)', () => {
    fc.assert(fc.property(fc.constantFrom<string>(...LINKS, 'BOGUS'), fc.uint8Array({ maxLength: 160 }), (link, bytes) => {
      const s = decodeFrameUnchecked(link, Buffer.from(bytes));
      if (s !== null) {
        expect(s.payload.length).toBeLessThanOrEqual(bytes.length);
        expect([4, 6]).toContain(s.family);
      }
    }), { numRuns: RUNS });
  });

  it('decodes every well-formed frame back to what was encoded', () => {
    fc.assert(fc.property(frameSpec, (spec) => {
      const s = decodeFrame(spec.link, build(spec));
      expect(s).not.toBeNull();
      expect(s!.family).toBe(spec.v6 ? 6 : 4);
      expect(s!.src).toBe(spec.src);
      expect(s!.dst).toBe(spec.dst);
      expect([s!.sport, s!.dport, s!.seq, s!.ack]).toEqual([spec.sport, spec.dport, spec.seq, spec.ack]);
      const f = spec.flagBits;
      expect(s!.flags).toEqual({ fin: !!(f & 1), syn: !!(f & 2), rst: !!(f & 4), psh: !!(f & 8), ack: !!(f & 16) });
      expect([...s!.payload]).toEqual([...spec.payload]);
      const cooked = spec.link === 'LINKTYPE_LINUX_SLL' || spec.link === 'LINUX_SLL2';
      expect(s!.pktType).toBe(cooked ? spec.pktType : null);
    }), { numRuns: RUNS });
  });

  it('never throws on arbitrary mutations of well-formed frames', () => {
    const mutation = fc.record({
      sets: fc.array(fc.tuple(fc.nat(), fc.nat(255)), { maxLength: 8 }),
      cut: fc.option(fc.nat(), { nil: undefined }),
      insert: fc.option(fc.tuple(fc.nat(), fc.uint8Array({ minLength: 1, maxLength: 8 })), { nil: undefined }),
    });
    fc.assert(fc.property(frameSpec, mutation, fc.constantFrom<string>(...LINKS), (spec, m, otherLink) => {
      let b = build(spec);
      for (const [i, v] of m.sets) b[i % b.length] = v;
      if (m.insert) {
        const at = m.insert[0] % (b.length + 1);
        b = Buffer.concat([b.subarray(0, at), Buffer.from(m.insert[1]), b.subarray(at)]);
      }
      if (m.cut !== undefined) b = b.subarray(0, m.cut % (b.length + 1));
      for (const link of [spec.link, otherLink]) {
        let s: ReturnType<typeof decodeFrame> = null;
        expect(() => { s = decodeFrameUnchecked(link, b); }).not.toThrow();
        if (s !== null) {
          const seg = s as NonNullable<ReturnType<typeof decodeFrame>>;
          expect(seg.payload.length).toBeLessThanOrEqual(b.length);
          expect(seg.sport).toBeGreaterThanOrEqual(0);
          expect(seg.sport).toBeLessThanOrEqual(65535);
          expect(seg.seq).toBeGreaterThanOrEqual(0);
          expect(seg.seq).toBeLessThanOrEqual(0xffffffff);
        }
      }
    }), { numRuns: RUNS });
  });
});

describe('property: ipv6 text form', () => {
  it('ipv6ToString agrees with the WHATWG URL serialiser (RFC 5952) and with proc-parse', () => {
    fc.assert(fc.property(v6Words, (w) => {
      const bytes = wordsToBytes(w);
      const mine = ipv6ToString(Buffer.from(bytes), 0);
      expect(ipv6FromBytes(bytes)).toBe(mine);
      const mapped = w.slice(0, 5).every((x) => x === 0) && w[5] === 0xffff;
      if (!mapped) expect(mine).toBe(new URL(`http://[${w.map((x) => x.toString(16)).join(':')}]/`).hostname.slice(1, -1));
    }), { numRuns: RUNS });
  });
});

// ---------------------------------------------------------------------------------------------------

const OOO_LIMIT = 8;

interface Delivery {
  cuts: number[];
  dups: Array<[number, number]>;
  coalesce: Array<[number, number, number]>;
  offsets: number[];
  isn: number;
}

const delivery: fc.Arbitrary<Delivery> = fc.record({
  cuts: fc.array(fc.nat(4000), { maxLength: 60 }),
  // [piece index, reorder offset]
  dups: fc.array(fc.tuple(fc.nat(), fc.nat(OOO_LIMIT - 1)), { maxLength: 10 }),
  // [first piece, how many pieces, reorder offset]: a repacketised retransmission
  coalesce: fc.array(fc.tuple(fc.nat(), fc.integer({ min: 2, max: 4 }), fc.nat(OOO_LIMIT - 1)), { maxLength: 4 }),
  offsets: fc.array(fc.nat(OOO_LIMIT - 1), { minLength: 1, maxLength: 80 }),
  isn: fc.oneof(fc.integer({ min: 0xffffff00, max: 0xffffffff }), fc.nat(0xffffffff)),
});

/**
 * The stream's segments, split, duplicated, coalesced and reordered. Each copy of a piece is sent at
 * position index + offset (offset < OOO_LIMIT), so fewer than OOO_LIMIT distinct segments ever wait
 * ahead of a hole.
 */
function scramble(all: Buffer, d: Delivery): Piece[] {
  const pieces = splitStream([all], d.cuts.map((c) => c % (all.length + 1)), d.isn);
  const n = pieces.length;
  const sent: Array<{ key: number; tie: number; p: Piece }> = [];
  pieces.forEach((p, i) => sent.push({ key: i + d.offsets[i % d.offsets.length], tie: sent.length, p }));
  for (const [i, off] of d.dups) sent.push({ key: (i % n) + off, tie: sent.length, p: pieces[i % n] });
  for (const [i0, k, off] of d.coalesce) {
    const i = i0 % n;
    const group = pieces.slice(i, i + k);
    sent.push({ key: i + off, tie: sent.length, p: { seq: group[0].seq, payload: Buffer.concat(group.map((g) => g.payload)) } });
  }
  sent.sort((a, b) => a.key - b.key || a.tie - b.tie);
  return sent.map((s) => s.p);
}

describe('property: reassembly + HTTP parsing is independent of segmentation', () => {
  it('split/reordered/duplicated segments parse to exactly the requests of the unsplit stream', () => {
    fc.assert(fc.property(requestStream, delivery, (all, d) => {
      const reference = { malformed: 0 };
      const want = parsed([all], reference);
      expect(reference.malformed).toBe(0);
      const delivered: Buffer[] = [];
      const http: string[] = [];
      let gaps = 0;
      const s = new HttpStream({
        kind: 'request', maxHeaderBytes: 8192, onMessage: (h) => http.push(JSON.stringify(h)),
        onSecret: (v) => http.push(`secret:${v}`),
      });
      const ts = new TcpStream({ onData: (b) => { delivered.push(Buffer.from(b)); s.push(b); }, onGap: () => gaps++ },
        { maxOutOfOrderSegments: OOO_LIMIT, maxBufferedBytes: 1 << 20 });
      ts.onSyn(d.isn);
      for (const p of scramble(all, d)) ts.onSegment(p.seq, p.payload);
      expect(gaps).toBe(0);
      expect(Buffer.concat(delivered).equals(all)).toBe(true);
      expect(http).toEqual(want);
      expect(s.malformed).toBe(0);
    }), { numRuns: RUNS });
  });

  it('through FlowTable from Ethernet frames, seen once or on two interfaces, the requests are the same', () => {
    fc.assert(fc.property(requestStream, delivery, fc.boolean(), fc.boolean(), (all, d, v6, twice) => {
      const want = parsed([all]).filter((x) => !x.startsWith('secret:'));
      const got: string[] = [];
      const secrets: string[] = [];
      const t = new FlowTable({
        isServer: (a, p) => p === 80 && (a === IMDS4 || a === IMDS6),
        onOpen: () => undefined, onClose: () => undefined, onResponse: () => undefined,
        onRequest: (_c, head) => got.push(JSON.stringify(head)),
        onSecret: (v) => secrets.push(v),
      }, { maxFlows: 10, maxOutOfOrderSegments: OOO_LIMIT, maxBufferedBytesPerDirection: 1 << 20, maxHeaderBytes: 8192, flowIdleMs: 60_000 });
      const client = v6 ? 'fd00::2' : '10.0.0.5';
      const server = v6 ? IMDS6 : IMDS4;
      const send = (seq: number, payload: Buffer, syn: boolean): void => {
        const f = ethernet(v6 ? ETH_P_IPV6 : ETH_P_IP, (v6 ? ipv6 : ipv4)({ src: client, dst: server },
          tcp({ sport: 45000, dport: 80, seq, flags: syn ? { syn: true } : { ack: true, psh: true }, payload })));
        const seg = decodeFrame('ETHERNET', f)!;
        t.handle(seg, 0, 'veth0');
        if (twice) t.handle(decodeFrame('ETHERNET', f)!, 0, 'docker0');
      };
      send(d.isn, Buffer.alloc(0), true);
      for (const p of scramble(all, d)) send(p.seq, p.payload, false);
      expect(got).toEqual(want);
      expect(secrets).toEqual(parsed([all]).filter((x) => x.startsWith('secret:')).map((x) => x.slice(7)));
    }), { numRuns: RUNS });
  });
});

// ---------------------------------------------------------------------------------------------------

const httpishChunk = fc.oneof(
  fc.uint8Array({ maxLength: 64 }).map((u) => Buffer.from(u)),
  // message heads that lead into each body state, then runs of bytes without a line end
  fc.constantFrom('POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n', 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n',
    'POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\n', 'HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n', '0\r\n', '4\r\nabcd\r\n')
    .map((x) => Buffer.from(x, 'latin1')),
  fc.tuple(fc.constantFrom('a', 'X', '0', 'GET'), fc.integer({ min: 1, max: 300 })).map(([c, n]) => Buffer.from(c.repeat(n))),
  fc.array(fc.constantFrom('GET ', 'PUT /latest/api/token HTTP/1.1', 'HTTP/1.1 200 OK', 'HTTP/1.0 100 X', '\r\n', '\r\n\r\n', '\n',
    'Content-Length: 5', 'Content-Length: 0', 'Transfer-Encoding: chunked', 'a', '0', 'ff', 'zz', ';ext', ' ', ':',
    'X-aws-ec2-metadata-token: ', 'AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA'), { maxLength: 20 })
    .map((parts) => Buffer.from(parts.join(''), 'latin1')),
);

describe('property: HttpStream on arbitrary input', () => {
  it('never throws and never holds more than maxHeaderBytes + the latest push', () => {
    const op = fc.oneof(
      { weight: 10, arbitrary: httpishChunk.map((b) => ({ push: b })) },
      { weight: 1, arbitrary: fc.constant({ gap: true as const }) },
    );
    fc.assert(fc.property(fc.constantFrom<'request' | 'response'>('request', 'response'), fc.integer({ min: 16, max: 2048 }),
      fc.array(op, { maxLength: 60 }), fc.constantFrom('GET', 'HEAD', null), (kind, maxHeaderBytes, ops, m) => {
        const heads: Array<RequestHead | ResponseHead> = [];
        const s = new HttpStream({ kind, maxHeaderBytes, onMessage: (h) => heads.push(h), onSecret: () => undefined, requestMethod: () => m });
        for (const o of ops) {
          if ('gap' in o) { s.gap(); continue; }
          s.push(o.push);
          expect(s.buffered).toBeLessThanOrEqual(maxHeaderBytes + o.push.length);
        }
        for (const h of heads) expect(h.kind).toBe(kind);
      }), { numRuns: RUNS });
  });
});

// ---------------------------------------------------------------------------------------------------

describe('property: classification', () => {
  const awsTarget = fc.oneof(
    fc.constantFrom('/', '/latest', '/latest/meta-data/', '/latest/api/token', '/2021-07-15/meta-data/', '/1.0/meta-data',
      'http://169.254.169.254/latest/meta-data/', '/latest/meta-data/iam/security-credentials/role?x=1'),
    fc.stringMatching(/^\/latest\/[!-~]{0,40}$/),
  );
  const anyTarget = fc.oneof(awsTarget, fc.stringMatching(/^\/[!-~]{0,40}$/), fc.stringMatching(/^[!-~]{1,40}$/));

  it('a request with the token header, in any letter case and position, is never IMDSv1 (unless it holds two)', () => {
    fc.assert(fc.property(method, anyTarget, TOKEN_NAME, tokenValue, fc.array(header, { maxLength: 6 }), fc.nat(6),
      (m, t, name, value, others, pos) => {
        const hs = [...others];
        hs.splice(pos % (hs.length + 1), 0, `${name}: ${value}`);
        const head = parseRequestHead(`${m} ${t} HTTP/1.1\r\n${hs.join('\r\n')}`, false, () => undefined);
        expect(head).not.toBeNull();
        expect(head!.tokenPresent).toBe(true);
        const c = classify(head!);
        // Unambiguous: never IMDSv1. Ambiguous (here: another token header among the others): never IMDSv2.
        const tokens = hs.filter((h) => /^x-aws-ec2-metadata-token:/i.test(h)).length;
        expect(head!.ambiguity).toBe(tokens > 1 ? 'duplicate_token' : null);
        if (head!.ambiguity) expect(c.imdsVersion).not.toBe('v2');
        else expect(c.imdsVersion).not.toBe('v1');
        if (c.provider === 'aws') expect(c.imdsVersion).toBe(head!.ambiguity ? 'v1' : 'v2');
      }), { numRuns: RUNS });
  });

  it('the same AWS request without any token header is IMDSv1 (unless it is the token PUT or another cloud)', () => {
    fc.assert(fc.property(fc.constantFrom('GET', 'HEAD', 'POST'), awsTarget, (m, t) => {
      const head = parseRequestHead(`${m} ${t} HTTP/1.1\r\nHost: 169.254.169.254`, false, () => undefined)!;
      expect(classify(head)).toEqual({ provider: 'aws', imdsVersion: 'v1', tokenRequest: false });
      const withToken = parseRequestHead(`${m} ${t} HTTP/1.1\r\nX-aws-ec2-metadata-token: AAAAAAAAAA`, false, () => undefined)!;
      expect(classify(withToken).imdsVersion).toBe('v2');
    }), { numRuns: RUNS });
  });
});

// ---------------------------------------------------------------------------------------------------
// Differential: our head parser against Node's own (llhttp), on the same bytes over a real socket.

/** Cases for the differential property (one local TCP connection each, about 0.2 ms): as many as the others. */
const DIFF_RUNS = RUNS;

interface LlhttpView {
  requests: Array<{ method: string; url: string; rawHeaders: string[] }>;
  error: string | null;
}

/** A local llhttp server: every connection's parsed requests (or its parse error), once the connection is closed. */
async function llhttpServer(): Promise<{ send(bytes: Buffer): Promise<LlhttpView>; close(): Promise<void> }> {
  const views = new Map<number, LlhttpView>();
  const done = new Map<number, () => void>();
  const view = (port: number): LlhttpView => {
    let v = views.get(port);
    if (!v) { v = { requests: [], error: null }; views.set(port, v); }
    return v;
  };
  const server = http.createServer({ requireHostHeader: false, keepAliveTimeout: 5000 }, (req, res) => {
    view(req.socket.remotePort!).requests.push({ method: req.method!, url: req.url!, rawHeaders: req.rawHeaders });
    req.resume();
    res.end('ok');
  });
  server.on('clientError', (err: NodeJS.ErrnoException, sock) => {
    view(sock.remotePort!).error ??= err.code ?? String(err);
    sock.destroy();
  });
  server.on('connection', (sock) => {
    const port = sock.remotePort!;
    view(port);
    sock.on('close', () => done.get(port)?.());
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    send: (bytes) => new Promise<LlhttpView>((resolve, reject) => {
      const c = net.connect(port, '127.0.0.1');
      c.on('error', () => undefined); // the server may reset it after a parse error
      c.on('data', () => undefined);
      c.once('connect', () => {
        const local = c.localPort!;
        done.set(local, () => {
          done.delete(local);
          const v = views.get(local) ?? { requests: [], error: null };
          views.delete(local);
          c.destroy();
          resolve(v);
        });
        c.end(bytes);
      });
      c.once('close', () => undefined);
      setTimeout(() => reject(new Error('llhttp server did not close the connection')), 10_000).unref();
    }),
    close: () => new Promise<void>((resolve) => { server.closeAllConnections(); server.close(() => resolve()); }),
  };
}

/** Mostly the usual piece, sometimes a hostile one: so both well-formed IMDSv2 heads and tricks are common. */
function usually<T>(common: T, ...rare: T[]): fc.Arbitrary<T> {
  return fc.oneof({ weight: 12 * rare.length, arbitrary: fc.constant(common) }, { weight: rare.length, arbitrary: fc.constantFrom(...rare) });
}
const LINE_END = usually('\r\n', '\n', '\r', '\r\r\n', '\n\r');
const TERMINATOR = usually('\r\n\r\n', '\n\n', '\r\n\n', '\n\r\n', '\r\n\r\r\n');
const DIFF_TOKEN = 'AQAEAN-differential-token-value-1234567890=';
const tokenHeaderPiece = fc.record({
  name: TOKEN_NAME,
  sep: usually(': ', ':', ' : ', ' :', '\t:', ':\t', ':  '),
  value: usually(DIFF_TOKEN, '', ' ', `${DIFF_TOKEN}\x01`, `${DIFF_TOKEN} `, `\t${DIFF_TOKEN}`),
  fold: usually('', ' ', '\t'),
}).map((t) => `${t.fold}${t.name}${t.sep}${t.value}`);
const headPiece = fc.oneof(
  { weight: 4, arbitrary: tokenHeaderPiece },
  { weight: 3, arbitrary: fc.constantFrom('Host: 169.254.169.254', 'User-Agent: curl/8.5', 'Accept: */*', 'Connection: keep-alive',
    'X-aws-ec2-metadata-token-ttl-seconds: 21600', 'Metadata-Flavor: Google', 'Content-Length: 0', 'Connection: close') },
  { weight: 1, arbitrary: fc.constantFrom('Transfer-Encoding: chunked', 'Content-Length: 2', ' folded continuation', '\tX: y',
    ': nameless', 'no colon', 'X(bad): v', 'X-Empty:', 'Host : x') },
  { weight: 2, arbitrary: fc.tuple(headerName, plainValue).map(([n, v]) => `${n}: ${v}`) },
);
const diffTarget = fc.constantFrom('/latest/meta-data/', '/latest/api/token', '/', '/latest/meta-data/iam/security-credentials/',
  '/x/../latest/meta-data/', '/%6catest/meta-data/', '/computeMetadata/v1/', '/latest/meta-data/?a=1', '/2021-07-15/user-data',
  'http://169.254.169.254/latest/meta-data/');
const diffHead = fc.record({
  method: usually('GET', 'PUT', 'get', 'put', 'HEAD', 'POST', 'GETX'),
  sp1: usually(' ', '  ', '\t'),
  target: diffTarget,
  sp2: usually(' ', '  ', '\t'),
  version: usually('HTTP/1.1', 'HTTP/1.0'),
  lines: fc.array(fc.tuple(headPiece, LINE_END), { maxLength: 6 }),
  firstEnd: LINE_END,
  terminator: TERMINATOR,
  lead: usually('', '\r\n', '\n'),
}).map((h) => {
  const body = h.lines.map(([l, e], i) => (i === h.lines.length - 1 ? l : `${l}${e}`)).join('');
  return `${h.lead}${h.method}${h.sp1}${h.target}${h.sp2}${h.version}${h.lines.length ? `${h.firstEnd}${body}` : ''}${h.terminator}`;
});
/** One or two heads, sometimes followed by a token line that belongs to no head. */
const diffStream = fc.tuple(fc.array(diffHead, { minLength: 1, maxLength: 2 }),
  usually('', `X-aws-ec2-metadata-token: ${DIFF_TOKEN}\r\n\r\n`))
  .map(([heads, tail]) => Buffer.from(heads.join('') + tail, 'latin1'));

function ours(bytes: Buffer): RequestHead[] {
  const heads: RequestHead[] = [];
  const s = new HttpStream({ kind: 'request', maxHeaderBytes: 16 * 1024, onMessage: (h) => { if (h.kind === 'request') heads.push(h); } });
  s.push(bytes);
  s.end(); // the client half-closes after its bytes, as the llhttp side sees
  return heads;
}

function llhttpTokenHeaders(raw: string[]): string[] {
  const values: string[] = [];
  for (let i = 0; i + 1 < raw.length; i += 2) if (raw[i].toLowerCase() === 'x-aws-ec2-metadata-token') values.push(raw[i + 1]);
  return values;
}

describe('property: no false IMDSv2 against Node\'s own HTTP parser (llhttp), and nothing it serves is hidden', () => {
  let srv: Awaited<ReturnType<typeof llhttpServer>>;
  beforeAll(async () => { srv = await llhttpServer(); });
  afterAll(async () => { await srv?.close(); });

  it('whenever we say IMDSv2, llhttp parsed that request with one non-empty token header (or it is the token PUT)', async () => {
    await fc.assert(fc.asyncProperty(diffStream, async (bytes) => {
      const mine = ours(bytes);
      const theirs = await srv.send(bytes);
      const ctx = (): string => `bytes ${JSON.stringify(bytes.toString('latin1'))}; llhttp ${JSON.stringify(theirs)}`;
      mine.forEach((h, i) => {
        const c = classify(h);
        if (c.imdsVersion !== 'v2') return;
        const r = theirs.requests[i];
        expect(r, `we say v2 for request ${i}, llhttp saw no such request: ${ctx()}`).toBeDefined();
        expect(r.url, ctx()).toBe(h.target);
        if (c.tokenRequest && !h.tokenPresent) {
          expect(r.method, ctx()).toBe('PUT');
        } else {
          const tokens = llhttpTokenHeaders(r.rawHeaders);
          expect(tokens.length, `llhttp sees ${tokens.length} token headers: ${ctx()}`).toBe(1);
          expect(tokens[0].length, ctx()).toBeGreaterThan(0);
        }
      });
      // Nothing hidden: every request llhttp parsed on an AWS path is one of ours, on the same target, aws.
      theirs.requests.forEach((r, i) => {
        const probe = classify({ method: r.method, target: r.url, tokenPresent: false, metadataFlavor: null, metadataHeader: null });
        if (probe.provider !== 'aws') return;
        expect(mine[i], `llhttp served request ${i} that we do not report: ${ctx()}`).toBeDefined();
        expect(mine[i].target, ctx()).toBe(r.url);
        expect(classify(mine[i]).provider, ctx()).toBe('aws');
      });
    }), { numRuns: DIFF_RUNS });
  }, 600_000);

  it('the differential can fail: a parser that ignores folds and spaces before the colon is caught', async () => {
    // The old rule ("a line with the token name before a colon, trimmed") against the same server.
    const naive = (bytes: Buffer): boolean => /\n[ \t]*x-aws-ec2-metadata-token[ \t]*:[ \t]*\S/i.test(bytes.toString('latin1'));
    let caught = 0;
    for (const text of [`GET /latest/ HTTP/1.1\r\nUser-Agent: x\r\n X-aws-ec2-metadata-token: ${DIFF_TOKEN}\r\n\r\n`,
      `GET /latest/ HTTP/1.1\r\nX-aws-ec2-metadata-token : ${DIFF_TOKEN}\r\n\r\n`]) {
      const bytes = Buffer.from(text, 'latin1');
      const theirs = await srv.send(bytes);
      if (naive(bytes) && !(theirs.requests[0] && llhttpTokenHeaders(theirs.requests[0].rawHeaders).length === 1)) caught++;
      expect(classify(ours(bytes)[0]).imdsVersion).toBe('v1');
    }
    expect(caught).toBe(2);
  });
});

describe('property: TCP copies that disagree never leave a false IMDSv2', () => {
  it('pieces of two versions of a request (the token header, and a near-miss of it) in any order: v2 only if no near-miss byte was sent', () => {
    const A = `GET /latest/meta-data/ HTTP/1.1\r\nHost: 169.254.169.254\r\nX-aws-ec2-metadata-token: ${'T'.repeat(40)}\r\n\r\n`;
    const B = A.replace('X-aws-ec2-metadata-token:', 'X-aws-ec2-metadata-tokex:');
    const diffAt = A.indexOf('token:') + 4;
    const piece = fc.record({ fromB: fc.boolean(), start: fc.nat(A.length - 1), len: fc.integer({ min: 1, max: 40 }) });
    fc.assert(fc.property(fc.array(piece, { minLength: 1, maxLength: 12 }), fc.nat(0xffffffff), fc.boolean(), (pieces, isn, urgent) => {
      const heads: RequestHead[] = [];
      const amb: number[] = [];
      const t = new FlowTable({
        isServer: (a, p) => p === 80 && a === IMDS4,
        onOpen: () => undefined, onClose: () => undefined, onResponse: () => undefined, onSecret: () => undefined,
        onRequest: (_c, h) => heads.push(h), onAmbiguity: (_c, n) => amb.push(n),
      }, { maxFlows: 10, maxOutOfOrderSegments: 64, maxBufferedBytesPerDirection: 1 << 20, maxHeaderBytes: 8192, flowIdleMs: 60_000, maxBufferedBytesTotal: 1 << 24 });
      const send = (seq: number, payload: string, flags: Record<string, boolean>, urgentPointer?: number): void => {
        t.handle(decodeFrame('ETHERNET', ethernet(ETH_P_IP, ipv4({ src: '10.0.0.5', dst: IMDS4 },
          tcp({ sport: 45000, dport: 80, seq, flags, payload, urgentPointer }))))!, 0, 'eth0');
      };
      send(isn, '', { syn: true });
      let nearMissSent = false;
      for (const p of pieces) {
        const end = Math.min(A.length, p.start + p.len);
        const text = (p.fromB ? B : A).slice(p.start, end);
        if (p.fromB && p.start <= diffAt && diffAt < end) nearMissSent = true;
        send((isn + 1 + p.start) >>> 0, text, { ack: true, psh: true });
      }
      // Whatever is missing, from the version with the token; urgent data into the head, sometimes.
      send((isn + 1) >>> 0, A, urgent ? { ack: true, psh: true, urg: true } : { ack: true, psh: true }, urgent ? 5 : undefined);
      expect(heads.length).toBe(1);
      const h = heads[0];
      const v2 = classify(h).imdsVersion === 'v2' && amb.length === 0;
      if (nearMissSent || urgent) expect(v2).toBe(false);
      if (v2) expect(h.tokenPresent).toBe(true);
    }), { numRuns: RUNS });
  });
});
