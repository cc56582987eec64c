import { describe, it, expect } from 'vitest';
import fc from 'fast-check';
import {
  looksLikeRequestStart, looksLikeResponseStart, parseRequestHead, parseResponseHead,
  type RequestHead, type ResponseHead,
} from '../../agent/src/wire/http-head.js';
import { HttpStream } from '../../agent/src/wire/http-stream.js';
import { classify } from '../../agent/src/classify.js';

const TOKEN = 'AQAEAFx1Zm9vYmFyLXRva2VuLXZhbHVlLTEyMzQ1Njc4OTA=';

function reqHead(text: string, truncated = false): { head: RequestHead | null; secrets: string[] } {
  const secrets: string[] = [];
  const head = parseRequestHead(text, truncated, (v) => secrets.push(v));
  return { head, secrets };
}

describe('looksLikeRequestStart / looksLikeResponseStart', () => {
  it('accepts a method token followed by a space, or a short prefix of one', () => {
    expect(looksLikeRequestStart(Buffer.from('GET / HTTP/1.1'))).toBe(true);
    expect(looksLikeRequestStart(Buffer.from('PUT'))).toBe(true);
    expect(looksLikeRequestStart(Buffer.from('G'))).toBe(true);
    expect(looksLikeRequestStart(Buffer.from(`${'A'.repeat(32)} /`))).toBe(true);
  });
  it('rejects a leading space, control bytes, high bytes and over-long tokens', () => {
    expect(looksLikeRequestStart(Buffer.from(' GET /'))).toBe(false);
    expect(looksLikeRequestStart(Buffer.from('GE\tT /'))).toBe(false);
    expect(looksLikeRequestStart(Buffer.from([0x47, 0xff, 0x20]))).toBe(false);
    expect(looksLikeRequestStart(Buffer.from('A'.repeat(33)))).toBe(false);
    expect(looksLikeRequestStart(Buffer.from(`${'A'.repeat(33)} /`))).toBe(false);
  });
  it('responses start with HTTP/ (or a prefix of it)', () => {
    expect(looksLikeResponseStart(Buffer.from('HTTP/1.1 200 OK'))).toBe(true);
    expect(looksLikeResponseStart(Buffer.from('HTT'))).toBe(true);
    expect(looksLikeResponseStart(Buffer.from('http/1.1 200 OK'))).toBe(false);
    expect(looksLikeResponseStart(Buffer.from('GET / HTTP/1.1'))).toBe(false);
  });
});

