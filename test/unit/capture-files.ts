/**
 * Capture files built by hand, byte by byte, as libpcap and dumpcap write them: pcap (either byte
 * order, micro- or nanosecond times) and pcapng (sections of either byte order, interface description
 * blocks with name and time resolution, enhanced and simple packet blocks, any other block).
 */
import type { Link } from './frames.js';

export const LINKTYPE: Record<Link, number> = { NULL: 0, ETHERNET: 1, RAW: 101, LINKTYPE_LINUX_SLL: 113, LINUX_SLL2: 276 };

export interface FilePacket { data: Buffer; tsUs: number }

function u32(v: number, le: boolean): Buffer {
  const b = Buffer.alloc(4);
  if (le) b.writeUInt32LE(v >>> 0, 0); else b.writeUInt32BE(v >>> 0, 0);
  return b;
}
function u16(v: number, le: boolean): Buffer {
  const b = Buffer.alloc(2);
  if (le) b.writeUInt16LE(v, 0); else b.writeUInt16BE(v, 0);
  return b;
}

export function pcapFile(link: number, packets: FilePacket[], o: { le?: boolean; nano?: boolean; snaplen?: number } = {}): Buffer {
  const le = o.le ?? true;
  const parts = [u32(o.nano ? 0xa1b23c4d : 0xa1b2c3d4, le), u16(2, le), u16(4, le), u32(0, le), u32(0, le), u32(o.snaplen ?? 262144, le), u32(link, le)];
  for (const p of packets) {
    const sec = Math.floor(p.tsUs / 1e6);
    const us = Math.round(p.tsUs - sec * 1e6);
    parts.push(u32(sec, le), u32(o.nano ? us * 1000 : us, le), u32(p.data.length, le), u32(p.data.length, le), p.data);
  }
  return Buffer.concat(parts);
}

function pad4(b: Buffer): Buffer {
  return b.length % 4 === 0 ? b : Buffer.concat([b, Buffer.alloc(4 - (b.length % 4))]);
}

export function block(type: number, body: Buffer, le: boolean): Buffer {
  const b = pad4(body);
  const len = b.length + 12;
  return Buffer.concat([u32(type, le), u32(len, le), b, u32(len, le)]);
}

export function option(code: number, value: Buffer, le: boolean): Buffer {
  return Buffer.concat([u16(code, le), u16(value.length, le), pad4(value)]);
}

export function shb(le: boolean): Buffer {
  const len = Buffer.alloc(8, 0xff); // section length unknown (-1)
  return block(0x0a0d0d0a, Buffer.concat([u32(0x1a2b3c4d, le), u16(1, le), u16(0, le), len]), le);
}

/** An interface description block; tsresol 9 = nanoseconds (default: microseconds). */
export function idb(link: number, le: boolean, o: { name?: string; tsresol?: number; snaplen?: number } = {}): Buffer {
  const opts: Buffer[] = [];
  if (o.name !== undefined) opts.push(option(2, Buffer.from(o.name), le));
  if (o.tsresol !== undefined) opts.push(option(9, Buffer.from([o.tsresol]), le));
  if (opts.length) opts.push(Buffer.alloc(4)); // opt_endofopt
  return block(1, Buffer.concat([u16(link, le), u16(0, le), u32(o.snaplen ?? 0, le), ...opts]), le);
}

/** An enhanced packet block of interface `iface`; the time in the interface's units. */
export function epb(iface: number, p: FilePacket, le: boolean, unitsPerUs = 1): Buffer {
  const units = BigInt(Math.round(p.tsUs)) * BigInt(unitsPerUs);
  return block(6, Buffer.concat([u32(iface, le), u32(Number(units >> 32n), le), u32(Number(units & 0xffffffffn), le),
    u32(p.data.length, le), u32(p.data.length, le), pad4(p.data)]), le);
}

export function spb(data: Buffer, le: boolean): Buffer {
  return block(3, Buffer.concat([u32(data.length, le), pad4(data)]), le);
}

/** A one-interface pcapng file of these packets. */
export function pcapngFile(link: number, packets: FilePacket[], o: { le?: boolean; name?: string; nano?: boolean } = {}): Buffer {
  const le = o.le ?? true;
  return Buffer.concat([shb(le), idb(link, le, { name: o.name, tsresol: o.nano ? 9 : undefined }),
    ...packets.map((p) => epb(0, p, le, o.nano ? 1000 : 1))]);
}
