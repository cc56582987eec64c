/**
 * The agent's own IMDS requests, by version. The agent must never call IMDSv1 (its AWS SDK has the
 * v1 fallback turned off, its own look-ups are IMDSv2 only): if it ever does, that is a bug worth an
 * `error` record, not only a counter. Pure.
 */
export class SelfCalls {
  v1 = 0;
  v2 = 0;
  private alarms = 0;

  constructor(private readonly maxAlarms = 10) {}

  /** Count one own request; returns the message of the error record to write, if any. */
  count(version: 'v1' | 'v2' | null, method: string, path: string): string | null {
    if (version === 'v2') this.v2++;
    if (version !== 'v1') return null;
    this.v1++;
    if (this.alarms >= this.maxAlarms) return null;
    this.alarms++;
    const more = this.alarms === this.maxAlarms ? '; further ones are only counted in stats.calls_self_v1' : '';
    return `the agent itself made an IMDSv1 call (${method} ${path}); it must only use IMDSv2: please report this${more}`;
  }
}
