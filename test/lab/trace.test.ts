/**
 * End to end: real clients in a lab namespace call the IMDS stand-in; the real agent (built
 * CLI, real libpcap) traces them. The stand-in's own request log is the ledger every record is
 * checked against: each IMDSv1 request reported exactly once, IMDSv2 never as v1.
 */
import { mkdtempSync, readFileSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLab, labSupported, IMDS_V4, IMDS_V6, type ImdsHandle, type Lab } from '../../lab/netns.js';
import { normalisePath } from '../../lab/imds-server.js';
import { startTracer, type TracerProcess } from '../../lab/traced.js';
import { validate } from '../../agent/src/schema.js';
import { DEFAULTS } from '../../agent/src/defaults.js';
import { parseCmdlineBounded } from '../../agent/src/attribution/proc/parse.js';
import { Redactor } from '../../agent/src/redact.js';
import {
  botocoreCredentials, CLIENT_DRIVERS, curlRequests, runClient, startLongLivedCaller,
} from '../helpers/clients.js';

const support = labSupported();
const CANARY = 'CANARYTOKEN';
type Rec = Record<string, any>;

/** The ledger key of a request: caller port, method, normalised path. */
const key = (port: number, method: string, path: string): string => `${port} ${method} ${normalisePath(path)}`;

