// A capture file of IMDS traffic in every shape the agent's parser knows, from a seed: IPv4 and IPv6,
// kept-alive and one-shot connections, heads split, reordered, duplicated, overlapping with bytes
// that disagree, urgent data, ambiguous heads (two token headers, folded lines, bare LF, chunked GETs),
// token requests answered, refused and unanswered, answers chunked, 100-continue, missing, reset,
// other clouds' requests, long and unicode headers, pipelined requests, and random bit flips.
// For checking that a change to the agent gives the same records: `imds-tracer read` of the same
// files by two builds, compared byte for byte.
//   node bench/varied-capture.mjs --seed N --out FILE [--connections 3000]
// No lab and no root: the file is made here, nothing is sent.
import { writeFileSync } from 'node:fs';

const args = process.argv.slice(2);
const opt = (name, def) => { const i = args.indexOf(name); return i >= 0 ? args[i + 1] : def; };
const seed = Number(opt('--seed', 1));
const out = opt('--out', null);
const connections = Number(opt('--connections', 3000));
if (!out) { console.error('usage: node bench/varied-capture.mjs --seed N --out FILE [--connections N]'); process.exit(2); }

// mulberry32: a small seeded generator, so a seed makes the same file every time.
let state = seed >>> 0;
function rand() {
  state = (state + 0x6d2b79f5) >>> 0;
  let t = state;
  t = Math.imul(t ^ (t >>> 15), t | 1);
  t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
}
const int = (n) => Math.floor(rand() * n);
const pick = (xs) => xs[int(xs.length)];
const chance = (p) => rand() < p;

// ---- frames ----------------------------------------------------------------------------------------
const CLIENTS4 = ['169.254.10.2', '172.17.0.5', '10.0.3.7'];
const CLIENTS6 = ['fd00:ec2::10', 'fd00:1::5'];
const v4 = (a) => a.split('.').map(Number);
function v6(a) {
  const [l, r] = a.split('::');
  const L = l ? l.split(':') : []; const R = r ? r.split(':') : [];
  const words = [...L, ...Array(8 - L.length - R.length).fill('0'), ...R].map((w) => parseInt(w, 16));
  return words.flatMap((w) => [w >> 8, w & 0xff]);
}
function sum16(buf, init = 0) {
  let s = init;
  for (let i = 0; i + 1 < buf.length; i += 2) s += buf.readUInt16BE(i);
  if (buf.length % 2) s += buf[buf.length - 1] << 8;
  while (s > 0xffff) s = (s & 0xffff) + (s >>> 16);
  return s;
}
function tcpSeg(c, fromClient, seq, ack, flags, payload, urgPtr = 0) {
  const t = Buffer.alloc(20);
  t.writeUInt16BE(fromClient ? c.cport : 80, 0); t.writeUInt16BE(fromClient ? 80 : c.cport, 2);
  t.writeUInt32BE(seq >>> 0, 4); t.writeUInt32BE(ack >>> 0, 8);
  t[12] = 5 << 4; t[13] = flags; t.writeUInt16BE(64240, 14); t.writeUInt16BE(urgPtr, 18);
  return Buffer.concat([t, payload]);
}
function frame(c, fromClient, seq, ack, flags, payload = Buffer.alloc(0), urgPtr = 0) {
  const seg = tcpSeg(c, fromClient, seq, ack, flags, payload, urgPtr);
  const src = fromClient ? c.client : c.server; const dst = fromClient ? c.server : c.client;
  let ip;
  if (c.v6) {
    ip = Buffer.alloc(40);
    ip[0] = 0x60; ip.writeUInt16BE(seg.length, 4); ip[6] = 6; ip[7] = fromClient ? 64 : (c.hop ?? 255);
    Buffer.from(v6(src)).copy(ip, 8); Buffer.from(v6(dst)).copy(ip, 24);
  } else {
    ip = Buffer.alloc(20);
    ip[0] = 0x45; ip.writeUInt16BE(20 + seg.length, 2); ip[6] = 0x40; ip[8] = fromClient ? 64 : (c.hop ?? 255); ip[9] = 6;
    Buffer.from(v4(src)).copy(ip, 12); Buffer.from(v4(dst)).copy(ip, 16);
    ip.writeUInt16BE(~sum16(ip) & 0xffff, 10);
  }
  const mac = Buffer.from([0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2, c.v6 ? 0x86 : 0x08, c.v6 ? 0xdd : 0x00]);
  return Buffer.concat([mac, ip, seg]);
}
const F = { fin: 1, syn: 2, rst: 4, psh: 8, ack: 16, urg: 32 };

