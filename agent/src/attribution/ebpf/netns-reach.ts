/**
 * Which network namespaces can the agent's capture see? Its own, and those linked to it: a veth
 * whose peer is one of the agent's interfaces (a container behind a bridge, a pod), or a
 * macvlan/ipvlan on one of them. A namespace with no such link (another lab, a VPN sandbox, a
 * second agent's test namespace) sends nothing the wire here shows, so its kernel connect events
 * can never be joined: the kernel is told to drop them (counted in stats.kernel.events_filtered).
 *
 * The pure part compares `ip -j link show` listings; the I/O part lists namespaces from
 * /proc/PID/ns/net and /run/netns, and lists each one's links with `nsenter --net=... ip -j link`
 * (netlink: no sysfs remount needed). Links are only followed one hop from the agent's namespace.
 */
import { execFile } from 'node:child_process';
import { readdirSync, readlinkSync, statSync } from 'node:fs';

export interface NetLink {
  ifindex: number;
  ifname: string;
  /** IFLA_LINK: the peer (veth) or lower device (macvlan, ipvlan) ifindex, maybe in another namespace */
  link_index?: number;
  /** present when that link is in another namespace */
  link_netnsid?: number;
  /** `linkinfo.info_kind` of `ip -d`: veth, macvlan, ipvlan, bridge, ... */
  kind?: string;
}

/** `ip -j link show` output -> links; throws on anything that is not its JSON. */
export function parseIpLinks(json: string): NetLink[] {
  const v = JSON.parse(json) as unknown;
  if (!Array.isArray(v)) throw new Error('ip -j link: not a JSON array');
  type Raw = { ifindex: number; ifname?: unknown; link_index?: unknown; link_netnsid?: unknown; linkinfo?: { info_kind?: unknown } };
  return v.filter((l): l is Raw => !!l && typeof l === 'object' && typeof (l as Raw).ifindex === 'number')
    .map((l) => ({
      ifindex: l.ifindex, ifname: String(l.ifname ?? ''),
      ...(typeof l.link_index === 'number' ? { link_index: l.link_index } : {}),
      ...(typeof l.link_netnsid === 'number' ? { link_netnsid: l.link_netnsid } : {}),
      ...(typeof l.linkinfo?.info_kind === 'string' ? { kind: l.linkinfo.info_kind } : {}),
    }));
}

/**
 * Is a namespace with links `other` linked to the agent's namespace (links `own`)? One of its
 * interfaces must point, across namespaces, at one of ours: a veth at a veth of ours that points
 * back (interface indexes are per namespace, so the two-way check tells a pair from a coincidence),
 * or a macvlan/ipvlan (or a link of unknown kind) at one of our interfaces. A false "linked" only
 * filters less.
 */
export function linkedTo(own: readonly NetLink[], other: readonly NetLink[]): boolean {
  const byIndex = new Map(own.map((l) => [l.ifindex, l]));
  for (const l of other) {
    if (l.link_netnsid === undefined || l.link_index === undefined) continue;
    const o = byIndex.get(l.link_index);
    if (!o) continue;
    if (l.kind === 'veth' || o.kind === 'veth') {
      if (o.link_netnsid !== undefined && o.link_index === l.ifindex) return true;
    } else {
      return true;
    }
  }
  return false;
}

/** The inode of a `net:[4026531840]` link, or null. */
export function netnsInode(link: string): number | null {
  const m = /^net:\[(\d+)\]$/.exec(link);
  return m ? Number(m[1]) : null;
}

export function ownNetnsInode(): number | null {
  try { return netnsInode(readlinkSync('/proc/self/ns/net')); } catch { return null; }
}

/** Every network namespace that has a process or a /run/netns name: inode -> a path to enter it. */
export function listNetns(max: number, procRoot = '/proc', runNetns = '/run/netns'): Map<number, string> {
  const out = new Map<number, string>();
  let names: string[] = [];
  try { names = readdirSync(runNetns); } catch { /* none */ }
  for (const n of names) {
    if (out.size >= max) return out;
    try { out.set(statSync(`${runNetns}/${n}`).ino, `${runNetns}/${n}`); } catch { /* gone */ }
  }
  let pids: string[] = [];
  try { pids = readdirSync(procRoot).filter((p) => /^\d+$/.test(p)); } catch { /* no /proc */ }
  for (const p of pids) {
    if (out.size >= max) break;
    try {
      const ino = netnsInode(readlinkSync(`${procRoot}/${p}/ns/net`));
      if (ino !== null && !out.has(ino)) out.set(ino, `${procRoot}/${p}/ns/net`);
    } catch { /* gone, or a kernel thread */ }
  }
  return out;
}

