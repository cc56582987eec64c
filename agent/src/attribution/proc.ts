/**
 * /proc attribution: TCP 4-tuple → socket inode (/proc/<pid>/net/tcp{,6}, read once per network
 * namespace) → the process holding that inode (/proc/<pid>/fd) → its identity. Lookups that arrive
 * together are answered by one scan. A caller that has already exited cannot be found this way;
 * it is then reported as not found, never guessed.
 */
import { readdir, readFile, readlink } from 'node:fs/promises';
import type { ProcessInfo } from '../record.js';
import { parseNetTcp, unmapV4 } from './proc-parse.js';
import { readProcess, UserNames } from './proc-process.js';

export interface Tuple {
  client: string;
  cport: number;
  server: string;
  sport: number;
  /** The client's initial sequence number when the wire saw its SYN (joins NATed connections). */
  isn?: number | null;
}

export interface Attributor {
  /** The process behind a connection first seen at atMs (default: now). */
  lookup(t: Tuple, atMs?: number): Promise<ProcessInfo>;
}

const tupleKey = (t: Tuple): string => `${unmapV4(t.client)}|${t.cport}|${unmapV4(t.server)}|${t.sport}`;

export class ProcAttributor implements Attributor {
  private batch = new Map<string, { tuple: Tuple; waiters: Array<(p: ProcessInfo) => void> }>();
  private scheduled = false;
  private readonly users = new UserNames();
  scans = 0;

  constructor(private readonly ancestors: number, private readonly procRoot = '/proc') {}

  lookup(t: Tuple): Promise<ProcessInfo> {
    return new Promise((resolve) => {
      const k = tupleKey(t);
      const entry = this.batch.get(k) ?? { tuple: t, waiters: [] };
      entry.waiters.push(resolve);
      this.batch.set(k, entry);
      if (!this.scheduled) {
        this.scheduled = true;
        setImmediate(() => void this.run());
      }
    });
  }

  private async run(): Promise<void> {
    const batch = this.batch;
    this.batch = new Map();
    this.scheduled = false;
    let found = new Map<string, number>();
    let reason = 'socket not found in /proc (the process had exited or closed it)';
    try {
      found = await this.scan([...batch.keys()]);
    } catch (err) {
      reason = `/proc scan failed: ${(err as Error).message}`;
    }
    for (const [k, { waiters }] of batch) {
      const pid = found.get(k);
      let info: ProcessInfo = { attribution: 'none', reason };
      if (pid !== undefined) {
        const p = await readProcess(pid, this.ancestors, this.users, this.procRoot);
        info = p ? { attribution: 'proc', ...p } : { attribution: 'none', reason: 'process exited during lookup' };
      }
      for (const w of waiters) w(info);
    }
  }

  /** tuple keys → pid holding the socket. */
  private async scan(keys: string[]): Promise<Map<string, number>> {
    this.scans++;
    const pids = (await readdir(this.procRoot)).filter((d) => /^\d+$/.test(d)).map(Number);
    const byNs = new Map<string, number[]>();
    await Promise.all(pids.map(async (pid) => {
      const ns = await readlink(`${this.procRoot}/${pid}/ns/net`).catch(() => null);
      if (ns === null) return;
      const list = byNs.get(ns);
      if (list) list.push(pid); else byNs.set(ns, [pid]);
    }));
    const wanted = new Set(keys);
    const inodeToKey = new Map<number, string>();
    const nsToScan: number[][] = [];
    for (const members of byNs.values()) {
      const inodes = await this.inodesIn(members[0], wanted);
      if (inodes.size === 0) continue;
      for (const [ino, k] of inodes) inodeToKey.set(ino, k);
      nsToScan.push(members);
    }
    const result = new Map<string, number>();
    for (const members of nsToScan) {
      await Promise.all(members.map(async (pid) => {
        const fds = await readdir(`${this.procRoot}/${pid}/fd`).catch(() => [] as string[]);
        for (const fd of fds) {
          const link = await readlink(`${this.procRoot}/${pid}/fd/${fd}`).catch(() => '');
          const m = /^socket:\[(\d+)\]$/.exec(link);
          if (!m) continue;
          const k = inodeToKey.get(Number(m[1]));
          if (k !== undefined && !result.has(k)) result.set(k, pid);
        }
      }));
    }
    return result;
  }

  private async inodesIn(pid: number, wanted: Set<string>): Promise<Map<number, string>> {
    const out = new Map<number, string>();
    for (const file of ['tcp', 'tcp6']) {
      const text = await readFile(`${this.procRoot}/${pid}/net/${file}`, 'utf8').catch(() => '');
      for (const e of parseNetTcp(text)) {
        const k = `${unmapV4(e.local)}|${e.lport}|${unmapV4(e.remote)}|${e.rport}`;
        if (wanted.has(k) && e.inode !== 0) out.set(e.inode, k);
      }
    }
    return out;
  }
}