function injectFrames(lab: Lab, frames: object[]): void {
  const r = spawnSync('ip', ['netns', 'exec', lab.imdsNs, 'python3', join(lab.repoRoot, 'test/helpers/inject.py')],
    { input: JSON.stringify({ iface: lab.imdsIf, frames }), encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`inject.py failed: ${r.stderr}`);
}

describe.skipIf(!support.ok)(`tracing real clients in a lab${support.ok ? '' : ` (skipped: ${support.reason})`}`, () => {
  let lab: Lab;
  let imds: ImdsHandle;
  let all: TracerProcess; // --include-v2 --include-other, stdout only, eBPF attribution (auto)
  let v1only: TracerProcess; // defaults, with a log file, /proc attribution
  const logDir = join(mkdtempSync(join(tmpdir(), 'imdst-log-')), 'nested');
  const logFile = join(logDir, 'calls.jsonl');
  const injected: Rec[] = []; // requests the stand-in never sees (hand-made frames)

  beforeAll(async () => {
    lab = await createLab();
    imds = await lab.startImds({ logRequests: true, canary: CANARY });
    all = await startTracer(lab, ['--no-log-file', '--include-v2', '--include-other', '--stats-interval', '3600']);
    v1only = await startTracer(lab, ['--log-file', logFile, '--stats-interval', '3600', '--backend', 'proc']);
  });

  afterAll(async () => {
    await all?.stop();
    await v1only?.stop();
    await lab?.destroy();
  });

  // Calls read from the wire (the kernel program also sees other labs' namespaces: their calls come as `request: null`).
  const calls = (t: TracerProcess): Rec[] => t.records.filter((r) => r.event === 'imds_call' && r.request !== null);
  const byPort = (t: TracerProcess, port: number): Rec[] => calls(t).filter((r) => r.connection.sport === port);

  for (const d of CLIENT_DRIVERS) {
    for (const ipv6 of d.ipv6 ? [false, true] : [false]) {
      it(`${d.name} ${d.version} over ${ipv6 ? 'IPv6' : 'IPv4'} is reported as ${d.version}`, async () => {
        const before = imds.requests().length;
        const run = await d.run(lab, { ipv6 });
        expect(run.exitCode, run.stderr).toBe(0);
        // The stand-in's log line may trail the client's exit: await the requests this client makes.
        const seen = (await imds.waitForRequests(before + (d.version === 'v1' ? 1 : 2), 10_000)).slice(before) as Rec[];
        expect(seen.length).toBe(d.version === 'v1' ? 1 : 2);
        const recs = await all.count((r) => r.event === 'imds_call'
          && seen.some((s) => s.remotePort === r.connection.sport), seen.length, 10_000, `${d.name} records`);
        for (const s of seen) {
          const mine = recs.filter((r) => key(r.connection.sport, r.request.method, r.request.path)
            === key(s.remotePort, s.method, s.path));
          expect(mine, `records of ${key(s.remotePort, s.method, s.path)}: ${JSON.stringify(mine)}`).toHaveLength(1);
          expect(mine[0].imds_version).toBe(s.kind === 'token' || s.token !== 'none' ? 'v2' : 'v1');
          expect(mine[0].connection).toMatchObject({ dst: ipv6 ? IMDS_V6 : IMDS_V4, dport: 80, family: ipv6 ? 'ipv6' : 'ipv4' });
        }
        expect(recs.every((r) => r.imds_version === d.version)).toBe(true);
      });
    }
  }

  it('botocore (IMDSv2 by default) is never reported as IMDSv1', async () => {
    const before = imds.requests().length;
    const run = await botocoreCredentials(lab);
    expect(run.exitCode, run.stderr).toBe(0);
    const seen = (await imds.waitForRequests(before + 3, 10_000)).slice(before) as Rec[]; // PUT, role, credentials
    const recs = await all.count((r) => r.event === 'imds_call' && seen.some((s) => s.remotePort === r.connection.sport),
      seen.length, 10_000, 'botocore records');
    expect(recs.map((r) => r.imds_version)).toEqual(seen.map(() => 'v2'));
  });

  it('several requests on one keep-alive connection are each reported once, in order', async () => {
    const token = (await runClient(lab, 'curl', ['-sS', '-X', 'PUT', '-H', 'X-aws-ec2-metadata-token-ttl-seconds: 60',
      `http://${IMDS_V4}/latest/api/token`])).stdout;
    const run = await curlRequests(lab, [
      { path: '/latest/meta-data/ami-id' },
      { path: '/latest/meta-data/instance-type' },
      { path: '/latest/meta-data/hostname', headers: { 'x-AWS-ec2-METADATA-token': token } },
      { path: '/latest/meta-data/local-ipv4' },
    ]);
    expect(run.transfers.map((t) => t.numConnects)).toEqual([1, 0, 0, 0]);
    const port = run.transfers[0].localPort;
    const recs = await all.count((r) => r.event === 'imds_call' && r.connection.sport === port, 4, 10_000);
    expect(recs.map((r) => [r.request.path, r.imds_version, r.response.status])).toEqual([
      ['/latest/meta-data/ami-id', 'v1', 200], ['/latest/meta-data/instance-type', 'v1', 200],
      ['/latest/meta-data/hostname', 'v2', 200], ['/latest/meta-data/local-ipv4', 'v1', 200],
    ]);
  });

  it('a request split over segments, with the token header in the last one, and pipelined requests', async () => {
    const script = `
import socket, sys, time
s = socket.create_connection((sys.argv[1], 80))
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
parts = [b"GET /latest/meta-data/ami-id HTTP/1.1\\r\\nHost: x\\r\\nX-aws-ec2-meta", b"data-token: bogus-", b"token\\r\\n\\r\\n"]
for p in parts:
    s.sendall(p); time.sleep(0.05)  # shape the traffic into three segments (not synchronisation)
s.sendall(b"GET /latest/meta-data/pipe-1 HTTP/1.1\\r\\nHost: x\\r\\n\\r\\nGET /latest/meta-data/pipe-2 HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n")
buf = b""
while buf.count(b"HTTP/1.1 ") < 3:
    chunk = s.recv(65536)
    if not chunk: break
    buf += chunk
print(s.getsockname()[1])
`;
    const run = await runClient(lab, 'python3', ['-c', script, IMDS_V4]);
    expect(run.exitCode, run.stderr).toBe(0);
    const port = Number(run.stdout.trim());
    const recs = await all.count((r) => r.event === 'imds_call' && r.connection.sport === port, 3, 10_000);
    expect(recs.map((r) => [r.request.path, r.imds_version, r.request.token_present, r.response.status])).toEqual([
      ['/latest/meta-data/ami-id', 'v2', true, 401],
      ['/latest/meta-data/pipe-1', 'v1', false, 404], ['/latest/meta-data/pipe-2', 'v1', false, 404],
    ]);
  });

  it('out-of-order, duplicated and retransmitted segments count once (hand-made frames)', async () => {
    const c = { src: '169.254.10.99', dst: IMDS_V4, sport: 40001, dport: 80 };
    const s = { src: IMDS_V4, dst: '169.254.10.99', sport: 80, dport: 40001 };
    const req = 'GET /latest/meta-data/reordered HTTP/1.1\r\nHost: 169.254.169.254\r\nUser-Agent: inject\r\n\r\n';
    const [a, b, d] = [req.slice(0, 20), req.slice(20, 50), req.slice(50)];
    const v2 = 'GET /latest/meta-data/v2-split HTTP/1.1\r\nX-aws-ec2-metadata-';
    const v2b = `token: AQAE-${CANARY}-frames\r\n\r\n`;
    const isn = 1000;
    const resp = 'HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok';
    const frames = [
      { ...c, seq: isn, flags: 'S' }, { ...s, seq: 5000, ack: isn + 1, flags: 'SA' }, { ...c, seq: isn + 1, ack: 5001, flags: 'A' },
      { ...c, seq: isn + 1, data: a }, { ...c, seq: isn + 1 + a.length + b.length, data: d },
      { ...c, seq: isn + 1 + a.length, data: b }, { ...c, seq: isn + 1 + a.length, data: b }, { ...c, seq: isn + 1, data: a },
      { ...s, seq: 5001, data: resp }, { ...s, seq: 5001, data: resp },
      { ...c, seq: isn + 1 + req.length, data: v2 }, { ...c, seq: isn + 1 + req.length + v2.length, data: v2b },
      { ...c, seq: isn + 1 + req.length + v2.length + v2b.length, flags: 'FA' }, { ...s, seq: 5001 + resp.length, flags: 'FA' },
    ];
    injectFrames(lab, frames);
    injected.push({ port: 40001, path: '/latest/meta-data/reordered', v: 'v1' }, { port: 40001, path: '/latest/meta-data/v2-split', v: 'v2' });
    const recs = await all.count((r) => r.event === 'imds_call' && r.connection.sport === 40001, 2, 10_000);
    expect(recs.map((r) => [r.request.path, r.imds_version, r.response.status, r.request.user_agent])).toEqual([
      ['/latest/meta-data/reordered', 'v1', 200, 'inject'], ['/latest/meta-data/v2-split', 'v2', null, null],
    ]);
    expect(recs[0].process).toMatchObject({ attribution: 'none' }); // no process ever made this connection
  });

  it("other clouds' metadata probes are labelled and never counted as IMDSv1", async () => {
    const run = await curlRequests(lab, [
      { path: '/computeMetadata/v1/instance/id', headers: { 'Metadata-Flavor': 'Google' } },
      { path: '/metadata/instance?api-version=2021-02-01', headers: { Metadata: 'true' } },
      { path: '/opc/v2/instance/' },
    ]);
    const port = run.transfers[0].localPort;
    const recs = await all.count((r) => r.event === 'imds_call' && r.connection.sport === port, 3, 10_000);
    expect(recs.map((r) => [r.provider, r.imds_version])).toEqual([['gce', null], ['azure', null], ['oci', null]]);
  });

  it('the tracers attribute with the backends asked for', () => {
    expect(all.records[0]).toMatchObject({ event: 'ready', backend: 'ebpf' });
    expect(all.records[0].ebpf.load_ms).toBeGreaterThan(0);
    expect(v1only.records[0]).toMatchObject({ event: 'ready', backend: 'proc' });
  });

  for (const [runtime, ipv6] of [['node', false], ['python', true]] as const) {
    it(`a long-lived ${runtime} caller over ${ipv6 ? 'IPv6' : 'IPv4'} is attributed to its pid with argv (eBPF and /proc)`, async () => {
      const caller = startLongLivedCaller(lab, { runtime, version: 'v1', ipv6, path: '/latest/meta-data/iam/info' });
      try {
        const called = await caller.called;
        for (const [t, how] of [[all, 'ebpf'], [v1only, 'proc']] as const) {
          const [rec] = await t.count((r) => r.event === 'imds_call' && r.connection.sport === called.localPort, 1, 10_000);
          expect(rec.process).toMatchObject({ attribution: how, pid: caller.pid, uid: 0, user: 'root' });
          // argv as the agent writes it: its first 1024 bytes (both backends), secrets scrubbed.
          const bounded = parseCmdlineBounded(Buffer.from(`${caller.argv.join('\0')}\0`), DEFAULTS.argvMaxBytes);
          expect(rec.process.argv.slice(1)).toEqual(new Redactor().argv(bounded.argv).slice(1));
          expect(rec.process.argv_truncated).toBe(bounded.truncated || undefined);
          expect(rec.process.comm).toBe(runtime === 'node' ? 'node' : 'python3');
          expect(rec.process.ancestors.length).toBeGreaterThan(0);
          expect(rec.process.ancestors[0].argv).not.toBeNull();
        }
      } finally {
        await caller.stop();
      }
    });
  }

  it('a token on the caller\'s command line is redacted', async () => {
    const token = (await runClient(lab, 'curl', ['-sS', '-X', 'PUT', '-H', 'X-aws-ec2-metadata-token-ttl-seconds: 60',
      `http://${IMDS_V4}/latest/api/token`])).stdout;
    expect(token).toContain(CANARY);
    const script = `
import http.client, sys
c = http.client.HTTPConnection(sys.argv[1], 80)
c.request("GET", "/latest/meta-data/instance-id", headers={"X-aws-ec2-metadata-token": sys.argv[3]})
c.getresponse().read()
print(c.sock.getsockname()[1], flush=True)
sys.stdin.read()`;
    const proc = lab.spawn(lab.instanceNs, 'python3', ['-c', script, IMDS_V4, `X-aws-ec2-metadata-token: ${token}`, token],
      { stdio: ['pipe', 'pipe', 'inherit'] });
    try {
      const port = await new Promise<number>((resolve) => proc.stdout!.once('data', (b: Buffer) => resolve(Number(b.toString().trim()))));
      const [rec] = await all.count((r) => r.event === 'imds_call' && r.connection.sport === port, 1, 10_000);
      expect(rec.process.attribution).toBe('ebpf');
      expect(rec.process.argv.slice(-2)).toEqual(['X-aws-ec2-metadata-token: [REDACTED]', '[REDACTED]']);
    } finally {
      proc.stdin!.end();
    }
  });

  it('the ledger: every request the IMDS answered is reported exactly once, v1-only output has exactly the v1 calls', async () => {
    await all.stop();
    await v1only.stop();
    const ledger = new Map<string, string>();
    for (const s of imds.requests() as Rec[]) {
      if (!/^\/(latest|\d{4}-\d\d-\d\d|1\.0)?(\/|$)/.test(normalisePath(s.path))) continue; // other clouds' probes
      ledger.set(key(s.remotePort, s.method, s.path), s.kind === 'token' || s.token !== 'none' ? 'v2' : 'v1');
    }
    const aws = calls(all).filter((r) => r.provider === 'aws' && r.connection.sport !== 40001);
    const reported = aws.map((r) => key(r.connection.sport, r.request.method, r.request.path));
    const twice = aws.filter((r, i) => reported.indexOf(reported[i]) !== i || reported.lastIndexOf(reported[i]) !== i);
    expect(twice, `reported twice: ${JSON.stringify(twice)}; stats: ${JSON.stringify(all.records.filter((r) => r.event === 'stats').at(-1))}`).toEqual([]); // nothing twice
    expect(new Set(reported)).toEqual(new Set(ledger.keys())); // nothing missing, nothing invented
    for (const r of aws) expect(r.imds_version).toBe(ledger.get(key(r.connection.sport, r.request.method, r.request.path)));

    const v1Expected = [...ledger].filter(([, v]) => v === 'v1').map(([k]) => k).sort();
    const fromFile = readFileSync(logFile, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as Rec);
    const v1Got = fromFile.filter((r) => r.event === 'imds_call' && r.connection.sport !== 40001)
      .map((r) => key(r.connection.sport, r.request.method, r.request.path)).sort();
    expect(v1Got).toEqual(v1Expected);
    expect(fromFile.filter((r) => r.event === 'imds_call').every((r) => r.imds_version === 'v1')).toBe(true);
    expect(calls(v1only)).toHaveLength(fromFile.filter((r) => r.event === 'imds_call').length);
    expect(injected).toHaveLength(2);
  });

  it('writes only valid records, the log file 0600 in a 0700 directory, and no secret anywhere', () => {
    for (const r of [...all.records, ...v1only.records]) expect(validate(r)).toEqual([]);
    expect(statSync(logFile).mode & 0o777).toBe(0o600);
    expect(statSync(logDir).mode & 0o777).toBe(0o700);
    const everything = [JSON.stringify(all.records), JSON.stringify(v1only.records), all.stderr(), v1only.stderr(),
      readFileSync(logFile, 'utf8')].join('\n');
    expect(everything).not.toContain(CANARY);
    expect(everything).not.toContain('SecretAccessKey');
    const stats = all.records.filter((r) => r.event === 'stats').at(-1) as Rec;
    expect(stats.calls.v1).toBeGreaterThan(10);
    expect(stats.packets_undecodable).toBe(0);
  });
});