describe('parseRequestHead', () => {
  it('parses the request line and the interesting headers', () => {
    const { head } = reqHead([
      'GET /latest/meta-data/iam/security-credentials/ HTTP/1.1',
      'Host: 169.254.169.254',
      'User-Agent: aws-sdk-go/1.44',
      'Accept: */*',
      'X-Forwarded-For: 10.0.0.1',
      'Metadata-Flavor: Google',
      'Metadata: true',
    ].join('\r\n'));
    expect(head).toMatchObject({
      kind: 'request', method: 'GET', target: '/latest/meta-data/iam/security-credentials/', version: '1.1',
      tokenPresent: false, tokenTtlSeconds: null, userAgent: 'aws-sdk-go/1.44', host: '169.254.169.254',
      forwardedFor: true, metadataFlavor: 'Google', metadataHeader: 'true', headerCount: 6,
      headersTruncated: false, body: { type: 'none' },
    });
  });

  it('without those headers the fields are null/false', () => {
    const { head } = reqHead('GET / HTTP/1.0');
    expect(head).toMatchObject({
      version: '1.0', userAgent: null, host: null, forwardedFor: false, metadataFlavor: null,
      metadataHeader: null, headerCount: 0, tokenPresent: false,
    });
  });

  for (const name of ['X-aws-ec2-metadata-token', 'x-aws-ec2-metadata-token', 'X-AWS-EC2-METADATA-TOKEN', 'x-AwS-Ec2-MeTaDaTa-ToKeN']) {
    it(`token header "${name}": present, value to onSecret, value never on the head`, () => {
      const { head, secrets } = reqHead(`GET /latest/meta-data/ HTTP/1.1\r\n${name}: ${TOKEN}\r\nHost: x`);
      expect(head!.tokenPresent).toBe(true);
      expect(secrets).toEqual([TOKEN]);
      expect(JSON.stringify(head)).not.toContain(TOKEN);
      expect(JSON.stringify(head)).not.toContain(TOKEN.slice(0, 12));
    });
  }

  it('token header with whitespace around the value and no space after the colon', () => {
    const { head, secrets } = reqHead(`GET / HTTP/1.1\r\nX-aws-ec2-metadata-token:${TOKEN}   `);
    expect(head!.tokenPresent).toBe(true);
    expect(secrets).toEqual([TOKEN]);
  });

  it('an empty token header still counts as present but gives no secret', () => {
    const { head, secrets } = reqHead('GET / HTTP/1.1\r\nX-aws-ec2-metadata-token:');
    expect(head!.tokenPresent).toBe(true);
    expect(secrets).toEqual([]);
  });

  it('the TTL header is not the token header', () => {
    const { head, secrets } = reqHead('PUT /latest/api/token HTTP/1.1\r\nX-aws-ec2-metadata-token-ttl-seconds: 21600');
    expect(head!.tokenPresent).toBe(false);
    expect(head!.tokenTtlSeconds).toBe(21600);
    expect(secrets).toEqual([]);
  });

  it('a non-numeric TTL is null', () => {
    expect(reqHead('PUT /latest/api/token HTTP/1.1\r\nX-aws-ec2-metadata-token-ttl-seconds: abc').head!.tokenTtlSeconds).toBeNull();
    expect(reqHead('PUT /latest/api/token HTTP/1.1\r\nX-aws-ec2-metadata-token-ttl-seconds: -1').head!.tokenTtlSeconds).toBeNull();
    expect(reqHead('PUT /latest/api/token HTTP/1.1\r\nX-aws-ec2-metadata-token-ttl-seconds: 1234567890').head!.tokenTtlSeconds).toBeNull();
  });

  it('caps long fields at 512 characters', () => {
    const long = 'a'.repeat(2000);
    const { head } = reqHead(`GET /${long} HTTP/1.1\r\nUser-Agent: ${long}\r\nHost: ${long}`);
    expect(head!.target.length).toBe(512);
    expect(head!.userAgent!.length).toBe(512);
    expect(head!.host!.length).toBe(512);
  });

  it('accepts bare LF line endings and skips lines without a name', () => {
    const { head } = reqHead('GET / HTTP/1.1\nHost: a\n: nameless\nno colon here\nUser-Agent: b');
    expect(head!.host).toBe('a');
    expect(head!.userAgent).toBe('b');
    expect(head!.headerCount).toBe(2);
  });

  it('body framing: content-length, chunked, zero length', () => {
    expect(reqHead('POST / HTTP/1.1\r\nContent-Length: 12').head!.body).toEqual({ type: 'length', length: 12 });
    expect(reqHead('POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked').head!.body).toEqual({ type: 'chunked' });
    expect(reqHead('POST / HTTP/1.1\r\nContent-Length: 0').head!.body).toEqual({ type: 'none' });
    expect(reqHead('POST / HTTP/1.1\r\nContent-Length: x').head!.body).toEqual({ type: 'none' });
    expect(reqHead('GET / HTTP/1.1').head!.body).toEqual({ type: 'none' });
  });

  it('passes on the truncated flag', () => {
    expect(reqHead('GET / HTTP/1.1', true).head!.headersTruncated).toBe(true);
  });

  it('rejects malformed request lines', () => {
    for (const line of ['GET /', 'GET / HTTP/1.1 extra', 'G(T / HTTP/1.1', 'GET / HTTP/11',
      'GET / http/1.1', '', `${'A'.repeat(33)} / HTTP/1.1`, 'GET / HTTP/1.1\r']) {
      expect(reqHead(`${line}\r\nHost: x`).head, JSON.stringify(line)).toBeNull();
    }
  });

  it('a head\'s text parsed again gives the same frozen head and its token values again; not when something else decides it', () => {
    const text = `GET /latest/meta-data/ HTTP/1.1\r\nX-aws-ec2-metadata-token: ${TOKEN}\r\nUser-Agent: again/1`;
    const first = reqHead(text);
    const again = reqHead(text);
    expect(again.head).toBe(first.head);
    expect(Object.isFrozen(again.head)).toBe(true);
    expect(Object.isFrozen(again.head!.body)).toBe(true);
    expect(again.secrets).toEqual([TOKEN]); // given to the redactor every time, as the first time
    expect(reqHead(text, true).head).toMatchObject({ headersTruncated: true, ambiguity: 'head_truncated' });
    for (const ctx of [{ ambiguity: 'tcp_overlap_conflict' as const }, { bareLfTerminator: true }]) {
      const secrets: string[] = [];
      const head = parseRequestHead(text, false, (v) => secrets.push(v), ctx);
      expect(head).not.toBe(first.head);
      expect(head!.ambiguity).toBe(ctx.ambiguity ?? 'bare_lf');
      expect(secrets).toEqual([TOKEN]);
    }
    expect(reqHead(text).head).toBe(first.head);
    expect(reqHead('GET / HTTP/1.1\r\nHost: x').head).toEqual(reqHead('GET / HTTP/1.1\r\nHost: x').head);
  });

  it('heads parsed again are the same as parsed anew, for many more heads than are kept', () => {
    const texts = Array.from({ length: 300 }, (_, i) => `GET /p${i % 150} HTTP/1.${i % 2}\r\nX-aws-ec2-metadata-token: t${i % 150}-${TOKEN}`);
    const fresh = texts.map((t) => JSON.stringify(reqHead(t)));
    for (let round = 0; round < 3; round++) {
      texts.forEach((t, i) => { expect(JSON.stringify(reqHead(t))).toBe(fresh[i]); });
    }
  });
});

