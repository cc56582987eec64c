/**
 * Time as a capture file tells it: now is the latest packet time read so far (never going back), and
 * timers fire when file time passes their deadline (advance), not when the wall clock does. Reading a
 * file is so deterministic: a request waits for its answer as long in file time as it would have live.
 */
import type { ResponseTimers } from '../pipeline/calls.js';

const noop = (): void => undefined;
/** Cancelled timers in the heap before it may be compacted. */
const MIN_COMPACT = 64;

interface Timer { due: number; seq: number; fn: () => void; cancelled: boolean }

export class FileClock implements ResponseTimers {
  private t: number | null = null;
  private seq = 0;
  /** A binary min-heap by (due, seq). */
  private heap: Timer[] = [];
  /** Cancelled timers still in the heap. */
  private cancelled = 0;

  constructor(private readonly before: () => number = Date.now) {}

  /** Milliseconds since the epoch: the latest file time seen (the wall clock before the first packet). */
  now(): number {
    return this.t ?? this.before();
  }

  set(fn: () => void, ms: number): unknown {
    const timer: Timer = { due: this.now() + ms, seq: this.seq++, fn, cancelled: false };
    this.push(timer);
    return timer;
  }

  clear(handle: unknown): void {
    const timer = handle as Timer;
    if (timer.cancelled) return;
    timer.cancelled = true;
    timer.fn = noop; // what it would have called is not kept until its deadline
    // Nor the timer itself: once most of the heap is cancelled timers, they are dropped (a request
    // answered at once would otherwise stay here for its whole wait, thousands of them in a busy file).
    if (++this.cancelled >= MIN_COMPACT && this.cancelled * 2 > this.heap.length) this.compact();
  }

  /** File time is now atMs (ignored when earlier than now): the timers due by then fire, in order. */
  advance(atMs: number): void {
    if (this.t !== null && atMs <= this.t) return;
    this.t = atMs;
    while (this.heap.length > 0 && this.heap[0].due <= atMs) {
      const timer = this.pop();
      if (timer.cancelled) this.cancelled--;
      else {
        timer.cancelled = true; // out of the heap: clearing it now (from its own callback) counts nothing
        timer.fn();
      }
    }
  }

  /** Timers still waiting (cancelled ones may be counted until their deadline passes). */
  get pending(): number {
    return this.heap.length;
  }

  /** The heap without its cancelled timers: sorted by (due, seq), which is a heap too. */
  private compact(): void {
    this.heap = this.heap.filter((t) => !t.cancelled).sort((a, b) => a.due - b.due || a.seq - b.seq);
    this.cancelled = 0;
  }

  private less(a: Timer, b: Timer): boolean {
    return a.due < b.due || (a.due === b.due && a.seq < b.seq);
  }

  private push(x: Timer): void {
    const h = this.heap;
    h.push(x);
    let i = h.length - 1;
    while (i > 0) {
      const up = (i - 1) >> 1;
      if (!this.less(h[i], h[up])) break;
      const t = h[i]; h[i] = h[up]; h[up] = t;
      i = up;
    }
  }

  private pop(): Timer {
    const h = this.heap;
    const top = h[0];
    const last = h.pop()!;
    if (h.length > 0) {
      h[0] = last;
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        const r = l + 1;
        let m = i;
        if (l < h.length && this.less(h[l], h[m])) m = l;
        if (r < h.length && this.less(h[r], h[m])) m = r;
        if (m === i) break;
        const t = h[i]; h[i] = h[m]; h[m] = t;
        i = m;
      }
    }
    return top;
  }
}
