/**
 * `imds-tracer doctor`: the I/O side. Each probe looks at the machine and returns plain facts for
 * the pure verdicts in checks.ts. Nothing here sends a packet: the capture is opened and closed,
 * the eBPF program is loaded, attached and stopped; the IMDS is never called.
 */
import { randomBytes } from 'node:crypto';
import { constants as fsConstants } from 'node:fs';
import { access, mkdir, open, readdir, readFile, readlink, rm, stat, statfs, unlink } from 'node:fs/promises';
import { dirname, join, relative, sep } from 'node:path';
import { captureFilter } from '../capture/filter.js';
import { loadCap } from '../capture/pcap.js';
import { DEFAULTS } from '../defaults.js';
import { startEbpfSource } from '../attribution/ebpf/loader.js';
import type { EbpfProbe, HelperProbe, InterfaceInfo, LogDirProbe, PcapProbe, ProcProbe } from './checks.js';
import { spawn } from 'node:child_process';
import { SupervisedCapture } from '../capture/supervised.js';

const message = (err: unknown): string => (err as NodeJS.ErrnoException).code ?? (err as Error).message;

export async function probeStatus(): Promise<string> {
  return readFile('/proc/self/status', 'utf8').catch(() => '');
}

interface CapDevice { name: string }
interface CapLike {
  Cap: (new () => { open(d: string, f: string, n: number, b: Buffer): string; close(): void }) & { deviceList(): CapDevice[] };
}

/** Loads the binding, lists devices, and when allowed opens (then closes) a capture on "any". */
export function probePcap(mayCapture: boolean): PcapProbe {
  let mod: CapLike;
  try {
    mod = loadCap() as unknown as CapLike;
  } catch (err) {
    return { loadError: (err as Error).message, devices: [], open: null };
  }
  let devices: string[];
  try {
    devices = mod.Cap.deviceList().map((d) => d.name);
  } catch (err) {
    return { loadError: `listing devices failed: ${(err as Error).message}`, devices: [], open: null };
  }
  if (!mayCapture) return { loadError: null, devices, open: null };
  const cap = new mod.Cap();
  try {
    // A small buffer: nothing is read, the point is that the socket, ring and filter are accepted.
    cap.open('any', captureFilter(DEFAULTS.imdsIPv4, DEFAULTS.imdsIPv6, DEFAULTS.imdsPort), 1024 * 1024, Buffer.alloc(65535));
  } catch (err) {
    return { loadError: null, devices, open: { ok: false, error: (err as Error).message } };
  }
  cap.close();
  return { loadError: null, devices, open: { ok: true } };
}

/**
 * The capture helper: without CAP_NET_RAW, that it runs at all (no arguments: it prints its usage
 * and exits 2; a missing library or a wrong architecture fails earlier); with it, a capture on
 * "any" with the IMDS filter opened through it, as the agent does, then closed.
 */
export async function probeCaptureHelper(helper: string, mayCapture: boolean): Promise<HelperProbe> {
  const runs = await new Promise<string | null>((resolve) => {
    let err = '';
    const c = spawn(helper, [], { stdio: ['ignore', 'ignore', 'pipe'] });
    c.stderr!.on('data', (b: Buffer) => { err += b.toString(); });
    c.once('error', (e) => resolve(e.message));
    c.once('exit', (code, sig) => resolve(code === 2 && /usage/.test(err) ? null : `exit ${code ?? sig}: ${err.trim() || 'no message'}`));
  });
  if (runs !== null) return { helper, runError: runs, open: null };
  if (!mayCapture) return { helper, runError: null, open: null };
  try {
    const cap = await SupervisedCapture.open({
      device: 'any', filter: captureFilter(DEFAULTS.imdsIPv4, DEFAULTS.imdsIPv6, DEFAULTS.imdsPort), bufferBytes: 1024 * 1024,
      helper, onFrame: () => undefined, onError: () => undefined, onNotice: () => undefined,
    });
    const linkType = cap.linkType;
    await cap.close();
    return { helper, runError: null, open: { ok: true, linkType } };
  } catch (err) {
    return { helper, runError: null, open: { ok: false, error: (err as Error).message } };
  }
}

/** Interfaces from /sys/class/net: up when IFF_UP is set in flags, loopback when type is 772. */
export async function probeInterfaces(sysNet = '/sys/class/net'): Promise<InterfaceInfo[]> {
  const names = await readdir(sysNet).catch(() => [] as string[]);
  const out: InterfaceInfo[] = [];
  for (const name of names.sort()) {
    const read = (f: string): Promise<string> => readFile(join(sysNet, name, f), 'utf8').then((s) => s.trim()).catch(() => '');
    const [flags, type] = await Promise.all([read('flags'), read('type')]);
    out.push({ name, up: (parseInt(flags || '0', 16) & 0x1) === 1, loopback: type === '772' });
  }
  return out;
}

