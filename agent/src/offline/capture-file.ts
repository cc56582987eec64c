/**
 * Capture files (pcap and pcapng, as `tcpdump -w` and `dumpcap` write them), decoded into packets.
 * Bytes in, packets out (one by one, so a large file is never held as objects). The bytes are a
 * buffer, or a file read a window at a time (CaptureBytes.file: memory bounded by the window and the
 * largest record, whatever the file's size).
 *
 * pcap: either byte order, microsecond (a1b2c3d4) and nanosecond (a1b23c4d) magic.
 * pcapng: section header blocks of either byte order (several sections may follow each other),
 * interface description blocks (link type, if_name, if_tsresol, if_tsoffset), enhanced and simple
 * packet blocks; other blocks are skipped as the format says.
 *
 * A file that is not a capture, or whose structure breaks, throws CaptureFileError at the start; a
 * file that ends inside a record yields every packet before it and says where it was cut. A
 * non-blocking pipe with nothing to read yet yields NOTHING_YET: the reader waits, then asks again.
 */
import { readSync } from 'node:fs';

/** The link type names decodeFrame (wire/packet.ts) knows, by LINKTYPE_ value. */
const LINK_TYPES: Record<number, string> = {
  0: 'NULL', 1: 'ETHERNET', 12: 'RAW', 14: 'RAW', 101: 'RAW', 108: 'NULL', 113: 'LINKTYPE_LINUX_SLL',
  228: 'RAW', 229: 'RAW', 276: 'LINUX_SLL2',
};

/** The link type name a LINKTYPE_ value is decoded as; `LINKTYPE_<n>` (undecodable) for the rest. */
export function linkTypeName(n: number): string {
  return LINK_TYPES[n] ?? `LINKTYPE_${n}`;
}

export interface CapturedPacket {
  /** The frame as captured (possibly cut at the snap length). */
  data: Buffer;
  /** Link type name as decodeFrame takes it. */
  link: string;
  /** Capture time in microseconds since the epoch; null when the file has none (pcapng simple packet block). */
  tsUs: number | null;
  /** The interface's name as the file gives it (pcapng if_name), else null. */
  ifName: string | null;
}

export interface CaptureSummary {
  format: 'pcap' | 'pcapng';
  packets: number;
  /** Where and why the file stopped before its end (truncated or broken there); null when read to its end. */
  cut: { offset: number; why: string; truncated: boolean } | null;
  /** pcapng blocks skipped: neither packets nor interfaces (statistics, name resolution, …). */
  skippedBlocks: number;
  /** pcapng packets skipped: of an interface the section never described (a broken file). */
  orphanPackets: number;
}

export class CaptureFileError extends Error {}

/**
 * What capturePackets yields in place of a packet when the capture is a non-blocking pipe with nothing
 * to read yet: the caller waits (its event loop free for signals), then asks for the next packet again.
 */
export const NOTHING_YET: unique symbol = Symbol('nothing to read yet');

const PCAP_US = 0xa1b2c3d4;
const PCAP_NS = 0xa1b23c4d;
const SHB = 0x0a0d0d0a;
const BOM = 0x1a2b3c4d;
/** A record larger than this is not a packet: the file is broken there. */
const MAX_RECORD = 64 * 1024 * 1024;
/**
 * Bytes of the window a file is read into (a new one when a record does not fit in what is left). A window stays in memory
 * until the garbage collector finds no packet left in it, so a few are held at once: measured on a
 * 265 MiB pcap (`read --include-v2`, shipped V8 flags), 16 MiB windows peak at 170 MiB RSS and cost
 * 1.03x the CPU of reading the file whole (386 MiB); 4 and 8 MiB windows peak lower (~140) at 1.16x.
 */
export const CAPTURE_WINDOW_BYTES = 16 * 1024 * 1024;

/**
 * The bytes of a capture: `buf` holds bytes [base, base + buf.length) of it. A whole buffer, or a file
 * read a window at a time: ensure() makes the bytes a record needs present. Reads go into the
 * window's free room (a pipe gives a little at a time, so its packets come out as they arrive); when
 * a record does not fit in what is left, its bytes move to a new window and the old one is let go
 * (packets already handed out keep their own view of it).
 */
export class CaptureBytes {
  /** The capture's bytes from base on, as far as they are read: window[lo, hi). */
  buf: Buffer;
  /** Where buf starts in the capture. */
  base = 0;
  /** Why the file could not be read further (an I/O error), or null. */
  error: string | null = null;
  /** The last ensure() stopped short: the source has nothing to read yet (a non-blocking pipe). Ask again later. */
  blocked = false;
  private eof: boolean;
  private window: Buffer;
  private lo = 0;
  private hi: number;

