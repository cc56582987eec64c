/**
 * Pure decoder for the binary records written by the eBPF loader
 * (bpf/.output/imds_connect). The C definitions live in bpf/imds_connect.h;
 * the offsets below are pinned against them by test/ebpf/events.test.ts.
 *
 * Every record starts with a {type: u32, size: u32} header; sizes are fixed
 * per type. Integers are little endian (x86_64 and arm64 hosts); addresses
 * are raw network-order bytes.
 */
import { ipv6ToString } from '../../net.js';

export const LAYOUT_VERSION = 3;
export const COMM_LEN = 16;
export const ARGV_MAX = 1024;
export const MAX_ANCESTORS = 4;
export const MAX_TARGETS = 8;
export const EXE_MAX = 512;
export const EXE_NAME_MAX = 255;
export const EXE_DEPTH = 40;
export const TOP_SOURCES = 4;
export const MAX_NETNS = 1024;
export const MAX_SOURCES = 1024;
export const NETNS_KEEP = 1;
export const NETNS_DROP = 2;

export const REC_CONNECT = 1;
export const REC_READY = 2;
export const REC_STATS = 3;

export const AF_INET = 2;
export const AF_INET6 = 10;

export const HEADER_SIZE = 8;
export const ANCESTOR_SIZE = 24;
export const CONNECT_EVENT_SIZE = 1776;
export const READY_RECORD_SIZE = 80;
export const SOURCE_DROPS_SIZE = 32;
export const STATS_RECORD_SIZE = 200;

/** [offset, size] in bytes, named as in the C struct. */
export type FieldLayout = Readonly<Record<string, readonly [number, number]>>;

export const ANCESTOR_FIELDS = {
  pid: [0, 4],
  _pad: [4, 4],
  comm: [8, COMM_LEN],
} as const satisfies FieldLayout;

export const CONNECT_EVENT_FIELDS = {
  type: [0, 4],
  size: [4, 4],
  ts_syn_ns: [8, 8],
  ts_emit_ns: [16, 8],
  cgroup_id: [24, 8],
  pid: [32, 4],
  tgid: [36, 4],
  ppid: [40, 4],
  uid: [44, 4],
  gid: [48, 4],
  netns_ino: [52, 4],
  new_state: [56, 4],
  family: [60, 2],
  sport: [62, 2],
  dport: [64, 2],
  argv_len: [66, 2],
  argv_truncated: [68, 1],
  argv_error: [69, 1],
  v4_mapped: [70, 1],
  n_ancestors: [71, 1],
  saddr: [72, 16],
  daddr: [88, 16],
  comm: [104, COMM_LEN],
  parent_comm: [120, COMM_LEN],
  ancestors: [136, ANCESTOR_SIZE * MAX_ANCESTORS],
  isn: [232, 4],
  exe_len: [236, 2],
  exe_truncated: [238, 1],
  exe_error: [239, 1],
  exe: [240, EXE_MAX],
  argv: [752, ARGV_MAX],
} as const satisfies FieldLayout;

export const READY_RECORD_FIELDS = {
  type: [0, 4],
  size: [4, 4],
  layout_version: [8, 4],
  loader_pid: [12, 4],
  open_us: [16, 8],
  load_us: [24, 8],
  attach_us: [32, 8],
  mono_ns: [40, 8],
  realtime_ns: [48, 8],
  argv_max: [56, 4],
  ringbuf_bytes: [60, 4],
  budget_rate: [64, 4],
  budget_burst: [68, 4],
  netns_filter: [72, 4],
  exe_max: [76, 4],
} as const satisfies FieldLayout;

export const SOURCE_DROPS_FIELDS = {
  cgroup_id: [0, 8],
  netns_ino: [8, 4],
  _pad: [12, 4],
  dropped: [16, 8],
  lost: [24, 8],
} as const satisfies FieldLayout;

export const STATS_RECORD_FIELDS = {
  type: [0, 4],
  size: [4, 4],
  lost: [8, 8],
  emitted: [16, 8],
  untracked: [24, 8],
  track_failed: [32, 8],
  mono_ns: [40, 8],
  final: [48, 4],
  n_top: [52, 4],
  filtered: [56, 8],
  over_budget: [64, 8],
  top: [72, SOURCE_DROPS_SIZE * TOP_SOURCES],
} as const satisfies FieldLayout;

const RECORD_SIZES: Readonly<Record<number, number>> = {
  [REC_CONNECT]: CONNECT_EVENT_SIZE,
  [REC_READY]: READY_RECORD_SIZE,
  [REC_STATS]: STATS_RECORD_SIZE,
};

