/**
 * Backoff, in one place: restarting a helper process (the capture helper, the eBPF loader) and
 * retrying CloudWatch Logs. Pure: time and randomness are passed in.
 */

/**
 * Exponential backoff: base·2^attempt capped at max; with jitter (times a factor in [0.5, 1)) when
 * random is given.
 */
export function backoffMs(attempt: number, baseMs: number, maxMs: number, random?: number): number {
  const exp = Math.min(maxMs, baseMs * 2 ** Math.min(attempt, 30));
  return random === undefined ? exp : Math.round(exp * (0.5 + random / 2));
}

/**
 * Restarts of a helper process: the first at once, then base, 2·base, … (capped) while restarts keep
 * failing; a process that ran for stableMs or longer makes the next restart immediate again.
 */
export class RestartBackoff {
  /** Restarts since the process last ran for stableMs: 0 means the next one is at once. */
  private failures = 0;

  constructor(private readonly baseMs: number, private readonly maxMs: number, private readonly stableMs: number) {}

  /** The process ended after running ranMs. */
  ended(ranMs: number): void {
    if (ranMs >= this.stableMs) this.failures = 0;
  }

  /** The delay before the next start (counted as one more restart). */
  next(): number {
    const delay = this.failures === 0 ? 0 : backoffMs(this.failures - 1, this.baseMs, this.maxMs);
    this.failures++;
    return delay;
  }
}