describe('parseResponseHead', () => {
  it('a head\'s text parsed again gives the same frozen head; not when cut short or answering a HEAD', () => {
    const text = 'HTTP/1.1 200 OK\r\nContent-Length: 19\r\nDate: Thu, 03 Dec 2026 07:57:00 GMT';
    const first = parseResponseHead(text, false, 'GET');
    expect(parseResponseHead(text, false, 'PUT')).toBe(first);
    expect(Object.isFrozen(first)).toBe(true);
    expect(Object.isFrozen(first!.body)).toBe(true);
    expect(first!.body).toEqual({ type: 'length', length: 19 });
    expect(parseResponseHead(text, false, 'HEAD')!.body).toEqual({ type: 'none' });
    expect(parseResponseHead(text, true, 'GET')).toMatchObject({ headersTruncated: true });
    expect(parseResponseHead(text, false, null)).toBe(first);
    const texts = Array.from({ length: 200 }, (_, i) => `HTTP/1.1 ${200 + (i % 100)} X\r\nContent-Length: ${i}`);
    const fresh = texts.map((t) => JSON.stringify(parseResponseHead(t, false, 'GET')));
    for (let round = 0; round < 2; round++) texts.forEach((t, i) => { expect(JSON.stringify(parseResponseHead(t, false, 'GET'))).toBe(fresh[i]); });
  });

  it('parses status, version and framing', () => {
    expect(parseResponseHead('HTTP/1.1 200 OK\r\nContent-Length: 5\r\nServer: EC2ws', false, 'GET')).toEqual({
      kind: 'response', status: 200, version: '1.1', headerCount: 2, headersTruncated: false,
      body: { type: 'length', length: 5 },
    });
  });

  it('the reason phrase is optional', () => {
    expect(parseResponseHead('HTTP/1.1 404\r\nContent-Length: 0', false, null)?.status).toBe(404);
  });

  it('HEAD responses, 1xx, 204 and 304 have no body whatever their headers say', () => {
    const h = 'Content-Length: 100';
    expect(parseResponseHead(`HTTP/1.1 200 OK\r\n${h}`, false, 'HEAD')!.body).toEqual({ type: 'none' });
    expect(parseResponseHead(`HTTP/1.1 100 Continue\r\n${h}`, false, 'PUT')!.body).toEqual({ type: 'none' });
    expect(parseResponseHead(`HTTP/1.1 204 No Content\r\n${h}`, false, 'GET')!.body).toEqual({ type: 'none' });
    expect(parseResponseHead(`HTTP/1.1 304 Not Modified\r\n${h}`, false, 'GET')!.body).toEqual({ type: 'none' });
    expect(parseResponseHead(`HTTP/1.1 200 OK\r\n${h}`, false, 'GET')!.body).toEqual({ type: 'length', length: 100 });
  });

  it('chunked wins over content-length; no framing means until close; zero length is none', () => {
    expect(parseResponseHead('HTTP/1.1 200 OK\r\nContent-Length: 9\r\nTransfer-Encoding: chunked', false, 'GET')!.body)
      .toEqual({ type: 'chunked' });
    expect(parseResponseHead('HTTP/1.0 200 OK\r\nServer: x', false, 'GET')!.body).toEqual({ type: 'until-close' });
    expect(parseResponseHead('HTTP/1.1 200 OK\r\ncontent-length: 0', false, 'GET')!.body).toEqual({ type: 'none' });
  });

  it('rejects malformed status lines', () => {
    for (const l of ['HTTP/1.1 20 OK', 'HTTP/1.1 2000 OK', 'HTTP/1.1200 OK', 'HTTP/x 200 OK', 'ICY 200 OK', '',
      'HTTP/1.1 200\rOK', 'HTTP/1.1 200  \r', 'HTTP/1.1 200\t', 'HTTP/1.1 20a', 'http/1.1 200']) {
      expect(parseResponseHead(`${l}\r\nContent-Length: 0`, false, null), JSON.stringify(l)).toBeNull();
    }
  });

  it('reads a head as a regex over its status line and trim().toLowerCase() of each name do (latin1 text)', () => {
    // The reading the parser is written to equal, without its strings: the reference stays here.
    const reference = (text: string, method: string | null): unknown => {
      const lines = text.split(/\r?\n/);
      const m = /^HTTP\/(\d\.\d) (\d{3})(?: .*)?$/.exec(lines[0]);
      if (!m) return null;
      const framing: Record<string, string[]> = {};
      let headerCount = 0;
      for (const l of lines.slice(1)) {
        const colon = l.indexOf(':');
        if (colon <= 0) continue;
        headerCount++;
        const name = l.slice(0, colon).trim().toLowerCase();
        if (name === 'content-length' || name === 'transfer-encoding') (framing[name] ??= []).push(l.slice(colon + 1).trim());
      }
      const status = Number(m[2]);
      return { status, version: m[1], headerCount, bodyless: method === 'HEAD' || status < 200 || status === 204 || status === 304, framing };
    };
    const pieces = ['HTTP/1.1 200 OK', 'HTTP/1.0 404', 'HTTP/1.1 200', 'HTTP/1.1 200 \r', 'HTTP/2.0 204 x', 'HTTP/1.1 2000',
      'Content-Length: 5', 'content-length:0', ' Content-Length : 7 ', '\xa0CONTENT-LENGTH\t: 3', 'Content-Lengt: 1',
      'Transfer-Encoding: chunked', 'TRANSFER-ENCODING:gzip, chunked', '\vtransfer-encoding\f: x', 'Content_Length: 2',
      'Server: EC2ws', ':x', 'no colon', '', '\r', 'Cont\xe9nt-Length: 9', 'X: y\rz'];
    const latin1 = fc.string({ unit: fc.integer({ min: 0, max: 255 }).map((c) => String.fromCharCode(c)), maxLength: 24 });
    const line = fc.oneof(fc.constantFrom(...pieces), latin1);
    fc.assert(fc.property(fc.array(line, { minLength: 1, maxLength: 8 }), fc.constantFrom('\r\n', '\n'),
      fc.constantFrom('GET', 'HEAD', 'PUT', null), (ls, eol, method) => {
        const text = ls.join(eol);
        const ref = reference(text, method) as { status: number; version: string; headerCount: number; bodyless: boolean; framing: Record<string, string[]> } | null;
        const h = parseResponseHead(text, false, method);
        if (ref === null) { expect(h).toBeNull(); return; }
        expect(h).not.toBeNull();
        expect({ status: h!.status, version: h!.version, headerCount: h!.headerCount }).toEqual({ status: ref.status, version: ref.version, headerCount: ref.headerCount });
        // The framing the reference's names give, through the same rules.
        const cl = ref.framing['content-length'] ?? [];
        const te = ref.framing['transfer-encoding'] ?? [];
        const body = h!.body;
        if (ref.bodyless) expect(body).toEqual({ type: 'none' });
        else if (te.some((v) => /chunked/i.test(v))) expect(body).toEqual({ type: 'chunked' });
        else {
          const ok = cl.filter((v) => /^\d{1,15}$/.test(v));
          if (ok.length === 0) expect(body).toEqual({ type: 'until-close' });
          else {
            const n = Number(ok[ok.length - 1]);
            expect(body).toEqual(n ? { type: 'length', length: n } : { type: 'none' });
          }
        }
      }), { numRuns: 3000 });
  });
});

