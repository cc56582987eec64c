/**
 * `imds-tracer doctor`: turning what the probes found into verdicts. Pure: every function takes
 * plain facts and returns one CheckResult, so each verdict is unit-tested without the machine.
 */

export type CheckStatus = 'PASS' | 'WARN' | 'FAIL';

export interface CheckResult {
  /** Stable name, used in --json and by scripts. */
  id: CheckId;
  status: CheckStatus;
  /** What was checked, in words. */
  title: string;
  /** What was found. */
  detail: string;
  /** For WARN and FAIL: what to do about it. */
  fix?: string;
  /** Measurements (eBPF load/attach ms, free bytes…), for --json. */
  data?: Record<string, unknown>;
}

export const CHECK_IDS = ['node', 'privileges', 'libpcap', 'interfaces', 'btf', 'ebpf', 'proc', 'log-dir', 'disk'] as const;
/** With `doctor --cloudwatch`, after the others. */
export const CLOUDWATCH_CHECK_IDS = ['cloudwatch-region', 'cloudwatch-credentials', 'cloudwatch-group', 'cloudwatch-put'] as const;
export type CheckId = (typeof CHECK_IDS)[number] | (typeof CLOUDWATCH_CHECK_IDS)[number];

export const MIN_NODE_MAJOR = 20;
export const MIN_FREE_BYTES = 100 * 1024 * 1024;

/** Linux capability numbers (include/uapi/linux/capability.h) of the ones the agent cares about. */
export const CAP = {
  CAP_DAC_READ_SEARCH: 2,
  CAP_NET_ADMIN: 12,
  CAP_NET_RAW: 13,
  CAP_SYS_PTRACE: 19,
  CAP_SYS_ADMIN: 21,
  CAP_PERFMON: 38,
  CAP_BPF: 39,
} as const;
export type CapName = keyof typeof CAP;

/** The capability names set in a CapEff mask (hex, as in /proc/self/status). */
export function parseCapMask(hex: string): Set<CapName> {
  const mask = /^[0-9a-f]+$/i.test(hex) ? BigInt(`0x${hex}`) : 0n;
  const out = new Set<CapName>();
  for (const [name, bit] of Object.entries(CAP) as [CapName, number][]) {
    if ((mask >> BigInt(bit)) & 1n) out.add(name);
  }
  return out;
}

/** CapEff from the text of /proc/<pid>/status, or null when absent. */
export function capEffFromStatus(status: string): string | null {
  return /^CapEff:\s*([0-9a-f]+)$/im.exec(status)?.[1] ?? null;
}

export function evaluateNode(version: string): CheckResult {
  const major = Number(/^v?(\d+)\./.exec(version)?.[1] ?? NaN);
  const base = { id: 'node' as const, title: 'Node.js version' };
  if (Number.isFinite(major) && major >= MIN_NODE_MAJOR) return { ...base, status: 'PASS', detail: `Node.js ${version}` };
  return {
    ...base, status: 'FAIL',
    detail: `Node.js ${version} is too old: imds-tracer needs ${MIN_NODE_MAJOR} or newer.`,
    fix: `Install Node.js ${MIN_NODE_MAJOR} or newer (Amazon Linux 2023: dnf install nodejs20; Debian/Ubuntu: the NodeSource or distribution package).`,
  };
}

/** Root or not, and the effective capabilities (from CapEff; root in a container may have fewer). */
export function evaluatePrivileges(uid: number, capEffHex: string | null): CheckResult {
  const base = { id: 'privileges' as const, title: 'privileges (root or capabilities)' };
  if (capEffHex === null) {
    return { ...base, status: 'FAIL', detail: 'Could not read the capabilities of this process from /proc/self/status.', fix: 'Run it on Linux with /proc mounted.' };
  }
  const caps = parseCapMask(capEffHex);
  const who = uid === 0 ? 'root' : `uid ${uid}`;
  const held = [...caps].sort().join(', ') || 'none of the ones it uses';
  const data = { uid, cap_eff: capEffHex, capabilities: [...caps].sort() };
  if (!caps.has('CAP_NET_RAW')) {
    return {
      ...base, status: 'FAIL', data,
      detail: `Running as ${who} without CAP_NET_RAW, so packets cannot be captured (capabilities held: ${held}).`,
      fix: 'Run it as root (sudo), or give it CAP_NET_RAW (the systemd unit does: AmbientCapabilities=).',
    };
  }
  const missing: string[] = [];
  if (!(caps.has('CAP_SYS_ADMIN') || (caps.has('CAP_BPF') && caps.has('CAP_PERFMON')))) missing.push('CAP_BPF + CAP_PERFMON (or CAP_SYS_ADMIN) for the eBPF backend');
  if (!caps.has('CAP_SYS_PTRACE')) missing.push("CAP_SYS_PTRACE to read other users' /proc/<pid>/fd and exe");
  if (!caps.has('CAP_DAC_READ_SEARCH')) missing.push("CAP_DAC_READ_SEARCH to open other users' /proc/<pid> directories");
  if (missing.length > 0) {
    return {
      ...base, status: 'WARN', data,
      detail: `Running as ${who}: packets can be captured, but it lacks ${missing.join('; ')}. Callers may go unnamed.`,
      fix: 'Run it as root, or add the missing capabilities (see systemd/imds-tracer.service).',
    };
  }
  return { ...base, status: 'PASS', data, detail: `Running as ${who} with ${held}.` };
}

