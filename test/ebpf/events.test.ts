/**
 * Pins the binary record layout shared by bpf/imds_connect.h (C) and
 * agent/src/attribution/ebpf/events.ts (TypeScript), and checks the decoder on
 * hand-built buffers. No root needed.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { SocketAddress } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  AF_INET,
  AF_INET6,
  ANCESTOR_FIELDS,
  ANCESTOR_SIZE,
  ARGV_MAX,
  COMM_LEN,
  CONNECT_EVENT_FIELDS,
  CONNECT_EVENT_SIZE,
  EXE_DEPTH,
  EXE_MAX,
  EXE_NAME_MAX,
  LAYOUT_VERSION,
  MAX_NETNS,
  MAX_SOURCES,
  NETNS_DROP,
  NETNS_KEEP,
  SOURCE_DROPS_FIELDS,
  SOURCE_DROPS_SIZE,
  TOP_SOURCES,
  exePath,
  MAX_ANCESTORS,
  MAX_TARGETS,
  READY_RECORD_FIELDS,
  READY_RECORD_SIZE,
  REC_CONNECT,
  HEADER_SIZE,
  REC_READY,
  REC_STATS,
  RecordDecoder,
  RecordFramingError,
  STATS_RECORD_FIELDS,
  STATS_RECORD_SIZE,
  decodeConnectEvent,
  formatIPv6,
  splitArgv,
  type ConnectEvent,
  type DecodedRecord,
  type FieldLayout,
} from '../../agent/src/attribution/ebpf/events.js';
import { FRAME_HEADER } from '../../agent/src/capture/framing.js';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');

interface CLayout {
  constants: Record<string, number>;
  frame: { size: number; fields: Record<string, [number, number]> };
  ancestor: { size: number; fields: Record<string, [number, number]> };
  connect: { size: number; fields: Record<string, [number, number]> };
  ready: { size: number; fields: Record<string, [number, number]> };
  stats: { size: number; fields: Record<string, [number, number]> };
  source: { size: number; fields: Record<string, [number, number]> };
}

/** Fields sorted by offset must tile the struct: no implicit padding anywhere. */
function expectNoHoles(fields: FieldLayout, size: number): void {
  const sorted = Object.values(fields).slice().sort((a, b) => a[0] - b[0]);
  let next = 0;
  for (const [off, len] of sorted) {
    expect(off).toBe(next);
    next = off + len;
  }
  expect(next).toBe(size);
}

