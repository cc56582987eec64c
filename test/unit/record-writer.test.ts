/**
 * The record path through pino: a line is byte for byte JSON.stringify(record) (no level, pid,
 * hostname, time or msg of pino's), diagnostics also reach stderr, and a stdout that is not read
 * drops lines (counted) instead of growing memory.
 */
import { PassThrough, Writable } from 'node:stream';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { errorRecord, noticeRecord, type OutputRecord } from '../../agent/src/record.js';
import { RecordWriter, recordLogger } from '../../agent/src/output/writer.js';
import { Sink, parseLines } from '../helpers/sink.js';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { DIST, notBuilt } from '../helpers/repo.js';

const call = {
  event: 'imds_call', time: '2026-11-28T15:12:44.456Z', imds_version: 'v1', provider: 'aws',
  request: { method: 'GET', path: '/latest/meta-data/\u2028"\\\n\u0001é😀\ud800', http_version: '1.1', token_present: false, token_request: false, user_agent: null },
  response: { status: 200 }, connection: { src: '169.254.10.2', sport: 49610, dst: '169.254.169.254', dport: 80, interface: 'eth0', family: 'ipv4' },
  process: { attribution: 'proc', pid: 6002, argv: ['python3', 'msg', 'level'], ancestors: [{ pid: 1, comm: 'systemd' }] },
} as unknown as OutputRecord;

const nextTurn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

function lines(rec: OutputRecord): string {
  let out = '';
  recordLogger({ write: (s: string) => { out += s; } })[rec.event as 'imds_call'](rec);
  return out;
}

describe('records through pino', () => {
  it('each kind is exactly JSON.stringify(record) and a newline', () => {
    const stats = { event: 'stats', time: 't', uptime_s: 3, calls: { v1: 1, v2: 0, other: 0 }, records_dropped: { stdout: 0, stderr: 0, log_file: 0 } };
    const ready = { event: 'ready', time: 't', version: '0.1.0', pid: 1, log_file: null, ebpf: { load_ms: 1.5, attach_ms: 0.2 } };
    for (const rec of [call, stats, ready, errorRecord('x', 'bad "thing"'), noticeRecord('y', 'ok\n')] as OutputRecord[]) {
      expect(lines(rec)).toBe(`${JSON.stringify(rec)}\n`);
    }
  });

  it('any string, number or nesting: the same bytes as JSON.stringify', () => {
    fc.assert(fc.property(fc.record({ time: fc.string(), message: fc.string({ unit: 'binary' }), component: fc.string(),
      n: fc.oneof(fc.integer(), fc.double()), deep: fc.jsonValue() }), (r) => {
      const rec = { event: 'error', ...r } as unknown as OutputRecord;
      expect(lines(rec)).toBe(`${JSON.stringify(rec)}\n`);
    }), { numRuns: 2000 });
  });

  it('records go to stdout and the sinks; error and notice also to stderr', async () => {
    const stdout = new PassThrough(); const stderr = new PassThrough();
    const out = new Sink(stdout); const err = new Sink(stderr);
    const shipped: string[] = [];
    const w = new RecordWriter({ stdout, stderr, logFile: null, sinks: [{ write: (l) => shipped.push(l) }] });
    w.write(call);
    w.error('capture', 'stopped');
    w.notice('capture', 'resumed');
    await nextTurn();
    expect(out.records.map((r) => r.event)).toEqual(['imds_call', 'error', 'notice']);
    expect(err.records.map((r) => [r.event, r.component, r.message])).toEqual([['error', 'capture', 'stopped'], ['notice', 'capture', 'resumed']]);
    expect(shipped.map((l) => JSON.parse(l).event)).toEqual(['imds_call', 'error', 'notice']);
    expect(Object.keys(out.records[0])).toEqual(Object.keys(call)); // no level, pid, hostname, msg
    expect(w.written).toBe(3);
  });

  it('a stdout nobody reads: lines past the bound are dropped and counted, an error goes to stderr', async () => {
    const stuck = new Writable({ highWaterMark: 1024, write: () => undefined }); // never calls back: never drains
    const stderr = new PassThrough(); const err = new Sink(stderr);
    const w = new RecordWriter({ stdout: stuck, stderr, logFile: null, maxStdoutBytes: 64 * 1024 });
    for (let i = 0; i < 5000; i++) w.write(call);
    await nextTurn();
    expect(stuck.writableLength).toBeLessThanOrEqual(64 * 1024);
    expect(w.dropped.stdout).toBeGreaterThan(4000);
    expect(w.dropped.stdout + Math.ceil(stuck.writableLength / JSON.stringify(call).length)).toBeGreaterThanOrEqual(5000);
    expect(err.records.filter((r) => r.event === 'error' && /stdout is not read fast enough/.test(r.message))).toHaveLength(1);
  });

  it('the lines of one turn reach stdout in one write, at the end of the turn, in order', async () => {
    const writes: string[] = [];
    const stdout = new Writable({ write: (chunk, _enc, done) => { writes.push(chunk.toString()); done(); } });
    const w = new RecordWriter({ stdout, logFile: null });
    for (let i = 0; i < 50; i++) w.write({ ...call, time: String(i) } as OutputRecord);
    expect(writes).toEqual([]); // still this turn
    await nextTurn();
    expect(writes).toHaveLength(1);
    expect(writes[0].split('\n').filter(Boolean).map((l) => JSON.parse(l).time)).toEqual(Array.from({ length: 50 }, (_, i) => String(i)));
    w.write(call);
    await w.close(1000); // the exit path writes what waits without waiting for the turn's end
    expect(writes).toHaveLength(2);
  });

  // The lines of the turn a process dies in: written from the 'exit' event, not lost with the turn.
  for (const [how, end] of [['process.exit()', 'process.exit(3)'], ['an uncaught exception', 'throw new Error("boom")']] as const) {
    it.skipIf(notBuilt)(`the lines of the last turn reach a pipe on ${how}`, () => {
      const script = `
        const { RecordWriter } = await import(${JSON.stringify(join(DIST, 'output', 'writer.js'))});
        const w = new RecordWriter({ stdout: process.stdout, logFile: null });
        for (let i = 0; i < 3; i++) w.write({ event: 'imds_call', time: String(i) });
        ${end};`;
      const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8' });
      expect(r.status).not.toBe(0);
      expect(parseLines(r.stdout).map((x) => x.time)).toEqual(['0', '1', '2']);
    });
  }
});