export interface PcapProbe {
  /** Why the binding did not load, or null when it did. */
  loadError: string | null;
  devices: string[];
  /** Result of opening a capture on "any" with the IMDS filter; null when not tried. */
  open: { ok: true } | { ok: false; error: string } | null;
}

export function evaluatePcap(p: PcapProbe): CheckResult {
  const base = { id: 'libpcap' as const, title: 'libpcap (npm "cap" binding)' };
  if (p.loadError !== null) {
    return {
      ...base, status: 'FAIL', detail: `The libpcap binding did not load: ${p.loadError}`,
      fix: 'Install libpcap (dnf install libpcap / apt-get install libpcap0.8) and rebuild the binding: npm ci in /opt/imds-tracer (or re-run scripts/install.sh).',
    };
  }
  if (p.devices.length === 0) {
    return { ...base, status: 'FAIL', detail: 'libpcap loaded but lists no capture devices.', fix: 'Run it as root: without privileges libpcap may list nothing.' };
  }
  const data = { devices: p.devices };
  const list = `${p.devices.length} devices (${p.devices.slice(0, 6).join(', ')}${p.devices.length > 6 ? ', …' : ''})`;
  if (p.open === null) return { ...base, status: 'PASS', data, detail: `Loaded; ${list}; capture not tried (no CAP_NET_RAW, see privileges).` };
  if (!p.open.ok) {
    return {
      ...base, status: 'FAIL', data, detail: `Loaded; ${list}; but a capture on "any" could not be opened: ${p.open.error}`,
      fix: 'Run it as root or with CAP_NET_RAW; check that the kernel has AF_PACKET support.',
    };
  }
  return { ...base, status: 'PASS', data, detail: `Loaded; ${list}; a capture on "any" with the IMDS filter opened and closed.` };
}

/** The capture helper (native/imds_capture), the agent's capture path when it is installed. */
export interface HelperProbe {
  helper: string;
  /** Why it could not run at all (missing, wrong architecture, a library not found), or null. */
  runError: string | null;
  /** Result of a capture on "any" with the IMDS filter through it; null when not tried. */
  open: { ok: true; linkType: string } | { ok: false; error: string } | null;
}

export function evaluateCaptureHelper(p: HelperProbe): CheckResult {
  const base = { id: 'libpcap' as const, title: `libpcap (capture helper ${p.helper})` };
  if (p.runError !== null) {
    return {
      ...base, status: 'FAIL', detail: `The capture helper does not run: ${p.runError}`,
      fix: 'Reinstall (a release tarball for this architecture, or npm run build in a source checkout); `file` and `ldd` on the helper show a wrong architecture or a missing library.',
    };
  }
  if (p.open === null) return { ...base, status: 'PASS', detail: 'It runs (libpcap linked in); capture not tried (no CAP_NET_RAW, see privileges).' };
  if (!p.open.ok) {
    return {
      ...base, status: 'FAIL', detail: `It runs, but a capture on "any" could not be opened: ${p.open.error}`,
      fix: 'Run it as root or with CAP_NET_RAW; check that the kernel has AF_PACKET support.',
    };
  }
  return { ...base, status: 'PASS', data: { link_type: p.open.linkType }, detail: `A capture on "any" with the IMDS filter opened (${p.open.linkType}) and closed.` };
}

export interface InterfaceInfo {
  name: string;
  up: boolean;
  loopback: boolean;
}

export function evaluateInterfaces(list: InterfaceInfo[]): CheckResult {
  const base = { id: 'interfaces' as const, title: 'network interfaces' };
  const up = list.filter((i) => i.up && !i.loopback).map((i) => i.name);
  const down = list.filter((i) => !i.up && !i.loopback).map((i) => i.name);
  const data = { up, down };
  if (up.length === 0) {
    return {
      ...base, status: 'WARN', data,
      detail: `No interface is up besides loopback${down.length ? ` (down: ${down.join(', ')})` : ''}; nothing can reach the IMDS yet.`,
      fix: 'Nothing to do if the network is still coming up: a capture on "any" sees interfaces as they come up. Otherwise check the network configuration.',
    };
  }
  return { ...base, status: 'PASS', data, detail: `Up: ${up.join(', ')}${down.length ? `; down: ${down.join(', ')}` : ''}.` };
}

