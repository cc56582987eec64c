/**
 * Hostile input in the lab: garbage, huge and endless heads, slowloris, a SYN flood of
 * 20,000 half-open flows and many keep-alive connections, all at once. The agent stays up, its memory
 * stays under the documented cap, evictions are counted, and genuine IMDSv1 calls made during the
 * flood are still reported.
 */
import { readFileSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLab, labSupported, IMDS_V4, type Lab } from '../../lab/netns.js';
import { startTracer, type TracerProcess } from '../../lab/traced.js';
import { validate } from '../../agent/src/schema.js';

const support = labSupported();
/** The documented memory cap of the agent under hostile input (README, "Security and reliability"). */
const RSS_CAP_MB = 200;

const rssMb = (pid: number): number => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1]) / 1024;

const HOSTILE = `
import os, socket, sys, time
host = sys.argv[1]
def conn():
    s = socket.create_connection((host, 80), timeout=5)
    return s
def blast(data):
    # The server may reset the connection part-way (it refuses what it cannot parse): that is fine.
    s = conn()
    try:
        s.sendall(data)
    except OSError:
        pass
    s.close()
blast(os.urandom(256 * 1024))  # binary garbage
blast(b"GET /latest/meta-data/big-head HTTP/1.1\\r\\nX-Pad: " + b"a" * 65536 + b"\\r\\n\\r\\n")  # a 64 KB header block
blast(b"GET /latest/meta-data/many-headers HTTP/1.1\\r\\n" + b"".join(b"X-H%d: v\\r\\n" % i for i in range(3000)) + b"\\r\\n")
# slowloris: heads that never end, kept open
slow = []
for i in range(200):
    c = conn(); c.sendall(b"GET /latest/meta-data/slow HTTP/1.1\\r\\nX-a: b\\r\\n"); slow.append(c)
for c in slow:
    c.sendall(b"X-more: " + b"z" * 1000 + b"\\r\\n")
# many keep-alive connections, each with a complete request
ka = []
for i in range(300):
    c = conn(); c.sendall(b"GET /latest/meta-data/keepalive HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n"); ka.append(c)
print("done", flush=True)
sys.stdin.read()
`;

describe.skipIf(!support.ok)(`hostile input${support.ok ? '' : ` (skipped: ${support.reason})`}`, () => {
  let lab: Lab;
  let tracer: TracerProcess;

  beforeAll(async () => {
    lab = await createLab();
    await lab.startImds();
    tracer = await startTracer(lab, ['--no-log-file', '--stats-interval', '3600']);
  });

  afterAll(async () => {
    await tracer?.stop();
    await lab?.destroy();
  });

  it('stays up, bounded, and still reports genuine IMDSv1 calls', async () => {
    const hostile = lab.spawn(lab.instanceNs, 'python3', ['-c', HOSTILE, IMDS_V4], { stdio: ['pipe', 'pipe', 'inherit'] });
    try {
      await new Promise<void>((resolve, reject) => {
        hostile.stdout!.once('data', () => resolve());
        hostile.once('exit', (c) => reject(new Error(`hostile client exited ${c}`)));
      });
      // A SYN flood of 20,000 half-open flows from a forged address (hand-made frames).
      const frames = Array.from({ length: 20_000 }, (_, i) => ({
        src: '169.254.10.77', dst: IMDS_V4, sport: 1024 + i, dport: 80, seq: i * 7919, flags: 'S',
      }));
      const inj = spawnSync('ip', ['netns', 'exec', lab.imdsNs, 'python3', join(lab.repoRoot, 'test/helpers/inject.py')],
        { input: JSON.stringify({ iface: lab.imdsIf, frames }), encoding: 'utf8' });
      expect(inj.status, inj.stderr).toBe(0);
      // Genuine calls made during the flood.
      for (let i = 0; i < 5; i++) {
        const r = await lab.exec(lab.instanceNs, 'curl', ['-s', '-o', '/dev/null', `http://${IMDS_V4}/latest/meta-data/genuine-${i}`]);
        expect(r.exitCode).toBe(0);
      }
      const genuine = await tracer.count((x) => x.event === 'imds_call' && /\/genuine-\d$/.test(x.request.path), 5, 20_000, 'genuine calls');
      expect(genuine.every((x) => x.imds_version === 'v1' && x.process.attribution === 'ebpf')).toBe(true);
      await tracer.count((x) => x.event === 'imds_call' && x.request.path === '/latest/meta-data/keepalive', 300, 20_000, 'keep-alive calls');
      const big = await tracer.next((x) => x.event === 'imds_call' && x.request.path.endsWith('/big-head'), 10_000, 'the 64 KB head');
      expect(big.request.headers_truncated).toBe(true);
      await tracer.next((x) => x.event === 'imds_call' && x.request.path.endsWith('/many-headers'), 10_000, 'the 3000-header request');
      const rss = rssMb(tracer.proc.pid!);
      console.log(`agent RSS after the flood: ${rss.toFixed(1)} MB`);
      expect(rss).toBeLessThan(RSS_CAP_MB);
    } finally {
      hostile.stdin!.end();
    }
    await tracer.stop();
    expect(tracer.proc.exitCode).toBe(0);
    const stats = tracer.records.filter((x) => x.event === 'stats').at(-1)!;
    expect(stats.flows_evicted).toBeGreaterThanOrEqual(10_000); // 20,000 half-open flows, 10,000 slots
    expect(stats.http_malformed).toBeGreaterThanOrEqual(1); // the garbage
    expect(stats.buffered_bytes).toBe(0);
    for (const r of tracer.records) expect(validate(r)).toEqual([]);
  });
});