interface Harness {
  s: HttpStream;
  msgs: Array<RequestHead | ResponseHead>;
  secrets: string[];
  reqs(): string[];
  statuses(): number[];
}

function stream(kind: 'request' | 'response', maxHeaderBytes = 4096, method: () => string | null = () => 'GET'): Harness {
  const msgs: Array<RequestHead | ResponseHead> = [];
  const secrets: string[] = [];
  const s = new HttpStream({ kind, maxHeaderBytes, onMessage: (h) => msgs.push(h), onSecret: (v) => secrets.push(v), requestMethod: method });
  return {
    s, msgs, secrets,
    reqs: () => msgs.map((m) => (m.kind === 'request' ? `${m.method} ${m.target}` : `?${m.status}`)),
    statuses: () => msgs.map((m) => (m.kind === 'response' ? m.status : -1)),
  };
}

const GET = (p: string, extra = ''): string => `GET ${p} HTTP/1.1\r\nHost: 169.254.169.254\r\n${extra}\r\n`;

describe('HttpStream: requests', () => {
  it('one request in one push', () => {
    const h = stream('request');
    h.s.push(Buffer.from(GET('/latest/meta-data/')));
    expect(h.reqs()).toEqual(['GET /latest/meta-data/']);
  });

  it('one byte at a time', () => {
    const h = stream('request');
    for (const c of Buffer.from(GET('/a') + GET('/b'))) h.s.push(Buffer.from([c]));
    expect(h.reqs()).toEqual(['GET /a', 'GET /b']);
  });

  it('nothing is emitted before the blank line arrives', () => {
    const h = stream('request');
    h.s.push(Buffer.from('GET /a HTTP/1.1\r\nHost: x\r\n'));
    expect(h.msgs).toHaveLength(0);
    h.s.push(Buffer.from('\r\n'));
    expect(h.reqs()).toEqual(['GET /a']);
  });

  it('pipelined requests in a single push, in order', () => {
    const h = stream('request');
    h.s.push(Buffer.from(GET('/1') + GET('/2') + `PUT /latest/api/token HTTP/1.1\r\nX-aws-ec2-metadata-token-ttl-seconds: 60\r\n\r\n` + GET('/3')));
    expect(h.reqs()).toEqual(['GET /1', 'GET /2', 'PUT /latest/api/token', 'GET /3']);
    expect((h.msgs[2] as RequestHead).tokenTtlSeconds).toBe(60);
  });

  it('stray CRLFs between requests are tolerated and not malformed', () => {
    const h = stream('request');
    h.s.push(Buffer.from(`\r\n${GET('/a')}\r\n\r\n\n${GET('/b')}`));
    expect(h.reqs()).toEqual(['GET /a', 'GET /b']);
    expect(h.s.malformed).toBe(0);
  });

  it('a content-length body is skipped, even if it looks like a request', () => {
    const body = GET('/inside-body');
    const h = stream('request');
    const msg = `POST /x HTTP/1.1\r\nContent-Length: ${body.length}\r\n\r\n${body}`;
    for (const part of [msg.slice(0, 30), msg.slice(30, 70), msg.slice(70), GET('/after')]) h.s.push(Buffer.from(part));
    expect(h.reqs()).toEqual(['POST /x', 'GET /after']);
  });

  it('a chunked request body is skipped, with extensions and trailers', () => {
    const h = stream('request');
    const fake = GET('/inside');
    const body = `${fake.length.toString(16)};ext=1\r\n${fake}\r\n3\r\nabc\r\n0\r\nTrailer: v\r\n\r\n`;
    const all = `POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n${body}${GET('/after')}`;
    for (let i = 0; i < all.length; i += 7) h.s.push(Buffer.from(all.slice(i, i + 7)));
    expect(h.reqs()).toEqual(['POST /c', 'GET /after']);
    expect(h.s.malformed).toBe(0);
  });

  it('a bad chunk size line is malformed and the stream resynchronises', () => {
    const h = stream('request');
    h.s.push(Buffer.from('POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nblah blah\r\n\r\n'));
    expect(h.s.malformed).toBe(1);
    // The rest of that push is dropped with the broken body; the next segment parses.
    h.s.push(Buffer.from(GET('/next')));
    expect(h.reqs()).toEqual(['POST /c', 'GET /next']);
  });

  it('the token value goes to onSecret and never appears in emitted heads', () => {
    const h = stream('request');
    h.s.push(Buffer.from(GET('/latest/meta-data/', `x-aws-ec2-metadata-token: ${TOKEN}\r\n`)));
    expect(h.secrets).toEqual([TOKEN]);
    expect((h.msgs[0] as RequestHead).tokenPresent).toBe(true);
    expect(JSON.stringify(h.msgs)).not.toContain(TOKEN);
  });

  it('garbage is counted as malformed and parsing resumes at the next head', () => {
    const h = stream('request');
    h.s.push(Buffer.from(`\x00\x01\x02 binary junk\r\nmore\r\n\r\n${GET('/ok')}`));
    expect(h.reqs()).toEqual(['GET /ok']);
    expect(h.s.malformed).toBe(1);
  });

  it('a head whose start line does not parse is malformed, the next one still parses', () => {
    const h = stream('request');
    h.s.push(Buffer.from(`GET /no-version\r\nHost: x\r\n\r\n${GET('/ok')}`));
    expect(h.reqs()).toEqual(['GET /ok']);
    expect(h.s.malformed).toBe(1);
  });

  it('an oversized head is reported truncated, then skipped to its end', () => {
    const h = stream('request', 256);
    const big = `GET /big HTTP/1.1\r\nHost: x\r\nUser-Agent: ua\r\n${'X-Pad: ' + 'p'.repeat(100) + '\r\n'}${'X-Pad2: ' + 'q'.repeat(400) + '\r\n'}\r\n`;
    for (let i = 0; i < big.length; i += 50) h.s.push(Buffer.from(big.slice(i, i + 50)));
    h.s.push(Buffer.from(GET('/next')));
    expect(h.reqs()).toEqual(['GET /big', 'GET /next']);
    const first = h.msgs[0] as RequestHead;
    expect(first.headersTruncated).toBe(true);
    expect(first.userAgent).toBe('ua');
    expect(h.s.truncatedHeads).toBe(1);
    expect((h.msgs[1] as RequestHead).headersTruncated).toBe(false);
  });

  it('a token line cut by truncation is dropped, never passed on partially', () => {
    const h = stream('request', 128);
    const head = `GET /t HTTP/1.1\r\nHost: x\r\nX-Pad: ${'p'.repeat(60)}\r\nX-aws-ec2-metadata-token: ${TOKEN}\r\n\r\n`;
    for (let i = 0; i < head.length; i += 16) h.s.push(Buffer.from(head.slice(i, i + 16)));
    expect(h.reqs()).toEqual(['GET /t']);
    for (const s of h.secrets) expect(TOKEN.startsWith(s) && s !== TOKEN).toBe(false);
  });

  it('does not hold more than maxHeaderBytes while waiting for a head end', () => {
    const h = stream('request', 100);
    for (let i = 0; i < 50; i++) {
      h.s.push(Buffer.from(i === 0 ? 'GET /' : 'aaaaaaaaaaaaaaaaaaaa'));
      expect((h.s as unknown as { buf: Buffer }).buf.length).toBeLessThanOrEqual(120);
    }
  });

  it('a chunk-size line is bounded by maxHeaderBytes too', () => {
    const h = stream('request', 64);
    h.s.push(Buffer.from('POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n'));
    for (let i = 0; i < 200; i++) {
      h.s.push(Buffer.from('a'));
      expect((h.s as unknown as { buf: Buffer }).buf.length).toBeLessThanOrEqual(65);
    }
    expect(h.s.malformed).toBeGreaterThanOrEqual(1);
    // the junk is skipped up to the next blank line, then parsing resumes
    h.s.push(Buffer.from(`\r\n\r\n${GET('/next')}`));
    expect(h.reqs()).toEqual(['POST /c', 'GET /next']);
  });

  it('gap(): a partial head is forgotten and the next request parses; no malformed count', () => {
    const h = stream('request');
    h.s.push(Buffer.from('GET /lost HTTP/1.1\r\nHo'));
    h.s.gap();
    h.s.push(Buffer.from(GET('/after-gap')));
    expect(h.reqs()).toEqual(['GET /after-gap']);
    expect(h.s.malformed).toBe(0);
  });

  it('gap() then the tail of a head: skipped up to the blank line, next request parses', () => {
    const h = stream('request');
    h.s.push(Buffer.from('GET /lost HTTP/1.1\r\n'));
    h.s.gap();
    h.s.push(Buffer.from(`\x00tail-of-lost-head\r\nAccept: */*\r\n\r\n${GET('/after')}`));
    expect(h.reqs()).toEqual(['GET /after']);
    expect(h.s.malformed).toBe(0);
  });

  it('gap() during a body ends the body: the next request parses', () => {
    const h = stream('request');
    h.s.push(Buffer.from('POST /p HTTP/1.1\r\nContent-Length: 1000\r\n\r\nabc'));
    h.s.gap();
    h.s.push(Buffer.from(GET('/next')));
    expect(h.reqs()).toEqual(['POST /p', 'GET /next']);
  });

  it('never throws on binary noise and keeps working afterwards', () => {
    const h = stream('request', 64);
    let x = 12345;
    for (let i = 0; i < 200; i++) {
      const b = Buffer.alloc(37);
      for (let j = 0; j < b.length; j++) { x = (x * 1103515245 + 12345) & 0x7fffffff; b[j] = x & 0xff; }
      h.s.push(b);
    }
    h.s.gap();
    h.s.push(Buffer.from(GET('/alive')));
    expect(h.reqs().at(-1)).toBe('GET /alive');
  });
});

