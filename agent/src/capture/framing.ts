/**
 * Records from a capture process (native/imds_capture, or worker.ts) to the agent, framed as the
 * eBPF loader's are (include/imds_frame.h): [u32 type][u32 size of the whole record], little endian,
 * then the payload. Type 1 OPEN: the link type name; type 2 PACKET: [u64 BE capture
 * time in µs since the epoch][frame]; type 3 STATS: [u32 received][u32 dropped][u32 if-dropped]
 * [u32 dropped by the helper's full output queue]. Pure.
 */
export const FRAME_OPEN = 1;
export const FRAME_PACKET = 2;
export const FRAME_STATS = 3;
/** The shared frame header (include/imds_frame.h): {u32 type, u32 size}, pinned by test/ebpf/events.test.ts. */
export const FRAME_HEADER = { size: 8, type: [0, 4], recordSize: [4, 4] } as const;
const HEADER = FRAME_HEADER.size;
/** Larger than any frame the snap length allows: a longer record means the stream is corrupt. */
export const MAX_RECORD = 262_144;

export function encodeRecord(type: number, payload: Buffer): Buffer {
  const out = Buffer.allocUnsafe(HEADER + payload.length);
  out.writeUInt32LE(type, FRAME_HEADER.type[0]);
  out.writeUInt32LE(HEADER + payload.length, FRAME_HEADER.recordSize[0]);
  payload.copy(out, HEADER);
  return out;
}

const EMPTY = Buffer.alloc(0);

export class RecordReader {
  private buf: Buffer = EMPTY;

  /** Complete records in chunk (and what was held back); throws on a corrupt stream. */
  push(chunk: Buffer): Array<{ type: number; payload: Buffer }> {
    this.buf = this.buf.length ? Buffer.concat([this.buf, chunk]) : chunk;
    const out: Array<{ type: number; payload: Buffer }> = [];
    let off = 0;
    while (this.buf.length - off >= HEADER) {
      const type = this.buf.readUInt32LE(off + FRAME_HEADER.type[0]);
      const size = this.buf.readUInt32LE(off + FRAME_HEADER.recordSize[0]);
      const len = size - HEADER;
      if (type < FRAME_OPEN || type > FRAME_STATS || size < HEADER || len > MAX_RECORD || (type === FRAME_PACKET && len < 8)) {
        throw new Error(`capture worker stream corrupt (type ${type}, size ${size})`);
      }
      if (this.buf.length - off < HEADER + len) break;
      out.push({ type, payload: this.buf.subarray(off + HEADER, off + HEADER + len) });
      off += HEADER + len;
    }
    this.buf = off === this.buf.length ? EMPTY : this.buf.subarray(off);
    return out;
  }
}

/** A PACKET payload: capture time (µs since the epoch) and the frame. */
export function packetPayload(tsUs: bigint, frame: Buffer): Buffer {
  const out = Buffer.allocUnsafe(8 + frame.length);
  out.writeBigUInt64BE(tsUs, 0);
  frame.copy(out, 8);
  return out;
}

export function splitPacket(payload: Buffer): { tsUs: number; frame: Buffer } {
  return { tsUs: packetTime(payload), frame: packetFrame(payload) };
}

/** A PACKET payload's capture time, µs since the epoch (as Number(readBigUInt64BE(0)), without making a BigInt). */
export function packetTime(payload: Buffer): number {
  return payload.readUInt32BE(0) * 0x1_0000_0000 + payload.readUInt32BE(4);
}

/** A PACKET payload's frame (a view of it). */
export function packetFrame(payload: Buffer): Buffer {
  return payload.subarray(8);
}

export interface CaptureStats {
  received: number;
  dropped: number;
  ifDropped: number;
  /** Dropped by the helper itself when its output queue (16 MiB) was full. */
  queueDropped: number;
}

export function parseStats(payload: Buffer): CaptureStats {
  return {
    received: payload.readUInt32BE(0), dropped: payload.readUInt32BE(4), ifDropped: payload.readUInt32BE(8),
    queueDropped: payload.length >= 16 ? payload.readUInt32BE(12) : 0,
  };
}
