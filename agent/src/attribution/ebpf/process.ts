/**
 * A kernel connect event turned into the record's process description: what the kernel saw at
 * connect time (pid, uid, argv, executable path, parents' names, cgroup id) completed from /proc while
 * the process may still be there (parents' argv), and from the cgroup id when it is not.
 */
import { readFileSync, readlinkSync } from 'node:fs';
import type { ConnectEvent } from './events.js';
import type { Ancestor, ContainerInfo, ProcessInfo } from '../../record.js';
import type { CgroupPaths } from './cgroup-paths.js';
import { DEFAULTS } from '../../defaults.js';
import { containerFromCgroup, parseCgroup, parseCmdlineBounded, sessionGroup, unitFromCgroup } from '../proc/parse.js';
import { readAncestors, readHeadSync, type UserNames } from '../proc/process.js';

// Small /proc files are read synchronously: one open/read/close each, no thread-pool round trip
// (measured: the async reads cost ~1.5 ms of CPU per connection; see bench/RESULTS.md).
// argv is bounded as in the kernel (DEFAULTS.argvMaxBytes), never read whole.
function cmdline(pid: number): { argv: string[]; truncated: boolean } | null {
  const b = readHeadSync(`/proc/${pid}/cmdline`, DEFAULTS.argvMaxBytes + 1);
  return b && b.length ? parseCmdlineBounded(b, DEFAULTS.argvMaxBytes) : null;
}

function tryLink(path: string): string | null {
  try { return readlinkSync(path); } catch { return null; }
}

function tryText(path: string): string | null {
  try { return readFileSync(path, 'utf8'); } catch { return null; }
}

/**
 * Parents' argv by (pid, comm), kept for a few seconds: a script calling curl in a loop has the
 * same parents for every call. A reused pid comes back with another comm, or after the entry aged.
 */
type Argv = { argv: string[]; truncated: boolean };

export class AncestorCache {
  /** By pid (a number: no key text built per lookup); the comm it was read for is kept and compared. */
  private readonly m = new Map<number, { comm: string; argv: Argv | null; at: number }>();

  constructor(private readonly ttlMs = 5000, private readonly max = 4096) {}

  argv(pid: number, comm: string, now: number): Argv | null {
    const hit = this.m.get(pid);
    if (hit && hit.comm === comm && now - hit.at < this.ttlMs) return hit.argv;
    const argv = cmdline(pid);
    this.m.delete(pid);
    this.m.set(pid, { comm, argv, at: now });
    if (this.m.size > this.max) this.m.delete(this.m.keys().next().value as number);
    return argv;
  }
}

/** What a cgroup path says of its caller: container, systemd unit, session group. */
type CgroupFact = { container: ContainerInfo | null; unit: string | null; group: { systemd_unit_group?: string } };

/**
 * Container, systemd unit and session group per cgroup path (bounded, oldest first out): worked out
 * once per cgroup instead of once per connection (a handful of regular expressions each).
 */
export class CgroupFacts {
  private readonly m = new Map<string, CgroupFact>();

  constructor(private readonly max = DEFAULTS.maxCgroupFacts) {}

  of(cgroup: string): CgroupFact {
    const hit = this.m.get(cgroup);
    if (hit) return hit;
    const unit = unitFromCgroup(cgroup);
    const fact = { container: containerFromCgroup(cgroup), unit, group: sessionGroup(unit, cgroup) };
    this.m.set(cgroup, fact);
    if (this.m.size > this.max) this.m.delete(this.m.keys().next().value as string);
    return fact;
  }
}

/**
 * The executable: the path the kernel walked at connect time when it is whole (right even if the
 * caller exited or exec-ed since, and the same text for every run of a program); else /proc's link
 * while the caller lives; else the tail the kernel walked, marked truncated; else null.
 */
export function exeOf(e: ConnectEvent, readLink: (path: string) => string | null = tryLink):
  { exe: string | null; exeTruncated: boolean } {
  if (e.exe !== null && !e.exeTruncated) return { exe: e.exe, exeTruncated: false };
  const live = readLink(`/proc/${e.tgid}/exe`);
  if (live !== null) return { exe: live, exeTruncated: false };
  return { exe: e.exe, exeTruncated: e.exe !== null };
}

/**
 * The process description of the last event, handed out again for the next event whose description
 * is the same (a caller that connects again and again: the same pid, argv, parents, cgroup and user),
 * so the join table holds one description for all of them instead of one per event. Descriptions are
 * never changed after they are made (every record takes a copy: redactProcess, the names resolver).
 */
export class LastProcess {
  private info: ProcessInfo | null = null;
  private promise: Promise<ProcessInfo> | null = null;

  share(info: ProcessInfo): Promise<ProcessInfo> {
    if (this.promise !== null && this.info !== null && sameJson(this.info, info)) return this.promise;
    this.info = info;
    this.promise = Promise.resolve(info);
    return this.promise;
  }
}

/** Scratch lists of an object's keys, one per depth of sameJson (reused: no array made per comparison). */
const keysAt: string[][] = [];