describe('HttpStream: responses', () => {
  const R = (status: number, body: string, extra = ''): string =>
    `HTTP/1.1 ${status} X\r\nContent-Length: ${body.length}\r\n${extra}\r\n${body}`;

  it('keep-alive responses with bodies; the body is not parsed', () => {
    const h = stream('response');
    h.s.push(Buffer.from(R(200, 'HTTP/1.1 500 fake\r\n\r\n') + R(404, 'nope')));
    expect(h.statuses()).toEqual([200, 404]);
  });

  it('chunked response bodies are skipped', () => {
    const h = stream('response');
    const all = 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nHTTP/\r\nA\r\n1.1 500 xx\r\n0\r\n\r\n' + R(201, 'x');
    for (let i = 0; i < all.length; i += 3) h.s.push(Buffer.from(all.slice(i, i + 3)));
    expect(h.statuses()).toEqual([200, 201]);
    expect(h.s.malformed).toBe(0);
  });

  it('a HEAD response has no body even with a content-length', () => {
    let method = 'HEAD';
    const h = stream('response', 4096, () => method);
    h.s.push(Buffer.from('HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n'));
    method = 'GET';
    h.s.push(Buffer.from(R(200, 'body')));
    expect(h.statuses()).toEqual([200, 200]);
  });

  it('1xx interim responses are followed by the final response', () => {
    const h = stream('response');
    h.s.push(Buffer.from(`HTTP/1.1 100 Continue\r\n\r\n${R(200, 'ok')}`));
    expect(h.statuses()).toEqual([100, 200]);
  });

  it('a response without framing runs until close: later bytes are ignored', () => {
    const h = stream('response');
    h.s.push(Buffer.from('HTTP/1.0 200 OK\r\nServer: x\r\n\r\nbody...'));
    h.s.push(Buffer.from(R(500, 'not a response, body of the previous one')));
    expect(h.statuses()).toEqual([200]);
    expect((h.s as unknown as { buf: Buffer }).buf.length).toBe(0);
  });

  it('a request-looking stream on the response side is malformed', () => {
    const h = stream('response');
    h.s.push(Buffer.from(GET('/x')));
    expect(h.msgs).toHaveLength(0);
    expect(h.s.malformed).toBe(1);
  });

  it('gap() mid-body: resynchronises on the next response', () => {
    const h = stream('response');
    h.s.push(Buffer.from('HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n{"Code" : "Success", '));
    h.s.gap();
    h.s.push(Buffer.from(R(404, '')));
    expect(h.statuses()).toEqual([200, 404]);
  });
});