/** Linux TCP states (include/net/tcp_states.h). */
export const TCP_STATE_NAMES: Readonly<Record<number, string>> = {
  1: 'ESTABLISHED',
  2: 'SYN_SENT',
  3: 'SYN_RECV',
  4: 'FIN_WAIT1',
  5: 'FIN_WAIT2',
  6: 'TIME_WAIT',
  7: 'CLOSE',
  8: 'CLOSE_WAIT',
  9: 'LAST_ACK',
  10: 'LISTEN',
  11: 'CLOSING',
  12: 'NEW_SYN_RECV',
};

export interface Ancestor {
  /** tgid in the initial pid namespace */
  pid: number;
  /** comm of the ancestor's thread-group leader */
  comm: string;
}

export interface ConnectEvent {
  /** thread id (kernel pid) of the connecting thread */
  pid: number;
  /** process id (kernel tgid) */
  tgid: number;
  ppid: number;
  uid: number;
  gid: number;
  /** comm of the connecting thread */
  comm: string;
  /** comm of the parent process */
  parentComm: string;
  /** parent first, then grandparent, ... (at most MAX_ANCESTORS) */
  ancestors: Ancestor[];
  /** cgroup v2 id, decimal */
  cgroupId: string;
  /** inode number of the socket's network namespace */
  netnsIno: number;
  family: 4 | 6;
  saddr: string;
  daddr: string;
  sport: number;
  dport: number;
  /** CLOCK_MONOTONIC ns at the move to SYN_SENT, decimal */
  tsSynNs: string;
  /** CLOCK_MONOTONIC ns when the socket left SYN_SENT, decimal */
  tsEmitNs: string;
  argv: string[];
  argvTruncated: boolean;
  /** argv could not be read in the kernel (no mm, page not present) */
  argvError: boolean;
  /** a dual-stack (AF_INET6) socket talked to an IPv4 address */
  v4Mapped: boolean;
  /** TCP state the socket moved to from SYN_SENT: 1 ESTABLISHED, 7 CLOSE */
  newState: number;
  newStateName: string;
  /** The client's initial sequence number (the SYN's sequence number), unsigned 32-bit */
  isn: number;
  /**
   * The executable's path as the kernel walked it at connect time (in the caller's mount
   * namespace); null when there is none (kernel thread) or it could not be read. When the walk was
   * cut by its bounds, only the tail is known: it starts with ".../" and exeTruncated is set.
   */
  exe: string | null;
  exeTruncated: boolean;
}

export interface ReadyRecord {
  layoutVersion: number;
  loaderPid: number;
  openMs: number;
  loadMs: number;
  attachMs: number;
  /** CLOCK_MONOTONIC and CLOCK_REALTIME sampled together, ns, decimal */
  monoNs: string;
  realtimeNs: string;
  argvMax: number;
  ringbufBytes: number;
  /** events per second per source in the kernel (0: no budget), and the burst */
  budgetRate: number;
  budgetBurst: number;
  /** connections from network namespaces with verdict "drop" are filtered */
  netnsFilter: boolean;
  exeMax: number;
}

/** A source (network namespace + cgroup of the socket): connections its budget refused, events it lost. */
export interface SourceDrops {
  netnsIno: number;
  /** cgroup v2 id, decimal ("0": not known) */
  cgroupId: string;
  dropped: number;
  /** its events lost in the kernel: the ring buffer was full */
  lost: number;
}

export interface StatsRecord {
  /** events dropped in the kernel: ring buffer full */
  lost: number;
  /** events put into the ring buffer */
  emitted: number;
  /** target connections that left SYN_SENT without saved process details */
  untracked: number;
  /** SYN_SENT entries that could not be stored */
  trackFailed: number;
  /** target connections from a network namespace with verdict "drop" (not traced) */
  filtered: number;
  /** target connections over their source's budget (not traced) */
  overBudget: number;
  /** sources with the most events not traced (budget drops + lost), most first (at most TOP_SOURCES) */
  topSources: SourceDrops[];
  monoNs: string;
  final: boolean;
}

export type DecodedRecord =
  | { kind: 'connect'; event: ConnectEvent }
  | { kind: 'ready'; ready: ReadyRecord }
  | { kind: 'stats'; stats: StatsRecord };

export class RecordFramingError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'RecordFramingError';
  }
}

function cString(buf: Buffer, offset: number, size: number): string {
  const max = offset + size;
  let end = offset;
  while (end < max && buf[end] !== 0) end++;
  return buf.toString('utf8', offset, end);
}