// ---- requests and answers --------------------------------------------------------------------------
const PATHS = ['/latest/meta-data/instance-id', '/latest/meta-data/iam/security-credentials/role', '/latest/meta-data/',
  '/latest/dynamic/instance-identity/document', '/latest/user-data', '/computeMetadata/v1/instance/id', '/metadata/instance?api-version=2021-02-01',
  '/latest/meta-data/%E2%82%AC?x=\u00e9', 'http://169.254.169.254/latest/meta-data/ami-id'];
const AGENTS = [null, 'Boto3/1.34.0 md/Botocore#1.34.0', 'aws-sdk-go/1.44.0 (go1.21; linux; amd64)', 'curl/7.88.1',
  'aws-sdk-java/1.12.0 Linux/6.1', 'python-requests/2.31.0', 'Wget/1.21.3', 'ü\u0001nicode\u2028agent', 'x'.repeat(3000)];
const TOKEN = 'AQAEAFakeTokenFakeTokenFakeTokenFakeTokenFakeToken==';

function requestHead() {
  const kind = pick(['v1', 'v1', 'v1', 'put', 'v2', 'v2', 'ambiguous', 'other', 'odd']);
  const nl = kind === 'odd' && chance(0.5) ? '\n' : '\r\n';
  const lines = [];
  if (kind === 'put') lines.push('PUT /latest/api/token HTTP/1.1');
  else lines.push(`${kind === 'odd' && chance(0.3) ? pick(['get', 'POST', 'HEAD', 'DELETE']) : 'GET'} ${pick(PATHS)} ${chance(0.1) ? 'HTTP/1.0' : 'HTTP/1.1'}`);
  lines.push('Host: 169.254.169.254');
  const ua = pick(AGENTS);
  if (ua !== null) lines.push(`User-Agent: ${ua}`);
  if (kind === 'put') lines.push(`X-aws-ec2-metadata-token-ttl-seconds: ${pick(['21600', '60', 'abc', '0'])}`);
  if (kind === 'v2') lines.push(`${pick(['X-aws-ec2-metadata-token', 'x-AWS-ec2-metadata-token'])}: ${TOKEN}`);
  if (kind === 'ambiguous') {
    const a = pick(['two-tokens', 'empty-token', 'folded', 'chunked', 'space-before-colon', 'null-byte']);
    if (a === 'two-tokens') lines.push(`X-aws-ec2-metadata-token: ${TOKEN}`, `X-aws-ec2-metadata-token: ${TOKEN}`);
    if (a === 'empty-token') lines.push('X-aws-ec2-metadata-token: ');
    if (a === 'folded') lines.push(`X-aws-ec2-metadata-token: ${TOKEN.slice(0, 10)}`, ` ${TOKEN.slice(10)}`);
    if (a === 'chunked') lines.push('Transfer-Encoding: chunked');
    if (a === 'space-before-colon') lines.push(`X-aws-ec2-metadata-token : ${TOKEN}`);
    if (a === 'null-byte') lines.push(`X-Note: a\u0000b`);
  }
  if (kind === 'other') lines.push(pick(['Metadata-Flavor: Google', 'Metadata: true', 'Authorization: Bearer secret123']));
  if (chance(0.1)) lines.push(`X-Filler: ${'f'.repeat(int(9000))}`);
  const body = kind === 'ambiguous' && lines.includes('Transfer-Encoding: chunked') ? '0\r\n\r\n' : '';
  return { kind, bytes: Buffer.from(`${lines.join(nl)}${nl}${nl}${body}`, 'latin1') };
}
function answer(kind) {
  const status = kind === 'put' ? pick([200, 200, 403, 405]) : pick([200, 200, 200, 401, 404]);
  const shape = pick(['plain', 'plain', 'chunked', 'continue']);
  const body = status === 200 ? (kind === 'put' ? TOKEN : 'i-0123456789abcdef0') : '';
  const reason = { 200: 'OK', 401: 'Unauthorized', 403: 'Forbidden', 404: 'Not Found', 405: 'Method Not Allowed' }[status];
  let text = '';
  if (shape === 'continue') text += 'HTTP/1.1 100 Continue\r\n\r\n';
  if (shape === 'chunked') text += `HTTP/1.1 ${status} ${reason}\r\nTransfer-Encoding: chunked\r\n\r\n${body.length.toString(16)}\r\n${body}\r\n0\r\n\r\n`;
  else text += `HTTP/1.1 ${status} ${reason}\r\nContent-Length: ${body.length}\r\nServer: EC2ws\r\n\r\n${body}`;
  return Buffer.from(text);
}

