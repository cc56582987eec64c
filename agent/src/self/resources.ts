/**
 * The agent's own CPU and memory for the stats record, sampled with pidusage in the background (the
 * stats record is built synchronously). cpu_percent is the CPU time used between two stats records
 * over the wall time between them (100 = one core), to within one sample period. Memory also from
 * /proc: the RSS of the agent with its helper processes (the capture helper, the eBPF loader: its
 * children), and its anonymous RSS (its own memory, without the pages of the node binary and the
 * libraries it maps, which are shared and which the kernel can reclaim).
 */
import { readdir, readFile } from 'node:fs/promises';
import pidusage from 'pidusage';

export interface Sample {
  /** ms since the epoch. */
  timestamp: number;
  /** CPU time (user + system) used since the process started, ms. */
  ctime: number;
  /** Process age at the sample, ms. */
  elapsed: number;
  rss: number;
  /** RSS of the process and its children, bytes (from /proc; absent where it cannot be read). */
  rssTree?: number;
  /** The process's anonymous RSS (RssAnon), bytes. */
  rssAnon?: number;
}

/** VmRSS and RssAnon of a /proc/<pid>/status text, bytes; null where the text does not say. Pure. */
export function statusMemory(text: string): { rss: number | null; anon: number | null } {
  const kb = (name: string): number | null => {
    const m = new RegExp(`^${name}:\\s+(\\d+) kB$`, 'm').exec(text);
    return m ? Number(m[1]) * 1024 : null;
  };
  return { rss: kb('VmRSS'), anon: kb('RssAnon') };
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
  fields(): { cpu_percent: number; rss_bytes: number; rss_tree_bytes?: number; rss_anon_bytes?: number } | Record<string, never> {
    const cur = this.latest;
    if (!cur) return {};
    if (cur !== this.reported) {
      this.lastPercent = cpuPercent(this.reported, cur);
      this.reported = cur;
    }
    return {
      cpu_percent: this.lastPercent, rss_bytes: cur.rss,
      ...(cur.rssTree !== undefined ? { rss_tree_bytes: cur.rssTree } : {}),
      ...(cur.rssAnon !== undefined ? { rss_anon_bytes: cur.rssAnon } : {}),
    };
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    if (this.measure === pidusageSample) pidusage.clear(); // closes the /proc file it keeps open
  }
}

async function pidusageSample(pid: number): Promise<Sample> {
  const [s, m] = await Promise.all([pidusage(pid), treeMemory(pid).catch(() => null)]);
  return {
    timestamp: s.timestamp, ctime: s.ctime, elapsed: s.elapsed, rss: s.memory,
    ...(m?.tree != null ? { rssTree: m.tree } : {}), ...(m?.anon != null ? { rssAnon: m.anon } : {}),
  };
}

const readText = (path: string): Promise<string | null> => readFile(path, 'utf8').catch(() => null);

/**
 * The RSS of pid and of its children (listed per thread in /proc/<pid>/task/<tid>/children), and
 * pid's anonymous RSS; tree null where the kernel does not list children (CONFIG_PROC_CHILDREN).
 */
async function treeMemory(pid: number): Promise<{ tree: number | null; anon: number | null }> {
  const own = statusMemory(await readText(`/proc/${pid}/status`) ?? '');
  const tids = await readdir(`/proc/${pid}/task`).catch(() => [] as string[]);
  const lists = await Promise.all(tids.map((t) => readText(`/proc/${pid}/task/${t}/children`)));
  if (own.rss === null || lists.every((l) => l === null)) return { tree: null, anon: own.anon };
  const children = new Set(lists.flatMap((l) => (l ?? '').split(' ').filter(Boolean)));
  const theirs = await Promise.all([...children].map(async (c) => statusMemory(await readText(`/proc/${c}/status`) ?? '').rss ?? 0));
  return { tree: theirs.reduce((a, b) => a + b, own.rss), anon: own.anon };
}
