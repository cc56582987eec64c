/**
 * The agent's own CPU and memory for the stats record, sampled with pidusage in the background (the
 * stats record is built synchronously). cpu_percent is the CPU time used between two stats records
 * over the wall time between them (100 = one core), to within one sample period.
 */
import pidusage from 'pidusage';

export interface Sample {
  /** ms since the epoch. */
  timestamp: number;
  /** CPU time (user + system) used since the process started, ms. */
  ctime: number;
  /** Process age at the sample, ms. */
  elapsed: number;
  rss: number;
}

/** CPU % between two samples; from process start when there is no previous one. Pure. */
export function cpuPercent(prev: Sample | null, cur: Sample): number {
  const wall = prev ? cur.timestamp - prev.timestamp : cur.elapsed;
  const cpu = prev ? cur.ctime - prev.ctime : cur.ctime;
  if (wall <= 0) return 0;
  return Math.round((cpu / wall) * 100 * 100) / 100;
}

export class ResourceSampler {
  private latest: Sample | null = null;
  private reported: Sample | null = null;
  private lastPercent = 0;
  private timer: NodeJS.Timeout | null = null;

  constructor(private readonly pid = process.pid,
    private readonly measure: (pid: number) => Promise<Sample> = pidusageSample) {}

  start(periodMs: number): void {
    void this.sample();
    this.timer = setInterval(() => void this.sample(), periodMs);
    this.timer.unref();
  }

  async sample(): Promise<void> {
    try {
      this.latest = await this.measure(this.pid);
    } catch { /* keep the previous sample */ }
  }

  /** Fields for the stats record (nothing until the first sample). */
  fields(): { cpu_percent: number; rss_bytes: number } | Record<string, never> {
    const cur = this.latest;
    if (!cur) return {};
    if (cur !== this.reported) {
      this.lastPercent = cpuPercent(this.reported, cur);
      this.reported = cur;
    }
    return { cpu_percent: this.lastPercent, rss_bytes: cur.rss };
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    if (this.measure === pidusageSample) pidusage.clear(); // closes the /proc file it keeps open
  }
}

async function pidusageSample(pid: number): Promise<Sample> {
  const s = await pidusage(pid);
  return { timestamp: s.timestamp, ctime: s.ctime, elapsed: s.elapsed, rss: s.memory };
}
