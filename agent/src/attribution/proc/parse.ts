/** Pure parsers for the /proc and /etc files that /proc attribution reads. */
import type { ContainerInfo } from '../../record.js';
import { ipv6ToString } from '../../net.js';

export interface NetTcpEntry {
  local: string;
  lport: number;
  remote: string;
  rport: number;
  state: number;
  uid: number;
  inode: number;
}

/** /proc/net/tcp and /proc/net/tcp6: addresses are hex, in 32-bit host-order (little-endian) words. */
export function parseNetTcp(text: string): NetTcpEntry[] {
  const out: NetTcpEntry[] = [];
  for (const line of text.split('\n').slice(1)) {
    const f = line.trim().split(/\s+/);
    if (f.length < 10) continue;
    const [la, lp] = f[1].split(':');
    const [ra, rp] = f[2].split(':');
    const local = hexAddr(la);
    const remote = hexAddr(ra);
    if (local === null || remote === null) continue;
    out.push({
      local, lport: parseInt(lp, 16), remote, rport: parseInt(rp, 16),
      state: parseInt(f[3], 16), uid: Number(f[7]), inode: Number(f[9]),
    });
  }
  return out;
}

function hexAddr(h: string): string | null {
  if (h.length === 8) return le32(h).join('.');
  if (h.length !== 32) return null;
  const bytes: number[] = [];
  for (let w = 0; w < 4; w++) bytes.push(...le32(h.slice(w * 8, w * 8 + 8)));
  return ipv6FromBytes(bytes);
}

function le32(h: string): number[] {
  const n = parseInt(h, 16) >>> 0;
  return [n & 0xff, (n >>> 8) & 0xff, (n >>> 16) & 0xff, (n >>> 24) & 0xff];
}

export function ipv6FromBytes(b: number[]): string {
  return ipv6ToString(Buffer.from(b), 0);
}

export interface ProcStatus {
  name: string;
  tgid: number;
  ppid: number;
  uid: number;
  gid: number;
}

export function parseStatus(text: string): ProcStatus {
  const get = (k: string): string => (new RegExp(`^${k}:\\s*(.*)$`, 'm').exec(text)?.[1] ?? '').trim();
  return {
    name: get('Name'),
    tgid: Number(get('Tgid')) || 0,
    ppid: Number(get('PPid')) || 0,
    uid: Number(get('Uid').split(/\s+/)[0]) || 0,
    gid: Number(get('Gid').split(/\s+/)[0]) || 0,
  };
}

/** NUL-separated argv; a trailing NUL (or none, for processes that rewrote it) is fine. */
export function parseCmdline(buf: Buffer): string[] {
  if (buf.length === 0) return [];
  const s = buf.toString('utf8');
  const parts = s.split('\0');
  if (parts[parts.length - 1] === '') parts.pop();
  return parts;
}

/**
 * argv from the first bytes of /proc/<pid>/cmdline, bounded as the eBPF program bounds it: at most
 * maxBytes of the NUL-separated area (the last argument cut there); truncated when the area was
 * longer (head holds maxBytes + 1 bytes or more then).
 */
export function parseCmdlineBounded(head: Buffer, maxBytes: number): { argv: string[]; truncated: boolean } {
  if (head.length <= maxBytes) return { argv: parseCmdline(head), truncated: false };
  let cut = head.subarray(0, maxBytes);
  // Do not end inside a multi-byte UTF-8 character of the last argument.
  let end = cut.length;
  while (end > 0 && (head[end] & 0xc0) === 0x80) end--;
  cut = cut.subarray(0, end);
  return { argv: parseCmdline(cut), truncated: true };
}

export function parsePasswd(text: string): Map<number, string> {
  const m = new Map<number, string>();
  for (const line of text.split('\n')) {
    const f = line.split(':');
    if (f.length >= 3 && /^\d+$/.test(f[2])) m.set(Number(f[2]), f[0]);
  }
  return m;
}

export interface CgroupFacts {
  path: string | null;
  container: ContainerInfo | null;
  systemdUnit: string | null;
}

const HEX64 = '([0-9a-f]{64})';
const CONTAINER_PATTERNS: Array<[RegExp, string]> = [
  [new RegExp(`docker-${HEX64}\\.scope`), 'docker'],
  [new RegExp(`/docker/${HEX64}`), 'docker'],
  [new RegExp(`cri-containerd-${HEX64}\\.scope`), 'containerd'],
  [new RegExp(`crio-${HEX64}\\.scope`), 'cri-o'],
  [new RegExp(`libpod-${HEX64}\\.scope`), 'podman'],
  [new RegExp(`/ecs/[0-9a-f]{32}/${HEX64}`), 'ecs'],
  [new RegExp(`/ecs/[0-9a-f-]+/([0-9a-f]{32}-[0-9]+)`), 'ecs'],
  [new RegExp(`/kubepods[^/]*/.*/${HEX64}`), 'kubernetes'],
];

/** /proc/<pid>/cgroup: the unified (v2) path, else the first v1 path; container and systemd unit. */
export function parseCgroup(text: string): CgroupFacts {
  const lines = text.split('\n').filter(Boolean);
  const v2 = lines.find((l) => l.startsWith('0::'));
  const chosen = v2 ?? lines.find((l) => /:(?:name=systemd|pids|memory|cpu)/.test(l)) ?? lines[0];
  const path = chosen ? chosen.slice(chosen.indexOf(':', chosen.indexOf(':') + 1) + 1) : null;
  if (!path) return { path: null, container: null, systemdUnit: null };
  return { path, container: containerFromCgroup(path), systemdUnit: unitFromCgroup(path) };
}

export function containerFromCgroup(path: string): ContainerInfo | null {
  const pod = /pod([0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12})/.exec(path);
  const ecsTask = /\/ecs\/([0-9a-f]{32})\//.exec(path);
  for (const [re, runtime] of CONTAINER_PATTERNS) {
    const m = re.exec(path);
    if (!m) continue;
    const info: ContainerInfo = { runtime, id: m[1] };
    if (pod) info.pod_uid = pod[1].replace(/_/g, '-');
    if (ecsTask) info.task_id = ecsTask[1];
    return info;
  }
  if (pod) return { runtime: 'kubernetes', id: null, pod_uid: pod[1].replace(/_/g, '-') };
  return null;
}

/**
 * The unit as a caller: a login session (`session-N.scope` under `user-UID.slice`, a new unit for
 * every SSH login or cron run) is `user-UID.slice/session-*.scope`; any other unit is itself.
 */
export function unitGroup(unit: string | null, cgroupPath: string | null): string | null {
  if (!unit || !/^session-[^/]+\.scope$/.test(unit)) return unit;
  const m = /(?:^|\/)(user-\d+\.slice)\/session-[^/]+\.scope(?:\/|$)/.exec(cgroupPath ?? '');
  return m ? `${m[1]}/session-*.scope` : unit;
}

/** `{ systemd_unit_group }` for a record when the group differs from the unit, else nothing. */
export function sessionGroup(unit: string | null, cgroupPath: string | null): { systemd_unit_group?: string } {
  const g = unitGroup(unit, cgroupPath);
  return g !== null && g !== unit ? { systemd_unit_group: g } : {};
}

export function unitFromCgroup(path: string): string | null {
  if (containerFromCgroup(path)) return null;
  const parts = path.split('/').filter(Boolean);
  for (let i = parts.length - 1; i >= 0; i--) {
    if (/\.(service|scope)$/.test(parts[i]) && !/^init\.scope$/.test(parts[i])) return parts[i];
  }
  return null;
}
