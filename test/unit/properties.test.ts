/**
 * Property-based tests (fast-check) for the pure wire modules and the classifier.
 */
import { describe, it, expect } from 'vitest';
import fc from 'fast-check';
import { decodeFrame, ipv6ToString } from '../../agent/src/wire/packet.js';
import { TcpStream } from '../../agent/src/wire/tcp-stream.js';
import { HttpStream } from '../../agent/src/wire/http-stream.js';
import { parseRequestHead, type RequestHead, type ResponseHead } from '../../agent/src/wire/http-head.js';
import { FlowTable } from '../../agent/src/wire/flows.js';
import { classify } from '../../agent/src/classify.js';
import { ipv6FromBytes } from '../../agent/src/attribution/proc-parse.js';
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
  it('never throws on arbitrary bytes, for every link type', () => {
    fc.assert(fc.property(fc.constantFrom<string>(...LINKS, 'BOGUS'), fc.uint8Array({ maxLength: 160 }), (link, bytes) => {
      const s = decodeFrame(link, Buffer.from(bytes));
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
        expect(() => { s = decodeFrame(link, b); }).not.toThrow();
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
          const held = (s as unknown as { buf: Buffer }).buf.length;
          expect(held).toBeLessThanOrEqual(maxHeaderBytes + o.push.length);
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

  it('a request with the token header, in any letter case and position, is never IMDSv1', () => {
    fc.assert(fc.property(method, anyTarget, TOKEN_NAME, tokenValue, fc.array(header, { maxLength: 6 }), fc.nat(6),
      (m, t, name, value, others, pos) => {
        const hs = [...others];
        hs.splice(pos % (hs.length + 1), 0, `${name}: ${value}`);
        const head = parseRequestHead(`${m} ${t} HTTP/1.1\r\n${hs.join('\r\n')}`, false, () => undefined);
        expect(head).not.toBeNull();
        expect(head!.tokenPresent).toBe(true);
        const c = classify(head!);
        expect(c.imdsVersion).not.toBe('v1');
        if (c.provider === 'aws') expect(c.imdsVersion).toBe('v2');
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
