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
  private walking: Promise<void> | null = null;

  constructor(private readonly maxDirs = 20_000) {}

  /** The path of cgroup id if already known (no I/O). */
  cached(id: string): string | null {
    return this.cache.get(id) ?? null;
  }

  /** Learnt elsewhere (from /proc/<pid>/cgroup of a live caller with this cgroup id). */
  remember(id: string, path: string): void {
    if (this.cache.size < this.maxDirs) this.cache.set(id, path);
  }

  /**
   * The path of cgroup id, which existed at existedAtMs. The tree is walked again on a miss only if
   * the last walk began before that time (a cgroup made since then), so a burst of misses costs one walk.
   */
  async path(id: string, existedAtMs = Date.now()): Promise<string | null> {
    const hit = this.cache.get(id);
    if (hit !== undefined) return hit;
    if (this.walking) await this.walking;
    if (!this.cache.has(id) && this.lastWalk <= existedAtMs) {
      this.walking = this.walk().finally(() => { this.walking = null; });
      await this.walking;
    }
    return this.cache.get(id) ?? null;
  }

  private async walk(): Promise<void> {
    this.lastWalk = Date.now();
    if (this.root === undefined) {
      this.root = cgroup2Mount(await readFile('/proc/self/mountinfo', 'utf8').catch(() => ''));
      if (!this.root) {
        // No cgroup2 mount in this mount namespace (e.g. under `ip netns exec`, which mounts its own
        // /sys): walk init's, through its root.
        const init = cgroup2Mount(await readFile('/proc/1/mountinfo', 'utf8').catch(() => ''));
        this.root = init ? join('/proc/1/root', init) : null;
      }
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
