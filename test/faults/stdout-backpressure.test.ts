/**
 * A stdout reader that stops reading must not grow the agent's memory: a real child process writes
 * 200,000 call records (~130 MB of JSON lines) through the agent's RecordWriter to its real stdout, a
 * pipe the parent never reads. Lines past the bound are dropped and counted (records_dropped.stdout),
 * one error record says so on stderr, memory stays bounded, and the process still exits.
 */
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parseLines } from '../helpers/sink.js';

const ROOT = join(import.meta.dirname, '../..');
const WRITER = join(ROOT, 'dist/output/writer.js');
const N = 200_000;

const child = `
import { RecordWriter } from ${JSON.stringify(WRITER)};
const w = new RecordWriter({ stdout: process.stdout, stderr: process.stderr, logFile: null });
const call = (i) => ({ event: 'imds_call', time: new Date().toISOString(), imds_version: 'v1', provider: 'aws',
  request: { method: 'GET', path: '/latest/meta-data/iam/security-credentials/role-' + i, http_version: '1.1', token_present: false,
    token_request: false, user_agent: 'python-urllib/3.11 ' + 'x'.repeat(200) }, response: { status: 200 },
  connection: { src: '169.254.10.2', sport: 40000 + (i % 20000), dst: '169.254.169.254', dport: 80, interface: 'eth0', family: 'ipv4' },
  process: { attribution: 'ebpf', pid: 6002, comm: 'python3', argv: ['python3', '/opt/legacy/agent.py', '--poll'] } });
let i = 0, peakHeap = 0, peakRss = 0;
function burst() {
  for (let k = 0; k < 2000 && i < ${N}; k++) w.write(call(i++));
  const m = process.memoryUsage();
  peakHeap = Math.max(peakHeap, m.heapUsed); peakRss = Math.max(peakRss, m.rss);
  if (i < ${N}) { setImmediate(burst); return; }
  w.close(300).then(() => {
    process.stderr.write(JSON.stringify({ event: 'result', written: w.written, dropped: w.dropped, peakHeap, peakRss,
      waiting: process.stdout.writableLength }) + '\\n');
    process.exit(0);
  });
}
burst();
`;

describe.skipIf(!existsSync(WRITER))('stdout that is not read', () => {
  it('bounded: lines past the bound dropped and counted, an error on stderr, heap and RSS stay small, exit 0', async () => {
    const p = spawn(process.execPath, ['--input-type=module', '-e', child], { stdio: ['ignore', 'pipe', 'pipe'] });
    p.stdout.pause(); // never read: the pipe (64 KiB) fills, then the writer's own bound
    let err = '';
    p.stderr.on('data', (b: Buffer) => { err += b.toString(); });
    const [code] = await once(p, 'exit');
    p.stdout.destroy();
    expect(code, err).toBe(0);
    const recs = parseLines(err);
    const result = recs.find((r) => r.event === 'result')!;
    expect(result.written).toBe(N);
    // everything beyond what the pipe and the 4 MiB bound hold is dropped, and counted
    expect(result.dropped.stdout).toBeGreaterThan(N - 20_000);
    expect(result.waiting).toBeLessThanOrEqual(4 * 1024 * 1024);
    expect(result.peakHeap).toBeLessThan(48 * 1024 * 1024); // ~130 MB of lines were written
    expect(result.peakRss).toBeLessThan(160 * 1024 * 1024);
    const errors = recs.filter((r) => r.event === 'error');
    expect(errors).toHaveLength(2); // once when lines start to be dropped; once at exit, for what still waits
    expect(errors[0]).toMatchObject({ component: 'output' });
    expect(errors[0].message).toMatch(/stdout is not read fast enough.*records_dropped\.stdout/);
    expect(errors[1].message).toMatch(/^stdout's reader did not take every record in 300 ms at exit: \d+ bytes of records were not delivered to stdout/);
  }, 60_000);
});
