/**
 * A loss said where an operator looks (the journal, the log file): a counter of things lost (packets
 * the capture dropped, kernel events the eBPF loader lost) is read now and then; when it starts to
 * grow, one `began`; once it has not grown for quietMs, or when the source stops, one `ended` with how
 * many were lost and between which two readings. However long a loss lasts, it is two records.
 */

export interface LossSpellOptions {
  quietMs: number;
  began(): void;
  /** lost between fromMs (the reading before the first growth) and toMs (the reading that showed the last); stopped: said at the source's end. */
  ended(lost: number, fromMs: number, toMs: number, stopped: boolean): void;
}

export class LossSpell {
  private fromMs = 0;
  private lastMs = 0;
  private lost = 0;
  private quiet: NodeJS.Timeout | undefined;
  private on = false;

  constructor(private readonly o: LossSpellOptions) {}

  /** A reading at nowMs showed n more lost than the one at sinceMs. */
  grew(n: number, sinceMs: number, nowMs: number): void {
    if (n <= 0) return;
    if (!this.on) {
      this.on = true;
      this.fromMs = sinceMs;
      this.lost = 0;
      this.o.began();
    }
    this.lost += n;
    this.lastMs = nowMs;
    clearTimeout(this.quiet);
    this.quiet = setTimeout(() => this.end(false), this.o.quietMs);
    this.quiet.unref();
  }

  /** The source stopped (or quietMs passed): a loss under way is said to have ended. */
  end(stopped = true): void {
    clearTimeout(this.quiet);
    if (!this.on) return;
    this.on = false;
    this.o.ended(this.lost, this.fromMs, this.lastMs, stopped);
  }
}