describe('HttpStream: an oversized head', () => {
  it('is reported once, in part, with its request line intact (64 KB header line)', async () => {
    const { HttpStream } = await import('../../agent/src/wire/http-stream.js');
    const got: any[] = [];
    const s = new HttpStream({ kind: 'request', maxHeaderBytes: 16 * 1024, onMessage: (h) => got.push(h) });
    const req = Buffer.from(`GET /latest/meta-data/big-head HTTP/1.1\r\nX-Pad: ${'a'.repeat(65536)}\r\n\r\nGET /next HTTP/1.1\r\n\r\n`);
    for (let i = 0; i < req.length; i += 1448) s.push(req.subarray(i, i + 1448));
    expect(got.map((h) => [h.target, h.headersTruncated])).toEqual([
      ['/latest/meta-data/big-head', true], ['/next', false],
    ]);
  });
});

describe('HttpStream: heads read the way RFC 9112 servers read them', () => {
  const TOK2 = 'AQAEAGb2-second-token-value-0987654321==';

  it('a head ended by a bare-LF blank line is parsed (lenient servers serve it), marked bare_lf, IMDSv1', () => {
    const h = stream('request');
    h.s.push(Buffer.from('GET /latest/meta-data/ HTTP/1.0\n\n'));
    expect(h.reqs()).toEqual(['GET /latest/meta-data/']);
    const head = h.msgs[0] as RequestHead;
    expect(head.ambiguity).toBe('bare_lf');
    expect(classify(head).imdsVersion).toBe('v1');
    expect(h.s.malformed).toBe(0);
  });

  it('every mix of CRLF and LF in the terminator ends the head; only CRLF CRLF is unambiguous', () => {
    for (const [term, amb] of [['\r\n\r\n', null], ['\n\n', 'bare_lf'], ['\r\n\n', 'bare_lf'], ['\n\r\n', 'bare_lf']] as const) {
      const h = stream('request');
      h.s.push(Buffer.from(`GET /a HTTP/1.1\r\nHost: x${term}GET /b HTTP/1.1\r\nHost: x\r\n\r\n`));
      expect(h.reqs(), JSON.stringify(term)).toEqual(['GET /a', 'GET /b']);
      expect((h.msgs[0] as RequestHead).ambiguity, JSON.stringify(term)).toBe(amb);
      expect((h.msgs[1] as RequestHead).ambiguity).toBe(amb ? 'follows_ambiguous' : null);
    }
  });

  it('a bare-LF blank line ends the head: a token header after it is not in the head (no false IMDSv2)', () => {
    const h = stream('request');
    const all = `GET /latest/meta-data/ HTTP/1.1\nHost: x\n\nX-aws-ec2-metadata-token: ${TOKEN}\r\n\r\n`;
    for (let i = 0; i < all.length; i += 5) h.s.push(Buffer.from(all.slice(i, i + 5)));
    expect(h.reqs()).toEqual(['GET /latest/meta-data/']);
    const head = h.msgs[0] as RequestHead;
    expect(head.tokenPresent).toBe(false);
    expect(head.ambiguity).toBe('bare_lf');
    expect(classify(head).imdsVersion).toBe('v1');
    expect(h.secrets).toEqual([TOKEN]); // still learned, so still redacted
  });

  it('a token header as an obs-fold continuation is not a header: IMDSv1, obs_fold', () => {
    const { head, secrets } = reqHead(`GET /latest/meta-data/ HTTP/1.1\r\nUser-Agent: x\r\n X-aws-ec2-metadata-token: ${TOKEN}\r\nHost: y`);
    expect(head!.tokenPresent).toBe(false);
    expect(head!.ambiguity).toBe('obs_fold');
    expect(classify(head!).imdsVersion).toBe('v1');
    expect(secrets).toEqual([TOKEN]);
  });

  it('a folded line right after the request line is obs_fold too', () => {
    const { head } = reqHead(`GET /latest/ HTTP/1.1\r\n\tX-aws-ec2-metadata-token: ${TOKEN}`);
    expect(head!.ambiguity).toBe('obs_fold');
    expect(classify(head!).imdsVersion).toBe('v1');
  });

  it('whitespace before the colon: RFC 9112 servers reject it; IMDSv1, space_before_colon', () => {
    for (const sp of [' ', '\t', '  ']) {
      const { head, secrets } = reqHead(`GET /latest/meta-data/ HTTP/1.1\r\nX-aws-ec2-metadata-token${sp}: ${TOKEN}`);
      expect(head!.ambiguity).toBe('space_before_colon');
      expect(classify(head!).imdsVersion).toBe('v1');
      expect(secrets).toEqual([TOKEN]);
    }
  });

  it('bare LF line endings inside the head: bare_lf, IMDSv1 even with the token header', () => {
    const { head } = reqHead(`GET /latest/meta-data/ HTTP/1.1\nX-aws-ec2-metadata-token: ${TOKEN}\r\nHost: x`);
    expect(head!.tokenPresent).toBe(true);
    expect(head!.ambiguity).toBe('bare_lf');
    expect(classify(head!).imdsVersion).toBe('v1');
  });

  it('a bare CR in a line: bare_cr', () => {
    const { head, secrets } = reqHead(`GET /latest/ HTTP/1.1\r\nHost: x\rX-aws-ec2-metadata-token: ${TOKEN}`);
    expect(head!.tokenPresent).toBe(false);
    expect(head!.ambiguity).toBe('bare_cr');
    expect(secrets).toEqual([TOKEN]);
  });

  it('duplicate or empty token headers, invalid names, lines and values: IMDSv1 with the reason', () => {
    const cases: Array<[string, string]> = [
      [`X-aws-ec2-metadata-token: ${TOKEN}\r\nX-aws-ec2-metadata-token: ${TOK2}`, 'duplicate_token'],
      ['X-aws-ec2-metadata-token:', 'empty_token'],
      ['X-aws-ec2-metadata-token:   \t', 'empty_token'],
      [`X-aws-ec2-metadata-token: ${TOKEN}\r\nno colon here`, 'invalid_header_line'],
      [`X-aws-ec2-metadata-token: ${TOKEN}\r\n: nameless`, 'invalid_header_line'],
      [`X-aws-ec2-metadata-token: ${TOKEN}\r\nX(bad): v`, 'invalid_header_name'],
      [`X-aws-ec2-metadata-token: ${TOKEN}\x01`, 'invalid_header_value'],
      [`X-aws-ec2-metadata-token: ${TOKEN}\r\nContent-Length: 0\r\nTransfer-Encoding: chunked`, 'conflicting_framing'],
      [`X-aws-ec2-metadata-token: ${TOKEN}\r\nContent-Length: 1\r\nContent-Length: 2`, 'conflicting_framing'],
    ];
    for (const [hs, why] of cases) {
      const { head } = reqHead(`GET /latest/meta-data/ HTTP/1.1\r\n${hs}`);
      expect(head!.ambiguity, JSON.stringify(hs)).toBe(why);
      expect(classify(head!).imdsVersion, JSON.stringify(hs)).toBe('v1');
    }
  });

  it('a well-formed IMDSv2 head is unambiguous (tabs around the value are optional whitespace)', () => {
    for (const v of [` ${TOKEN}`, `\t${TOKEN}\t`, TOKEN]) {
      const { head } = reqHead(`GET /latest/meta-data/ HTTP/1.1\r\nHost: 169.254.169.254\r\nx-aws-ec2-metadata-token:${v}\r\nAccept: */*`);
      expect(head!.ambiguity).toBeNull();
      expect(classify(head!).imdsVersion).toBe('v2');
    }
  });

  it('the first ambiguity found is the one named', () => {
    const { head } = reqHead(`GET /x HTTP/1.1\r\n fold\r\nX-aws-ec2-metadata-token : ${TOKEN}\nHost: x`);
    expect(head!.ambiguity).toBe('obs_fold');
  });

  it('runs of spaces in the request line are served by lenient servers: parsed, request_line_whitespace', () => {
    const { head } = reqHead(`GET  /latest/meta-data/  HTTP/1.1\r\nX-aws-ec2-metadata-token: ${TOKEN}`);
    expect(head!.target).toBe('/latest/meta-data/');
    expect(head!.ambiguity).toBe('request_line_whitespace');
    expect(classify(head!).imdsVersion).toBe('v1');
  });
});