  private constructor(buf: Buffer, private readonly read: ((into: Buffer, at: number) => number) | null,
    private readonly windowBytes: number) {
    this.buf = buf;
    this.window = buf;
    this.hi = buf.length;
    this.eof = read === null;
  }

  /** A capture held whole in memory. */
  static of(buf: Buffer): CaptureBytes {
    return new CaptureBytes(buf, null, 0);
  }

  /**
   * A capture file (or pipe), read from its descriptor a window at a time. A non-blocking descriptor
   * with nothing to read yet makes ensure() stop short (`blocked`), not wait.
   */
  static file(fd: number, windowBytes = CAPTURE_WINDOW_BYTES): CaptureBytes {
    return CaptureBytes.reading((into, at) => readNow(fd, into, at), windowBytes);
  }

  /**
   * A capture read a window at a time by read(into, at): bytes into into[at…], how many (0 at its end,
   * -1 when there is nothing to read yet: `blocked`); throws on an I/O error.
   */
  static reading(read: (into: Buffer, at: number) => number, windowBytes = CAPTURE_WINDOW_BYTES): CaptureBytes {
    return new CaptureBytes(Buffer.alloc(0), read, windowBytes);
  }

  /**
   * At least `need` bytes from buf[off] on, if the capture has them (fewer at its end, or after a
   * read error: `error`). buf may be replaced: returns off's place in it.
   */
  ensure(off: number, need: number): number {
    this.blocked = false;
    if (off + need <= this.buf.length || this.eof) return off;
    if (this.lo + off + need > this.window.length) {
      const next = Buffer.allocUnsafe(Math.max(this.windowBytes, need));
      this.hi = this.window.copy(next, 0, this.lo + off, this.hi);
      this.window = next;
      this.lo = 0;
      this.base += off;
      off = 0;
    }
    try {
      while (this.hi < this.lo + off + need) {
        const got = this.read!(this.window, this.hi);
        if (got === 0) { this.eof = true; break; }
        if (got < 0) { this.blocked = true; break; }
        this.hi += got;
      }
    } catch (err) {
      this.error = (err as Error).message;
      this.eof = true;
    }
    this.buf = this.window.subarray(this.lo, this.hi);
    return off;
  }
}

/** readSync into into[at…]; -1 when a non-blocking descriptor (a pipe) has nothing yet (EAGAIN), not an error. */
function readNow(fd: number, into: Buffer, at: number): number {
  try {
    return readSync(fd, into, at, into.length - at, null);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EAGAIN') return -1;
    throw err;
  }
}
const NO_WAKE = new Int32Array(new SharedArrayBuffer(4));

/** Every packet of the file, through a callback; the summary at the end. A pipe with nothing yet is waited on here. */
export function readCapture(bytes: Buffer | CaptureBytes, onPacket: (p: CapturedPacket) => void): CaptureSummary {
  const it = capturePackets(bytes);
  for (let r = it.next(); ; r = it.next()) {
    if (r.done) return r.value;
    if (r.value === NOTHING_YET) Atomics.wait(NO_WAKE, 0, 0, 10); // 10 ms, then again
    else onPacket(r.value);
  }
}

/**
 * The packets of the capture, one by one (the data a view of its bytes); returns the summary. Throws
 * CaptureFileError on the first next() when the bytes are not a capture (or the file cannot be read).
 */
export function* capturePackets(bytes: Buffer | CaptureBytes): Generator<CapturedPacket | typeof NOTHING_YET, CaptureSummary> {
  const w = bytes instanceof CaptureBytes ? bytes : CaptureBytes.of(bytes);
  for (w.ensure(0, 24); w.blocked; w.ensure(0, 24)) yield NOTHING_YET;
  const buf = w.buf;
  if (w.error !== null) throw new CaptureFileError(w.error);
  if (buf.length < 4) throw new CaptureFileError(`not a pcap or pcapng file (${buf.length} bytes)`);
  const m = buf.readUInt32LE(0);
  if (m === SHB) return yield* readPcapng(w);
  if (m === PCAP_US || m === PCAP_NS || buf.readUInt32BE(0) === PCAP_US || buf.readUInt32BE(0) === PCAP_NS) {
    return yield* readPcap(w);
  }
  throw new CaptureFileError(`not a pcap or pcapng file (starts with 0x${buf.subarray(0, 4).toString('hex')})`);
}

