/**
 * Link, IP and TCP decoding of one captured frame. Pure: bytes in, a TCP segment (or null) out.
 * Never throws on malformed input; anything that is not a well-formed TCP segment yields null.
 */
import { ipv6ToString } from '../net.js';
export interface TcpSegment {
  family: 4 | 6;
  src: string;
  dst: string;
  sport: number;
  dport: number;
  seq: number;
  ack: number;
  flags: { syn: boolean; ack: boolean; fin: boolean; rst: boolean; psh: boolean };
  payload: Buffer;
  /**
   * The urgent pointer, present only when the URG flag is set: the receiver takes the byte at
   * seq + urgent - 1 (seq when 0) out of the stream (Linux, RFC 6093), so the server reads other
   * bytes than the wire carries.
   */
  urgent?: number;
  /** Linux cooked capture: 4 = sent by this host, 0 = to us, 3 = another host's; null when unknown. */
  pktType: number | null;
  /** IPv4 TTL or IPv6 hop limit as captured (absent on segments not decoded from a frame). */
  ttl?: number;
}

export type LinkType = 'ETHERNET' | 'LINKTYPE_LINUX_SLL' | 'RAW' | 'NULL' | 'LINUX_SLL2';

const ETH_P_IP = 0x0800;
const ETH_P_IPV6 = 0x86dd;
const ETH_P_8021Q = 0x8100;
const IPPROTO_TCP = 6;

export function decodeFrame(link: string, frame: Buffer): TcpSegment | null {
  try {
    return decodeFrameUnchecked(link, frame);
  } catch {
    return null; // a bounds error on a hostile frame is a malformed frame, nothing more
  }
}

/** The decoder without decodeFrame's safety net: every read is bounds-checked (the property tests prove it). */
export function decodeFrameUnchecked(link: string, frame: Buffer): TcpSegment | null {
  let off = 0;
  let etherType: number;
  let pktType: number | null = null;
  switch (link) {
    case 'ETHERNET': {
      if (frame.length < 14) return null;
      etherType = frame.readUInt16BE(12);
      off = 14;
      while (etherType === ETH_P_8021Q && frame.length >= off + 4) {
        etherType = frame.readUInt16BE(off + 2);
        off += 4;
      }
      break;
    }
    case 'LINKTYPE_LINUX_SLL': {
      if (frame.length < 16) return null;
      pktType = frame.readUInt16BE(0);
      etherType = frame.readUInt16BE(14);
      off = 16;
      break;
    }
    case 'LINUX_SLL2': {
      if (frame.length < 20) return null;
      etherType = frame.readUInt16BE(0);
      pktType = frame[10];
      off = 20;
      break;
    }
    case 'RAW': {
      if (frame.length < 1) return null;
      const v = frame[0] >> 4;
      etherType = v === 4 ? ETH_P_IP : v === 6 ? ETH_P_IPV6 : 0;
      break;
    }
    case 'NULL': {
      if (frame.length < 5) return null;
      const v = frame[4] >> 4;
      etherType = v === 4 ? ETH_P_IP : v === 6 ? ETH_P_IPV6 : 0;
      off = 4;
      break;
    }
    default:
      return null;
  }
  if (etherType === ETH_P_IP) return decodeIPv4(frame, off, pktType);
  if (etherType === ETH_P_IPV6) return decodeIPv6(frame, off, pktType);
  return null;
}

function decodeIPv4(b: Buffer, off: number, pktType: number | null): TcpSegment | null {
  if (b.length < off + 20 || b[off] >> 4 !== 4) return null;
  const ihl = (b[off] & 0x0f) * 4;
  if (ihl < 20) return null;
  const totalLen = b.readUInt16BE(off + 2);
  const fragField = b.readUInt16BE(off + 6);
  if ((fragField & 0x1fff) !== 0 || (fragField & 0x2000) !== 0) return null; // fragments: not handled
  if (b[off + 9] !== IPPROTO_TCP) return null;
  const end = Math.min(b.length, off + (totalLen >= ihl ? totalLen : b.length - off));
  const src = ipv4Text(b, off + 12);
  const dst = ipv4Text(b, off + 16);
  return decodeTcp(b, off + ihl, end, 4, src, dst, pktType, b[off + 8]);
}

