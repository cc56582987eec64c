/**
 * One direction of a TCP connection, reassembled into an in-order byte stream. Pure and bounded:
 * retransmitted and duplicated bytes (the same segment captured on two interfaces) are delivered once,
 * out-of-order segments wait (up to a bound) for the gap to fill, and a gap that never fills is
 * reported with onGap() so the parser above can resynchronise instead of guessing.
 *
 * The first copy of a byte is the one delivered, but it may not be the one the receiver kept (a copy
 * with a bad checksum, or one that expired on the way, is dropped there and the sender's next copy is
 * kept). So delivered bytes the receiver has not acknowledged yet are kept (bounded), every later copy
 * of them is compared, and a copy that differs is reported with onConflict(). Urgent data (the URG
 * flag), whose byte the receiver takes out of the stream, is reported with onUrgent().
 */
export interface StreamSink {
  onData(bytes: Buffer): void;
  onGap(): void;
  /** Bytes at this stream offset (counted over the bytes delivered) arrived again, different. */
  onConflict?(offset: number): void;
  /** The urgent byte sits at this stream offset (it may lie ahead of what was delivered). */
  onUrgent?(offset: number): void;
}

export interface StreamLimits {
  maxOutOfOrderSegments: number;
  maxBufferedBytes: number;
  /** Delivered, unacknowledged bytes kept to compare retransmissions with (default 16 KiB). */
  maxWindowBytes?: number;
}

/** Signed distance a - b in 32-bit sequence space. */
export function seqDiff(a: number, b: number): number {
  return ((a - b) | 0);
}

const DEFAULT_WINDOW = 16 * 1024;
/** The empty window (never written to: one for every stream). */
const EMPTY = Buffer.alloc(0);

export class TcpStream {
  private next: number | null = null;
  /** Segments held out of order by sequence number (made on the first one: most streams never need it). */
  private pending: Map<number, Buffer> | null = null;
  private pendingBytes = 0;
  /** Bytes delivered so far (the stream offset of `next`). */
  private delivered = 0;
  /** Delivered bytes not yet acknowledged by the receiver; window[0] is at sequence winSeq. */
  private window: Buffer = EMPTY;
  private winSeq = 0;
  /** Counters for stats: bytes dropped as duplicates, gaps given up on, conflicting copies, urgent data. */
  duplicateBytes = 0;
  gaps = 0;
  conflicts = 0;
  urgent = 0;

  constructor(private readonly sink: StreamSink, private readonly limits: StreamLimits) {}

  /** Bytes held: out of order, waiting for a gap to fill, and delivered but not yet acknowledged. */
  get buffered(): number {
    return this.pendingBytes + this.window.length;
  }

  /** Segments are held out of order (bytes before them are missing). */
  get holding(): boolean {
    return this.pending !== null && this.pending.size > 0;
  }

  /** The SYN (or SYN-ACK) fixes the initial sequence number: data starts at isn + 1. */
  onSyn(isn: number): void {
    if (this.next === null) {
      this.next = (isn + 1) >>> 0;
      this.winSeq = this.next;
    }
  }

  /** The receiver acknowledged everything before `ack`: those bytes need no comparing any more. */
  onAck(ack: number): void {
    if (this.window.length === 0) return;
    const d = seqDiff(ack, this.winSeq);
    if (d <= 0) return;
    if (d >= this.window.length) {
      this.window = EMPTY;
      this.winSeq = this.next as number;
      return;
    }
    this.window = this.window.subarray(d);
    this.winSeq = (this.winSeq + d) >>> 0;
  }

  /** The offset in the delivered stream of sequence number seq (relative to the current position). */
  private offsetOf(seq: number): number {
    return this.delivered + seqDiff(seq, this.next as number);
  }

  onSegment(seq: number, payload: Buffer, urgentPointer?: number): void {
    if (urgentPointer !== undefined) {
      if (this.next === null) { this.next = seq; this.winSeq = seq; }
      this.urgent++;
      this.sink.onUrgent?.(this.offsetOf((seq + (urgentPointer > 0 ? urgentPointer - 1 : 0)) >>> 0));
    }
    if (payload.length === 0) return;
    if (this.next === null) { this.next = seq; this.winSeq = seq; } // picked up mid-stream: start here
    const d = seqDiff(seq, this.next);
    if (d > 0) {
      this.hold(seq, payload);
      return;
    }
    if (d < 0) {
      const skip = -d;
      this.compare(seq, payload.subarray(0, Math.min(skip, payload.length)));
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

  /** A copy of bytes already delivered: does it say the same as the delivered ones still kept? */
  private compare(seq: number, copy: Buffer): void {
    const from = seqDiff(seq, this.winSeq);
    const a = Math.max(0, from);
    const b = Math.min(this.window.length, from + copy.length);
    for (let i = a; i < b; i++) {
      if (this.window[i] !== copy[i - from]) {
        this.conflict(this.offsetOf((this.winSeq + i) >>> 0));
        return;
      }
    }
  }

  private conflict(offset: number): void {
    this.conflicts++;
    this.sink.onConflict?.(offset);
  }

  private deliver(bytes: Buffer): void {
    const max = this.limits.maxWindowBytes ?? DEFAULT_WINDOW;
    if (max > 0) {
      // Delivered bytes are never written to (segments are copies of their own): kept as they are when alone.
      let w = this.window.length ? Buffer.concat([this.window, bytes]) : bytes;
      if (w.length > max) {
        this.winSeq = (this.winSeq + (w.length - max)) >>> 0;
        w = w.subarray(w.length - max);
      }
      this.window = w;
    } else {
      this.winSeq = (this.winSeq + bytes.length) >>> 0;
    }
    this.next = ((this.next as number) + bytes.length) >>> 0;
    this.delivered += bytes.length;
    this.sink.onData(bytes);
  }

  private hold(seq: number, payload: Buffer): void {
    this.pending ??= new Map();
    const existing = this.pending.get(seq);
    if (existing) {
      const n = Math.min(existing.length, payload.length);
      if (!existing.subarray(0, n).equals(payload.subarray(0, n))) {
        let i = 0;
        while (existing[i] === payload[i]) i++;
        this.conflict(this.offsetOf((seq + i) >>> 0));
      }
    }
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
    if (this.pending === null) return;
    let lowest: number | null = null;
    for (const s of this.pending.keys()) {
      if (lowest === null || seqDiff(s, lowest) < 0) lowest = s;
    }
    if (lowest === null) return;
    this.gaps++;
    this.sink.onGap();
    this.next = lowest;
    this.window = EMPTY;
    this.winSeq = lowest;
    this.drain();
  }

  private drain(): void {
    if (this.pending === null) return;
    for (let progressed = true; progressed && this.pending.size > 0;) {
      progressed = false;
      for (const [s, buf] of this.pending) {
        const d = seqDiff(s, this.next as number);
        if (d > 0) continue;
        this.pending.delete(s);
        this.pendingBytes -= buf.length;
        progressed = true;
        if (d < 0) this.compare(s, buf.subarray(0, Math.min(-d, buf.length)));
        if (-d < buf.length) this.deliver(buf.subarray(-d));
        else this.duplicateBytes += buf.length;
      }
    }
  }
}