/** The same JSON: the same keys in the same order (records print them in that order), the same values. */
export function sameJson(a: unknown, b: unknown, depth = 0): boolean {
  if (a === b) return true;
  if (typeof a !== 'object' || typeof b !== 'object' || a === null || b === null) return false;
  if (Array.isArray(a)) {
    if (!Array.isArray(b) || a.length !== b.length) return false;
    for (let i = 0; i < a.length; i++) if (!sameJson(a[i], b[i], depth + 1)) return false;
    return true;
  }
  if (Array.isArray(b)) return false;
  const keys = (keysAt[depth] ??= []);
  let n = 0;
  for (const k in a) if (Object.prototype.hasOwnProperty.call(a, k)) keys[n++] = k;
  let i = 0;
  for (const k in b) {
    if (!Object.prototype.hasOwnProperty.call(b, k)) continue;
    if (i >= n || keys[i] !== k) return false;
    i++;
  }
  if (i !== n) return false;
  for (let j = 0; j < n; j++) {
    const k = keys[j];
    if (!sameJson((a as Record<string, unknown>)[k], (b as Record<string, unknown>)[k], depth + 1)) return false;
  }
  return true;
}

/**
 * The event's process description. What /proc can tell is read at once, while the caller may still be
 * there; when nothing else must be waited for (the usual case: parents from the event, the cgroup's
 * path and the user's name known) the description is made without an async step, and with `last`,
 * shared with the previous event's when it is the same.
 */
export function processFromEvent(e: ConnectEvent, depth: number, users: UserNames,
  cgroups: CgroupPaths, atMs = Date.now(), parents = new AncestorCache(), facts = new CgroupFacts(),
  last?: LastProcess): Promise<ProcessInfo> {
  try {
    return describeEvent(e, depth, users, cgroups, atMs, parents, facts, last);
  } catch (err) {
    return Promise.reject(err); // as from an async function: a failure is the promise's, never the caller's throw
  }
}

function describeEvent(e: ConnectEvent, depth: number, users: UserNames, cgroups: CgroupPaths, atMs: number,
  parents: AncestorCache, facts: CgroupFacts, last: LastProcess | undefined): Promise<ProcessInfo> {
  const pid = e.tgid;
  const { exe, exeTruncated } = exeOf(e);
  const liveArgv = e.argvError || e.argvTruncated || e.argv.length === 0 ? cmdline(pid) : null;
  const now = Date.now();
  const ancestors: Ancestor[] = e.ancestors.slice(0, depth).map((a) => {
    const argv = parents.argv(a.pid, a.comm, now);
    const out: Ancestor = { pid: a.pid, comm: a.comm, argv: argv ? argv.argv : null };
    if (argv?.truncated) out.argv_truncated = true;
    return out;
  });
  const oldest = e.ancestors.at(-1);
  // The kernel's list ended before `depth` and before init: the rest from /proc (asynchronously).
  let morePpid: number | null = null;
  if (ancestors.length < depth && ancestors.length === e.ancestors.length && oldest && oldest.pid > 1) {
    const status = tryText(`/proc/${oldest.pid}/status`) ?? '';
    morePpid = Number(/^PPid:\s*(\d+)/m.exec(status)?.[1] ?? 0);
  }
  // The cgroup path: known by id once seen; else from /proc while the caller lives, else by id.
  let cgroup = cgroups.cached(e.cgroupId);
  let cgroupById = false;
  if (cgroup === null) {
    const cg = tryText(`/proc/${pid}/cgroup`);
    cgroup = cg ? parseCgroup(cg).path : null;
    if (!cgroup || (cgroup === '/' && e.cgroupId !== '1')) cgroupById = true;
    else cgroups.remember(e.cgroupId, cgroup);
  }
  const user = users.known(e.uid);
  const describe = (cgroupPath: string | null, userName: string | null): ProcessInfo => {
    const fact = cgroupPath ? facts.of(cgroupPath) : null;
    const info: ProcessInfo = {
      attribution: 'ebpf', pid, comm: e.comm, exe, argv: liveArgv?.argv ?? e.argv, uid: e.uid,
      user: userName, ppid: e.ppid, ancestors, cgroup: cgroupPath,
      container: fact?.container ? { ...fact.container } : null,
      systemd_unit: fact ? fact.unit : null, ...fact?.group,
    };
    if (liveArgv ? liveArgv.truncated : e.argvTruncated) info.argv_truncated = true;
    if (exeTruncated) info.exe_truncated = true;
    return info;
  };
  if (morePpid === null && !cgroupById && user !== undefined) {
    const info = describe(cgroup, user);
    return last ? last.share(info) : Promise.resolve(info);
  }
  return (async () => {
    if (morePpid !== null) ancestors.push(...await readAncestors(morePpid, depth - ancestors.length));
    const path = cgroupById ? (await cgroups.path(e.cgroupId, atMs)) ?? cgroup : cgroup;
    return describe(path, user ?? await users.name(e.uid));
  })();
}
