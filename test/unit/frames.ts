/**
 * Hand-built link/IP/TCP frames for the wire tests. Checksums are left at zero: the decoder never
 * checks them (the kernel already did, or the capture point is before checksum offload fills them).
 */
import type { TcpSegment } from '../../agent/src/wire/packet.js';

export const ETH_P_IP = 0x0800;
export const ETH_P_IPV6 = 0x86dd;
export const ETH_P_8021Q = 0x8100;

export interface TcpFlags { syn?: boolean; ack?: boolean; fin?: boolean; rst?: boolean; psh?: boolean; urg?: boolean }

export interface TcpSpec {
  sport: number;
  dport: number;
  seq: number;
  ack?: number;
  flags?: TcpFlags;
  /** TCP options, padded to a multiple of 4 bytes. */
  options?: Buffer;
  /** The urgent pointer field (meaningful with flags.urg). */
  urgentPointer?: number;
  payload?: Buffer | string;
}

function toBuf(p: Buffer | string | undefined): Buffer {
  if (p === undefined) return Buffer.alloc(0);
  return typeof p === 'string' ? Buffer.from(p, 'latin1') : p;
}

export function flagByte(f: TcpFlags = {}): number {
  return (f.fin ? 1 : 0) | (f.syn ? 2 : 0) | (f.rst ? 4 : 0) | (f.psh ? 8 : 0) | (f.ack ? 16 : 0) | (f.urg ? 32 : 0);
}

export function tcp(spec: TcpSpec): Buffer {
  let opts = spec.options ?? Buffer.alloc(0);
  if (opts.length % 4) opts = Buffer.concat([opts, Buffer.alloc(4 - (opts.length % 4))]);
  const h = Buffer.alloc(20 + opts.length);
  h.writeUInt16BE(spec.sport, 0);
  h.writeUInt16BE(spec.dport, 2);
  h.writeUInt32BE(spec.seq >>> 0, 4);
  h.writeUInt32BE((spec.ack ?? 0) >>> 0, 8);
  h[12] = ((20 + opts.length) / 4) << 4;
  h[13] = flagByte(spec.flags);
  h.writeUInt16BE(65535, 14); // window
  h.writeUInt16BE(spec.urgentPointer ?? 0, 18);
  opts.copy(h, 20);
  return Buffer.concat([h, toBuf(spec.payload)]);
}

export function v4Bytes(a: string): number[] {
  return a.split('.').map(Number);
}

/** Text IPv6 (with at most one "::", optional trailing dotted quad) to 16 bytes. */
export function v6Bytes(a: string): number[] {
  let text = a;
  const tailV4: number[] = [];
  const dotted = /(\d+\.\d+\.\d+\.\d+)$/.exec(text);
  if (dotted) {
    tailV4.push(...v4Bytes(dotted[1]));
    text = text.slice(0, -dotted[1].length);
    text = text.endsWith('::') ? text : text.replace(/:$/, '');
  }
  const [head, tail] = text.includes('::') ? text.split('::') : [text, ''];
  const h = head ? head.split(':') : [];
  const t = tail ? tail.split(':') : [];
  const words = 8 - tailV4.length / 2;
  const all = [...h, ...Array(words - h.length - t.length).fill('0'), ...t];
  const out: number[] = [];
  for (const w of all) { const n = parseInt(w, 16); out.push(n >> 8, n & 0xff); }
  return [...out, ...tailV4];
}

export interface Ipv4Spec {
  src: string;
  dst: string;
  proto?: number;
  /** IHL in 32-bit words (5 = no options). */
  ihl?: number;
  totalLength?: number;
  /** Raw flags+fragment offset field. */
  frag?: number;
  version?: number;
}

export function ipv4(spec: Ipv4Spec, payload: Buffer): Buffer {
  const ihl = spec.ihl ?? 5;
  const h = Buffer.alloc(ihl * 4);
  h[0] = ((spec.version ?? 4) << 4) | (ihl & 0x0f);
  h.writeUInt16BE(spec.totalLength ?? (h.length + payload.length), 2);
  h.writeUInt16BE(0x1234, 4);
  h.writeUInt16BE(spec.frag ?? 0x4000, 6); // DF
  h[8] = 64;
  h[9] = spec.proto ?? 6;
  Buffer.from(v4Bytes(spec.src)).copy(h, 12);
  Buffer.from(v4Bytes(spec.dst)).copy(h, 16);
  for (let i = 20; i < h.length; i++) h[i] = 1; // NOP options
  return Buffer.concat([h, payload]);
}

/** An IPv6 extension header (hop-by-hop 0, routing 43, destination options 60), 8*(len+1) bytes. */
export interface ExtHeader { type: number; len8?: number }

export interface Ipv6Spec {
  src: string;
  dst: string;
  next?: number;
  ext?: ExtHeader[];
  payloadLength?: number;
  version?: number;
}