/** buf[start, end) holds the same bytes as `area` (compared in place, no view made). */
function sameBytes(area: Buffer, buf: Buffer, start: number, end: number): boolean {
  return area.length === end - start && area.compare(buf, start, end) === 0;
}

function u64(buf: Buffer, offset: number): bigint {
  return buf.readBigUInt64LE(offset);
}

/** A u64 in decimal; without a BigInt when it fits a double exactly (cgroup ids, clocks: nearly always). */
function u64Text(buf: Buffer, offset: number): string {
  const hi = buf.readUInt32LE(offset + 4);
  if (hi < 0x200000) return String(hi * 0x100000000 + buf.readUInt32LE(offset));
  return buf.readBigUInt64LE(offset).toString();
}

/**
 * The last exe and argv areas decoded, and what they gave: a caller that connects again and again
 * sends the same bytes every time, so they are compared, not decoded again (a copy of the argv array
 * is handed out each time: records own theirs).
 */
const lastExe = { area: Buffer.alloc(0), truncated: false, path: null as string | null };
const lastArgv = { area: Buffer.alloc(0), argv: [] as string[] };
/** The ancestors are shared between events with the same bytes (nothing changes an event's list). */
const lastAncestors = { area: Buffer.alloc(0), list: [] as readonly Ancestor[] };

/**
 * The text of a field that repeats from event to event (a caller's comm, its parent's, its cgroup id,
 * the addresses of a client that connects again and again): the last bytes and their text, so the same
 * bytes give the same string, made once (strings are immutable: sharing one is safe).
 */
class LastText {
  private bytes = Buffer.alloc(0);
  private text = '';

  /** The text of buf[start, end), decoded by `decode(buf, start)` when the bytes are new. */
  of(buf: Buffer, start: number, end: number, decode: (buf: Buffer, offset: number) => string): string {
    if (this.bytes.length === end - start && this.bytes.compare(buf, start, end) === 0) return this.text;
    this.text = decode(buf, start);
    this.bytes = Buffer.from(buf.subarray(start, end));
    return this.text;
  }
}

const commText = (buf: Buffer, offset: number): string => cString(buf, offset, COMM_LEN);
const lastComm = new LastText();
const lastParentComm = new LastText();
const lastCgroupId = new LastText();
const lastSaddr = new LastText();
const lastDaddr = new LastText();

function exePathOnce(buf: Buffer, start: number, end: number, truncated: boolean): string | null {
  if (truncated === lastExe.truncated && sameBytes(lastExe.area, buf, start, end)) return lastExe.path;
  const area = buf.subarray(start, end);
  const path = exePath(area, truncated);
  lastExe.area = Buffer.from(area);
  lastExe.truncated = truncated;
  lastExe.path = path;
  return path;
}

function splitArgvOnce(buf: Buffer, start: number, end: number): string[] {
  if (!sameBytes(lastArgv.area, buf, start, end)) {
    const area = buf.subarray(start, end);
    lastArgv.argv = splitArgv(area);
    lastArgv.area = Buffer.from(area);
  }
  return lastArgv.argv.slice();
}

export function formatIPv4(b: Uint8Array, offset = 0): string {
  return `${b[offset]}.${b[offset + 1]}.${b[offset + 2]}.${b[offset + 3]}`;
}

/**
 * RFC 5952 text form, exactly as Node (libuv inet_ntop) prints it:
 * lower case, longest zero run (>= 2 groups, first on a tie) as "::",
 * and ::a.b.c.d / ::ffff:a.b.c.d for IPv4-compatible / -mapped addresses.
 */
export function formatIPv6(b: Uint8Array, offset = 0): string {
  return ipv6ToString(Buffer.from(b.buffer, b.byteOffset, b.byteLength), offset);
}

function isV4Mapped(b: Uint8Array, offset: number): boolean {
  for (let i = 0; i < 10; i++) if (b[offset + i] !== 0) return false;
  return b[offset + 10] === 0xff && b[offset + 11] === 0xff;
}

/**
 * The executable path from the kernel's exe area: components leaf first, each followed by a NUL
 * ("curl\0bin\0usr\0" is /usr/bin/curl). A truncated walk holds only the tail: ".../bin/curl".
 */
export function exePath(area: Buffer, truncated: boolean): string | null {
  const parts = splitArgv(area);
  if (parts.length === 0) return truncated ? null : '/';
  if (parts.some((p) => p.length === 0 || p.includes('/'))) return null; // not a walk's output
  const path = parts.reverse().join('/');
  return truncated ? `.../${path}` : `/${path}`;
}

