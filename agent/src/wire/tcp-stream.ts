/**
 * One direction of a TCP connection, reassembled into an in-order byte stream. Pure and bounded:
 * retransmitted and duplicated bytes (the same segment captured on two interfaces) are delivered once,
 * out-of-order segments wait (up to a bound) for the gap to fill, and a gap that never fills is
 * reported with onGap() so the parser above can resynchronise instead of guessing.
 */
export interface StreamSink {
  onData(bytes: Buffer): void;
  onGap(): void;
}

export interface StreamLimits {
  maxOutOfOrderSegments: number;
  maxBufferedBytes: number;
}

/** Signed distance a - b in 32-bit sequence space. */
export function seqDiff(a: number, b: number): number {
  return ((a - b) | 0);
}

export class TcpStream {
  private next: number | null = null;
  private pending = new Map<number, Buffer>();
  private pendingBytes = 0;
  /** Counters for stats: bytes dropped as duplicates, gaps given up on. */
  duplicateBytes = 0;
  gaps = 0;

  constructor(private readonly sink: StreamSink, private readonly limits: StreamLimits) {}

  /** Bytes held out of order, waiting for a gap to fill. */
  get buffered(): number {
    return this.pendingBytes;
  }

  /** The SYN (or SYN-ACK) fixes the initial sequence number: data starts at isn + 1. */
  onSyn(isn: number): void {
    if (this.next === null) this.next = (isn + 1) >>> 0;
  }

  onSegment(seq: number, payload: Buffer): void {
    if (payload.length === 0) return;
    if (this.next === null) this.next = seq; // picked up mid-stream: start here
    const d = seqDiff(seq, this.next);
    if (d > 0) {
      this.hold(seq, payload);
      return;
    }
    if (d < 0) {
      const skip = -d;
      if (skip >= payload.length) {
        this.duplicateBytes += payload.length;
        return;
      }
      this.duplicateBytes += skip;
      payload = payload.subarray(skip);
    }
    this.deliver(payload);
    this.drain();
  }

  private deliver(bytes: Buffer): void {
    this.next = ((this.next as number) + bytes.length) >>> 0;
    this.sink.onData(bytes);
  }

  private hold(seq: number, payload: Buffer): void {
    const existing = this.pending.get(seq);
    if (existing && existing.length >= payload.length) {
      this.duplicateBytes += payload.length;
      return;
    }
    if (existing) this.pendingBytes -= existing.length;
    this.pending.set(seq, payload);
    this.pendingBytes += payload.length;
    if (this.pending.size > this.limits.maxOutOfOrderSegments
      || this.pendingBytes > this.limits.maxBufferedBytes) {
      this.skipGap();
    }
  }

  /** Give up on the missing bytes: jump to the lowest held segment and tell the sink. */
  private skipGap(): void {
    let lowest: number | null = null;
    for (const s of this.pending.keys()) {
      if (lowest === null || seqDiff(s, lowest) < 0) lowest = s;
    }
    if (lowest === null) return;
    this.gaps++;
    this.sink.onGap();
    this.next = lowest;
    this.drain();
  }

  private drain(): void {
    for (let progressed = true; progressed && this.pending.size > 0;) {
      progressed = false;
      for (const [s, buf] of this.pending) {
        const d = seqDiff(s, this.next as number);
        if (d > 0) continue;
        this.pending.delete(s);
        this.pendingBytes -= buf.length;
        progressed = true;
        if (-d < buf.length) this.deliver(buf.subarray(-d));
        else this.duplicateBytes += buf.length;
      }
    }
  }
}