export function ipv6(spec: Ipv6Spec, payload: Buffer): Buffer {
  const ext = spec.ext ?? [];
  const upper = spec.next ?? 6;
  const parts: Buffer[] = [];
  for (let i = 0; i < ext.length; i++) {
    const len8 = ext[i].len8 ?? 0;
    const e = Buffer.alloc((len8 + 1) * 8);
    e[0] = i + 1 < ext.length ? ext[i + 1].type : upper;
    e[1] = len8;
    e[2] = 1; // PadN
    e[3] = e.length - 4;
    parts.push(e);
  }
  const body = Buffer.concat([...parts, payload]);
  const h = Buffer.alloc(40);
  h[0] = (spec.version ?? 6) << 4;
  h.writeUInt16BE(spec.payloadLength ?? body.length, 4);
  h[6] = ext.length ? ext[0].type : upper;
  h[7] = 64;
  Buffer.from(v6Bytes(spec.src)).copy(h, 8);
  Buffer.from(v6Bytes(spec.dst)).copy(h, 24);
  return Buffer.concat([h, body]);
}

export function ethernet(etherType: number, payload: Buffer, vlans: number[] = []): Buffer {
  const h = Buffer.alloc(12);
  Buffer.from([0x02, 0, 0, 0, 0, 1]).copy(h, 0);
  Buffer.from([0x02, 0, 0, 0, 0, 2]).copy(h, 6);
  const tags = vlans.map((id) => {
    const t = Buffer.alloc(4);
    t.writeUInt16BE(ETH_P_8021Q, 0);
    t.writeUInt16BE(id & 0x0fff, 2);
    return t;
  });
  // Each tag is TPID(0x8100)+TCI; the real EtherType follows the last tag.
  const chain: Buffer[] = [h];
  if (tags.length === 0) {
    const et = Buffer.alloc(2); et.writeUInt16BE(etherType, 0); chain.push(et);
  } else {
    for (const t of tags) chain.push(t);
    const et = Buffer.alloc(2); et.writeUInt16BE(etherType, 0); chain.push(et);
  }
  return Buffer.concat([...chain, payload]);
}

/** Linux cooked capture v1 (16-byte header): packet type, ARPHRD, addr len, addr, protocol. */
export function sll(pktType: number, etherType: number, payload: Buffer): Buffer {
  const h = Buffer.alloc(16);
  h.writeUInt16BE(pktType, 0);
  h.writeUInt16BE(1, 2); // ARPHRD_ETHER
  h.writeUInt16BE(6, 4);
  Buffer.from([0x02, 0, 0, 0, 0, 1]).copy(h, 6);
  h.writeUInt16BE(etherType, 14);
  return Buffer.concat([h, payload]);
}

/** Linux cooked capture v2 (20-byte header): protocol, reserved, ifindex, ARPHRD, packet type, ... */
export function sll2(pktType: number, etherType: number, payload: Buffer, ifindex = 3): Buffer {
  const h = Buffer.alloc(20);
  h.writeUInt16BE(etherType, 0);
  h.writeUInt32BE(ifindex, 4);
  h.writeUInt16BE(1, 8);
  h[10] = pktType;
  h[11] = 6;
  Buffer.from([0x02, 0, 0, 0, 0, 1]).copy(h, 12);
  return Buffer.concat([h, payload]);
}

/** BSD loopback (DLT_NULL): 4-byte address family in host order, then the IP packet. */
export function nullLink(family: 4 | 6, payload: Buffer): Buffer {
  const h = Buffer.alloc(4);
  h.writeUInt32LE(family === 4 ? 2 : 30, 0);
  return Buffer.concat([h, payload]);
}

export type Link = 'ETHERNET' | 'LINKTYPE_LINUX_SLL' | 'LINUX_SLL2' | 'RAW' | 'NULL';

export interface SegSpec extends TcpSpec {
  src: string;
  dst: string;
}

export function isV6(a: string): boolean {
  return a.includes(':');
}

/** A complete frame carrying one TCP segment on the given link type. */
export function frame(link: Link, s: SegSpec, pktType = 0): Buffer {
  const t = tcp(s);
  const v6 = isV6(s.src);
  const ip = v6 ? ipv6({ src: s.src, dst: s.dst }, t) : ipv4({ src: s.src, dst: s.dst }, t);
  const et = v6 ? ETH_P_IPV6 : ETH_P_IP;
  switch (link) {
    case 'ETHERNET': return ethernet(et, ip);
    case 'LINKTYPE_LINUX_SLL': return sll(pktType, et, ip);
    case 'LINUX_SLL2': return sll2(pktType, et, ip);
    case 'RAW': return ip;
    case 'NULL': return nullLink(v6 ? 6 : 4, ip);
  }
}

/** A decoded TcpSegment built directly (for FlowTable tests that need no bytes on the wire). */
export function segment(s: SegSpec): TcpSegment {
  const f = s.flags ?? {};
  return {
    family: isV6(s.src) ? 6 : 4, src: s.src, dst: s.dst, sport: s.sport, dport: s.dport,
    seq: s.seq >>> 0, ack: (s.ack ?? 0) >>> 0,
    flags: { syn: !!f.syn, ack: !!f.ack, fin: !!f.fin, rst: !!f.rst, psh: !!f.psh },
    payload: toBuf(s.payload), pktType: null,
    ...(f.urg ? { urgent: s.urgentPointer ?? 0 } : {}),
  };
}