/** Split a /proc/PID/cmdline style NUL-separated area into arguments. */
export function splitArgv(area: Buffer): string[] {
  if (area.length === 0) return [];
  const body = area[area.length - 1] === 0 ? area.subarray(0, area.length - 1) : area;
  const out: string[] = [];
  let start = 0;
  for (;;) {
    const nul = body.indexOf(0, start);
    if (nul === -1) {
      out.push(body.subarray(start).toString('utf8'));
      return out;
    }
    out.push(body.subarray(start, nul).toString('utf8'));
    start = nul + 1;
  }
}

/** Decode one imds_connect_event at `offset` (whole record must be present). */
export function decodeConnectEvent(buf: Buffer, offset = 0): ConnectEvent {
  const F = CONNECT_EVENT_FIELDS;
  const at = (f: readonly [number, number]): number => offset + f[0];

  const rawFamily = buf.readUInt16LE(at(F.family));
  let family: 4 | 6 = rawFamily === AF_INET ? 4 : 6;
  let saddrOff = at(F.saddr);
  let daddrOff = at(F.daddr);
  let v4Mapped = buf.readUInt8(at(F.v4_mapped)) !== 0;
  // The kernel already reports dual-stack IPv4 as family 4; normalise again in
  // case a record still carries ::ffff:a.b.c.d.
  if (family === 6 && isV4Mapped(buf, daddrOff)) {
    family = 4;
    v4Mapped = true;
    daddrOff += 12;
    if (isV4Mapped(buf, saddrOff)) saddrOff += 12;
  }
  const fmt = family === 4 ? formatIPv4 : formatIPv6;
  const alen = family === 4 ? 4 : 16;
  const commOff = at(F.comm);
  const parentOff = at(F.parent_comm);
  const cgOff = at(F.cgroup_id);

  const nAnc = Math.min(buf.readUInt8(at(F.n_ancestors)), MAX_ANCESTORS);
  const ancStart = at(F.ancestors);
  const ancEnd = ancStart + nAnc * ANCESTOR_SIZE;
  let ancestors = lastAncestors.list as Ancestor[];
  if (!sameBytes(lastAncestors.area, buf, ancStart, ancEnd)) {
    ancestors = [];
    for (let i = 0; i < nAnc; i++) {
      const a = at(F.ancestors) + i * ANCESTOR_SIZE;
      ancestors.push({
        pid: buf.readUInt32LE(a + ANCESTOR_FIELDS.pid[0]),
        comm: cString(buf, a + ANCESTOR_FIELDS.comm[0], COMM_LEN),
      });
    }
    lastAncestors.area = Buffer.from(buf.subarray(ancStart, ancEnd));
    lastAncestors.list = ancestors;
  }

  const argvLen = Math.min(buf.readUInt16LE(at(F.argv_len)), ARGV_MAX);
  const newState = buf.readUInt32LE(at(F.new_state));
  const exeLen = Math.min(buf.readUInt16LE(at(F.exe_len)), EXE_MAX);
  const exeTruncated = buf.readUInt8(at(F.exe_truncated)) !== 0;
  const exeError = buf.readUInt8(at(F.exe_error)) !== 0;
  const exe = exeError ? null : exePathOnce(buf, at(F.exe), at(F.exe) + exeLen, exeTruncated);

  return {
    pid: buf.readUInt32LE(at(F.pid)),
    tgid: buf.readUInt32LE(at(F.tgid)),
    ppid: buf.readUInt32LE(at(F.ppid)),
    uid: buf.readUInt32LE(at(F.uid)),
    gid: buf.readUInt32LE(at(F.gid)),
    comm: lastComm.of(buf, commOff, commOff + COMM_LEN, commText),
    parentComm: lastParentComm.of(buf, parentOff, parentOff + COMM_LEN, commText),
    ancestors,
    cgroupId: lastCgroupId.of(buf, cgOff, cgOff + 8, u64Text),
    netnsIno: buf.readUInt32LE(at(F.netns_ino)),
    family,
    saddr: lastSaddr.of(buf, saddrOff, saddrOff + alen, fmt),
    daddr: lastDaddr.of(buf, daddrOff, daddrOff + alen, fmt),
    sport: buf.readUInt16LE(at(F.sport)),
    dport: buf.readUInt16LE(at(F.dport)),
    tsSynNs: u64Text(buf, at(F.ts_syn_ns)),
    tsEmitNs: u64Text(buf, at(F.ts_emit_ns)),
    argv: splitArgvOnce(buf, at(F.argv), at(F.argv) + argvLen),
    argvTruncated: buf.readUInt8(at(F.argv_truncated)) !== 0,
    argvError: buf.readUInt8(at(F.argv_error)) !== 0,
    v4Mapped,
    newState,
    newStateName: TCP_STATE_NAMES[newState] ?? String(newState),
    isn: buf.readUInt32LE(at(F.isn)),
    exe,
    exeTruncated: exe !== null && exeTruncated,
  };
}

