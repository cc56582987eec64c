/**
 * The capture helper's records (native/imds_capture, worker.ts) in the framing both helpers share:
 * [u32 type][u32 size of the whole record] little endian, then the payload. Pure.
 */
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import {
  CorruptStreamError, encodeRecord, FRAME_OPEN, FRAME_PACKET, FRAME_STATS, packetPayload, packetTime, parseStats, RecordReader, splitPacket,
} from '../../agent/src/capture/framing.js';

describe('capture framing', () => {
  it('writes the header little endian, size counting the whole record', () => {
    const r = encodeRecord(FRAME_OPEN, Buffer.from('ETHERNET'));
    expect([...r.subarray(0, 8)]).toEqual([1, 0, 0, 0, 16, 0, 0, 0]);
    expect(r.subarray(8).toString()).toBe('ETHERNET');
  });

  it('reads back every record, however the stream is cut into chunks', () => {
    const frame = (n: number) => Buffer.alloc(n, n & 0xff);
    fc.assert(fc.property(fc.array(fc.integer({ min: 0, max: 300 }), { maxLength: 8 }), fc.array(fc.integer({ min: 1, max: 50 })),
      (sizes, cuts) => {
        const stats = Buffer.alloc(16);
        stats.writeUInt32BE(7, 0);
        const recs = [encodeRecord(FRAME_OPEN, Buffer.from('LINUX_SLL2')),
          ...sizes.map((n, i) => encodeRecord(FRAME_PACKET, packetPayload(BigInt(1_700_000_000_000_000 + i), frame(n)))),
          encodeRecord(FRAME_STATS, stats)];
        const all = Buffer.concat(recs);
        const reader = new RecordReader();
        const got: Array<{ type: number; payload: Buffer }> = [];
        const visit = (type: number, buf: Buffer, start: number, end: number) => got.push({ type, payload: buf.subarray(start, end) });
        let off = 0;
        for (const c of [...cuts, all.length]) {
          if (off >= all.length) break;
          reader.push(all.subarray(off, off + c), visit);
          off += c;
        }
        expect(got.map((g) => g.type)).toEqual([FRAME_OPEN, ...sizes.map(() => FRAME_PACKET), FRAME_STATS]);
        expect(got[0].payload.toString()).toBe('LINUX_SLL2');
        got.slice(1, -1).forEach((g, i) => {
          const p = splitPacket(g.payload);
          expect(p.tsUs).toBe(1_700_000_000_000_000 + i);
          expect(p.frame.equals(frame(sizes[i]))).toBe(true);
        });
        expect(parseStats(got.at(-1)!.payload).received).toBe(7);
      }));
  });

  it('reads a capture time as the u64 it is, rounded as Number(BigInt) rounds it past 2^53', () => {
    fc.assert(fc.property(fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }), (t) => {
      const p = packetPayload(t, Buffer.alloc(0));
      expect(packetTime(p)).toBe(Number(t));
    }), { numRuns: 2000 });
    expect(packetTime(packetPayload(1_764_000_000_123_456n, Buffer.alloc(0)))).toBe(1_764_000_000_123_456);
  });

  it('a corrupt stream is an error, not a silent skip; the records before it are handed on', () => {
    const bad = Buffer.alloc(8);
    bad.writeUInt32LE(9, 0);
    bad.writeUInt32LE(8, 4);
    const types: number[] = [];
    const visit = (type: number) => types.push(type);
    const open = encodeRecord(FRAME_OPEN, Buffer.from('EN10MB'));
    expect(() => new RecordReader().push(Buffer.concat([open, bad]), visit)).toThrow(CorruptStreamError);
    expect(types).toEqual([FRAME_OPEN]);
    expect(() => new RecordReader().push(bad, visit)).toThrow(/corrupt \(type 9, size 8\)/);
    const short = Buffer.alloc(8);
    short.writeUInt32LE(FRAME_OPEN, 0);
    short.writeUInt32LE(4, 4); // smaller than its own header
    expect(() => new RecordReader().push(short, visit)).toThrow(/corrupt/);
    // A header cut in two is checked once it is whole.
    const reader = new RecordReader();
    reader.push(bad.subarray(0, 3), visit);
    expect(() => reader.push(bad.subarray(3), visit)).toThrow(CorruptStreamError);
  });

  it('copies only a record cut by a chunk\'s end: the next chunk\'s own records are views of that chunk', () => {
    const packet = (n: number) => encodeRecord(FRAME_PACKET, packetPayload(BigInt(n), Buffer.alloc(100, n)));
    const stream = Buffer.concat([packet(1), packet(2), packet(3)]);
    const first = stream.subarray(0, 150); // packet 1, and the start of packet 2
    const second = Buffer.alloc(stream.length - 150); // the rest of packet 2, then packet 3: memory of its own
    stream.copy(second, 0, 150);
    const seen: Array<{ ts: number; inSecond: boolean; fill: number }> = [];
    const reader = new RecordReader();
    const visit = (_type: number, buf: Buffer, start: number, end: number) =>
      seen.push({ ts: packetTime(buf, start), inSecond: buf.buffer === second.buffer, fill: buf[end - 1] });
    reader.push(first, visit);
    reader.push(second, visit);
    expect(seen.map((s) => s.ts)).toEqual([1, 2, 3]);
    expect(seen.map((s) => s.fill)).toEqual([1, 2, 3]);
    expect(seen[2].inSecond).toBe(true);
    expect(seen[1].inSecond).toBe(false);
  });
});