describe('HttpStream: a head cut at maxHeaderBytes', () => {
  it('is IMDSv1 with head_truncated even when the token header follows the cut, whose value is still learned', () => {
    const h = stream('request', 256);
    const all = `GET /latest/meta-data/ HTTP/1.1\r\nX-Pad: ${'p'.repeat(400)}\r\nX-aws-ec2-metadata-token: ${TOKEN}\r\n\r\n${GET('/next')}`;
    for (let i = 0; i < all.length; i += 37) h.s.push(Buffer.from(all.slice(i, i + 37)));
    expect(h.reqs()).toEqual(['GET /latest/meta-data/', 'GET /next']);
    const head = h.msgs[0] as RequestHead;
    expect(head.headersTruncated).toBe(true);
    expect(head.ambiguity).toBe('head_truncated');
    expect(classify(head).imdsVersion).toBe('v1');
    expect(h.secrets).toEqual([TOKEN]);
  });

  it('a token header before the cut does not make a cut head IMDSv2', () => {
    const h = stream('request', 256);
    h.s.push(Buffer.from(`GET /latest/ HTTP/1.1\r\nX-aws-ec2-metadata-token: ${TOKEN}\r\nX-Pad: ${'p'.repeat(400)}\r\n\r\n`));
    const head = h.msgs[0] as RequestHead;
    expect(head.tokenPresent).toBe(true);
    expect(head.ambiguity).toBe('head_truncated');
    expect(classify(head).imdsVersion).toBe('v1');
  });

  it('a head larger than the bound in a single push is cut too (as when it comes in pieces)', () => {
    const h = stream('request', 256);
    h.s.push(Buffer.from(`GET /big HTTP/1.1\r\nX-Pad: ${'p'.repeat(400)}\r\n\r\n${GET('/next')}`));
    expect(h.reqs()).toEqual(['GET /big', 'GET /next']);
    expect((h.msgs[0] as RequestHead).headersTruncated).toBe(true);
  });

  it('the skipped part ends at a bare-LF blank line too', () => {
    const h = stream('request', 128);
    h.s.push(Buffer.from(`GET /big HTTP/1.1\nX-Pad: ${'p'.repeat(200)}\nX-aws-ec2-metadata-token: ${TOKEN}\n\nGET /next HTTP/1.1\r\n\r\n`));
    expect(h.reqs()).toEqual(['GET /big', 'GET /next']);
    expect(h.secrets).toEqual([TOKEN]);
  });

  it('the agent\'s bound is 16 KiB (DEFAULTS.maxHeaderBytes), as SCHEMA.md says', async () => {
    const { DEFAULTS } = await import('../../agent/src/defaults.js');
    expect(DEFAULTS.maxHeaderBytes).toBe(16 * 1024);
    const { readFileSync } = await import('node:fs');
    const schema = readFileSync(new URL('../../SCHEMA.md', import.meta.url), 'utf8');
    expect(schema).toMatch(/request head exceeded 16 KiB/);
    expect(schema).not.toMatch(/32 KiB and was parsed in part/);
  });
});