export function decodeReadyRecord(buf: Buffer, offset = 0): ReadyRecord {
  const F = READY_RECORD_FIELDS;
  const us = (f: readonly [number, number]): number => Number(u64(buf, offset + f[0])) / 1000;
  return {
    layoutVersion: buf.readUInt32LE(offset + F.layout_version[0]),
    loaderPid: buf.readUInt32LE(offset + F.loader_pid[0]),
    openMs: us(F.open_us),
    loadMs: us(F.load_us),
    attachMs: us(F.attach_us),
    monoNs: u64(buf, offset + F.mono_ns[0]).toString(),
    realtimeNs: u64(buf, offset + F.realtime_ns[0]).toString(),
    argvMax: buf.readUInt32LE(offset + F.argv_max[0]),
    ringbufBytes: buf.readUInt32LE(offset + F.ringbuf_bytes[0]),
    budgetRate: buf.readUInt32LE(offset + F.budget_rate[0]),
    budgetBurst: buf.readUInt32LE(offset + F.budget_burst[0]),
    netnsFilter: buf.readUInt32LE(offset + F.netns_filter[0]) !== 0,
    exeMax: buf.readUInt32LE(offset + F.exe_max[0]),
  };
}

export function decodeStatsRecord(buf: Buffer, offset = 0): StatsRecord {
  const F = STATS_RECORD_FIELDS;
  const n = (f: readonly [number, number]): number => Number(u64(buf, offset + f[0]));
  return {
    lost: n(F.lost),
    emitted: n(F.emitted),
    untracked: n(F.untracked),
    trackFailed: n(F.track_failed),
    filtered: n(F.filtered),
    overBudget: n(F.over_budget),
    topSources: Array.from({ length: Math.min(buf.readUInt32LE(offset + F.n_top[0]), TOP_SOURCES) }, (_, i) => {
      const o = offset + F.top[0] + i * SOURCE_DROPS_SIZE;
      return {
        netnsIno: buf.readUInt32LE(o + SOURCE_DROPS_FIELDS.netns_ino[0]),
        cgroupId: u64(buf, o + SOURCE_DROPS_FIELDS.cgroup_id[0]).toString(),
        dropped: Number(u64(buf, o + SOURCE_DROPS_FIELDS.dropped[0])),
        lost: Number(u64(buf, o + SOURCE_DROPS_FIELDS.lost[0])),
      };
    }),
    monoNs: u64(buf, offset + F.mono_ns[0]).toString(),
    final: buf.readUInt32LE(offset + F.final[0]) !== 0,
  };
}

/**
 * Framing accumulator: feed it stdout chunks as they come, get back every
 * record completed so far. Records may be split across chunks arbitrarily.
 * A record with an unknown type or a wrong size cannot be resynchronised
 * past: push() throws RecordFramingError.
 */
export class RecordDecoder {
  private pending: Buffer = Buffer.alloc(0);

  /** Bytes received but not yet part of a whole record. */
  get bufferedBytes(): number {
    return this.pending.length;
  }

  push(chunk: Buffer): DecodedRecord[] {
    const buf = this.pending.length === 0 ? chunk : Buffer.concat([this.pending, chunk]);
    const out: DecodedRecord[] = [];
    let off = 0;
    while (buf.length - off >= HEADER_SIZE) {
      const type = buf.readUInt32LE(off);
      const size = buf.readUInt32LE(off + 4);
      const expected = RECORD_SIZES[type];
      if (expected === undefined) {
        throw new RecordFramingError(`unknown record type ${type} at stream offset +${off}`);
      }
      if (size !== expected) {
        throw new RecordFramingError(
          `record type ${type} has size ${size}, expected ${expected} (loader and decoder layouts differ: rebuild)`,
        );
      }
      if (buf.length - off < size) break;
      if (type === REC_CONNECT) out.push({ kind: 'connect', event: decodeConnectEvent(buf, off) });
      else if (type === REC_READY) out.push({ kind: 'ready', ready: decodeReadyRecord(buf, off) });
      else out.push({ kind: 'stats', stats: decodeStatsRecord(buf, off) });
      off += size;
    }
    // Copy the tail so the (possibly large) chunk it came from can be freed.
    this.pending = off === buf.length ? Buffer.alloc(0) : Buffer.from(buf.subarray(off));
    return out;
  }
}
