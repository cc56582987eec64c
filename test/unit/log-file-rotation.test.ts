/**
 * LogFile with size-based rotation (in-process, temp dir, small sizes), reopen() for an external
 * logrotate, and SIGHUP through the built CLI (root: `run` captures packets).
 */
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { LogFile } from '../../agent/src/output/log-file.js';
import { Sink } from '../helpers/sink.js';
import { CLI, REPO } from '../helpers/repo.js';

let dir = '';
beforeEach(() => { dir = mkdtempSync(join(tmpdir(), 'logrot-')); });
afterEach(() => { rmSync(dir, { recursive: true, force: true }); });

const mode = (p: string): number => statSync(p).mode & 0o777;
const rec = (i: number): string => `${JSON.stringify({ event: 'stats', seq: i, pad: 'p'.repeat(i % 13) })}\n`;

function open(path: string, maxBytes: number, files: number, errors: string[] = []): LogFile {
  const f = new LogFile({ path, dirMode: 0o700, fileMode: 0o600, maxBytes, files, onError: (m) => errors.push(m) });
  f.open();
  return f;
}

/** The files oldest first, as `report` reads them. */
function readSet(path: string): string[] {
  const n = readdirSync(join(path, '..')).filter((f) => /\.\d+$/.test(f)).length;
  const names = [...Array.from({ length: n }, (_, k) => `${path}.${n - k}`), path].filter(existsSync);
  return names.flatMap((p) => readFileSync(p, 'utf8').split('\n').filter(Boolean));
}

describe('LogFile rotation', () => {
  it('rotates between lines: no file past the limit, no line split, the newest lines kept in order, 0600/0700', () => {
    const path = join(dir, 'sub', 'calls.jsonl');
    const f = open(path, 1000, 3);
    const lines = Array.from({ length: 400 }, (_, i) => rec(i));
    for (const [i, l] of lines.entries()) {
      f.write(l);
      if (i % 37 === 0) f.flush(); // several flushes, several rotations each
    }
    f.close();
    expect(readdirSync(join(dir, 'sub')).sort()).toEqual(['calls.jsonl', 'calls.jsonl.1', 'calls.jsonl.2', 'calls.jsonl.3']);
    for (const name of readdirSync(join(dir, 'sub'))) {
      const p = join(dir, 'sub', name);
      const text = readFileSync(p, 'utf8');
      expect(text.endsWith('\n')).toBe(true);
      expect(Buffer.byteLength(text)).toBeLessThanOrEqual(1000);
      expect(mode(p)).toBe(0o600);
    }
    expect(mode(join(dir, 'sub'))).toBe(0o700);
    const kept = readSet(path).map((l) => JSON.parse(l).seq as number); // every line parses
    expect(kept.length).toBeGreaterThan(40);
    expect(kept).toEqual(Array.from({ length: kept.length }, (_, k) => 400 - kept.length + k)); // a suffix, in order
    expect(f.rotations).toBeGreaterThan(3);
  });

  it('loses nothing while the rotated set is large enough', () => {
    const path = join(dir, 'calls.jsonl');
    const f = open(path, 500, 100);
    for (let i = 0; i < 300; i++) f.write(rec(i));
    f.close();
    expect(readSet(path).map((l) => JSON.parse(l).seq)).toEqual([...Array(300).keys()]);
  });

  it('rotates a file already past the limit before the first write; a line larger than the limit gets a file of its own', () => {
    const path = join(dir, 'calls.jsonl');
    writeFileSync(path, 'x'.repeat(2000) + '\n', { mode: 0o600 });
    const f = open(path, 100, 5);
    const big = `${JSON.stringify({ big: 'b'.repeat(300) })}\n`;
    f.write(rec(1));
    f.write(big);
    f.write(rec(2));
    f.close();
    expect(readFileSync(`${path}.3`, 'utf8')).toBe('x'.repeat(2000) + '\n');
    expect(readFileSync(`${path}.2`, 'utf8')).toBe(rec(1));
    expect(readFileSync(`${path}.1`, 'utf8')).toBe(big);
    expect(readFileSync(path, 'utf8')).toBe(rec(2));
  });

  it('reopen() after an external rename (logrotate) writes to a fresh 0600 file', () => {
    const path = join(dir, 'calls.jsonl');
    const f = new LogFile({ path, dirMode: 0o700, fileMode: 0o600, onError: () => undefined }); // no size limit
    f.open();
    f.write(rec(1));
    f.flush();
    renameSync(path, `${path}.1`);
    f.write(rec(2)); // pending while rotated away: the agent notices the path moved and starts the new file
    f.reopen();
    f.write(rec(3));
    f.close();
    expect(readFileSync(`${path}.1`, 'utf8')).toBe(rec(1));
    expect(readFileSync(path, 'utf8')).toBe(rec(2) + rec(3));
    expect(mode(path)).toBe(0o600);
  });

  it('a rotation that cannot rename is reported once and nothing is lost', () => {
    const path = join(dir, 'calls.jsonl');
    const errors: string[] = [];
    const f = open(path, 60, 2, errors);
    // A directory in the place of the oldest rotated file cannot be unlinked (EISDIR): rotation fails.
    mkdirSync(join(`${path}.2`, 'x'), { recursive: true });
    for (let i = 0; i < 10; i++) f.write(rec(i));
    f.close();
    expect(errors).toHaveLength(1);
    expect(errors[0]).toMatch(/^cannot rotate log file .*calls\.jsonl: .*; writing on past the size limit$/);
    expect(readFileSync(path, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l).seq)).toEqual([...Array(10).keys()]);
  });
});