function* readPcap(w: CaptureBytes): Generator<CapturedPacket | typeof NOTHING_YET, CaptureSummary> {
  let buf = w.buf;
  const le = buf.readUInt32LE(0) === PCAP_US || buf.readUInt32LE(0) === PCAP_NS;
  const u32 = (o: number): number => (le ? buf.readUInt32LE(o) : buf.readUInt32BE(o));
  const nano = u32(0) === PCAP_NS;
  const sum: CaptureSummary = { format: 'pcap', packets: 0, cut: null, skippedBlocks: 0, orphanPackets: 0 };
  if (buf.length < 24) {
    throw new CaptureFileError(`pcap file header cut short (${buf.length} of 24 bytes)`);
  }
  const link = linkTypeName(u32(20) & 0xffff);
  let off = 24;
  for (;;) {
    off = w.ensure(off, 16);
    buf = w.buf;
    if (w.blocked) { yield NOTHING_YET; continue; } // asked again from the record's start
    if (endsAt(w, off, sum, 'next record header')) break;
    if (buf.length - off < 16) {
      sum.cut = cutAt(w, off, `record header cut short (${buf.length - off} of 16 bytes)`);
      break;
    }
    const sec = u32(off);
    const frac = u32(off + 4);
    const incl = u32(off + 8);
    if (incl > MAX_RECORD) {
      sum.cut = { offset: w.base + off, truncated: false, why: `record of ${incl} bytes: not a packet, the file is broken here` };
      break;
    }
    off = w.ensure(off, 16 + incl);
    buf = w.buf;
    if (w.blocked) { yield NOTHING_YET; continue; }
    if (buf.length - off - 16 < incl) {
      sum.cut = cutAt(w, off, `packet ${sum.packets + 1} cut short (${buf.length - off - 16} of ${incl} bytes)`);
      break;
    }
    yield {
      data: buf.subarray(off + 16, off + 16 + incl), link, ifName: null,
      tsUs: sec * 1e6 + (nano ? frac / 1000 : frac),
    };
    sum.packets++;
    off += 16 + incl;
  }
  return sum;
}

/** Whether the capture ends at off (no byte there); when a read error ended it, that is the summary's cut. */
function endsAt(w: CaptureBytes, off: number, sum: CaptureSummary, what: string): boolean {
  if (off < w.buf.length) return false;
  if (w.error !== null) sum.cut = cutAt(w, off, `${what} unread`);
  return true;
}

/** The capture ends at off before a record's end: cut short (truncated), or a read error there (broken). */
function cutAt(w: CaptureBytes, off: number, why: string): NonNullable<CaptureSummary['cut']> {
  return w.error === null ? { offset: w.base + off, truncated: true, why }
    : { offset: w.base + off, truncated: false, why: `cannot be read further: ${w.error}` };
}

interface Iface { link: string; name: string | null; snaplen: number;
  /** Timestamp units per second, as a divisor to microseconds: units / perUs; and the offset in seconds. */
  unitsPerSecond: number; offsetS: number }

