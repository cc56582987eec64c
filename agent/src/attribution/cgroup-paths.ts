/**
 * cgroup v2 id → path. The kernel gives the caller's cgroup id; the path (which names the container
 * or systemd unit) is the directory of that inode under the cgroup2 mount. The cgroup usually outlives
 * a short-lived caller, so this works after the caller exited. Bounded walk, cached.
 */
import { readdir, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';

export function cgroup2Mount(mountinfo: string): string | null {
  for (const line of mountinfo.split('\n')) {
    const [pre, post] = line.split(' - ');
    if (!post || !post.startsWith('cgroup2 ')) continue;
    return pre.split(' ')[4] ?? null;
  }
  return null;
}

export class CgroupPaths {
  private cache = new Map<string, string>();
  private root: string | null | undefined;
  private lastWalk = 0;

  constructor(private readonly maxDirs = 20_000) {}

  async path(id: string): Promise<string | null> {
    const hit = this.cache.get(id);
    if (hit !== undefined) return hit;
    if (Date.now() - this.lastWalk < 1000) return null; // a miss right after a walk: don't walk again
    await this.walk();
    return this.cache.get(id) ?? null;
  }

  private async walk(): Promise<void> {
    this.lastWalk = Date.now();
    if (this.root === undefined) {
      this.root = cgroup2Mount(await readFile('/proc/self/mountinfo', 'utf8').catch(() => ''));
    }
    if (!this.root) return;
    const next = new Map<string, string>();
    const queue: string[] = ['/'];
    while (queue.length && next.size < this.maxDirs) {
      const rel = queue.shift() as string;
      const abs = join(this.root, rel);
      const st = await stat(abs, { bigint: true }).catch(() => null);
      if (!st) continue;
      next.set(st.ino.toString(), rel);
      const entries = await readdir(abs, { withFileTypes: true }).catch(() => []);
      for (const e of entries) if (e.isDirectory()) queue.push(join(rel, e.name));
    }
    this.cache = next;
  }
}