export function evaluateBtf(p: { readable: boolean; error?: string }): CheckResult {
  const base = { id: 'btf' as const, title: 'kernel BTF (/sys/kernel/btf/vmlinux)' };
  if (p.readable) return { ...base, status: 'PASS', detail: 'Present: the CO-RE eBPF program can be relocated for this kernel.' };
  return {
    ...base, status: 'WARN', detail: `Not readable (${p.error ?? 'missing'}): the eBPF backend cannot load; callers are found through /proc instead.`,
    fix: 'Use a kernel built with CONFIG_DEBUG_INFO_BTF=y (Amazon Linux 2023, Debian 12, Ubuntu 20.10+ kernels are).',
  };
}

export type EbpfProbe = { ok: true; loadMs: number; attachMs: number } | { ok: false; error: string };

export function evaluateEbpf(p: EbpfProbe): CheckResult {
  const base = { id: 'ebpf' as const, title: 'eBPF program loads and attaches' };
  if (p.ok) {
    return {
      ...base, status: 'PASS', data: { load_ms: p.loadMs, attach_ms: p.attachMs },
      detail: `Loaded in ${p.loadMs.toFixed(1)} ms, attached in ${p.attachMs.toFixed(1)} ms, then stopped.`,
    };
  }
  const notBuilt = /not built/i.test(p.error);
  return {
    ...base, status: 'WARN', detail: `It did not: ${p.error}. Tracing works, with callers found through /proc (short-lived callers are often missed).`,
    fix: notBuilt
      ? 'Build it: npm run build (needs clang, bpftool, libbpf-dev), or re-run scripts/install.sh.'
      : 'Run it as root or with CAP_BPF + CAP_PERFMON, on a kernel with BTF (5.8 or newer).',
  };
}

/** pid: the process whose /proc entries were read (null: no other process to try). */
export type ProcProbe = { ok: true; pid: number | null } | { ok: false; pid: number; error: string };

export function evaluateProc(p: ProcProbe): CheckResult {
  const base = { id: 'proc' as const, title: "other processes' /proc entries" };
  if (p.ok) {
    return {
      ...base, status: 'PASS',
      detail: p.pid === null ? 'No other process to try.' : `Read /proc/${p.pid}/fd and /proc/${p.pid}/exe: callers can be named.`,
    };
  }
  return {
    ...base, status: 'WARN',
    detail: `Could not read /proc/${p.pid}/fd and exe (${p.error}): callers of other users are reported without their process (eBPF still names them by pid and argv).`,
    fix: 'Run it as root, or with CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH; check that /proc is not mounted with hidepid.',
  };
}

export interface LogDirProbe {
  dir: string;
  exists: boolean;
  /** Permission bits when it exists. */
  mode?: number;
  isDirectory?: boolean;
  /** Could a file be created in it (when missing: could it be created, then a file in it)? */
  writable: boolean;
  error?: string;
}

export function evaluateLogDir(p: LogDirProbe): CheckResult {
  const base = { id: 'log-dir' as const, title: 'log directory' };
  const fixWritable = `Create it writable by the agent (mkdir -m 0700 -p ${p.dir}), or pass --log-file with another path (or --no-log-file to run).`;
  if (p.exists && p.isDirectory === false) {
    return { ...base, status: 'FAIL', detail: `${p.dir} exists but is not a directory.`, fix: `Remove it or choose another --log-file.` };
  }
  if (!p.writable) {
    return {
      ...base, status: 'FAIL',
      detail: p.exists ? `${p.dir} is not writable${p.error ? ` (${p.error})` : ''}.` : `${p.dir} does not exist and cannot be created${p.error ? ` (${p.error})` : ''}.`,
      fix: fixWritable,
    };
  }
  if (!p.exists) return { ...base, status: 'PASS', detail: `${p.dir} does not exist yet; it can be created (0700) at start.` };
  const mode = (p.mode ?? 0) & 0o777;
  const octal = mode.toString(8).padStart(4, '0');
  if (mode & 0o077) {
    return {
      ...base, status: 'WARN', data: { mode: octal },
      detail: `${p.dir} is writable but mode ${octal} lets other users read the records (they name processes and users).`,
      fix: `chmod 0700 ${p.dir}`,
    };
  }
  return { ...base, status: 'PASS', data: { mode: octal }, detail: `${p.dir} is writable, mode ${octal}.` };
}

export function evaluateDisk(p: { path: string; freeBytes: number } | { path: string; error: string }): CheckResult {
  const base = { id: 'disk' as const, title: 'free disk space for the log' };
  if ('error' in p) return { ...base, status: 'WARN', detail: `Could not measure free space at ${p.path}: ${p.error}.`, fix: 'Check the file system of the log directory.' };
  const mb = Math.floor(p.freeBytes / (1024 * 1024));
  const data = { free_bytes: p.freeBytes };
  if (p.freeBytes < MIN_FREE_BYTES) {
    return {
      ...base, status: 'WARN', data, detail: `Only ${mb} MB free at ${p.path} (under ${MIN_FREE_BYTES / (1024 * 1024)} MB).`,
      fix: 'Free space there, rotate the log (logrotate copytruncate), or pass --log-file on a larger file system.',
    };
  }
  return { ...base, status: 'PASS', data, detail: `${mb} MB free at ${p.path}.` };
}