export interface Piece { seq: number; payload: Buffer }

/**
 * One direction's bytes (the concatenation of `messages`) cut into TCP payloads at `cuts` (byte
 * offsets into the whole stream; out-of-range and repeated cuts are ignored), numbered from `isn + 1`
 * modulo 2^32.
 */
export function splitStream(messages: Array<Buffer | string>, cuts: number[], isn: number): Piece[] {
  const all = Buffer.concat(messages.map(toBuf));
  const points = [...new Set(cuts.filter((c) => c > 0 && c < all.length))].sort((a, b) => a - b);
  const out: Piece[] = [];
  let start = 0;
  for (const p of [...points, all.length]) {
    if (p > start) out.push({ seq: (isn + 1 + start) >>> 0, payload: all.subarray(start, p) });
    start = p;
  }
  return out;
}

/** Cut a stream into pieces of at most `size` bytes. */
export function chunk(messages: Array<Buffer | string>, size: number, isn: number): Piece[] {
  const total = messages.reduce((n, m) => n + toBuf(m).length, 0);
  const cuts: number[] = [];
  for (let c = size; c < total; c += size) cuts.push(c);
  return splitStream(messages, cuts, isn);
}

/** A simple client/server exchange as decoded segments, for FlowTable tests. */
export class Conversation {
  cseq: number;
  sseq: number;

  constructor(
    readonly client: string, readonly cport: number, readonly server: string, readonly sport: number,
    readonly cisn: number, readonly sisn: number,
  ) {
    this.cseq = (cisn + 1) >>> 0;
    this.sseq = (sisn + 1) >>> 0;
  }

  syn(): TcpSegment {
    return segment({ src: this.client, dst: this.server, sport: this.cport, dport: this.sport, seq: this.cisn, flags: { syn: true } });
  }

  synAck(): TcpSegment {
    return segment({
      src: this.server, dst: this.client, sport: this.sport, dport: this.cport, seq: this.sisn,
      ack: this.cseq, flags: { syn: true, ack: true },
    });
  }

  /** Client data; advances the client's sequence number. */
  send(data: Buffer | string, flags: TcpFlags = { ack: true, psh: true }): TcpSegment {
    const b = toBuf(data);
    const s = segment({ src: this.client, dst: this.server, sport: this.cport, dport: this.sport, seq: this.cseq, ack: this.sseq, flags, payload: b });
    this.cseq = (this.cseq + b.length + (flags.fin ? 1 : 0)) >>> 0;
    return s;
  }

  /** Server data; advances the server's sequence number. */
  reply(data: Buffer | string, flags: TcpFlags = { ack: true, psh: true }): TcpSegment {
    const b = toBuf(data);
    const s = segment({ src: this.server, dst: this.client, sport: this.sport, dport: this.cport, seq: this.sseq, ack: this.cseq, flags, payload: b });
    this.sseq = (this.sseq + b.length + (flags.fin ? 1 : 0)) >>> 0;
    return s;
  }

  clientAck(): TcpSegment {
    return segment({ src: this.client, dst: this.server, sport: this.cport, dport: this.sport, seq: this.cseq, ack: this.sseq, flags: { ack: true } });
  }

  clientFin(): TcpSegment { return this.send('', { ack: true, fin: true }); }
  serverFin(): TcpSegment { return this.reply('', { ack: true, fin: true }); }

  clientRst(): TcpSegment {
    return segment({ src: this.client, dst: this.server, sport: this.cport, dport: this.sport, seq: this.cseq, flags: { rst: true } });
  }
}

export const IMDS4 = '169.254.169.254';
export const IMDS6 = 'fd00:ec2::254';

export function req(method: string, target: string, headers: Record<string, string> = {}, body = ''): string {
  const lines = [`${method} ${target} HTTP/1.1`, 'Host: 169.254.169.254'];
  for (const [k, v] of Object.entries(headers)) lines.push(`${k}: ${v}`);
  if (body) lines.push(`Content-Length: ${Buffer.byteLength(body)}`);
  return `${lines.join('\r\n')}\r\n\r\n${body}`;
}

export function res(status: number, body = '', headers: Record<string, string> = {}): string {
  const lines = [`HTTP/1.1 ${status} X`, ...Object.entries(headers).map(([k, v]) => `${k}: ${v}`)];
  if (!('Content-Length' in headers) && !('Transfer-Encoding' in headers)) lines.push(`Content-Length: ${Buffer.byteLength(body)}`);
  return `${lines.join('\r\n')}\r\n\r\n${body}`;
}

/** A decoded segment (a Conversation's) as the bytes of a captured frame on the given link. */
export function segmentFrame(link: Link, s: TcpSegment): Buffer {
  return frame(link, {
    src: s.src, dst: s.dst, sport: s.sport, dport: s.dport, seq: s.seq, ack: s.ack, payload: s.payload,
    flags: { ...s.flags, urg: s.urgent !== undefined }, urgentPointer: s.urgent,
  });
}
