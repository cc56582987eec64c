/**
 * A kernel connect event turned into the record's process description: what the kernel saw at
 * connect time (pid, uid, argv, parents' names, cgroup id) completed from /proc while the process
 * may still be there (exe, parents' argv), and from the cgroup id when it is not.
 */
import { readFile, readlink } from 'node:fs/promises';
import type { ConnectEvent } from '../ebpf/events.js';
import type { Ancestor, ProcessInfo } from '../record.js';
import type { CgroupPaths } from './cgroup-paths.js';
import { containerFromCgroup, parseCgroup, parseCmdline, unitFromCgroup } from './proc-parse.js';
import { readAncestors, type UserNames } from './proc-process.js';

async function cmdline(pid: number): Promise<string[] | null> {
  const b = await readFile(`/proc/${pid}/cmdline`).catch(() => null);
  return b && b.length ? parseCmdline(b) : null;
}

export async function processFromEvent(e: ConnectEvent, depth: number, users: UserNames,
  cgroups: CgroupPaths, atMs = Date.now()): Promise<ProcessInfo> {
  const pid = e.tgid;
  const [exe, cg, liveArgv] = await Promise.all([
    readlink(`/proc/${pid}/exe`).catch(() => null),
    readFile(`/proc/${pid}/cgroup`, 'utf8').catch(() => null),
    e.argvError || e.argvTruncated || e.argv.length === 0 ? cmdline(pid) : Promise.resolve(null),
  ]);
  const ancestors: Ancestor[] = await Promise.all(e.ancestors.slice(0, depth).map(async (a) => ({
    pid: a.pid, comm: a.comm, argv: await cmdline(a.pid),
  })));
  const last = e.ancestors.at(-1);
  if (ancestors.length < depth && ancestors.length === e.ancestors.length && last && last.pid > 1) {
    const status = await readFile(`/proc/${last.pid}/status`, 'utf8').catch(() => '');
    const ppid = Number(/^PPid:\s*(\d+)/m.exec(status)?.[1] ?? 0);
    ancestors.push(...await readAncestors(ppid, depth - ancestors.length));
  }
  let cgroup = cg ? parseCgroup(cg).path : null;
  if (!cgroup || (cgroup === '/' && e.cgroupId !== '1')) cgroup = (await cgroups.path(e.cgroupId, atMs)) ?? cgroup;
  const info: ProcessInfo = {
    attribution: 'ebpf', pid, comm: e.comm, exe, argv: liveArgv ?? e.argv, uid: e.uid,
    user: await users.name(e.uid), ppid: e.ppid, ancestors, cgroup,
    container: cgroup ? containerFromCgroup(cgroup) : null,
    systemd_unit: cgroup ? unitFromCgroup(cgroup) : null,
  };
  if (e.argvTruncated && !liveArgv) info.argv_truncated = true;
  return info;
}
