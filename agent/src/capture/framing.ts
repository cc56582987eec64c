/**
 * Frames between the capture worker and the agent: [u8 type][u32 length BE][payload]. Type 1 is the
 * link type (ASCII) once capture is open, type 2 a captured frame. Pure.
 */
export const FRAME_OPEN = 1;
export const FRAME_PACKET = 2;
const HEADER = 5;
/** Larger than any frame the snap length allows: a longer record means the stream is corrupt. */
export const MAX_RECORD = 262_144;

export function encodeRecord(type: number, payload: Buffer): Buffer {
  const out = Buffer.allocUnsafe(HEADER + payload.length);
  out[0] = type;
  out.writeUInt32BE(payload.length, 1);
  payload.copy(out, HEADER);
  return out;
}

export class RecordReader {
  private buf: Buffer = Buffer.alloc(0);

  /** Complete records in chunk (and what was held back); throws on a corrupt stream. */
  push(chunk: Buffer): Array<{ type: number; payload: Buffer }> {
    this.buf = this.buf.length ? Buffer.concat([this.buf, chunk]) : chunk;
    const out: Array<{ type: number; payload: Buffer }> = [];
    let off = 0;
    while (this.buf.length - off >= HEADER) {
      const type = this.buf[off];
      const len = this.buf.readUInt32BE(off + 1);
      if ((type !== FRAME_OPEN && type !== FRAME_PACKET) || len > MAX_RECORD) {
        throw new Error(`capture worker stream corrupt (type ${type}, length ${len})`);
      }
      if (this.buf.length - off < HEADER + len) break;
      out.push({ type, payload: this.buf.subarray(off + HEADER, off + HEADER + len) });
      off += HEADER + len;
    }
    this.buf = this.buf.subarray(off);
    return out;
  }
}