export async function probeBtf(path = '/sys/kernel/btf/vmlinux'): Promise<{ readable: boolean; error?: string }> {
  try {
    await access(path, fsConstants.R_OK);
    return { readable: true };
  } catch (err) {
    return { readable: false, error: message(err) };
  }
}

export async function probeEbpf(): Promise<EbpfProbe> {
  try {
    const src = await startEbpfSource({ readyTimeoutMs: 20_000 });
    const result: EbpfProbe = { ok: true, loadMs: src.loadMs, attachMs: src.attachMs };
    await src.stop();
    return result;
  } catch (err) {
    return { ok: false, error: (err as Error).message };
  }
}

/**
 * Reads /proc/<pid>/fd and /proc/<pid>/exe of other processes: what naming a caller needs.
 * Candidates are user-space processes (non-empty cmdline) other than this one, those of other
 * users first; the first one that can be read passes (some, like a sandbox's pid 1, refuse
 * everyone).
 */
export async function probeProc(maxTries = 5): Promise<ProcProbe> {
  const own = process.getuid?.() ?? 0;
  const pids = (await readdir('/proc').catch(() => [] as string[])).filter((n) => /^\d+$/.test(n) && Number(n) !== process.pid);
  const others: number[] = [];
  const same: number[] = [];
  for (const name of pids) {
    if (others.length >= maxTries) break;
    const [cmdline, st] = await Promise.all([
      readFile(`/proc/${name}/cmdline`).catch(() => Buffer.alloc(0)), stat(`/proc/${name}`).catch(() => null),
    ]);
    if (cmdline.length === 0 || st === null) continue; // kernel thread, or gone
    (st.uid === own ? same : others).push(Number(name));
  }
  const candidates = [...others, ...same].slice(0, maxTries);
  if (candidates.length === 0) return { ok: true, pid: null };
  let first: ProcProbe | null = null;
  for (const pid of candidates) {
    try {
      await readdir(`/proc/${pid}/fd`);
      await readlink(`/proc/${pid}/exe`);
      return { ok: true, pid };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') continue; // exited meanwhile
      first ??= { ok: false, pid, error: message(err) };
    }
  }
  return first ?? { ok: true, pid: null };
}

/** The nearest existing directory at or above `dir`. */
async function nearestExisting(dir: string): Promise<string> {
  let d = dir;
  for (;;) {
    try {
      await stat(d);
      return d;
    } catch {
      const up = dirname(d);
      if (up === d) return d;
      d = up;
    }
  }
}

/**
 * Whether the log directory exists, its mode, and whether a file can really be created in it (a
 * test file is created and removed: access() says yes to root on a read-only file system). When
 * it does not exist it is created (0700) the way the agent would, tested, and removed again.
 */
export async function probeLogDir(dir: string): Promise<LogDirProbe> {
  let st;
  try {
    st = await stat(dir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') return { dir, exists: false, writable: false, error: message(err) };
    // Component by component (mkdir { recursive } loops forever on /proc/x), then removed.
    let created: string | undefined;
    try {
      let cur = await nearestExisting(dir);
      for (const part of relative(cur, dir).split(sep)) {
        cur = join(cur, part);
        await mkdir(cur, { mode: 0o700 });
        created ??= cur;
      }
      await writeProbe(dir);
      return { dir, exists: false, writable: true };
    } catch (e) {
      return { dir, exists: false, writable: false, error: message(e) };
    } finally {
      if (created) await rm(created, { recursive: true, force: true }).catch(() => undefined);
    }
  }
  if (!st.isDirectory()) return { dir, exists: true, isDirectory: false, mode: st.mode, writable: false };
  try {
    await writeProbe(dir);
    return { dir, exists: true, isDirectory: true, mode: st.mode, writable: true };
  } catch (err) {
    return { dir, exists: true, isDirectory: true, mode: st.mode, writable: false, error: message(err) };
  }
}

async function writeProbe(dir: string): Promise<void> {
  const probe = join(dir, `.doctor-${process.pid}-${randomBytes(4).toString('hex')}`);
  const fh = await open(probe, 'wx', 0o600);
  await fh.close();
  await unlink(probe);
}

export async function probeDisk(dir: string): Promise<{ path: string; freeBytes: number } | { path: string; error: string }> {
  const path = await nearestExisting(dir);
  try {
    const s = await statfs(path);
    return { path, freeBytes: Number(s.bavail) * Number(s.bsize) };
  } catch (err) {
    return { path, error: message(err) };
  }
}
