/**
 * Lines as bytes: a record is made into its JSON line once and encoded to UTF-8 once; stdout and the
 * log file write those same bytes; the size guard decides from the line.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough, Writable } from 'node:stream';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { DEFAULTS } from '../../agent/src/defaults.js';
import { callLine, fitCallRecord } from '../../agent/src/fit.js';
import { ByteRuns, LINE_CHUNK_BYTES, LineEncoder } from '../../agent/src/output/line-bytes.js';
import { LogFile } from '../../agent/src/output/log-file.js';
import { RecordWriter } from '../../agent/src/output/writer.js';
import type { CallRecord, OutputRecord } from '../../agent/src/record.js';

const MAX = DEFAULTS.cloudwatch.maxEventBytes;

function call(path = '/latest/meta-data/'): CallRecord {
  return {
    event: 'imds_call', time: '2026-11-28T15:12:44.456Z', imds_version: 'v1', provider: 'aws',
    request: { method: 'GET', path, http_version: '1.1', token_present: false, token_request: false, user_agent: 'curl/8' },
    response: { status: 200 },
    connection: { src: '169.254.10.2', sport: 49610, dst: '169.254.169.254', dport: 80, interface: 'eth0', family: 'ipv4' },
    process: { attribution: 'proc', pid: 6002, comm: 'java', argv: ['java', '-cp', 'x.jar', 'Main'] },
  } as CallRecord;
}

const bytesOf = (e: LineEncoder): string => e.chunk.subarray(e.start, e.end).toString('utf8');

describe('LineEncoder', () => {
  it('each line as UTF-8 with one newline, after the previous one in the same chunk', () => {
    const e = new LineEncoder();
    const texts = ['{"a":1}', 'é😀\u2028"', '{"b":2}\n', ''];
    const seen: Array<[Buffer, number, number]> = [];
    for (const t of texts) {
      const n = e.encode(t);
      expect(bytesOf(e)).toBe(t.endsWith('\n') ? t : `${t}\n`);
      expect(n).toBe(Buffer.byteLength(t.endsWith('\n') ? t : `${t}\n`));
      seen.push([e.chunk, e.start, e.end]);
    }
    for (let i = 1; i < seen.length; i++) {
      expect(seen[i][0]).toBe(seen[0][0]);
      expect(seen[i][1]).toBe(seen[i - 1][2]); // right after the line before
    }
  });

  it('a full chunk is left as it is: a new one is taken, and a line larger than a chunk gets its own', () => {
    const e = new LineEncoder();
    e.encode('x'.repeat(100));
    const first = e.chunk;
    const kept = first.subarray(e.start, e.end).toString();
    e.encode('é'.repeat(LINE_CHUNK_BYTES / 3)); // 3 bytes of room per unit: does not fit in what is left
    expect(e.chunk).not.toBe(first);
    expect(e.start).toBe(0);
    expect(bytesOf(e)).toBe(`${'é'.repeat(LINE_CHUNK_BYTES / 3)}\n`);
    expect(first.subarray(0, 101).toString()).toBe(kept); // the old bytes are not written over
    const big = 'b'.repeat(LINE_CHUNK_BYTES);
    e.encode(big);
    expect(bytesOf(e)).toBe(`${big}\n`);
  });
});

describe('ByteRuns', () => {
  it('consecutive lines of one chunk are one view; anything else is joined in order', () => {
    const e = new LineEncoder();
    const r = new ByteRuns();
    for (const t of ['a', 'bb', 'ccc']) { e.encode(t); r.add(e.chunk, e.start, e.end); }
    const one = r.peek();
    expect(one.toString()).toBe('a\nbb\nccc\n');
    expect(one.buffer).toBe(e.chunk.buffer); // a view, not a copy
    e.encode('skipped');
    e.encode('d');
    r.add(e.chunk, e.start, e.end);
    const other = Buffer.from('e\n');
    r.add(other, 0, 2);
    expect(r.bytes).toBe(13);
    expect(r.take().toString()).toBe('a\nbb\nccc\nd\ne\n');
    expect(r.bytes).toBe(0);
    expect(r.take().length).toBe(0);
  });

  it('dropFront forgets the oldest bytes across views', () => {
    const r = new ByteRuns();
    const a = Buffer.from('11\n22\n'); const b = Buffer.from('33\n44\n');
    r.add(a, 0, 3); r.add(a, 3, 6); r.add(b, 0, 3); r.add(b, 3, 6);
    r.dropFront(3);
    expect(r.bytes).toBe(9);
    r.dropFront(6);
    expect(r.peek().toString()).toBe('44\n');
    r.dropFront(3);
    expect(r.bytes).toBe(0);
    expect(r.peek().length).toBe(0);
  });
});

describe('callLine: the size guard, decided from the line', () => {
  it('a record that fits is its JSON.stringify line', () => {
    const r = call('/latest/é\u0001😀');
    expect(callLine(r, MAX)).toBe(JSON.stringify(r));
  });

  it('between n and 3n bytes: measured, not shrunk when it fits; shrunk when it does not', () => {
    const multi = call(`/latest/${'é'.repeat(1000)}`); // 2 bytes per unit: past the 3n shortcut at 4000, within 4000 measured
    const size = Buffer.byteLength(JSON.stringify(multi));
    expect(3 * JSON.stringify(multi).length).toBeGreaterThan(size + 1);
    expect(callLine(multi, size)).toBe(JSON.stringify(multi));
    const shrunk = callLine(multi, size - 1);
    expect(Buffer.byteLength(shrunk)).toBeLessThanOrEqual(size - 1);
    expect(shrunk).toBe(JSON.stringify(fitCallRecord(multi, size - 1)));
    expect(JSON.parse(shrunk).truncated).toEqual(['request.path']);
  });

  it('the writer applies it to call records (default: a CloudWatch Logs event; maxRecordBytes)', async () => {
    const stdout = new PassThrough();
    let text = '';
    stdout.on('data', (b: Buffer) => { text += b.toString(); });
    const w = new RecordWriter({ stdout, logFile: null, maxRecordBytes: 2000 });
    w.write(call(`/${'p'.repeat(5000)}`));
    w.write(call());
    await w.close(1000);
    const lines = text.split('\n').filter(Boolean);
    expect(Buffer.byteLength(lines[0])).toBeLessThanOrEqual(2000);
    expect(JSON.parse(lines[0]).truncated).toEqual(['request.path']);
    expect(lines[1]).toBe(JSON.stringify(call()));
    const big = call(`/${'p'.repeat(MAX)}`);
    const d = new PassThrough();
    let t2 = '';
    d.on('data', (b: Buffer) => { t2 += b.toString(); });
    const w2 = new RecordWriter({ stdout: d, logFile: null });
    w2.write(big);
    await w2.close(1000);
    expect(Buffer.byteLength(t2)).toBeLessThanOrEqual(MAX + 1);
  });
});

describe('RecordWriter: stdout and the log file get the same bytes', () => {
  let dir = '';
  beforeEach(() => { dir = mkdtempSync(join(tmpdir(), 'linebytes-')); });
  afterEach(() => { rmSync(dir, { recursive: true, force: true }); });

  it('every kind of record, byte for byte the same in both, in order', async () => {
    const path = join(dir, 'calls.jsonl');
    const file = new LogFile({ path, dirMode: 0o700, fileMode: 0o600, onError: () => undefined });
    file.open();
    const stdout = new PassThrough();
    let text = '';
    stdout.on('data', (b: Buffer) => { text += b.toString(); });
    const w = new RecordWriter({ stdout, logFile: file });
    const recs: OutputRecord[] = [];
    for (let i = 0; i < 300; i++) recs.push({ ...call(`/p/${i}/é😀\ud800`), time: String(i) } as OutputRecord);
    recs.splice(100, 0, { event: 'stats', time: 't', uptime_s: 1 } as unknown as OutputRecord);
    for (const r of recs) w.write(r);
    w.error('capture', 'stopped "here"');
    await w.close(1000);
    expect(readFileSync(path, 'utf8')).toBe(text);
    const lines = text.split('\n');
    expect(lines.pop()).toBe(''); // whole lines
    expect(lines.slice(0, recs.length)).toEqual(recs.map((r) => JSON.stringify(r)));
    expect(lines.slice(recs.length).map((l) => JSON.parse(l))).toMatchObject([{ event: 'error', component: 'capture', message: 'stopped "here"' }]);
  });

  it('a diagnostic made while a line is being handed out (stdout full) does not change that line in the log file', async () => {
    const path = join(dir, 'calls.jsonl');
    const file = new LogFile({ path, dirMode: 0o700, fileMode: 0o600, onError: () => undefined });
    file.open();
    const stuck = new Writable({ highWaterMark: 1024, write: () => undefined }); // never drains
    const w = new RecordWriter({ stdout: stuck, logFile: file, maxStdoutBytes: 4096 });
    const recs = Array.from({ length: 40 }, (_, i) => ({ ...call(`/p/${i}`), time: String(i) }) as OutputRecord);
    for (const r of recs) w.write(r);
    file.close();
    const lines = readFileSync(path, 'utf8').split('\n').filter(Boolean);
    const calls = lines.filter((l) => JSON.parse(l).event === 'imds_call');
    expect(calls).toEqual(recs.map((r) => JSON.stringify(r)));
    const errors = lines.filter((l) => JSON.parse(l).event === 'error');
    expect(errors).toHaveLength(1);
    expect(JSON.parse(errors[0]).message).toMatch(/stdout is not read fast enough/);
    expect(w.dropped.stdout).toBeGreaterThan(0);
  });

  it('stdout: a turn written while the reader keeps up is a view of the chunk; one that has to wait is a copy of its own bytes', async () => {
    const got: Buffer[] = [];
    const done: Array<() => void> = [];
    const slow = new Writable({ write: (chunk: Buffer, _enc, cb) => { got.push(chunk); done.push(cb); } });
    const w = new RecordWriter({ stdout: slow, logFile: null });
    w.write(call('/first'));
    await new Promise((resolve) => setImmediate(resolve));
    w.write(call('/second')); // the first write is not done: this one waits in the stream
    await new Promise((resolve) => setImmediate(resolve));
    done.shift()!();
    await new Promise((resolve) => setImmediate(resolve));
    expect(got.map((b) => b.toString())).toEqual([`${JSON.stringify(call('/first'))}\n`, `${JSON.stringify(call('/second'))}\n`]);
    expect(got[0].buffer.byteLength).toBe(LINE_CHUNK_BYTES); // not copied: a view of the chunk
    expect(got[1].buffer).not.toBe(got[0].buffer); // does not hold the chunk while it waits (its copy may come from Buffer's pool)
    done.shift()!();
  });

  it('stdout: a turn spanning two chunks is one writev of its views, in order, nothing copied', async () => {
    const writes: Buffer[][] = [];
    const out = new Writable({
      write: (chunk: Buffer, _enc, cb) => { writes.push([chunk]); cb(); },
      writev: (chunks, cb) => { writes.push(chunks.map((c) => c.chunk as Buffer)); cb(); },
    });
    const w = new RecordWriter({ stdout: out, logFile: null });
    const expected: string[] = [];
    // Enough records in one turn to fill the first chunk and go on in a second.
    for (let i = 0; expected.join('').length < LINE_CHUNK_BYTES + 1000; i++) {
      const rec = call(`/p${i}`);
      expected.push(`${JSON.stringify(rec)}\n`);
      w.write(rec);
    }
    await new Promise((resolve) => setImmediate(resolve));
    expect(writes).toHaveLength(1);
    expect(writes[0].length).toBe(2);
    expect(Buffer.concat(writes[0]).toString()).toBe(expected.join(''));
    for (const b of writes[0]) expect(b.buffer.byteLength).toBe(LINE_CHUNK_BYTES); // views of the chunks
  });
});
