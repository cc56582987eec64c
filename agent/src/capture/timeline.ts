/**
 * When capture could not see: the intervals it was down (the capture process had died and was not
 * back yet) and the moments libpcap or the helper dropped packets. Asked why a connection the kernel
 * saw never showed on the wire. Pure (times are passed in), bounded (old intervals are forgotten).
 */
import type { WireReason } from '../record.js';

export type { WireReason };

interface Interval {
  from: number;
  to: number | null;
}

export class CaptureTimeline {
  private readonly gaps: Interval[] = [];
  private readonly drops: Interval[] = [];
  private downAt: number | null = null;
  /** Gaps that ended, and their total time (the current one is added by gapMs()). */
  count = 0;
  private endedMs = 0;

  /**
   * gapSlackMs: kernel and capture clocks differ a little; dropSlackMs: drop counters are read about
   * once a second, so a drop is placed within a second of the reading that showed it.
   */
  constructor(private readonly gapSlackMs = 250, private readonly dropSlackMs = 1000,
    private readonly keepMs = 10 * 60_000, private readonly max = 1000) {}

  /**
   * Capture stopped at atMs; what it had not handed over since lostFromMs is lost with it (packets
   * queued in the dead process), so connections from lostFromMs on fall in the gap.
   */
  down(atMs: number, lostFromMs = atMs): void {
    if (this.downAt !== null) return;
    this.downAt = atMs;
    this.gaps.push({ from: Math.min(lostFromMs, atMs), to: null });
    this.trim(this.gaps, atMs);
  }

  /** Capture is back; returns how long it was down (ms), or null if it was not down. */
  up(atMs: number): number | null {
    if (this.downAt === null) return null;
    const ms = Math.max(0, atMs - this.downAt);
    const open = this.gaps.at(-1);
    if (open && open.to === null) open.to = atMs;
    this.downAt = null;
    this.count++;
    this.endedMs += ms;
    return ms;
  }

  /** Capture was closed for good at atMs (the agent is stopping): not a gap, but nothing is seen after it. */
  closed(atMs: number): void {
    this.closedAt = atMs;
  }

  private closedAt: number | null = null;

  /** Packets were dropped between fromMs and toMs (two readings of the drop counters). */
  dropped(fromMs: number, toMs: number): void {
    this.drops.push({ from: fromMs, to: toMs });
    this.trim(this.drops, toMs);
  }

  get isDown(): boolean {
    return this.downAt !== null;
  }

  /** Number of gaps, the current one included. */
  gapCount(): number {
    return this.count + (this.downAt === null ? 0 : 1);
  }

  /** Total time capture was down, the current gap included up to nowMs. */
  gapMs(nowMs: number): number {
    return Math.round(this.endedMs + (this.downAt === null ? 0 : Math.max(0, nowMs - this.downAt)));
  }

  /** Why a connection that began at tMs was not on the wire, from what the agent knows. */
  reasonAt(tMs: number): WireReason {
    const within = (slack: number) => (i: Interval): boolean => tMs >= i.from - slack && (i.to === null || tMs <= i.to + slack);
    if (this.gaps.some(within(this.gapSlackMs))) return 'capture_gap';
    // Between two readings that showed drops, a connection came before the close, whatever the slack.
    if (this.drops.some(within(0))) return 'capture_dropped';
    if (this.closedAt !== null && tMs >= this.closedAt - this.gapSlackMs) return 'capture_gap';
    if (this.drops.some(within(this.dropSlackMs))) return 'capture_dropped';
    return 'not_captured';
  }

  /**
   * Why a connection the wire showed from fromMs on carried no request: capture was down, or dropping,
   * at some moment until toMs; null when capture was fine all along (then it simply sent none).
   */
  reasonDuring(fromMs: number, toMs: number): WireReason | null {
    const overlaps = (slack: number) => (i: Interval): boolean => i.from - slack <= toMs && (i.to === null || i.to + slack >= fromMs);
    if (this.gaps.some(overlaps(this.gapSlackMs))) return 'capture_gap';
    if (this.drops.some(overlaps(0))) return 'capture_dropped';
    if (this.closedAt !== null && this.closedAt <= toMs) return 'capture_gap';
    if (this.drops.some(overlaps(this.dropSlackMs))) return 'capture_dropped';
    return null;
  }

  private trim(list: Interval[], nowMs: number): void {
    while (list.length > this.max || (list.length > 1 && list[0].to !== null && nowMs - list[0].to > this.keepMs)) list.shift();
  }
}
