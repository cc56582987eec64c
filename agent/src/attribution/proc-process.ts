/** Reading one process's identity from /proc: argv, exe, user, cgroup, and its ancestors. */
import { readFile, readlink } from 'node:fs/promises';
import type { Ancestor, ProcessInfo } from '../record.js';
import { parseCgroup, parseCmdline, parsePasswd, parseStatus, sessionGroup } from './proc-parse.js';

export class UserNames {
  private names = new Map<number, string>();
  private loading: Promise<void> | null = null;
  private loadedAt = 0;

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

/** Everything /proc tells of pid, or null if it is gone. */
export async function readProcess(pid: number, ancestorDepth: number, users: UserNames,
  procRoot = '/proc'): Promise<Omit<ProcessInfo, 'attribution'> | null> {
  const [status, cmdline, exe, cgroup] = await Promise.all([
    tryRead(`${procRoot}/${pid}/status`), tryRead(`${procRoot}/${pid}/cmdline`),
    tryLink(`${procRoot}/${pid}/exe`), tryRead(`${procRoot}/${pid}/cgroup`),
  ]);
  if (!status) return null;
  const st = parseStatus(status.toString('utf8'));
  const cg = parseCgroup(cgroup ? cgroup.toString('utf8') : '');
  return {
    pid, comm: st.name, exe, argv: cmdline ? parseCmdline(cmdline) : [], uid: st.uid,
    user: await users.name(st.uid), ppid: st.ppid,
    ancestors: await readAncestors(st.ppid, ancestorDepth, procRoot),
    cgroup: cg.path, container: cg.container, systemd_unit: cg.systemdUnit,
    ...sessionGroup(cg.systemdUnit, cg.path),
  };
}

export async function readAncestors(ppid: number, depth: number, procRoot = '/proc'): Promise<Ancestor[]> {
  const out: Ancestor[] = [];
  let pid = ppid;
  while (pid > 0 && out.length < depth) {
    const status = await tryRead(`${procRoot}/${pid}/status`);
    if (!status) break;
    const st = parseStatus(status.toString('utf8'));
    const cmdline = await tryRead(`${procRoot}/${pid}/cmdline`);
    out.push({ pid, comm: st.name, argv: cmdline ? parseCmdline(cmdline) : null });
    pid = st.ppid;
  }
  return out;
}
