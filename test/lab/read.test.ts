/**
 * Offline mode end to end: real clients (curl, python3 urllib) make IMDSv1 and IMDSv2 calls in a lab
 * namespace while real capture tools write files there (tcpdump -w: pcap, Ethernet; tcpdump -i any
 * -y LINUX_SLL2: pcap, cooked v2; dumpcap: pcapng). `imds-tracer read` (the built CLI) on each file
 * must report exactly the calls of the stand-in's request ledger (paths, versions, statuses); a
 * truncated copy yields the same calls and says where it was cut; a garbage file is refused.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLab, labSupported, type ImdsHandle, type Lab } from '../../lab/netns.js';
import { normalisePath } from '../../lab/imds-server.js';
import { validate } from '../../agent/src/schema.js';
import { READ_REASON } from '../../agent/src/commands/read.js';
import { curlRequests, curlV1, curlV2, pythonUrllib } from '../helpers/clients.js';

const support = labSupported();
const which = (cmd: string): boolean => spawnSync('sh', ['-c', `command -v ${cmd}`]).status === 0;
const tools = which('tcpdump') ? (which('dumpcap') ? null : 'dumpcap not installed (scripts/setup-dev.sh installs tshark)') : 'tcpdump not installed (scripts/setup-dev.sh)';
const skip = !support.ok ? support.reason : tools;
type Rec = Record<string, any>;

const SENTINEL_0 = '/latest/meta-data/local-ipv4';
const SENTINEL_1 = '/latest/meta-data/hostname';
const SENTINEL_2 = '/latest/meta-data/mac';

interface Capture { name: string; file: string; proc: ChildProcess; ready: Promise<void>; exited: Promise<void> }

/** A capture tool in the instance namespace; ready once it says it listens (stderr). */
function startCapture(lab: Lab, name: string, file: string, cmd: string, args: string[], readyLine: RegExp): Capture {
  const proc = lab.spawn(lab.instanceNs, cmd, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  const exited = new Promise<void>((resolve) => proc.once('exit', () => resolve()));
  const ready = new Promise<void>((resolve, reject) => {
    proc.stderr!.on('data', (d: Buffer) => { err += d.toString(); if (readyLine.test(err)) resolve(); });
    proc.once('exit', (code) => reject(new Error(`${cmd} exited ${code} before it listened: ${err}`)));
  });
  return { name, file, proc, ready, exited };
}

/** Resolves once the file holds these bytes (the capture tool wrote every packet before them). */
async function fileHolds(file: string, bytes: string, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  const want = Buffer.from(bytes);
  while (!(existsSync(file) && readFileSync(file).includes(want))) {
    if (Date.now() > deadline) throw new Error(`${file} never held ${JSON.stringify(bytes)}`);
    await new Promise((r) => setTimeout(r, 50)); // polling a file the tool writes: no event to await
  }
}

function readFiles(lab: Lab, ...args: string[]): { status: number | null; records: Rec[]; stderr: string } {
  const r = spawnSync(process.execPath, [join(lab.repoRoot, 'dist', 'cli.js'), 'read', ...args], { encoding: 'utf8', maxBuffer: 64 << 20 });
  return { status: r.status, stderr: r.stderr, records: r.stdout.split('\n').filter(Boolean).map((l) => JSON.parse(l)) };
}

/** A call as "port method path version status", from a record and from the ledger. */
const fromRecord = (r: Rec): string => `${r.connection.sport} ${r.request.method} ${normalisePath(r.request.path)} ${r.imds_version} ${r.response.status}`;
const fromLedger = (s: Rec): string => `${s.remotePort} ${s.method} ${normalisePath(s.path)} ${s.kind === 'token' || s.token !== 'none' ? 'v2' : 'v1'} ${s.status}`;

describe.skipIf(skip)(`imds-tracer read on files captured in a lab${skip ? ` (skipped: ${skip})` : ''}`, () => {
  let lab: Lab;
  let imds: ImdsHandle;
  const dir = mkdtempSync(join(tmpdir(), 'imdst-read-'));
  const captures: Capture[] = [];
  let ledger: Rec[] = [];
  let markers = 0;
  let markerPorts = new Set<number>();
  let lastPort = -1;

  beforeAll(async () => {
    lab = await createLab();
    imds = await lab.startImds({ logRequests: true });
    const f = (n: string): string => join(dir, n);
    captures.push(
      startCapture(lab, 'pcap', f('eth.pcap'), 'tcpdump', ['-n', '-U', '-i', lab.instanceIf, '-w', f('eth.pcap'), 'tcp port 80'], /listening on/),
      startCapture(lab, 'pcap-sll2', f('any.pcap'), 'tcpdump', ['-n', '-U', '-i', 'any', '-y', 'LINUX_SLL2', '-w', f('any.pcap'), 'tcp port 80'], /listening on/),
      startCapture(lab, 'pcapng', f('eth.pcapng'), 'dumpcap', ['-q', '-i', lab.instanceIf, '-f', 'tcp port 80', '-w', f('eth.pcapng')], /Capturing on/),
    );
    await Promise.all(captures.map((c) => c.ready));
    // A tool may say it listens a moment before its capture is open: a first call, made again until
    // every file holds it, proves they all capture (these calls are left out of the comparison).
    for (let tries = 1; ; tries++) {
      expect((await curlV1(lab, { path: SENTINEL_0 })).exitCode).toBe(0);
      markers++;
      const held = await Promise.all(captures.map((c) => fileHolds(c.file, `GET ${SENTINEL_0} HTTP`, 3000).then(() => true, () => false)));
      if (held.every(Boolean)) break;
      if (tries === 10) throw new Error(`a capture never started: ${captures.filter((_, i) => !held[i]).map((c) => c.name).join(', ')}`);
    }
    const runs = [
      await curlV1(lab),
      await curlV2(lab),
      await pythonUrllib(lab, 'v1', { ipv6: true }),
      await pythonUrllib(lab, 'v2'),
      await curlRequests(lab, [{ path: '/latest/meta-data/ami-id' }, { path: '/latest/meta-data/no-such-thing' }, { path: '/latest/meta-data/instance-type' }]),
      await curlV1(lab, { path: SENTINEL_1 }),
    ];
    for (const r of runs) expect(r.exitCode, r.stderr).toBe(0);
    // Every file holds the first sentinel's request, then a second call: the first one's answer and
    // end are in every file before the second's request.
    for (const c of captures) await fileHolds(c.file, `GET ${SENTINEL_1} HTTP`);
    expect((await curlV1(lab, { path: SENTINEL_2 })).exitCode).toBe(0);
    for (const c of captures) await fileHolds(c.file, `GET ${SENTINEL_2} HTTP`);
    for (const c of captures) c.proc.kill('SIGINT');
    await Promise.all(captures.map((c) => c.exited));
    ledger = await imds.waitForRequests(markers + 11, 10_000) as Rec[];
    expect(ledger).toHaveLength(markers + 11);
    expect(ledger.slice(0, markers).every((e) => e.path === SENTINEL_0)).toBe(true);
    markerPorts = new Set(ledger.slice(0, markers).map((e) => e.remotePort as number));
    lastPort = ledger.at(-1)!.remotePort as number;
    expect(ledger.at(-1)!.path).toBe(SENTINEL_2);
  }, 120_000);

  afterAll(async () => {
    for (const c of captures) c.proc.kill('SIGKILL');
    await lab?.destroy();
    rmSync(dir, { recursive: true, force: true });
  });

  const mine = (port: number): boolean => !markerPorts.has(port) && port !== lastPort;
  const expected = (): string[] => ledger.filter((s) => mine(s.remotePort as number)).map(fromLedger).sort();
  const got = (records: Rec[]): string[] => records.filter((r) => r.event === 'imds_call' && mine(r.connection.sport)).map(fromRecord).sort();

  for (const name of ['pcap', 'pcap-sll2', 'pcapng']) {
    it(`${name}: the same calls as the stand-in's ledger, not attributed, the file's interface`, () => {
      const c = captures.find((x) => x.name === name)!;
      const { status, records, stderr } = readFiles(lab, '--include-v2', c.file);
      expect(stderr).toBe('');
      expect(status).toBe(0);
      expect(got(records)).toEqual(expected());
      expect(expected()).toHaveLength(10); // curl v1 1, curl v2 2, python v1 1, v2 2, keep-alive 3, first sentinel 1
      const calls = records.filter((r) => r.event === 'imds_call');
      for (const r of records) expect(validate(r)).toEqual([]);
      for (const r of calls) expect(r.process).toEqual({ attribution: 'none', reason: READ_REASON });
      const ifaces = new Set(calls.map((r) => r.connection.interface));
      if (name === 'pcap') expect([...ifaces]).toEqual(['link:ETHERNET']);
      if (name === 'pcapng') expect([...ifaces]).toEqual([lab.instanceIf]);
      if (name === 'pcap-sll2') expect([...ifaces]).toEqual([expect.stringMatching(/^ifindex:\d+$/)]);
      // Without --include-v2: the IMDSv1 calls only.
      const v1 = readFiles(lab, c.file);
      expect(got(v1.records)).toEqual(expected().filter((k) => k.includes(' v1 ')));
    });
  }

  it('a truncated copy: the calls before the cut, one line saying where, exit 0; a garbage file: exit 1', () => {
    const whole = readFileSync(captures[0].file);
    const cut = join(dir, 'cut.pcap');
    writeFileSync(cut, whole.subarray(0, whole.length - 7));
    const r = readFiles(lab, '--include-v2', cut);
    expect(r.status).toBe(0);
    expect(got(r.records)).toEqual(expected());
    expect(r.stderr.trim().split('\n')).toEqual([expect.stringMatching(new RegExp(`^imds-tracer read: ${cut}: cut at byte \\d+ after \\d+ packets: packet \\d+ cut short`))]);
    const garbage = join(dir, 'garbage.pcap');
    writeFileSync(garbage, Buffer.from('\x89PNG\r\n\x1a\n not a capture at all'));
    const g = readFiles(lab, garbage, captures[0].file);
    expect(g.status).toBe(1);
    expect(g.stderr).toMatch(new RegExp(`^imds-tracer read: ${garbage}: not a pcap or pcapng file`));
    expect(got(g.records)).toEqual(expected().filter((k) => k.includes(' v1 '))); // the good file after it is still read
  });

  it('tcpdump -U -w - | read -: each call is written while tcpdump still runs; SIGTERM to read alone ends it (exit 130, stats)', async () => {
    const tcpdump = lab.spawn(lab.instanceNs, 'tcpdump', ['-n', '-U', '-i', lab.instanceIf, '-w', '-', 'tcp port 80'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let tcpdumpErr = '';
    const listening = new Promise<void>((resolve) => tcpdump.stderr!.on('data', (d: Buffer) => { tcpdumpErr += d.toString(); if (/listening on/.test(tcpdumpErr)) resolve(); }));
    const read = spawn(process.execPath, [join(lab.repoRoot, 'dist', 'cli.js'), 'read', '-'], { stdio: [tcpdump.stdout!, 'pipe', 'pipe'] });
    const records: Rec[] = [];
    let readErr = '';
    let waiting: { path: string; resolve: () => void } | null = null;
    let partial = '';
    read.stdout!.on('data', (d: Buffer) => {
      partial += d.toString();
      const lines = partial.split('\n');
      partial = lines.pop()!;
      for (const l of lines.filter(Boolean)) records.push(JSON.parse(l));
      if (waiting && records.some((r) => r.request?.path === waiting!.path)) waiting.resolve();
    });
    read.stderr!.on('data', (d: Buffer) => { readErr += d.toString(); });
    const readExited = new Promise<number | null>((resolve) => read.once('exit', (code) => resolve(code)));
    /** Resolves once read has written the call to path; rejects after ms (the failure's bound). */
    const written = (path: string, ms: number): Promise<void> => new Promise<void>((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`no record of ${path} within ${ms} ms`)), ms);
      waiting = { path, resolve: () => { clearTimeout(t); resolve(); } };
      if (records.some((r) => r.request?.path === path)) waiting.resolve();
    });
    try {
      await listening;
      // tcpdump may say it listens a moment before it captures: calls until read writes one.
      for (let tries = 1; ; tries++) {
        const path = '/latest/meta-data/ami-id';
        expect((await curlV1(lab, { path })).exitCode).toBe(0);
        if (await written(path, 3000).then(() => true, () => false)) break;
        if (tries === 10) throw new Error(`read wrote no call of the pipe: ${readErr} ${tcpdumpErr}`);
      }
      expect((await curlV1(lab, { path: '/latest/meta-data/instance-type' })).exitCode).toBe(0);
      await written('/latest/meta-data/instance-type', 10_000); // tcpdump still runs: the pipe is open and quiet
      expect(tcpdump.exitCode).toBeNull();
      read.kill('SIGTERM');
      expect(await readExited).toBe(130);
      expect(readErr).toMatch(/interrupted \(SIGTERM\): the calls read until then are written/);
      const last = records.at(-1)!;
      expect(last.event).toBe('stats');
      expect(last.calls.v1).toBe(records.filter((r) => r.event === 'imds_call').length);
      expect(records.filter((r) => r.event === 'imds_call').at(-1)!.request.path).toBe('/latest/meta-data/instance-type');
    } finally {
      read.kill('SIGKILL');
      tcpdump.kill('SIGKILL');
    }
  }, 60_000);
});