const IPV4_TEXT_MEMO_SIZE = 4096;
const ipv4Texts = new Map<number, string>();

/** Dotted text of the IPv4 address at b[off..off+4], remembered (a capture sees few addresses, again and again). */
function ipv4Text(b: Buffer, off: number): string {
  const n = b.readUInt32BE(off);
  let s = ipv4Texts.get(n);
  if (s === undefined) {
    s = `${b[off]}.${b[off + 1]}.${b[off + 2]}.${b[off + 3]}`;
    if (ipv4Texts.size >= IPV4_TEXT_MEMO_SIZE) ipv4Texts.clear();
    ipv4Texts.set(n, s);
  }
  return s;
}

function decodeIPv6(b: Buffer, off: number, pktType: number | null): TcpSegment | null {
  if (b.length < off + 40 || b[off] >> 4 !== 6) return null;
  const payloadLen = b.readUInt16BE(off + 4);
  let next = b[off + 6];
  const src = ipv6ToString(b, off + 8);
  const dst = ipv6ToString(b, off + 24);
  const end = Math.min(b.length, off + 40 + payloadLen);
  let p = off + 40;
  // Skip the usual extension headers (hop-by-hop, routing, destination options).
  for (let i = 0; i < 8 && (next === 0 || next === 43 || next === 60); i++) {
    if (end < p + 8) return null;
    next = b[p];
    p += (b[p + 1] + 1) * 8;
  }
  if (next !== IPPROTO_TCP) return null;
  return decodeTcp(b, p, end, 6, src, dst, pktType, b[off + 7]);
}

function decodeTcp(b: Buffer, off: number, end: number, family: 4 | 6, src: string, dst: string,
  pktType: number | null, ttl: number): TcpSegment | null {
  if (end < off + 20) return null;
  const dataOff = (b[off + 12] >> 4) * 4;
  if (dataOff < 20 || off + dataOff > end) return null;
  const f = b[off + 13];
  const seg: TcpSegment = {
    family, src, dst, pktType, ttl,
    sport: b.readUInt16BE(off),
    dport: b.readUInt16BE(off + 2),
    seq: b.readUInt32BE(off + 4),
    ack: b.readUInt32BE(off + 8),
    flags: FLAG_SETS[f & 0x1f],
    payload: copyOf(b, off + dataOff, end), // copy: capture buffers are reused
  };
  if (f & 0x20) seg.urgent = b.readUInt16BE(off + 18);
  return seg;
}

type TcpFlags = TcpSegment['flags'];

/**
 * The flags of every FIN/SYN/RST/PSH/ACK combination, made once and frozen: a segment's `flags` is one
 * of these (read-only, shared), not an object of its own per packet.
 */
const FLAG_SETS: readonly Readonly<TcpFlags>[] = Array.from({ length: 32 }, (_, f) => Object.freeze({
  fin: !!(f & 1), syn: !!(f & 2), rst: !!(f & 4), psh: !!(f & 8), ack: !!(f & 16),
}));

const EMPTY = Buffer.alloc(0);

/** Bytes start..end of b in a buffer of their own (one shared empty buffer for a segment without data). */
function copyOf(b: Buffer, start: number, end: number): Buffer {
  if (end <= start) return EMPTY;
  const out = Buffer.allocUnsafe(end - start);
  b.copy(out, 0, start, end);
  return out;
}

/** The interface index a Linux cooked v2 (`any`) frame was captured on; null for other link types. */
export function linkIfindex(link: string, frame: Buffer): number | null {
  return link === 'LINUX_SLL2' && frame.length >= 20 ? frame.readUInt32BE(4) : null;
}
