/**
 * Offline mode without root: capture files built by hand (test/unit/capture-files.ts) decoded by
 * offline/capture-file.ts, and `imds-tracer read` run in process on them: the same pipeline, in file
 * time, every call still waiting written at the end, bad and truncated files.
 */
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, describe, expect, it, vi } from 'vitest';
import { main } from '../../agent/src/cli.js';
import { CaptureBytes, CaptureFileError, capturePackets, NOTHING_YET, readCapture, type CapturedPacket } from '../../agent/src/offline/capture-file.js';
import fc from 'fast-check';
import { FileClock } from '../../agent/src/offline/file-clock.js';
import { decodeFrame } from '../../agent/src/wire/packet.js';
import { validate } from '../../agent/src/schema.js';
import { DIST } from '../helpers/repo.js';
import { Conversation, IMDS4, IMDS6, req, res, segmentFrame, type Link } from './frames.js';
import { block, epb, idb, LINKTYPE, pcapFile, pcapngFile, shb, spb, type FilePacket } from './capture-files.js';

const dir = mkdtempSync(join(tmpdir(), 'imds-read-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
afterEach(() => { vi.restoreAllMocks(); });

const T0 = 1_700_000_000_123_456; // µs

/** One exchange on a new connection as file packets, `gapUs` between the request and its answer. */
function exchange(link: Link, cport: number, request: string, response: string | null, at: number,
  o: { gapUs?: number; server?: string; client?: string } = {}): FilePacket[] {
  const c = new Conversation(o.client ?? '10.0.0.5', cport, o.server ?? IMDS4, 80, 1000 + cport, 5000 + cport);
  const out: FilePacket[] = [];
  let t = at;
  const add = (s: ReturnType<Conversation['syn']>, dt = 100): void => { t += dt; out.push({ data: segmentFrame(link, s), tsUs: t }); };
  add(c.syn()); add(c.synAck()); add(c.clientAck()); add(c.send(request));
  if (response !== null) {
    add(c.reply(response), o.gapUs ?? 200);
    add(c.clientFin()); add(c.serverFin());
  }
  return out;
}

function decodeAll(buf: Buffer | CaptureBytes): { packets: CapturedPacket[]; summary: ReturnType<typeof readCapture> } {
  const packets: CapturedPacket[] = [];
  const summary = readCapture(buf, (p) => packets.push({ ...p, data: Buffer.from(p.data) }));
  return { packets, summary };
}

/**
 * buf as a file read a window of windowBytes at a time, each read returning at most `piece` bytes
 * (as a pipe or a slow disk may); with failAt, a read reaching that byte fails (EIO); with quiet, every
 * other read finds nothing yet (-1: a non-blocking pipe whose writer is quiet).
 */
function windowed(buf: Buffer, windowBytes: number, piece = 7, failAt = Infinity, quiet = false): CaptureBytes {
  let pos = 0;
  let reads = 0;
  return CaptureBytes.reading((into, at) => {
    if (quiet && reads++ % 2 === 0) return -1;
    if (pos >= failAt) throw new Error('EIO: i/o error, read');
    const n = Math.min(piece, into.length - at, buf.length - pos, failAt - pos);
    buf.copy(into, at, pos, pos + n);
    pos += n;
    return n;
  }, windowBytes);
}

async function read(buf: Buffer, ...flags: string[]): Promise<{ status: number; said: string[]; records: Record<string, any>[]; file: string }> {
  const file = join(dir, `f${Math.random().toString(36).slice(2)}.cap`);
  writeFileSync(file, buf);
  const said: string[] = [];
  let out = '';
  vi.spyOn(process.stdout, 'write').mockImplementation((s: string | Uint8Array) => { out += String(s); return true; });
  const status = await main(['node', 'imds-tracer', 'read', ...flags, file], (l) => { said.push(l); return true; });
  vi.restoreAllMocks();
  return { status, said, file, records: out.split('\n').filter(Boolean).map((l) => JSON.parse(l)) };
}

const calls = (rs: Record<string, any>[]) => rs.filter((r) => r.event === 'imds_call');

describe('capture file decoders', () => {
  const pkts = exchange('ETHERNET', 40001, req('GET', '/latest/meta-data/'), res(200, 'x'), T0);

  it.each([
    ['pcap, little-endian, µs', pcapFile(1, pkts, { le: true })],
    ['pcap, big-endian, µs', pcapFile(1, pkts, { le: false })],
    ['pcap, little-endian, ns', pcapFile(1, pkts, { le: true, nano: true })],
    ['pcap, big-endian, ns', pcapFile(1, pkts, { le: false, nano: true })],
    ['pcapng, little-endian, µs', pcapngFile(1, pkts, { le: true })],
    ['pcapng, big-endian, µs', pcapngFile(1, pkts, { le: false })],
    ['pcapng, little-endian, ns', pcapngFile(1, pkts, { le: true, nano: true })],
    ['pcapng, big-endian, ns', pcapngFile(1, pkts, { le: false, nano: true })],
  ])('%s: every packet, its bytes and its time', (_what, buf) => {
    const { packets, summary } = decodeAll(buf);
    expect(summary.cut).toBeNull();
    expect(packets.map((p) => p.data)).toEqual(pkts.map((p) => p.data));
    expect(packets.map((p) => p.tsUs)).toEqual(pkts.map((p) => p.tsUs));
    expect(packets.every((p) => p.link === 'ETHERNET')).toBe(true);
  });

  it.each(Object.entries(LINKTYPE) as Array<[Link, number]>)('link type %s (%i) is named as decodeFrame takes it', (link, n) => {
    const p = exchange(link, 40002, req('GET', '/'), res(200), T0, { server: IMDS6, client: 'fd00::5' });
    for (const buf of [pcapFile(n, p), pcapngFile(n, p)]) {
      const { packets } = decodeAll(buf);
      expect(packets[0].link).toBe(link);
      expect(decodeFrame(packets[3].link, packets[3].data)?.payload.toString()).toContain('GET / HTTP/1.1');
    }
  });

  it('pcapng: several sections of either byte order, interfaces named, simple packets, other blocks skipped', () => {
    const a = exchange('ETHERNET', 40003, req('GET', '/a'), res(200), T0);
    const b = exchange('RAW', 40004, req('GET', '/b'), res(200), T0 + 10_000_000);
    const buf = Buffer.concat([
      shb(true), idb(1, true, { name: 'eth0' }), idb(101, true, { name: 'tun9', tsresol: 9 }),
      epb(0, a[0], true), block(5, Buffer.alloc(8), true), epb(1, b[0], true, 1000), spb(a[1].data, true),
      shb(false), idb(276, false, { name: 'any' }), epb(0, a[2], false),
      epb(7, a[3], false), // an interface never described: skipped and counted
    ]);
    const { packets, summary } = decodeAll(buf);
    expect(summary).toMatchObject({ format: 'pcapng', packets: 4, cut: null, skippedBlocks: 1, orphanPackets: 1 });
    expect(packets.map((p) => [p.link, p.ifName, p.tsUs])).toEqual([
      ['ETHERNET', 'eth0', a[0].tsUs], ['RAW', 'tun9', b[0].tsUs], ['ETHERNET', 'eth0', null], ['LINUX_SLL2', 'any', a[2].tsUs]]);
    expect(packets[2].data).toEqual(a[1].data);
  });

  it('a file cut inside a packet yields every packet before it and says where', () => {
    for (const whole of [pcapFile(1, pkts), pcapngFile(1, pkts)]) {
      const cut = whole.subarray(0, whole.length - 10);
      const { packets, summary } = decodeAll(cut);
      expect(packets).toHaveLength(pkts.length - 1);
      expect(summary.cut).toMatchObject({ truncated: true });
      expect(summary.cut!.offset).toBeLessThan(cut.length);
      expect(summary.cut!.why).toMatch(/cut short/);
    }
  });

  it('garbage, an empty file, a pcapng without a section header: a CaptureFileError', () => {
    for (const bad of [Buffer.from('GET / HTTP/1.1\r\n\r\n'), Buffer.alloc(0), Buffer.concat([idb(1, true), shb(true)]),
      pcapFile(1, []).subarray(0, 20)]) {
      expect(() => readCapture(bad, () => undefined)).toThrow(CaptureFileError);
    }
  });

  it('a file read a window at a time decodes as the whole of it: the same packets, the same summary, cut and broken at the same bytes', () => {
    const a = exchange('ETHERNET', 40003, req('GET', '/a'), res(200), T0);
    const b = exchange('RAW', 40004, req('GET', '/b'), res(200), T0 + 10_000_000);
    const files = [
      pcapFile(1, pkts, { le: true }), pcapFile(1, pkts, { le: false, nano: true }), pcapngFile(1, pkts, { le: false }),
      Buffer.concat([shb(true), idb(1, true, { name: 'eth0' }), idb(101, true, { name: 'tun9', tsresol: 9 }), epb(0, a[0], true),
        block(5, Buffer.alloc(8), true), epb(1, b[0], true, 1000), spb(a[1].data, true), shb(false), idb(276, false, { name: 'any' }),
        epb(0, a[2], false), epb(7, a[3], false)]),
    ];
    for (const whole of files) {
      for (const buf of [whole, whole.subarray(0, whole.length - 10), whole.subarray(0, whole.length - 30),
        Buffer.concat([whole, Buffer.from([6, 0, 0, 0, 7, 0, 0, 0, 1, 2, 3, 4])])]) {
        const all = decodeAll(buf);
        for (const windowBytes of [1, 64, 100, 4096]) {
          const got = decodeAll(windowed(buf, windowBytes));
          expect(got.summary).toEqual(all.summary);
          expect(got.packets).toEqual(all.packets);
        }
      }
    }
    for (const bad of [Buffer.from('GET / HTTP/1.1\r\n\r\n'), Buffer.alloc(0), Buffer.concat([idb(1, true), shb(true)])]) {
      expect(() => decodeAll(windowed(bad, 64))).toThrow(CaptureFileError);
    }
  });

  it('a pipe with nothing to read now and then: NOTHING_YET in between, then the same packets and summary', () => {
    const files = [pcapFile(1, pkts), pcapngFile(1, pkts, { le: false }), pcapFile(1, pkts).subarray(0, 200)];
    for (const whole of files) {
      const all = decodeAll(whole);
      for (const [windowBytes, piece] of [[64, 7], [4096, 1000]]) {
        const it = capturePackets(windowed(whole, windowBytes, piece, Infinity, true));
        const packets: CapturedPacket[] = [];
        let waits = 0;
        for (let r = it.next(); ; r = it.next()) {
          if (r.done) {
            expect(r.value).toEqual(all.summary);
            break;
          }
          if (r.value === NOTHING_YET) waits++;
          else packets.push({ ...r.value, data: Buffer.from(r.value.data) });
        }
        expect(waits).toBeGreaterThan(0);
        expect(packets).toEqual(all.packets);
      }
    }
  });

  it('a file that cannot be read further (an I/O error midway): every packet before, then broken there with the error', () => {
    for (const whole of [pcapFile(1, pkts), pcapngFile(1, pkts)]) {
      const failAt = whole.length - 50;
      const { packets, summary } = decodeAll(windowed(whole, 64, 7, failAt));
      expect(packets.length).toBeGreaterThan(0);
      expect(packets.length).toBeLessThan(pkts.length);
      expect(packets.map((p) => p.data)).toEqual(pkts.slice(0, packets.length).map((p) => p.data));
      expect(summary.cut).toMatchObject({ truncated: false, why: 'cannot be read further: EIO: i/o error, read' });
      expect(summary.cut!.offset).toBeLessThanOrEqual(failAt);
    }
    expect(() => decodeAll(windowed(pcapFile(1, pkts), 64, 7, 0))).toThrow(/EIO/);
    // A read failing at any byte, record boundaries included: never taken for the file's end.
    const two = pkts.slice(0, 2);
    for (const small of [pcapFile(1, two), pcapngFile(1, two)]) {
      for (let at = 0; at < small.length; at++) {
        let got: ReturnType<typeof decodeAll>;
        try { got = decodeAll(windowed(small, 16, 5, at)); } catch (err) { expect(err).toBeInstanceOf(CaptureFileError); continue; }
        expect(got.summary.cut).toMatchObject({ truncated: false, why: 'cannot be read further: EIO: i/o error, read' });
        expect(got.packets.length).toBeLessThan(2);
      }
    }
    // Failing exactly where a record ends: broken there too, not a clean end.
    const atBoundary = 24 + 16 + pkts[0].data.length;
    const { packets, summary } = decodeAll(windowed(pcapFile(1, pkts), 64, 7, atBoundary));
    expect(packets).toHaveLength(1);
    expect(summary.cut).toMatchObject({ offset: atBoundary, truncated: false, why: 'cannot be read further: EIO: i/o error, read' });
  });

  it('a pcapng whose block lengths stop making sense midway: broken there, not truncated', () => {
    const good = pcapngFile(1, pkts);
    const broken = Buffer.concat([good, Buffer.from([6, 0, 0, 0, 7, 0, 0, 0, 1, 2, 3, 4])]);
    const { packets, summary } = decodeAll(broken);
    expect(packets).toHaveLength(pkts.length);
    expect(summary.cut).toMatchObject({ offset: good.length, truncated: false });
  });
});

describe('file clock', () => {
  it('fires timers when file time passes them, in deadline order, never going back', () => {
    const c = new FileClock(() => 0);
    const fired: string[] = [];
    c.advance(1000);
    c.set(() => fired.push('b'), 500);
    const a = c.set(() => fired.push('x'), 100);
    c.set(() => fired.push('a'), 200);
    c.clear(a);
    c.advance(1150);
    expect(fired).toEqual([]);
    c.advance(900); // earlier: ignored
    expect(c.now()).toBe(1150);
    c.advance(1499);
    expect(fired).toEqual(['a']);
    c.advance(1500);
    expect(fired).toEqual(['a', 'b']);
  });

  it('cancelled timers do not stay until their deadline: answered requests leave nothing behind', () => {
    const c = new FileClock(() => 0);
    c.advance(1000);
    const fired: number[] = [];
    for (let i = 0; i < 10_000; i++) {
      const t = c.set(() => fired.push(i), 1500);
      if (i % 100 !== 0) { c.clear(t); c.clear(t); } // cleared twice: counted once
    }
    expect(c.pending).toBeLessThan(300);
    c.advance(2500);
    expect(fired).toEqual(Array.from({ length: 100 }, (_, k) => k * 100));
    expect(c.pending).toBe(0);
    // Timers cleared by their own callback (a request finalised by its timeout) are out of the heap
    // already: they are not counted as cancelled ones in it (which would compact it too early).
    const kept = Array.from({ length: 210 }, () => c.set(() => undefined, 1000));
    for (const t of kept.slice(0, 10)) c.clear(t); // 10 cancelled of 210: they stay for now
    const late: unknown[] = [];
    for (let i = 0; i < 300; i++) late.push(c.set(() => c.clear(late[i]), 10));
    c.advance(2510);
    expect(c.pending).toBe(210);
  });

  it('fires what a naive list would, in the same order, whatever is set, cleared and passed', () => {
    type Op = { kind: 'set'; ms: number } | { kind: 'clear'; which: number } | { kind: 'advance'; by: number };
    const op: fc.Arbitrary<Op> = fc.oneof(
      { weight: 4, arbitrary: fc.record({ kind: fc.constant('set' as const), ms: fc.oneof(fc.constant(1500), fc.nat(3000)) }) },
      { weight: 3, arbitrary: fc.record({ kind: fc.constant('clear' as const), which: fc.nat(20) }) },
      { weight: 1, arbitrary: fc.record({ kind: fc.constant('advance' as const), by: fc.nat(100) }) },
    );
    fc.assert(fc.property(fc.array(op, { minLength: 200, maxLength: 1500 }), (ops) => {
      const c = new FileClock(() => 0);
      c.advance(1);
      const fired: number[] = [];
      const model: Array<{ id: number; due: number; live: boolean }> = [];
      const expected: number[] = [];
      const handles: unknown[] = [];
      let now = 1;
      for (const o of ops) {
        if (o.kind === 'set') {
          const id = handles.length;
          handles.push(c.set(() => fired.push(id), o.ms));
          model.push({ id, due: now + o.ms, live: true });
        } else if (o.kind === 'clear' && handles.length > 0) {
          const id = Math.max(0, handles.length - 1 - o.which); // mostly recent ones, as answers are
          c.clear(handles[id]);
          model[id].live = false;
        } else if (o.kind === 'advance') {
          now += o.by + 1;
          c.advance(now);
          const due = model.filter((m) => m.live && m.due <= now).sort((a, b) => a.due - b.due || a.id - b.id);
          for (const m of due) { m.live = false; expected.push(m.id); }
        }
        expect(fired).toEqual(expected);
      }
    }), { numRuns: 200 });
  });
});

describe('imds-tracer read', () => {
  it('a pcap: call records through the pipeline, attribution none with its reason, the file\'s times', async () => {
    const v1 = exchange('ETHERNET', 40010, req('GET', '/latest/meta-data/iam/security-credentials/'), res(200, 'role'), T0);
    const v2 = exchange('ETHERNET', 40011, req('GET', '/latest/meta-data/ami-id', { 'X-aws-ec2-metadata-token': 'AQAEAsecret' }), res(200), T0 + 5_000_000);
    const { status, records, said } = await read(pcapFile(1, [...v1, ...v2]));
    expect(status).toBe(0);
    expect(said).toEqual([]);
    const c = calls(records);
    expect(c).toHaveLength(1);
    expect(c[0]).toMatchObject({
      imds_version: 'v1', request: { method: 'GET', path: '/latest/meta-data/iam/security-credentials/' },
      response: { status: 200 }, time: new Date(v1[3].tsUs / 1000).toISOString(),
      connection: { src: '10.0.0.5', sport: 40010, dst: IMDS4, dport: 80, interface: 'link:ETHERNET' },
      process: { attribution: 'none', reason: 'read from a capture file: no process to look up' },
    });
    for (const r of records) expect(validate(r)).toEqual([]);
    const stats = records.at(-1)!;
    expect(stats).toMatchObject({ event: 'stats', packets: 14, calls: { v1: 1, v2: 1, other: 0 }, calls_unattributed: 1 });
  });

  it('--include-v2 and --include-other are honoured; interfaces from pcapng names and SLL2 ifindexes', async () => {
    const le = true;
    const a = exchange('ETHERNET', 40020, req('GET', '/latest/api/token'), res(200), T0);
    const token = exchange('ETHERNET', 40021, req('PUT', '/latest/api/token', { 'X-aws-ec2-metadata-token-ttl-seconds': '60' }), res(200, 'tok'), T0 + 1000);
    const gcp = exchange('LINUX_SLL2', 40022, req('GET', '/computeMetadata/v1/', { 'Metadata-Flavor': 'Google' }), res(200), T0 + 2000);
    const buf = Buffer.concat([shb(le), idb(1, le, { name: 'ens5' }), idb(276, le, { name: 'any' }),
      ...a.map((p) => epb(0, p, le)), ...token.map((p) => epb(0, p, le)), ...gcp.map((p) => epb(1, p, le))]);
    const quiet = calls((await read(buf)).records);
    expect(quiet.map((r) => r.request.path)).toEqual(['/latest/api/token']);
    const all = calls((await read(buf, '--include-v2', '--include-other', '--scrub-word', 'sesame')).records);
    expect(all.map((r) => [r.request.method, r.imds_version, r.connection.interface])).toEqual([
      ['GET', 'v1', 'ens5'], ['PUT', 'v2', 'ens5'], ['GET', null, 'ifindex:3']]);
  });

  it('a request waits for its answer in file time, not wall time; at the end every waiting call is written', async () => {
    const inTime = exchange('ETHERNET', 40030, req('GET', '/latest/meta-data/in-time'), res(200), T0, { gapUs: 1_400_000 });
    const late = exchange('ETHERNET', 40031, req('GET', '/latest/meta-data/late'), res(200), T0 + 10_000_000, { gapUs: 1_600_000 });
    const never = exchange('ETHERNET', 40032, req('GET', '/latest/meta-data/never'), null, T0 + 20_000_000);
    const { records } = await read(pcapFile(1, [...inTime, ...late, ...never]));
    expect(calls(records).map((r) => [r.request.path, r.response.status])).toEqual([
      ['/latest/meta-data/in-time', 200], ['/latest/meta-data/late', null], ['/latest/meta-data/never', null]]);
  });

  it('a garbage file: exit 1, an error naming the file; other files are still read', async () => {
    const good = join(dir, 'good.pcap');
    writeFileSync(good, pcapFile(1, exchange('ETHERNET', 40040, req('GET', '/g'), res(200), T0)));
    const { status, said, file, records } = await read(Buffer.from('this is not a capture\n'));
    expect(status).toBe(1);
    expect(said).toEqual([`imds-tracer read: ${file}: not a pcap or pcapng file (starts with 0x74686973)`]);
    expect(records).toEqual([]);
    const missing = await read(Buffer.alloc(0), join(dir, 'nope.pcap'));
    expect(missing.status).toBe(1);
    expect(missing.said[0]).toMatch(/nope\.pcap: ENOENT/);
  });

  it('--log-file: the same lines appended to the file; packets of an undescribed interface named on stderr', async () => {
    const log = join(dir, 'read.jsonl');
    const a = exchange('ETHERNET', 40060, req('GET', '/latest/meta-data/logged'), res(200), T0);
    const buf = Buffer.concat([shb(true), idb(1, true, { name: 'eth0' }), ...a.map((p) => epb(0, p, true)), epb(3, a[0], true)]);
    const { status, records, said, file } = await read(buf, '--log-file', log);
    expect(status).toBe(0);
    expect(readFileSync(log, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l))).toEqual(records);
    expect(calls(records).map((r) => r.request.path)).toEqual(['/latest/meta-data/logged']);
    expect(said).toEqual([`imds-tracer read: ${file}: packets of an interface the file never described, skipped: 1`]);
  });

  it('a pcapng broken midway: the records before the break, one line saying where, exit 1', async () => {
    const a = exchange('ETHERNET', 40080, req('GET', '/latest/meta-data/before-break'), res(200), T0);
    const good = pcapngFile(1, a);
    const { status, records, said, file } = await read(Buffer.concat([good, Buffer.from([6, 0, 0, 0, 7, 0, 0, 0, 1, 2, 3, 4])]));
    expect(status).toBe(1);
    expect(calls(records).map((r) => r.request.path)).toEqual(['/latest/meta-data/before-break']);
    expect(said).toEqual([`imds-tracer read: ${file}: broken at byte ${good.length} after ${a.length} packets: block of length 7: not a block, the file is broken here`]);
  });

  it('a link type not read here: its packets counted as undecodable, named once on stderr', async () => {
    const a = exchange('ETHERNET', 40070, req('GET', '/latest/meta-data/x'), res(200), T0);
    const { status, records, said, file } = await read(pcapFile(105, a));
    expect(status).toBe(0);
    expect(calls(records)).toEqual([]);
    expect(records.at(-1)).toMatchObject({ event: 'stats', packets: a.length, packets_undecodable: a.length });
    expect(said).toEqual([`imds-tracer read: ${file}: link type 105 is not one read here (Ethernet, Linux cooked, raw IP, loopback): its packets are counted in stats.packets_undecodable`]);
  });

  it('a truncated file: the records before the cut, one line saying where, exit 0', async () => {
    const a = exchange('ETHERNET', 40050, req('GET', '/latest/meta-data/before-cut'), res(200), T0);
    const b = exchange('ETHERNET', 40051, req('GET', '/latest/meta-data/after-cut'), res(200), T0 + 1_000_000);
    const whole = pcapFile(1, [...a, ...b]);
    const { status, said, records, file } = await read(whole.subarray(0, whole.length - 30));
    expect(status).toBe(0);
    expect(calls(records).map((r) => [r.request.path, r.response.status])).toEqual([['/latest/meta-data/before-cut', 200], ['/latest/meta-data/after-cut', 200]]);
    expect(said).toHaveLength(1);
    expect(said[0]).toMatch(new RegExp(`^imds-tracer read: ${file}: cut at byte \\d+ after 13 packets: packet 14 cut short`));
  });
});

// The built CLI reading standard input (`read -`, as `tcpdump -r -`): a pipe gives a little at a time.
const CLI = join(DIST, 'cli.js');
const noCli = existsSync(CLI) ? null : 'dist/ not built: run npm run build';
const noPython = spawnSync('python3', ['--version']).status === 0 ? null : 'python3 not found';
if (noCli) console.warn(`read - skipped: ${noCli}`);

describe.skipIf(Boolean(noCli))('read - (standard input, built CLI)', () => {
  const file = join(dir, 'stdin.pcap');
  const pkts = Array.from({ length: 40 }, (_, i) => exchange('ETHERNET', 41000 + i, req('GET', `/latest/meta-data/p${i}`), res(200, 'x'), T0 + i * 1000)).flat();
  writeFileSync(file, pcapFile(1, pkts));

  it('the same lines as reading the file, from a pipe', () => {
    const fromFile = spawnSync(process.execPath, [CLI, 'read', '--include-v2', file], { encoding: 'utf8' });
    const fromPipe = spawnSync(process.execPath, [CLI, 'read', '--include-v2', '-'], { input: readFileSync(file), encoding: 'utf8' });
    expect(fromFile.status).toBe(0);
    expect(fromPipe.status).toBe(0);
    expect(fromPipe.stdout.split('\n').filter((l) => l.includes('"imds_call"'))).toHaveLength(40);
    expect(fromPipe.stdout).toBe(fromFile.stdout);
  });

  it.skipIf(Boolean(noPython))('a non-blocking pipe written slowly: waited on, not an error', () => {
    // python3 makes the pipe non-blocking (as a parent may leave it) and writes it in pieces, 20 ms apart.
    const feed = `
import os, fcntl, subprocess, sys, time, threading
r, w = os.pipe()
fcntl.fcntl(r, fcntl.F_SETFL, fcntl.fcntl(r, fcntl.F_GETFL) | os.O_NONBLOCK)
p = subprocess.Popen(sys.argv[1:], stdin=r, stdout=subprocess.PIPE)
os.close(r)
out = []
t = threading.Thread(target=lambda: out.append(p.stdout.read())); t.start()
d = open(${JSON.stringify(file)}, 'rb').read()
for i in range(0, len(d), 3000):
    os.write(w, d[i:i+3000]); time.sleep(0.02)
os.close(w)
t.join(); sys.stdout.buffer.write(out[0]); sys.exit(p.wait())
`;
    const r = spawnSync('python3', ['-c', feed, process.execPath, CLI, 'read', '--include-v2', '-'], { encoding: 'utf8', timeout: 60_000 });
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    const fromFile = spawnSync(process.execPath, [CLI, 'read', '--include-v2', file], { encoding: 'utf8' });
    expect(r.stdout).toBe(fromFile.stdout);
  });

  it('standard input named twice: read once, then empty (not a capture, exit 1), as a second read of a drained pipe', () => {
    const r = spawnSync(process.execPath, [CLI, 'read', '-', '-'], { input: readFileSync(file), encoding: 'utf8', timeout: 20_000 });
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/-: not a pcap or pcapng file \(0 bytes\)/);
    expect(r.stdout.split('\n').filter((l) => l.includes('"imds_call"'))).toHaveLength(40);
  });

  it('a quiet pipe (the writer still there): its calls are written as they come, and SIGTERM stops read at once, exit 130', async () => {
    const child = spawn(process.execPath, [CLI, 'read', '-'], { stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    let wanted: (() => void) | null = null;
    const forty = new Promise<void>((resolve) => { wanted = resolve; });
    child.stdout.on('data', (d) => {
      out += String(d);
      if (out.split('\n').filter((l) => l.includes('"imds_call"')).length === 40) wanted!();
    });
    child.stderr.on('data', (d) => { err += String(d); });
    const exited = new Promise<[number | null, NodeJS.Signals | null]>((resolve) => child.on('close', (code, sig) => resolve([code, sig])));
    child.stdin.write(readFileSync(file)); // 40 calls, and the pipe stays open: nothing more comes
    await forty; // written while read waits for more, not at the end
    child.kill('SIGTERM');
    const [code, signal] = await exited;
    child.stdin.destroy();
    expect(signal).toBeNull();
    expect(code).toBe(130);
    expect(err).toMatch(/interrupted \(SIGTERM\): the calls read until then are written/);
    const records = out.split('\n').filter(Boolean).map((l) => JSON.parse(l));
    expect(records.at(-1)).toMatchObject({ event: 'stats', calls: { v1: 40 } });
    expect(calls(records).map((r) => r.request.path)).toEqual(Array.from({ length: 40 }, (_, i) => `/latest/meta-data/p${i}`));
  }, 30_000);

  it('Ctrl-C: reading stops, the calls read until then are written with the stats, exit 130', async () => {
    const many = Array.from({ length: 3000 }, (_, i) => exchange('ETHERNET', 20000 + i, req('GET', `/latest/meta-data/q${i}`), res(200, 'x'), T0 + i * 1000)).flat();
    const bytes = pcapFile(1, many); // far more than a pipe holds: once it is all written, read is reading
    const child = spawn(process.execPath, [CLI, 'read', '-'], { stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d) => { out += String(d); });
    child.stderr.on('data', (d) => { err += String(d); });
    const exited = new Promise<[number | null, NodeJS.Signals | null]>((resolve) => child.on('close', (code, sig) => resolve([code, sig])));
    await new Promise<void>((resolve) => child.stdin.write(bytes, () => resolve()));
    child.kill('SIGINT');
    child.stdin.end();
    const [code, signal] = await exited;
    expect(signal).toBeNull();
    expect(code).toBe(130);
    expect(err).toMatch(/interrupted \(SIGINT\): the calls read until then are written/);
    const records = out.split('\n').filter(Boolean).map((l) => JSON.parse(l));
    expect(records.at(-1)).toMatchObject({ event: 'stats' });
    const paths = calls(records).map((r) => r.request.path);
    expect(paths.length).toBeGreaterThan(0);
    expect(paths).toEqual(paths.map((_, i) => `/latest/meta-data/q${i}`)); // the first ones, in order, none missing
    expect(records.at(-1)!.calls.v1).toBe(paths.length);
  });
});