const ROOT = REPO;
describe.skipIf(process.getuid?.() !== 0 || !existsSync(join(ROOT, 'dist/cli.js')))('run: rotation flags and SIGHUP (root)', () => {
  it('SIGHUP reopens the log file and does not stop the agent; --log-max-bytes rotates', async () => {
    const path = join(dir, 'logs', 'calls.jsonl');
    const child = spawn(process.execPath, [join(ROOT, 'dist/cli.js'), 'run', '--backend', 'proc', '--log-file', path,
      '--stats-interval', '1', '--log-max-bytes', '3000', '--log-files', '2'], { stdio: ['ignore', 'pipe', 'pipe'] });
    const out = new Sink(child.stdout);
    let stderr = '';
    child.stderr.on('data', (c: Buffer) => { stderr += c.toString(); });
    try {
      await out.next((r) => r.event === 'ready', 20_000, 'ready');
      await out.next((r) => r.event === 'stats', 5000, 'first stats');
      renameSync(path, `${path}.moved`); // what logrotate does before it signals
      child.kill('SIGHUP');
      const n = out.records.length;
      // Two stats records after the signal: the first one is surely in the file by the second.
      await out.next((r) => r.event === 'stats' && out.records.filter((x, i) => i >= n && x.event === 'stats').length >= 2,
        5000, 'two stats records after SIGHUP');
      expect(existsSync(path)).toBe(true);
      expect(mode(path)).toBe(0o600);
      expect(readFileSync(path, 'utf8')).toMatch(/"event":"stats"/);
      expect(readFileSync(`${path}.moved`, 'utf8')).toMatch(/"event":"ready"/);
      // ~1 stats line (~650 bytes) a second against 3000 bytes a file: a rotation every few seconds
      // (not so often that the file checked above could be mid-rotation when it is looked at).
      await out.next((r) => r.event === 'stats' && (r.log_rotations ?? 0) >= 2, 30_000, 'two rotations');
    } finally {
      child.kill('SIGTERM');
    }
    const [code] = await once(child, 'close');
    expect(code, stderr).toBe(0);
    expect(readdirSync(join(dir, 'logs')).sort()).toEqual(['calls.jsonl', 'calls.jsonl.1', 'calls.jsonl.2', 'calls.jsonl.moved']);
    for (const f of ['calls.jsonl', 'calls.jsonl.1', 'calls.jsonl.2']) {
      expect(statSync(join(dir, 'logs', f)).size).toBeLessThanOrEqual(3000);
      expect(mode(join(dir, 'logs', f))).toBe(0o600);
    }
    expect(mode(join(dir, 'logs'))).toBe(0o700);
  });
});

describe('LogFile faults', () => {
  let dir2: string;
  beforeEach(() => { dir2 = mkdtempSync(join(tmpdir(), 'imdst-logfault-')); });
  afterEach(() => rmSync(dir2, { recursive: true, force: true }));

  it('its directory deleted: made again, later lines land in a readable file, a notice says so', () => {
    const path = join(dir2, 'logs', 'calls.jsonl');
    const notices: string[] = [];
    const f = new LogFile({ path, dirMode: 0o700, fileMode: 0o600, onError: () => undefined, onNotice: (m) => notices.push(m) });
    f.open();
    f.write('{"n":1}\n');
    f.flush();
    rmSync(join(dir2, 'logs'), { recursive: true });
    f.write('{"n":2}\n');
    f.close();
    expect(readFileSync(path, 'utf8')).toBe('{"n":2}\n');
    expect(statSync(join(dir2, 'logs')).mode & 0o777).toBe(0o700);
    expect(notices).toEqual([`log file ${path} was removed or replaced; writing to a new one`]);
  });
});

describe('LogFile memory bound', () => {
  let dir3: string;
  beforeEach(() => { dir3 = mkdtempSync(join(tmpdir(), 'imdst-logbound-')); });
  afterEach(() => rmSync(dir3, { recursive: true, force: true }));

  it('while the file cannot be written, at most maxPendingBytes wait: the oldest dropped, counted, one error; the newest written on recovery', () => {
    const logs = join(dir3, 'logs');
    const path = join(logs, 'calls.jsonl');
    const errors: string[] = [];
    const f = new LogFile({ path, dirMode: 0o700, fileMode: 0o600, maxPendingBytes: 4096, retryMs: 3_600_000, onError: (m) => errors.push(m) });
    f.open();
    rmSync(logs, { recursive: true });
    writeFileSync(logs, 'not a directory'); // the directory cannot be made again: every write fails
    for (let i = 0; i < 1000; i++) f.write(rec(i));
    f.flush();
    expect(f.dropped).toBeGreaterThan(900);
    expect(errors.filter((m) => /cannot be written for too long.*records_dropped\.log_file/.test(m))).toHaveLength(1);
    rmSync(logs);
    expect(f.flush()).toBe(true);
    f.close();
    const kept = readFileSync(path, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l).seq as number);
    expect(Buffer.byteLength(readFileSync(path))).toBeLessThanOrEqual(4096);
    expect(kept.length + f.dropped).toBe(1000);
    expect(kept).toEqual(Array.from({ length: kept.length }, (_, k) => 1000 - kept.length + k));
  });
});