describe('HttpStream: ambiguities found below HTTP', () => {
  it('an offset inside the head being read marks that head', () => {
    const h = stream('request');
    h.s.push(Buffer.from('GET /latest/meta-data/ HTTP/1.1\r\nX-aws-ec2-metadata-tok'));
    h.s.ambiguous(40, 'tcp_overlap_conflict');
    h.s.push(Buffer.from(`en: ${TOKEN}\r\n\r\n`));
    expect((h.msgs[0] as RequestHead).ambiguity).toBe('tcp_overlap_conflict');
    expect(classify(h.msgs[0] as RequestHead).imdsVersion).toBe('v1');
  });

  it('an offset inside a message already emitted is reported with its number', () => {
    const got: Array<[number, string]> = [];
    const s = new HttpStream({ kind: 'request', maxHeaderBytes: 4096, onMessage: () => undefined, onAmbiguity: (n, why) => got.push([n, why]) });
    const a = GET('/a');
    const b = GET('/b');
    s.push(Buffer.from(a + b));
    s.ambiguous(a.length + 3, 'tcp_overlap_conflict');
    s.ambiguous(2, 'tcp_urgent');
    expect(got).toEqual([[2, 'tcp_overlap_conflict'], [1, 'tcp_urgent']]);
  });

  it('an offset ahead of what was read marks the next head', () => {
    const h = stream('request');
    h.s.push(Buffer.from(GET('/a')));
    h.s.ambiguous(GET('/a').length + 5, 'tcp_urgent');
    h.s.push(Buffer.from(GET('/b')));
    expect(h.msgs.map((m) => (m as RequestHead).ambiguity)).toEqual([null, 'tcp_urgent']);
  });
});

describe('HttpStream: what follows an ambiguous, malformed or closing message', () => {
  const V2 = (p: string): string => `GET ${p} HTTP/1.1\r\nX-aws-ec2-metadata-token: ${TOKEN}\r\n\r\n`;
  for (const [what, first] of [
    ['an ambiguous head', 'GET /a HTTP/1.1\nHost: x\r\n\r\n'],
    ['a malformed head', 'GET /no-version\r\n\r\n'],
    ['garbage', '\x00\x01 junk\r\n\r\n'],
    ['HTTP/1.0 without keep-alive', 'GET /a HTTP/1.0\r\n\r\n'],
    ['Connection: close', 'GET /a HTTP/1.1\r\nConnection: close\r\n\r\n'],
  ] as const) {
    it(`after ${what}, a request with the token header is IMDSv1 (follows_ambiguous): servers may have stopped there`, () => {
      const h = stream('request');
      h.s.push(Buffer.from(first + V2('/latest/meta-data/')));
      const last = h.msgs.at(-1) as RequestHead;
      expect(last.target).toBe('/latest/meta-data/');
      expect(last.ambiguity).toBe('follows_ambiguous');
      expect(classify(last).imdsVersion).toBe('v1');
    });
  }

  it('HTTP/1.0 with keep-alive, and a gap in the capture, do not make the next request ambiguous', () => {
    const h = stream('request');
    h.s.push(Buffer.from(`GET /a HTTP/1.0\r\nConnection: keep-alive\r\n\r\n${V2('/b')}`));
    h.s.push(Buffer.from('GET /lost HTTP/1.1\r\nHo'));
    h.s.gap();
    h.s.push(Buffer.from(V2('/c')));
    expect(h.msgs.map((m) => (m as RequestHead).ambiguity)).toEqual([null, null, null]);
  });

  it('a method outside RFC 9110 (case-sensitive) is nonstandard_method: "put" with the token header is IMDSv1', () => {
    for (const m of ['put', 'get', 'Get', 'FOO']) {
      const { head } = reqHead(`${m} /latest/meta-data/ HTTP/1.1\r\nX-aws-ec2-metadata-token: ${TOKEN}`);
      expect(head!.ambiguity, m).toBe('nonstandard_method');
      expect(classify(head!).imdsVersion, m).toBe('v1');
    }
    expect(reqHead(`PATCH /latest/ HTTP/1.1\r\nX-aws-ec2-metadata-token: ${TOKEN}`).head!.ambiguity).toBeNull();
  });
});