// ---- connections -----------------------------------------------------------------------------------
const frames = [];
let t = 1_764_000_000_000_000; // µs
const emit = (data) => {
  if (chance(0.002)) { data = Buffer.from(data); const i = int(data.length); data[i] ^= 1 << int(8); } // a bit flip
  frames.push({ t, data });
};
/** The client's bytes as segments: whole, split, reordered, duplicated, overlapping with other bytes, urgent. */
function sendClient(c, bytes) {
  const cuts = chance(0.3) ? Array.from({ length: 1 + int(3) }, () => 1 + int(Math.max(1, bytes.length - 1))).sort((a, b) => a - b) : [];
  const pieces = [];
  let at = 0;
  for (const cut of [...new Set(cuts), bytes.length]) { if (cut > at) { pieces.push([at, cut]); at = cut; } }
  const segs = pieces.map(([a, b]) => ({ seq: c.cseq + a, data: bytes.subarray(a, b) }));
  if (segs.length > 1 && chance(0.3)) segs.reverse();
  if (chance(0.1)) segs.push(segs[int(segs.length)]); // a retransmission
  if (chance(0.05)) { // a copy of some bytes that disagrees with the first
    const s = segs[int(segs.length)];
    const other = Buffer.from(s.data); other[int(other.length)] ^= 0x20;
    segs.push({ seq: s.seq, data: other });
  }
  const urgent = chance(0.03);
  for (const s of segs) {
    t += 1 + int(200);
    emit(frame(c, true, s.seq, c.sseq, F.psh | F.ack | (urgent ? F.urg : 0), s.data, urgent ? 1 : 0));
  }
  c.cseq += bytes.length;
}
function sendServer(c, bytes) {
  t += 50 + int(3000);
  emit(frame(c, false, c.sseq, c.cseq, F.psh | F.ack, bytes));
  c.sseq += bytes.length;
}

let cport = 20_000;
for (let n = 0; n < connections; n++) {
  cport = cport >= 60_000 ? 20_000 : cport + 1;
  const v6c = chance(0.25);
  const c = {
    v6: v6c, client: v6c ? pick(CLIENTS6) : pick(CLIENTS4), server: v6c ? 'fd00:ec2::254' : '169.254.169.254', cport,
    cseq: int(2 ** 32), sseq: int(2 ** 32), hop: chance(0.05) ? 1 : 255,
  };
  t += int(chance(0.05) ? 3_000_000 : 20_000);
  emit(frame(c, true, c.cseq, 0, F.syn)); c.cseq++;
  t += 30; emit(frame(c, false, c.sseq, c.cseq, F.syn | F.ack)); c.sseq++;
  t += 30; emit(frame(c, true, c.cseq, c.sseq, F.ack));
  const requests = chance(0.5) ? 1 : 1 + int(5);
  for (let k = 0; k < requests; k++) {
    const q = requestHead();
    if (chance(0.05)) { // two requests in one go (pipelined)
      const q2 = requestHead();
      sendClient(c, Buffer.concat([q.bytes, q2.bytes]));
      sendServer(c, answer(q.kind)); sendServer(c, answer(q2.kind));
      continue;
    }
    sendClient(c, q.bytes);
    const fate = rand();
    if (fate < 0.05) { t += 2_000_000; continue; } // no answer: the call waits out its time
    if (fate < 0.08) { t += 100; emit(frame(c, false, c.sseq, c.cseq, F.rst | F.ack)); break; } // reset
    sendServer(c, answer(q.kind));
    t += 40; emit(frame(c, true, c.cseq, c.sseq, F.ack));
  }
  if (chance(0.8)) { // closed; else left open (the idle sweep or the end of the file closes it)
    t += 100; emit(frame(c, true, c.cseq, c.sseq, F.fin | F.ack)); c.cseq++;
    t += 50; emit(frame(c, false, c.sseq, c.cseq, F.fin | F.ack)); c.sseq++;
    t += 50; emit(frame(c, true, c.cseq, c.sseq, F.ack));
  }
}

// ---- the file (pcap, little-endian, µs, Ethernet) ----------------------------------------------------
const head = Buffer.alloc(24);
head.writeUInt32LE(0xa1b2c3d4, 0); head.writeUInt16LE(2, 4); head.writeUInt16LE(4, 6); head.writeUInt32LE(262144, 16); head.writeUInt32LE(1, 20);
const parts = [head];
for (const f of frames) {
  const h = Buffer.alloc(16);
  h.writeUInt32LE(Math.floor(f.t / 1e6), 0); h.writeUInt32LE(f.t % 1e6, 4); h.writeUInt32LE(f.data.length, 8); h.writeUInt32LE(f.data.length, 12);
  parts.push(h, f.data);
}
writeFileSync(out, Buffer.concat(parts));
console.log(`${out}: ${frames.length} packets, ${connections} connections, seed ${seed}`);