function run(cmd: string, args: string[], timeoutMs: number): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(cmd, args, { timeout: timeoutMs, maxBuffer: 4 << 20 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`${cmd} ${args.join(' ')}: ${String(stderr).trim() || err.message}`));
      else resolve(stdout);
    });
  });
}

/** The links of the namespace at `path` (the agent's own when path is null). */
export async function readLinks(path: string | null, timeoutMs = 5000): Promise<NetLink[]> {
  const out = path === null
    ? await run('ip', ['-d', '-j', 'link', 'show'], timeoutMs)
    : await run('nsenter', [`--net=${path}`, 'ip', '-d', '-j', 'link', 'show'], timeoutMs);
  return parseIpLinks(out);
}

export type Verdict = 'keep' | 'drop';

/** What identifies a namespace's set of links for the reachability test. */
function linkSignature(links: readonly NetLink[]): string {
  return links.map((l) => `${l.ifindex}:${l.link_index ?? ''}:${l.link_netnsid ?? ''}`).sort().join(',');
}

/**
 * Verdicts for every namespace on the host, kept current: refresh() judges namespaces not seen
 * before and forgets those gone; judge() looks at one namespace now (an event came from it).
 */
export class NetnsReach {
  readonly verdicts = new Map<number, Verdict>();
  private ownLinks: NetLink[] | null = null;
  private readonly judging = new Map<number, Promise<Verdict | null>>();
  /** When a namespace that could not be entered was last tried (at most once a second each). */
  private readonly tried = new Map<number, number>();

  constructor(readonly own: number, private readonly o: {
    max: number;
    onVerdict(ino: number, v: Verdict | 'forget'): void;
    onError(message: string): void;
    list?: (max: number) => Map<number, string>;
    links?: (path: string | null) => Promise<NetLink[]>;
  }) {
    this.verdicts.set(own, 'keep');
  }

  private links(path: string | null): Promise<NetLink[]> {
    return (this.o.links ?? readLinks)(path);
  }

  /** Judge new namespaces, forget vanished ones; the agent's own links are read again each time. */
  async refresh(): Promise<void> {
    const before = this.ownLinks;
    try {
      this.ownLinks = await this.links(null);
    } catch (err) {
      this.o.onError(`cannot list this namespace's links: ${(err as Error).message}`);
      return;
    }
    // A namespace is often made before its link is (a container's sandbox, then its veth): when our
    // own links change, every namespace dropped so far is judged again.
    const relink = before !== null && linkSignature(before) !== linkSignature(this.ownLinks);
    const present = (this.o.list ?? listNetns)(this.o.max);
    for (const ino of [...this.verdicts.keys()]) {
      if (ino !== this.own && !present.has(ino)) {
        this.verdicts.delete(ino);
        this.o.onVerdict(ino, 'forget');
      }
    }
    for (const [ino, path] of present) {
      const v = this.verdicts.get(ino);
      if (v === undefined || (relink && v === 'drop')) await this.judgeAt(ino, path);
    }
  }

  /**
   * Judge one namespace now, entered through pid's /proc entry (or found by a scan); at most once a
   * second each, unless `again` (at exit: the last chance).
   */
  judge(ino: number, pid?: number, again = false): Promise<Verdict | null> {
    const known = this.verdicts.get(ino);
    if (known) return Promise.resolve(known);
    const now = Date.now();
    if (!again && now - (this.tried.get(ino) ?? -Infinity) < 1000) return Promise.resolve(null);
    if (this.tried.size >= this.o.max) this.tried.clear();
    this.tried.set(ino, now);
    let path: string | undefined;
    if (pid !== undefined) {
      try { if (netnsInode(readlinkSync(`/proc/${pid}/ns/net`)) === ino) path = `/proc/${pid}/ns/net`; } catch { /* gone */ }
    }
    path ??= (this.o.list ?? listNetns)(this.o.max).get(ino);
    if (!path) return Promise.resolve(null); // no process left in it: stays unknown (budgeted, not filtered)
    return this.judgeAt(ino, path);
  }

  private judgeAt(ino: number, path: string): Promise<Verdict | null> {
    const pending = this.judging.get(ino);
    if (pending) return pending;
    const p = (async (): Promise<Verdict | null> => {
      try {
        this.ownLinks ??= await this.links(null);
        const v: Verdict = linkedTo(this.ownLinks, await this.links(path)) ? 'keep' : 'drop';
        if (this.verdicts.size >= this.o.max && !this.verdicts.has(ino)) return null;
        this.verdicts.set(ino, v);
        this.o.onVerdict(ino, v);
        return v;
      } catch {
        return null; // gone meanwhile, or not enterable: stays unknown
      } finally {
        this.judging.delete(ino);
      }
    })();
    this.judging.set(ino, p);
    return p;
  }
}
