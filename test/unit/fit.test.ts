/**
 * Bounds on what a call record may carry: argv read from /proc is cut as the kernel cuts it (1024
 * bytes, argv_truncated), and the last guard shrinks an oversized record to what a CloudWatch Logs
 * event may hold instead of losing the call.
 */
import { mkdtempSync, mkdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { DEFAULTS } from '../../agent/src/defaults.js';
import { cutArgv, cutUtf8, fitCallRecord, jsonBytesAtMost } from '../../agent/src/fit.js';
import { parseCmdlineBounded } from '../../agent/src/attribution/proc/parse.js';
import { readAncestors, readArgv, readProcess, UserNames } from '../../agent/src/attribution/proc/process.js';
import type { CallRecord } from '../../agent/src/record.js';
import { validate } from '../../agent/src/schema.js';
import { SelfCalls } from '../../agent/src/pipeline/self-calls.js';

const MAX = DEFAULTS.cloudwatch.maxEventBytes;
const size = (r: unknown): number => Buffer.byteLength(JSON.stringify(r));

function call(over: Partial<CallRecord['process']> = {}, path = '/latest/meta-data/iam/security-credentials/'): CallRecord {
  return {
    event: 'imds_call', time: '2026-11-28T15:12:44.456Z', imds_version: 'v1', provider: 'aws',
    request: { method: 'GET', path, http_version: '1.1', token_present: false, token_request: false, user_agent: 'curl/8' },
    response: { status: 200 },
    connection: { src: '169.254.10.2', sport: 49610, dst: '169.254.169.254', dport: 80, interface: 'eth0', family: 'ipv4' },
    process: { attribution: 'proc', pid: 6002, comm: 'java', exe: '/usr/bin/java', argv: ['java', '-cp', 'x.jar', 'Main'],
      uid: 0, user: 'root', ppid: 1, ancestors: [{ pid: 1, comm: 'systemd', argv: ['/sbin/init'] }],
      cgroup: '/system.slice/app.service', container: null, systemd_unit: 'app.service', ...over },
  };
}

describe('parseCmdlineBounded: argv from /proc cut like the kernel cuts it', () => {
  const nul = (args: string[]): Buffer => Buffer.from(`${args.join('\0')}\0`);

  it('a short argv is whole and not truncated', () => {
    expect(parseCmdlineBounded(nul(['curl', '-s', 'http://x']), 1024)).toEqual({ argv: ['curl', '-s', 'http://x'], truncated: false });
  });

  it('exactly the bound is not truncated; one byte more is', () => {
    const a = nul(['x'.repeat(1023)]); // 1024 bytes with its NUL
    expect(parseCmdlineBounded(a, 1024)).toEqual({ argv: ['x'.repeat(1023)], truncated: false });
    const b = Buffer.concat([a, Buffer.from('y')]);
    const out = parseCmdlineBounded(b, 1024);
    expect(out.truncated).toBe(true);
    expect(out.argv).toEqual(['x'.repeat(1023)]);
  });

  it('a 300 KB class path keeps its first 1024 bytes, the last argument cut', () => {
    const cp = Array.from({ length: 20_000 }, (_, i) => `/opt/lib/dep-${i}.jar`).join(':');
    const head = nul(['java', '-cp', cp, 'com.example.Main']).subarray(0, 1025);
    const out = parseCmdlineBounded(head, 1024);
    expect(out.truncated).toBe(true);
    expect(out.argv.slice(0, 2)).toEqual(['java', '-cp']);
    expect(cp.startsWith(out.argv[2])).toBe(true);
    expect(Buffer.byteLength(out.argv.join('\0'))).toBeLessThanOrEqual(1024);
  });

  it('never splits a multi-byte character', () => {
    const head = Buffer.from(`a\0${'é'.repeat(600)}`).subarray(0, 1025);
    const out = parseCmdlineBounded(head, 1024);
    expect(out.argv[1]).not.toContain('\uFFFD');
    expect(out.truncated).toBe(true);
  });
});

describe('readProcess / readAncestors read a bounded argv from a /proc tree', () => {
  it('cuts the caller\'s and each ancestor\'s argv, marking them', async () => {
    const root = mkdtempSync(join(tmpdir(), 'imdst-proc-'));
    const big = `${'a'.repeat(200_000)}`;
    const mk = (pid: number, ppid: number, name: string, argv: string[]): void => {
      mkdirSync(join(root, String(pid)));
      writeFileSync(join(root, String(pid), 'status'), `Name:\t${name}\nTgid:\t${pid}\nPPid:\t${ppid}\nUid:\t0\t0\t0\t0\nGid:\t0\t0\t0\t0\n`);
      writeFileSync(join(root, String(pid), 'cmdline'), `${argv.join('\0')}\0`);
      writeFileSync(join(root, String(pid), 'cgroup'), '0::/system.slice/app.service\n');
    };
    mk(30, 0, 'init', ['/sbin/init']);
    mk(20, 30, 'sh', ['sh', '-c', big]);
    mk(10, 20, 'java', ['java', '-cp', big, 'Main']);
    const p = await readProcess(10, 4, new UserNames(), root);
    expect(p?.argv_truncated).toBe(true);
    expect(Buffer.byteLength(p!.argv!.join('\0'))).toBeLessThanOrEqual(1024);
    expect(p?.ancestors?.[0]).toMatchObject({ pid: 20, argv_truncated: true });
    expect(Buffer.byteLength(p!.ancestors![0].argv!.join('\0'))).toBeLessThanOrEqual(1024);
    expect(p?.ancestors?.[1]).toEqual({ pid: 30, comm: 'init', argv: ['/sbin/init'] });
    expect(await readArgv(30, root)).toEqual({ argv: ['/sbin/init'], truncated: false });
    expect(await readArgv(99, root)).toBeNull();
    expect(await readAncestors(20, 1, root)).toHaveLength(1);
  });
});

describe('fitCallRecord: no record larger than a CloudWatch Logs event', () => {
  it('a record that fits is returned as it is', () => {
    const r = call();
    expect(fitCallRecord(r, MAX)).toBe(r);
  });

  it('shrinks 300 KB of argv (as from a file before this bound) and keeps the call', () => {
    const cp = 'x'.repeat(300_000);
    const r = call({ argv: ['java', '-cp', cp, 'Main'] });
    expect(size(r)).toBeGreaterThan(MAX);
    const out = fitCallRecord(r, MAX);
    expect(size(out)).toBeLessThanOrEqual(MAX);
    expect(out.process.argv_truncated).toBe(true);
    expect(out.truncated).toEqual(['process.argv']);
    expect(out.request.path).toBe(r.request.path);
    expect(out.process.pid).toBe(6002);
    expect(validate(out)).toEqual([]);
    expect(r.process.argv![2]).toBe(cp); // the input is not changed
  });

  it('shrinks the biggest fields first: many ancestors, a long path and user agent', () => {
    const ancestors = Array.from({ length: 400 }, (_, i) => ({ pid: 1000 + i, comm: 'sh', argv: ['sh', '-c', 'y'.repeat(1000)] }));
    const r = call({ ancestors }, `/latest/${'p'.repeat(16_000)}`);
    r.request.user_agent = 'u'.repeat(16_000);
    const out = fitCallRecord(r, MAX);
    expect(size(out)).toBeLessThanOrEqual(MAX);
    expect(out.truncated).toContain('process.ancestors');
    expect(out.request.path).toBe(r.request.path); // 16 KB is not what made it too big
    expect(out.process.ancestors!.length).toBeGreaterThan(0);
    expect(validate(out)).toEqual([]);
  });

  it('fits any bound, marking every field it shortened', () => {
    const r = call({ argv: ['a'.repeat(5000)], exe: `/${'e'.repeat(5000)}` }, `/${'p'.repeat(5000)}`);
    const out = fitCallRecord(r, 2000);
    expect(size(out)).toBeLessThanOrEqual(2000);
    expect(out.truncated).toEqual(expect.arrayContaining(['process.argv', 'process.exe', 'request.path']));
  });

  it('cutUtf8 and cutArgv respect byte bounds and characters', () => {
    expect(cutUtf8('ééé', 3)).toBe('é');
    expect(cutArgv(['ab', 'cdef', 'g'], 6)).toEqual(['ab', 'cd']);
    expect(cutArgv(['ab'], 0)).toEqual([]);
  });
});

describe('SelfCalls: the agent\'s own IMDS requests by version', () => {
  it('counts v1 and v2; a v1 call asks for an error record, at most maxAlarms times', () => {
    const s = new SelfCalls(2);
    expect(s.count('v2', 'PUT', '/latest/api/token')).toBeNull();
    expect(s.count('v1', 'GET', '/latest/meta-data/iam/security-credentials/')).toMatch(/the agent itself made an IMDSv1 call \(GET \/latest\/meta-data\/iam\/security-credentials\/\)/);
    expect(s.count('v1', 'GET', '/x')).toMatch(/further ones are only counted in stats.calls_self_v1/);
    expect(s.count('v1', 'GET', '/x')).toBeNull();
    expect(s.count(null, 'GET', '/computeMetadata/v1/')).toBeNull();
    expect([s.v1, s.v2]).toEqual([3, 1]);
  });
});

describe('jsonBytesAtMost: the bound that spares measuring every record', () => {
  it('never says a value fits when its JSON does not (escapes, lone surrogates, multi-byte text, numbers, nesting)', () => {
    let seed = 7;
    const rnd = (n: number): number => { seed = (seed * 1103515245 + 12345) % 2 ** 31; return seed % n; };
    const units = [0x00, 0x1f, 0x22, 0x5c, 0x41, 0xe9, 0x2713, 0xd800, 0xdfff, 0xffff, 0x7f];
    const str = (): string => String.fromCharCode(...Array.from({ length: rnd(40) }, () => units[rnd(units.length)]));
    const value = (depth: number): unknown => {
      switch (rnd(depth > 2 ? 4 : 6)) {
        case 0: return str();
        case 1: return [-1.2345678901234567e+308, 5e-324, 0, -0, 12345678901234567890][rnd(5)];
        case 2: return [true, false, null][rnd(3)];
        case 3: return undefined;
        case 4: return Array.from({ length: rnd(5) }, () => value(depth + 1));
        default: return Object.fromEntries(Array.from({ length: rnd(5) }, () => [str(), value(depth + 1)]));
      }
    };
    for (let i = 0; i < 3000; i++) {
      const v = { k: value(0) };
      const exact = size(v);
      expect(jsonBytesAtMost(v, exact - 1)).toBe(false);
    }
    const rec = call();
    expect(jsonBytesAtMost(rec, MAX)).toBe(true);
    expect(jsonBytesAtMost(rec, size(rec) - 1)).toBe(false);
    expect(jsonBytesAtMost({ d: new Date(0) }, MAX)).toBe(false); // toJSON: measured, not guessed
  });

  it('a record just over the bound is still shrunk (the bound does not let it through)', () => {
    const big = call({}, `/latest/${'\u0001'.repeat(50_000)}`); // 6 bytes of JSON per character
    expect(size(big)).toBeGreaterThan(MAX);
    const fitted = fitCallRecord(big, MAX);
    expect(size(fitted)).toBeLessThanOrEqual(MAX);
    expect(fitted.truncated).toEqual(['request.path']);
  });
});
