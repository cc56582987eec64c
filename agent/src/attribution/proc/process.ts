/** Reading one process's identity from /proc: argv, exe, user, cgroup, and its ancestors. */
import { closeSync, openSync, readSync } from 'node:fs';
import { open, readFile, readlink } from 'node:fs/promises';
import { DEFAULTS } from '../../defaults.js';
import type { Ancestor, ProcessInfo } from '../../record.js';
import { parseCgroup, parseCmdlineBounded, parsePasswd, parseStatus, sessionGroup } from './parse.js';

export class UserNames {
  private names = new Map<number, string>();
  private loading: Promise<void> | null = null;
  private loadedAt = 0;

  /** The user name of uid when it is known without reading /etc/passwd again; undefined otherwise. */
  known(uid: number): string | undefined {
    return this.names.get(uid);
  }

  /** The user name of uid from /etc/passwd (re-read at most every 5 s when a uid is unknown). */
  async name(uid: number): Promise<string | null> {
    if (!this.names.has(uid) && (this.loading || Date.now() - this.loadedAt > 5000)) {
      this.loading ??= this.load();
      await this.loading;
    }
    return this.names.get(uid) ?? null;
  }

  private async load(): Promise<void> {
    try {
      this.names = parsePasswd(await readFile('/etc/passwd', 'utf8'));
    } catch { /* no passwd: names stay unknown */ }
    this.loadedAt = Date.now();
    this.loading = null;
  }
}

async function tryRead(path: string): Promise<Buffer | null> {
  try {
    return await readFile(path);
  } catch {
    return null;
  }
}

async function tryLink(path: string): Promise<string | null> {
  try {
    return await readlink(path);
  } catch {
    return null;
  }
}

/** The first n bytes of a file (fewer at its end), or null when it cannot be read. */
async function readHead(path: string, n: number): Promise<Buffer | null> {
  let fh;
  try {
    fh = await open(path, 'r');
    const buf = Buffer.alloc(n);
    let got = 0;
    while (got < n) {
      const { bytesRead } = await fh.read(buf, got, n - got, null);
      if (bytesRead === 0) break;
      got += bytesRead;
    }
    return buf.subarray(0, got);
  } catch {
    return null;
  } finally {
    await fh?.close().catch(() => undefined);
  }
}

/** The same, synchronously (one open/read/close: the eBPF path's small reads). */
export function readHeadSync(path: string, n: number): Buffer | null {
  let fd = -1;
  try {
    fd = openSync(path, 'r');
    const buf = Buffer.alloc(n);
    let got = 0;
    while (got < n) {
      const r = readSync(fd, buf, got, n - got, null);
      if (r === 0) break;
      got += r;
    }
    return buf.subarray(0, got);
  } catch {
    return null;
  } finally {
    if (fd >= 0) closeSync(fd);
  }
}

/**
 * A process's argv from /proc, bounded like the kernel's (DEFAULTS.argvMaxBytes): a 300 KB class
 * path is cut, never read whole. null when it cannot be read.
 */
export async function readArgv(pid: number, procRoot = '/proc',
  maxBytes: number = DEFAULTS.argvMaxBytes): Promise<{ argv: string[]; truncated: boolean } | null> {
  const head = await readHead(`${procRoot}/${pid}/cmdline`, maxBytes + 1);
  return head ? parseCmdlineBounded(head, maxBytes) : null;
}

/** Everything /proc tells of pid, or null if it is gone. */
export async function readProcess(pid: number, ancestorDepth: number, users: UserNames,
  procRoot = '/proc'): Promise<Omit<ProcessInfo, 'attribution'> | null> {
  const [status, cmdline, exe, cgroup] = await Promise.all([
    tryRead(`${procRoot}/${pid}/status`), readArgv(pid, procRoot),
    tryLink(`${procRoot}/${pid}/exe`), tryRead(`${procRoot}/${pid}/cgroup`),
  ]);
  if (!status) return null;
  const st = parseStatus(status.toString('utf8'));
  const cg = parseCgroup(cgroup ? cgroup.toString('utf8') : '');
  const info: Omit<ProcessInfo, 'attribution'> = {
    pid, comm: st.name, exe, argv: cmdline ? cmdline.argv : [], uid: st.uid,
    user: await users.name(st.uid), ppid: st.ppid,
    ancestors: await readAncestors(st.ppid, ancestorDepth, procRoot),
    cgroup: cg.path, container: cg.container, systemd_unit: cg.systemdUnit,
    ...sessionGroup(cg.systemdUnit, cg.path),
  };
  if (cmdline?.truncated) info.argv_truncated = true;
  return info;
}

export async function readAncestors(ppid: number, depth: number, procRoot = '/proc'): Promise<Ancestor[]> {
  const out: Ancestor[] = [];
  let pid = ppid;
  while (pid > 0 && out.length < depth) {
    const status = await tryRead(`${procRoot}/${pid}/status`);
    if (!status) break;
    const st = parseStatus(status.toString('utf8'));
    const cmdline = await readArgv(pid, procRoot);
    const a: Ancestor = { pid, comm: st.name, argv: cmdline ? cmdline.argv : null };
    if (cmdline?.truncated) a.argv_truncated = true;
    out.push(a);
    pid = st.ppid;
  }
  return out;
}