function* readPcapng(w: CaptureBytes): Generator<CapturedPacket | typeof NOTHING_YET, CaptureSummary> {
  const sum: CaptureSummary = { format: 'pcapng', packets: 0, cut: null, skippedBlocks: 0, orphanPackets: 0 };
  let le = true;
  let ifaces: Iface[] = [];
  let off = 0;
  let buf = w.buf;
  const u32 = (o: number): number => (le ? buf.readUInt32LE(o) : buf.readUInt32BE(o));
  const u16 = (o: number): number => (le ? buf.readUInt16LE(o) : buf.readUInt16BE(o));
  const stop = (why: string, truncated: boolean): void => {
    if (w.base + off === 0) throw new CaptureFileError(`pcapng ${why}`);
    sum.cut = truncated ? cutAt(w, off, why) : { offset: w.base + off, why, truncated };
  };
  for (;;) {
    off = w.ensure(off, 12);
    buf = w.buf;
    if (w.blocked) { yield NOTHING_YET; continue; } // asked again from the block's start
    if (endsAt(w, off, sum, 'next block header')) break;
    if (buf.length - off < 12) { stop(`block header cut short (${buf.length - off} of 12 bytes)`, true); break; }
    const type = buf.readUInt32LE(off); // SHB's type reads the same in both orders
    if (type === SHB) {
      const bom = buf.readUInt32LE(off + 8);
      if (bom === BOM) le = true;
      else if (buf.readUInt32BE(off + 8) === BOM) le = false;
      else { stop(`section header with a bad byte-order magic (0x${bom.toString(16)})`, false); break; }
      ifaces = [];
    } else if (w.base + off === 0) {
      throw new CaptureFileError('not a pcapng file (no section header block)');
    }
    const len = u32(off + 4);
    if (len < 12 || len % 4 !== 0 || len > MAX_RECORD) { stop(`block of length ${len}: not a block, the file is broken here`, false); break; }
    off = w.ensure(off, len);
    buf = w.buf;
    if (w.blocked) { yield NOTHING_YET; continue; }
    if (buf.length - off < len) { stop(`block ${blockName(u32(off))} cut short (${buf.length - off} of ${len} bytes)`, true); break; }
    if (u32(off + len - 4) !== len) { stop(`block at ${w.base + off}: its trailing length does not match (${u32(off + len - 4)} vs ${len})`, false); break; }
    const body = off + 8;
    const end = off + len - 4;
    switch (u32(off)) {
      case SHB: break;
      case 1: { // interface description block
        if (end - body < 8) { stop('interface description block too short', false); break; }
        const iface: Iface = { link: linkTypeName(u16(body)), name: null, snaplen: u32(body + 4), unitsPerSecond: 1e6, offsetS: 0 };
        for (const [code, o, l] of options(buf, body + 8, end, u16)) {
          if (code === 2) iface.name = buf.toString('utf8', o, o + l).replace(/\0+$/, '') || null;
          else if (code === 9 && l >= 1) {
            const r = buf[o];
            iface.unitsPerSecond = r & 0x80 ? 2 ** (r & 0x7f) : 10 ** r;
          } else if (code === 14 && l >= 8) {
            iface.offsetS = Number(le ? buf.readBigInt64LE(o) : buf.readBigInt64BE(o));
          }
        }
        ifaces.push(iface);
        break;
      }
      case 6: { // enhanced packet block
        if (end - body < 20) { stop('enhanced packet block too short', false); break; }
        const iface = ifaces[u32(body)];
        const incl = u32(body + 12);
        if (body + 20 + incl > end) { stop(`enhanced packet block at ${w.base + off}: ${incl} bytes do not fit in it`, false); break; }
        if (!iface) { sum.orphanPackets++; break; }
        yield { data: buf.subarray(body + 20, body + 20 + incl), link: iface.link, ifName: iface.name,
          tsUs: timestampUs(iface, u32(body + 4), u32(body + 8)) };
        sum.packets++;
        break;
      }
      case 3: { // simple packet block: no time, interface 0, captured length from the block and snap length
        const iface = ifaces[0];
        if (!iface || end - body < 4) { sum.orphanPackets++; break; }
        const orig = u32(body);
        let incl = Math.min(orig, end - body - 4);
        if (iface.snaplen > 0) incl = Math.min(incl, iface.snaplen);
        yield { data: buf.subarray(body + 4, body + 4 + incl), link: iface.link, ifName: iface.name, tsUs: null };
        sum.packets++;
        break;
      }
      default:
        sum.skippedBlocks++;
    }
    if (sum.cut) break;
    off += len;
  }
  return sum;
}

/** The options of a block body, [code, value offset, value length], until opt_endofopt or the end. */
function* options(buf: Buffer, from: number, end: number, u16: (o: number) => number): Generator<[number, number, number]> {
  let o = from;
  while (o + 4 <= end) {
    const code = u16(o);
    const l = u16(o + 2);
    if (code === 0 || o + 4 + l > end) return;
    yield [code, o + 4, l];
    o += 4 + Math.ceil(l / 4) * 4;
  }
}

function timestampUs(iface: Iface, high: number, low: number): number {
  const units = high * 4294967296 + low;
  if (iface.unitsPerSecond === 1e6) return units + iface.offsetS * 1e6;
  if (units <= Number.MAX_SAFE_INTEGER) return (units / iface.unitsPerSecond) * 1e6 + iface.offsetS * 1e6;
  // Nanoseconds since 1970 need 61 bits: whole seconds exactly, then the fraction.
  const big = (BigInt(high) << 32n) | BigInt(low);
  const per = BigInt(iface.unitsPerSecond);
  const sec = big / per;
  const rest = big % per;
  return (Number(sec) + iface.offsetS) * 1e6 + (Number(rest) / iface.unitsPerSecond) * 1e6;
}

function blockName(type: number): string {
  return ({ 1: 'interface description', 3: 'simple packet', 6: 'enhanced packet' } as Record<number, string>)[type] ?? `type ${type}`;
}