describe('record layout: C (bpf/imds_connect.h) == TypeScript (events.ts)', () => {
  let layout: CLayout;
  let dir: string;

  beforeAll(() => {
    // Compile the dumper against the header at test time: no stale binary.
    dir = mkdtempSync(join(tmpdir(), 'imds-layout-'));
    const exe = join(dir, 'layout_dump');
    execFileSync('gcc', ['-Wall', '-Werror', '-I', join(ROOT, 'bpf'), join(ROOT, 'bpf', 'layout_dump.c'), '-o', exe]);
    layout = JSON.parse(execFileSync(exe, { encoding: 'utf8' })) as CLayout;
  });

  afterAll(() => {
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('constants match', () => {
    expect(layout.constants).toEqual({
      IMDS_LAYOUT_VERSION: LAYOUT_VERSION,
      IMDS_COMM_LEN: COMM_LEN,
      IMDS_ARGV_MAX: ARGV_MAX,
      IMDS_MAX_ANCESTORS: MAX_ANCESTORS,
      IMDS_MAX_TARGETS: MAX_TARGETS,
      IMDS_REC_CONNECT: REC_CONNECT,
      IMDS_REC_READY: REC_READY,
      IMDS_REC_STATS: REC_STATS,
      IMDS_AF_INET: AF_INET,
      IMDS_AF_INET6: AF_INET6,
      IMDS_EXE_MAX: EXE_MAX,
      IMDS_EXE_NAME_MAX: EXE_NAME_MAX,
      IMDS_EXE_DEPTH: EXE_DEPTH,
      IMDS_TOP_SOURCES: TOP_SOURCES,
      IMDS_MAX_NETNS: MAX_NETNS,
      IMDS_MAX_SOURCES: MAX_SOURCES,
      IMDS_NETNS_KEEP: NETNS_KEEP,
      IMDS_NETNS_DROP: NETNS_DROP,
    });
  });

  it('one frame header for both helpers (include/imds_frame.h): the capture decoder, the loader decoder and every loader record agree', () => {
    expect(layout.frame).toEqual({ size: 8, fields: { type: [0, 4], size: [4, 4] } });
    expect({ size: FRAME_HEADER.size, fields: { type: FRAME_HEADER.type, size: FRAME_HEADER.recordSize } }).toEqual(layout.frame);
    expect(HEADER_SIZE).toBe(layout.frame.size);
    for (const rec of [layout.connect, layout.ready, layout.stats]) {
      expect({ type: rec.fields.type, size: rec.fields.size }).toEqual(layout.frame.fields);
    }
  });

  it('struct imds_connect_event: size and every field offset/size', () => {
    expect(layout.connect.size).toBe(CONNECT_EVENT_SIZE);
    expect(layout.connect.fields).toEqual(CONNECT_EVENT_FIELDS);
    expect(layout.connect.size % 8).toBe(0);
  });

  it('struct imds_ancestor', () => {
    expect(layout.ancestor.size).toBe(ANCESTOR_SIZE);
    expect(layout.ancestor.fields).toEqual(ANCESTOR_FIELDS);
  });

  it('struct imds_ready_record', () => {
    expect(layout.ready.size).toBe(READY_RECORD_SIZE);
    expect(layout.ready.fields).toEqual(READY_RECORD_FIELDS);
  });

  it('struct imds_stats_record', () => {
    expect(layout.stats.size).toBe(STATS_RECORD_SIZE);
    expect(layout.stats.fields).toEqual(STATS_RECORD_FIELDS);
    expect(layout.stats.size % 8).toBe(0);
  });

  it('struct imds_source_drops', () => {
    expect(layout.source.size).toBe(SOURCE_DROPS_SIZE);
    expect(layout.source.fields).toEqual(SOURCE_DROPS_FIELDS);
  });

  it('the exe area lies before argv[] (the kernel walk relies on it: see read_exe)', () => {
    const F = layout.connect.fields;
    expect(F.exe[0] + F.exe[1]).toBe(F.argv[0]);
    expect(F.argv[1]).toBeGreaterThanOrEqual(EXE_NAME_MAX + 1);
  });

  it('no implicit padding in any record', () => {
    expectNoHoles(layout.connect.fields, layout.connect.size);
    expectNoHoles(layout.ancestor.fields, layout.ancestor.size);
    expectNoHoles(layout.ready.fields, layout.ready.size);
    expectNoHoles(layout.stats.fields, layout.stats.size);
    expectNoHoles(layout.source.fields, layout.source.size);
  });
});

// ---------------------------------------------------------------------------
// Hand-built records

interface EventSpec {
  pid?: number;
  tgid?: number;
  ppid?: number;
  uid?: number;
  gid?: number;
  netnsIno?: number;
  newState?: number;
  family?: number;
  sport?: number;
  dport?: number;
  saddr?: number[];
  daddr?: number[];
  comm?: string;
  parentComm?: string;
  ancestors?: { pid: number; comm: string }[];
  argvArea?: Buffer;
  argvTruncated?: boolean;
  argvError?: boolean;
  v4Mapped?: boolean;
  cgroupId?: bigint;
  tsSyn?: bigint;
  tsEmit?: bigint;
  isn?: number;
  exeArea?: Buffer;
  exeTruncated?: boolean;
  exeError?: boolean;
}

function argvArea(args: string[]): Buffer {
  return Buffer.from(args.map((a) => a + '\0').join(''), 'utf8');
}

function buildEvent(s: EventSpec): Buffer {
  const F = CONNECT_EVENT_FIELDS;
  const b = Buffer.alloc(CONNECT_EVENT_SIZE);
  b.writeUInt32LE(REC_CONNECT, F.type[0]);
  b.writeUInt32LE(CONNECT_EVENT_SIZE, F.size[0]);
  b.writeBigUInt64LE(s.tsSyn ?? 1000n, F.ts_syn_ns[0]);
  b.writeBigUInt64LE(s.tsEmit ?? 2000n, F.ts_emit_ns[0]);
  b.writeBigUInt64LE(s.cgroupId ?? 4242n, F.cgroup_id[0]);
  b.writeUInt32LE(s.pid ?? 101, F.pid[0]);
  b.writeUInt32LE(s.tgid ?? 100, F.tgid[0]);
  b.writeUInt32LE(s.ppid ?? 1, F.ppid[0]);
  b.writeUInt32LE(s.uid ?? 0, F.uid[0]);
  b.writeUInt32LE(s.gid ?? 0, F.gid[0]);
  b.writeUInt32LE(s.netnsIno ?? 4026531840, F.netns_ino[0]);
  b.writeUInt32LE(s.newState ?? 1, F.new_state[0]);
  b.writeUInt16LE(s.family ?? AF_INET, F.family[0]);
  b.writeUInt16LE(s.sport ?? 40000, F.sport[0]);
  b.writeUInt16LE(s.dport ?? 80, F.dport[0]);
  const area = s.argvArea ?? argvArea(['curl', 'http://169.254.169.254/']);
  area.copy(b, F.argv[0], 0, Math.min(area.length, ARGV_MAX));
  b.writeUInt16LE(Math.min(area.length, ARGV_MAX), F.argv_len[0]);
  b.writeUInt8(s.argvTruncated ? 1 : 0, F.argv_truncated[0]);
  b.writeUInt8(s.argvError ? 1 : 0, F.argv_error[0]);
  b.writeUInt8(s.v4Mapped ? 1 : 0, F.v4_mapped[0]);
  Buffer.from(s.saddr ?? [169, 254, 10, 2]).copy(b, F.saddr[0]);
  Buffer.from(s.daddr ?? [169, 254, 169, 254]).copy(b, F.daddr[0]);
  b.write(s.comm ?? 'curl', F.comm[0], COMM_LEN - 1, 'utf8');
  b.write(s.parentComm ?? 'bash', F.parent_comm[0], COMM_LEN - 1, 'utf8');
  b.writeUInt32LE(s.isn ?? 0, F.isn[0]);
  const exe = s.exeArea ?? argvArea(['curl', 'bin', 'usr']);
  exe.copy(b, F.exe[0], 0, Math.min(exe.length, EXE_MAX));
  b.writeUInt16LE(Math.min(exe.length, EXE_MAX), F.exe_len[0]);
  b.writeUInt8(s.exeTruncated ? 1 : 0, F.exe_truncated[0]);
  b.writeUInt8(s.exeError ? 1 : 0, F.exe_error[0]);
  const anc = s.ancestors ?? [];
  b.writeUInt8(anc.length, F.n_ancestors[0]);
  anc.forEach((a, i) => {
    const off = F.ancestors[0] + i * ANCESTOR_SIZE;
    b.writeUInt32LE(a.pid, off + ANCESTOR_FIELDS.pid[0]);
    b.write(a.comm, off + ANCESTOR_FIELDS.comm[0], COMM_LEN - 1, 'utf8');
  });
  return b;
}

function buildReady(): Buffer {
  const F = READY_RECORD_FIELDS;
  const b = Buffer.alloc(READY_RECORD_SIZE);
  b.writeUInt32LE(REC_READY, F.type[0]);
  b.writeUInt32LE(READY_RECORD_SIZE, F.size[0]);
  b.writeUInt32LE(LAYOUT_VERSION, F.layout_version[0]);
  b.writeUInt32LE(777, F.loader_pid[0]);
  b.writeBigUInt64LE(1500n, F.open_us[0]);
  b.writeBigUInt64LE(17250n, F.load_us[0]);
  b.writeBigUInt64LE(250n, F.attach_us[0]);
  b.writeBigUInt64LE(123456789n, F.mono_ns[0]);
  b.writeBigUInt64LE(1700000000000000000n, F.realtime_ns[0]);
  b.writeUInt32LE(ARGV_MAX, F.argv_max[0]);
  b.writeUInt32LE(1 << 20, F.ringbuf_bytes[0]);
  b.writeUInt32LE(100, F.budget_rate[0]);
  b.writeUInt32LE(500, F.budget_burst[0]);
  b.writeUInt32LE(1, F.netns_filter[0]);
  b.writeUInt32LE(EXE_MAX, F.exe_max[0]);
  return b;
}

function buildStats(lost: number, final = false): Buffer {
  const F = STATS_RECORD_FIELDS;
  const b = Buffer.alloc(STATS_RECORD_SIZE);
  b.writeUInt32LE(REC_STATS, F.type[0]);
  b.writeUInt32LE(STATS_RECORD_SIZE, F.size[0]);
  b.writeBigUInt64LE(BigInt(lost), F.lost[0]);
  b.writeBigUInt64LE(10n, F.emitted[0]);
  b.writeBigUInt64LE(2n, F.untracked[0]);
  b.writeBigUInt64LE(1n, F.track_failed[0]);
  b.writeBigUInt64LE(99n, F.mono_ns[0]);
  b.writeUInt32LE(final ? 1 : 0, F.final[0]);
  b.writeBigUInt64LE(7n, F.filtered[0]);
  b.writeBigUInt64LE(40n, F.over_budget[0]);
  b.writeUInt32LE(2, F.n_top[0]);
  const S = SOURCE_DROPS_FIELDS;
  [[4026532000, 99n, 30n, 5n], [4026532001, 0n, 0n, 10n]].forEach(([ino, cg, n, lost], i) => {
    const o = F.top[0] + i * SOURCE_DROPS_SIZE;
    b.writeUInt32LE(ino as number, o + S.netns_ino[0]);
    b.writeBigUInt64LE(cg as bigint, o + S.cgroup_id[0]);
    b.writeBigUInt64LE(n as bigint, o + S.dropped[0]);
    b.writeBigUInt64LE(lost as bigint, o + S.lost[0]);
  });
  return b;
}

const V6_IMDS = [0xfd, 0, 0x0e, 0xc2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x02, 0x54];
const V6_NEAR = [0xfd, 0, 0x0e, 0xc2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x02];
const mapped = (v4: number[]): number[] => [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, ...v4];

describe('decodeConnectEvent', () => {
  it('decodes an IPv4 event with every field', () => {
    const e = decodeConnectEvent(
      buildEvent({
        pid: 5001,
        tgid: 5000,
        ppid: 4999,
        uid: 1000,
        gid: 1001,
        netnsIno: 4026532246,
        sport: 52982,
        comm: 'curl',
        parentComm: 'bash',
        ancestors: [
          { pid: 4999, comm: 'bash' },
          { pid: 1, comm: 'systemd' },
        ],
        cgroupId: 18446744073709551615n,
        tsSyn: 9007199254740993n,
        tsEmit: 9007199254740999n,
        argvArea: argvArea(['curl', '-s', '', 'http://169.254.169.254/latest/meta-data/']),
        isn: 0xfedcba98,
      }),
    );
    expect(e).toEqual({
      pid: 5001,
      tgid: 5000,
      ppid: 4999,
      uid: 1000,
      gid: 1001,
      comm: 'curl',
      parentComm: 'bash',
      ancestors: [
        { pid: 4999, comm: 'bash' },
        { pid: 1, comm: 'systemd' },
      ],
      cgroupId: '18446744073709551615',
      netnsIno: 4026532246,
      family: 4,
      saddr: '169.254.10.2',
      daddr: '169.254.169.254',
      sport: 52982,
      dport: 80,
      tsSynNs: '9007199254740993',
      tsEmitNs: '9007199254740999',
      argv: ['curl', '-s', '', 'http://169.254.169.254/latest/meta-data/'],
      argvTruncated: false,
      argvError: false,
      v4Mapped: false,
      newState: 1,
      newStateName: 'ESTABLISHED',
      isn: 0xfedcba98,
      exe: '/usr/bin/curl',
      exeTruncated: false,
    });
  });

  it('executable path: reversed from the kernel walk; a cut walk is marked, never whole', () => {
    expect(decodeConnectEvent(buildEvent({ exeArea: argvArea(['python3.11', 'bin', 'usr']) })).exe).toBe('/usr/bin/python3.11');
    const cut = decodeConnectEvent(buildEvent({ exeArea: argvArea(['curl', 'bin']), exeTruncated: true }));
    expect(cut.exe).toBe('.../bin/curl');
    expect(cut.exeTruncated).toBe(true);
    const none = decodeConnectEvent(buildEvent({ exeArea: Buffer.alloc(0), exeError: true }));
    expect(none.exe).toBeNull();
    expect(none.exeTruncated).toBe(false);
    expect(exePath(Buffer.alloc(0), true)).toBeNull();
    expect(exePath(argvArea(['a', '', 'b']), false)).toBeNull();
  });

  it('decodes an IPv6 event, compressed like Node prints it', () => {
    const e = decodeConnectEvent(
      buildEvent({ family: AF_INET6, saddr: V6_NEAR, daddr: V6_IMDS, newState: 7 }),
    );
    expect(e.family).toBe(6);
    expect(e.saddr).toBe('fd00:ec2::2');
    expect(e.daddr).toBe('fd00:ec2::254');
    expect(e.newStateName).toBe('CLOSE');
  });

  it('normalises a v4-mapped IPv6 record to family 4 with dotted addresses', () => {
    const e = decodeConnectEvent(
      buildEvent({ family: AF_INET6, saddr: mapped([169, 254, 10, 2]), daddr: mapped([169, 254, 169, 254]) }),
    );
    expect(e.family).toBe(4);
    expect(e.v4Mapped).toBe(true);
    expect(e.saddr).toBe('169.254.10.2');
    expect(e.daddr).toBe('169.254.169.254');
  });

  it('keeps the kernel-normalised v4-mapped flag', () => {
    const e = decodeConnectEvent(buildEvent({ family: AF_INET, v4Mapped: true }));
    expect(e.family).toBe(4);
    expect(e.v4Mapped).toBe(true);
    expect(e.daddr).toBe('169.254.169.254');
  });

  it('returns the partial last argument of a truncated argv', () => {
    const long = 'x'.repeat(2000);
    const area = argvArea(['curl', '-H', long]);
    const e = decodeConnectEvent(buildEvent({ argvArea: area.subarray(0, ARGV_MAX), argvTruncated: true }));
    expect(e.argvTruncated).toBe(true);
    expect(e.argv).toEqual(['curl', '-H', 'x'.repeat(ARGV_MAX - 'curl\0-H\0'.length)]);
  });

  it('handles an argv exactly ARGV_MAX bytes long (not truncated)', () => {
    const last = 'y'.repeat(ARGV_MAX - 'curl\0'.length - 1);
    const area = argvArea(['curl', last]);
    expect(area.length).toBe(ARGV_MAX);
    const e = decodeConnectEvent(buildEvent({ argvArea: area }));
    expect(e.argv).toEqual(['curl', last]);
  });

  it('empty argv (kernel thread / unreadable)', () => {
    const e = decodeConnectEvent(buildEvent({ argvArea: Buffer.alloc(0), argvError: true }));
    expect(e.argv).toEqual([]);
    expect(e.argvError).toBe(true);
  });

  it('full-length comm without NUL, ancestors capped', () => {
    const e = decodeConnectEvent(
      buildEvent({
        comm: 'abcdefghijklmno',
        ancestors: [1, 2, 3, 4].map((p) => ({ pid: p, comm: `a${p}` })),
      }),
    );
    expect(e.comm).toBe('abcdefghijklmno');
    expect(e.ancestors.map((a) => a.pid)).toEqual([1, 2, 3, 4]);
  });

  it('a caller that repeats is decoded the same as a new one (the last exe, argv, ancestors, comms, cgroup id and addresses are reused only for the same bytes)', () => {
    const a = { argvArea: argvArea(['curl', '-s', 'http://169.254.169.254/a']), exeArea: argvArea(['curl', 'bin', 'usr']),
      ancestors: [{ pid: 10, comm: 'bash' }, { pid: 1, comm: 'systemd' }], cgroupId: 7n };
    const b = { argvArea: argvArea(['wget', 'http://169.254.169.254/b']), exeArea: argvArea(['curl', 'bin']), exeTruncated: true,
      ancestors: [{ pid: 11, comm: 'bash' }, { pid: 1, comm: 'systemd' }], cgroupId: 2n ** 53n + 1n,
      comm: 'wget', parentComm: 'sh', saddr: [169, 254, 10, 3], daddr: [169, 254, 170, 2] };
    // IPv6 whose first four bytes are a's IPv4 addresses: the same leading bytes, another address.
    const c = { family: AF_INET6, saddr: [169, 254, 10, 2, ...Array(11).fill(0), 1], daddr: [169, 254, 169, 254, ...Array(11).fill(0), 2],
      comm: 'cur', parentComm: 'bas' };
    const fresh = (spec: EventSpec): ConnectEvent => {
      decodeConnectEvent(buildEvent({ argvArea: argvArea(['x']), exeArea: argvArea(['y']), ancestors: [], cgroupId: 1n }));
      return decodeConnectEvent(buildEvent(spec));
    };
    const a1 = decodeConnectEvent(buildEvent(a));
    const a2 = decodeConnectEvent(buildEvent(a));
    const b1 = decodeConnectEvent(buildEvent(b));
    const c1 = decodeConnectEvent(buildEvent(c));
    const a3 = decodeConnectEvent(buildEvent(a));
    expect(a2).toEqual(a1);
    expect(c1).toEqual(fresh(c));
    expect(c1).toMatchObject({ saddr: 'a9fe:a02::1', daddr: 'a9fe:a9fe::2', comm: 'cur', parentComm: 'bas' });
    expect(a3).toMatchObject({ saddr: '169.254.10.2', daddr: '169.254.169.254', comm: 'curl', parentComm: 'bash' });
    expect(a3).toEqual(a1);
    expect(a1).toEqual(fresh(a));
    expect(b1).toEqual(fresh(b));
    expect(b1).toMatchObject({ argv: ['wget', 'http://169.254.169.254/b'], exe: '.../bin/curl', exeTruncated: true, cgroupId: '9007199254740993',
      comm: 'wget', parentComm: 'sh', saddr: '169.254.10.3', daddr: '169.254.170.2' });
    expect(b1.ancestors.map((x) => x.pid)).toEqual([11, 1]);
    // Each event has an argv array of its own: a record may change its copy.
    a1.argv.push('changed');
    expect(a2.argv).toEqual(['curl', '-s', 'http://169.254.169.254/a']);
  });
});

describe('splitArgv', () => {
  it('splits like /proc/PID/cmdline', () => {
    expect(splitArgv(Buffer.from('a\0b c\0\0d\0'))).toEqual(['a', 'b c', '', 'd']);
    expect(splitArgv(Buffer.from('a\0bc'))).toEqual(['a', 'bc']);
    expect(splitArgv(Buffer.alloc(0))).toEqual([]);
    expect(splitArgv(Buffer.from('é\0'))).toEqual(['é']);
  });
});

describe('formatIPv6 matches Node', () => {
  const node = (b: Uint8Array): string => {
    const words: string[] = [];
    for (let i = 0; i < 16; i += 2) words.push(((b[i] << 8) | b[i + 1]).toString(16));
    return new SocketAddress({ address: words.join(':'), family: 'ipv6' }).address;
  };

  it('known cases', () => {
    expect(formatIPv6(Uint8Array.from(V6_IMDS))).toBe('fd00:ec2::254');
    expect(formatIPv6(new Uint8Array(16))).toBe('::');
    expect(formatIPv6(Uint8Array.from([...new Array(15).fill(0), 1]))).toBe('::1');
    expect(formatIPv6(Uint8Array.from(mapped([1, 2, 3, 4])))).toBe('::ffff:1.2.3.4');
  });

  // One formatter serves the wire and the kernel side (the join compares their text). It follows
  // RFC 5952, like Node, except for the deprecated IPv4-compatible ::/96 range, which Node still
  // prints dotted (::0.1.255.255) and RFC 5952 does not: those are left out of the comparison.
  it('property: same text as net.SocketAddress for random (zero-heavy) addresses', () => {
    const word = fc.oneof(fc.constant(0), fc.constant(0), fc.constant(0xffff), fc.integer({ min: 0, max: 0xffff }));
    fc.assert(
      fc.property(fc.array(word, { minLength: 8, maxLength: 8 }), (ws) => {
        const b = new Uint8Array(16);
        ws.forEach((w, i) => {
          b[2 * i] = w >> 8;
          b[2 * i + 1] = w & 0xff;
        });
        const v4compatible = ws.slice(0, 6).every((w) => w === 0) && (ws[6] !== 0 || ws[7] > 1);
        if (!v4compatible) expect(formatIPv6(b)).toBe(node(b));
      }),
      { numRuns: 2000 },
    );
  });
});

describe('RecordDecoder framing', () => {
  const stream = Buffer.concat([
    buildReady(),
    buildEvent({ tgid: 1, argvArea: argvArea(['a', 'one']) }),
    buildStats(0),
    buildEvent({ tgid: 2, family: AF_INET6, saddr: V6_NEAR, daddr: V6_IMDS }),
    buildEvent({ tgid: 3, argvArea: argvArea(['c', 'x'.repeat(1100)]).subarray(0, ARGV_MAX), argvTruncated: true }),
    buildStats(5, true),
  ]);

  const summary = (recs: DecodedRecord[]): string[] =>
    recs.map((r) =>
      r.kind === 'connect'
        ? `connect:${r.event.tgid}:${r.event.daddr}:${r.event.argv.length}`
        : r.kind === 'ready'
          ? `ready:${r.ready.loaderPid}:${r.ready.loadMs}:${r.ready.attachMs}`
          : `stats:${r.stats.lost}:${r.stats.final}`,
    );

  const expected = [
    'ready:777:17.25:0.25',
    'connect:1:169.254.169.254:2',
    'stats:0:false',
    'connect:2:fd00:ec2::254:2',
    'connect:3:169.254.169.254:2',
    'stats:5:true',
  ];

  it('whole stream in one chunk', () => {
    const d = new RecordDecoder();
    expect(summary(d.push(stream))).toEqual(expected);
    expect(d.bufferedBytes).toBe(0);
  });

  it('one byte at a time', () => {
    const d = new RecordDecoder();
    const out: DecodedRecord[] = [];
    for (let i = 0; i < stream.length; i++) out.push(...d.push(stream.subarray(i, i + 1)));
    expect(summary(out)).toEqual(expected);
    expect(d.bufferedBytes).toBe(0);
  });

  it('property: any split into chunks gives the same records', () => {
    fc.assert(
      fc.property(fc.uniqueArray(fc.integer({ min: 1, max: stream.length - 1 }), { maxLength: 20 }), (cuts) => {
        const points = [0, ...cuts.sort((a, b) => a - b), stream.length];
        const d = new RecordDecoder();
        const out: DecodedRecord[] = [];
        for (let i = 0; i + 1 < points.length; i++) out.push(...d.push(stream.subarray(points[i], points[i + 1])));
        expect(summary(out)).toEqual(expected);
      }),
      { numRuns: 300 },
    );
  });

  it('decoded stats fields', () => {
    const d = new RecordDecoder();
    const [rec] = d.push(buildStats(3));
    expect(rec).toEqual({
      kind: 'stats',
      stats: {
        lost: 3, emitted: 10, untracked: 2, trackFailed: 1, monoNs: '99', final: false, filtered: 7, overBudget: 40,
        topSources: [
          { netnsIno: 4026532000, cgroupId: '99', dropped: 30, lost: 5 },
          { netnsIno: 4026532001, cgroupId: '0', dropped: 0, lost: 10 },
        ],
      },
    });
  });

  it('rejects an unknown record type', () => {
    const bad = Buffer.alloc(16);
    bad.writeUInt32LE(99, 0);
    bad.writeUInt32LE(16, 4);
    expect(() => new RecordDecoder().push(bad)).toThrow(RecordFramingError);
  });

  it('rejects a record whose size differs from the layout (stale build)', () => {
    const bad = buildEvent({});
    bad.writeUInt32LE(CONNECT_EVENT_SIZE - 8, CONNECT_EVENT_FIELDS.size[0]);
    expect(() => new RecordDecoder().push(bad)).toThrow(new RegExp(`expected ${CONNECT_EVENT_SIZE}`));
  });
});
