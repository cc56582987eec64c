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

/** A stream that breaks the framing: the capture process is stopped, not read on. */
export class CorruptStreamError extends Error {}

/** Takes each complete record: its type, and its payload as bytes [start, end) of buf (a view, never written over). */
export type RecordVisitor = (type: number, buf: Buffer, start: number, end: number) => void;

const NOTHING = Buffer.alloc(0);

/** The size of the record whose header is at buf[at]; throws CorruptStreamError on a header no helper writes. */
function recordSize(buf: Buffer, at: number): number {
  const type = buf.readUInt32LE(at + FRAME_HEADER.type[0]);
  const size = buf.readUInt32LE(at + FRAME_HEADER.recordSize[0]);
  const len = size - HEADER;
  if (type < FRAME_OPEN || type > FRAME_STATS || size < HEADER || len > MAX_RECORD || (type === FRAME_PACKET && len < 8)) {
    throw new CorruptStreamError(`capture worker stream corrupt (type ${type}, size ${size})`);
  }
  return size;
}

/**
 * Cuts the capture process's stream into records. A chunk's complete records are handed on as views
 * of the chunk; only a record cut by the chunk's end is copied (its bytes so far, then the rest from
 * the next chunks, into a buffer of its own size), never the next chunk as a whole. No record is held
 * once it is complete, so what waits here is at most one unfinished record (MAX_RECORD).
 */
export class RecordReader {
  /** The unfinished record's bytes so far: its header (8 bytes) until that is whole, then the record's size. */
  private held: Buffer = NOTHING;
  private heldBytes = 0;

  /** Hands visit each record chunk completes, in order; throws CorruptStreamError on a corrupt stream. */
  push(chunk: Buffer, visit: RecordVisitor): void {
    let off = this.heldBytes > 0 ? this.finishHeld(chunk, visit) : 0;
    if (off < 0) return;
    while (chunk.length - off >= HEADER) {
      const size = recordSize(chunk, off);
      if (chunk.length - off < size) break;
      visit(chunk.readUInt32LE(off + FRAME_HEADER.type[0]), chunk, off + HEADER, off + size);
      off += size;
    }
    if (off < chunk.length) {
      const rest = chunk.length - off;
      this.held = Buffer.allocUnsafe(rest >= HEADER ? recordSize(chunk, off) : HEADER);
      this.heldBytes = chunk.copy(this.held, 0, off);
    }
  }

  /** Completes the held record from the head of chunk; returns where chunk's own records start, or -1 when chunk is used up. */
  private finishHeld(chunk: Buffer, visit: RecordVisitor): number {
    let off = 0;
    if (this.heldBytes < HEADER) {
      off = chunk.copy(this.held, this.heldBytes, 0, HEADER - this.heldBytes);
      this.heldBytes += off;
      if (this.heldBytes < HEADER) return -1;
      const whole = Buffer.allocUnsafe(recordSize(this.held, 0));
      this.held.copy(whole, 0, 0, HEADER);
      this.held = whole;
    }
    const copied = chunk.copy(this.held, this.heldBytes, off, off + this.held.length - this.heldBytes);
    this.heldBytes += copied;
    off += copied;
    if (this.heldBytes < this.held.length) return -1;
    const record = this.held;
    this.held = NOTHING;
    this.heldBytes = 0;
    visit(record.readUInt32LE(FRAME_HEADER.type[0]), record, HEADER, record.length);
    return off;
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

/** A PACKET payload's (at payload[at]) capture time, µs since the epoch (as Number(readBigUInt64BE(0)), without making a BigInt). */
export function packetTime(payload: Buffer, at = 0): number {
  return payload.readUInt32BE(at) * 0x1_0000_0000 + payload.readUInt32BE(at + 4);
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
