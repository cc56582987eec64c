import { describe, expect, it } from 'vitest';
import {
  capEffFromStatus, evaluateBtf, evaluateDisk, evaluateEbpf, evaluateInterfaces, evaluateLogDir,
  evaluateNode, evaluatePcap, evaluatePrivileges, evaluateProc, parseCapMask, type CheckResult,
} from '../../agent/src/doctor/checks.js';
import { exitStatus, formatJson, formatText, summarize } from '../../agent/src/doctor/format.js';

/** CapEff mask (hex) with exactly these bits set. */
const mask = (...bits: number[]): string => bits.reduce((m, b) => m | (1n << BigInt(b)), 0n).toString(16).padStart(16, '0');
const FULL_ROOT = '000001ffffffffff';

describe('doctor: capabilities', () => {
  it('reads CapEff from /proc/<pid>/status and names the bits the agent uses', () => {
    expect(capEffFromStatus('Name:\tnode\nCapInh:\t0000000000000000\nCapEff:\t000000c000082004\nCapBnd:\t1\n')).toBe('000000c000082004');
    expect(capEffFromStatus('Name:\tnode\n')).toBeNull();
    expect([...parseCapMask('000000c000082004')].sort()).toEqual(['CAP_BPF', 'CAP_DAC_READ_SEARCH', 'CAP_NET_RAW', 'CAP_PERFMON', 'CAP_SYS_PTRACE']);
    expect(parseCapMask('0').size).toBe(0);
    expect(parseCapMask('not hex').size).toBe(0);
  });

  it('passes root with every capability, and the unit\'s ambient set as another user', () => {
    expect(evaluatePrivileges(0, FULL_ROOT).status).toBe('PASS');
    const r = evaluatePrivileges(61234, mask(13, 39, 38, 19, 2));
    expect(r.status).toBe('PASS');
    expect(r.detail).toContain('uid 61234');
  });

  it('fails without CAP_NET_RAW, even as root (a container may drop it)', () => {
    for (const [uid, caps] of [[1000, mask()], [0, mask(21, 39, 38)]] as const) {
      const r = evaluatePrivileges(uid, caps);
      expect(r.status).toBe('FAIL');
      expect(r.detail).toMatch(/without CAP_NET_RAW/);
      expect(r.fix).toMatch(/sudo|CAP_NET_RAW/);
    }
  });

  it('warns, naming what is missing, when only capture is possible', () => {
    const r = evaluatePrivileges(1000, mask(13));
    expect(r.status).toBe('WARN');
    expect(r.detail).toContain('CAP_BPF + CAP_PERFMON');
    expect(r.detail).toContain('CAP_SYS_PTRACE');
    expect(r.detail).toContain('CAP_DAC_READ_SEARCH');
    // CAP_SYS_ADMIN stands in for CAP_BPF + CAP_PERFMON (kernels before 5.8)
    expect(evaluatePrivileges(1000, mask(13, 21, 19, 2)).status).toBe('PASS');
    expect(evaluatePrivileges(1000, mask(13, 39, 19, 2)).detail).toContain('CAP_BPF + CAP_PERFMON');
  });

  it('fails when the capabilities cannot be read', () => {
    expect(evaluatePrivileges(0, null).status).toBe('FAIL');
  });
});

describe('doctor: verdicts', () => {
  it('Node.js: 20 or newer', () => {
    expect(evaluateNode('v20.0.0').status).toBe('PASS');
    expect(evaluateNode('v22.11.0').status).toBe('PASS');
    const old = evaluateNode('v18.19.1');
    expect(old.status).toBe('FAIL');
    expect(old.fix).toContain('nodejs20');
    expect(evaluateNode('garbage').status).toBe('FAIL');
  });

  it('libpcap: binding, devices, and the capture on "any"', () => {
    const devices = ['eth0', 'any', 'lo'];
    expect(evaluatePcap({ loadError: 'libpcap.so.0.8: cannot open shared object file', devices: [], open: null }))
      .toMatchObject({ status: 'FAIL', detail: expect.stringContaining('libpcap.so.0.8') });
    expect(evaluatePcap({ loadError: null, devices: [], open: null }).status).toBe('FAIL');
    expect(evaluatePcap({ loadError: null, devices, open: { ok: true } })).toMatchObject({ status: 'PASS', data: { devices } });
    expect(evaluatePcap({ loadError: null, devices, open: null })).toMatchObject({ status: 'PASS', detail: expect.stringContaining('not tried') });
    expect(evaluatePcap({ loadError: null, devices, open: { ok: false, error: 'socket: Operation not permitted' } }))
      .toMatchObject({ status: 'FAIL', detail: expect.stringContaining('Operation not permitted') });
  });

  it('interfaces: a warning when only loopback is up', () => {
    const lo = { name: 'lo', up: true, loopback: true };
    expect(evaluateInterfaces([lo, { name: 'ens5', up: true, loopback: false }])).toMatchObject({ status: 'PASS', detail: 'Up: ens5.' });
    const r = evaluateInterfaces([lo, { name: 'ens5', up: false, loopback: false }]);
    expect(r.status).toBe('WARN');
    expect(r.detail).toContain('down: ens5');
    expect(evaluateInterfaces([]).status).toBe('WARN');
  });

  it('BTF and eBPF: missing is a warning (the /proc backend still traces), with load/attach times when it works', () => {
    expect(evaluateBtf({ readable: true }).status).toBe('PASS');
    expect(evaluateBtf({ readable: false, error: 'ENOENT' })).toMatchObject({ status: 'WARN', fix: expect.stringContaining('CONFIG_DEBUG_INFO_BTF') });
    expect(evaluateEbpf({ ok: true, loadMs: 21.34, attachMs: 0.17 }))
      .toMatchObject({ status: 'PASS', detail: 'Loaded in 21.3 ms, attached in 0.2 ms, then stopped.', data: { load_ms: 21.34, attach_ms: 0.17 } });
    expect(evaluateEbpf({ ok: false, error: 'eBPF loader not built: run npm run build (missing /x)' }).fix).toContain('npm run build');
    expect(evaluateEbpf({ ok: false, error: 'imds-connect: load failed: Operation not permitted' }))
      .toMatchObject({ status: 'WARN', fix: expect.stringContaining('CAP_BPF') });
  });

  it("/proc: other users' processes", () => {
    expect(evaluateProc({ ok: true, pid: 812 }).detail).toContain('/proc/812/fd');
    expect(evaluateProc({ ok: true, pid: null }).status).toBe('PASS');
    expect(evaluateProc({ ok: false, pid: 812, error: 'EACCES' })).toMatchObject({ status: 'WARN', detail: expect.stringContaining('EACCES') });
  });

  it('log directory: writable or creatable, private', () => {
    const dir = '/var/log/imds-tracer';
    expect(evaluateLogDir({ dir, exists: true, isDirectory: true, mode: 0o40700, writable: true })).toMatchObject({ status: 'PASS', data: { mode: '0700' } });
    expect(evaluateLogDir({ dir, exists: false, writable: true })).toMatchObject({ status: 'PASS', detail: expect.stringContaining('can be created') });
    expect(evaluateLogDir({ dir, exists: true, isDirectory: true, mode: 0o40755, writable: true }))
      .toMatchObject({ status: 'WARN', fix: `chmod 0700 ${dir}` });
    expect(evaluateLogDir({ dir, exists: true, isDirectory: true, mode: 0o40700, writable: false, error: 'EROFS' }))
      .toMatchObject({ status: 'FAIL', detail: `${dir} is not writable (EROFS).` });
    expect(evaluateLogDir({ dir, exists: false, writable: false, error: 'EACCES' }).detail).toContain('cannot be created');
    expect(evaluateLogDir({ dir, exists: true, isDirectory: false, mode: 0o100600, writable: false }).detail).toContain('not a directory');
  });

  it('disk: a warning under 100 MB', () => {
    const MB = 1024 * 1024;
    expect(evaluateDisk({ path: '/var/log', freeBytes: 100 * MB }).status).toBe('PASS');
    expect(evaluateDisk({ path: '/var/log', freeBytes: 100 * MB - 1 })).toMatchObject({ status: 'WARN', detail: 'Only 99 MB free at /var/log (under 100 MB).' });
    expect(evaluateDisk({ path: '/var/log', error: 'ENOSYS' }).status).toBe('WARN');
  });
});

describe('doctor: report', () => {
  const pass: CheckResult = { id: 'node', status: 'PASS', title: 'Node.js version', detail: 'Node.js v20.20.2' };
  const warn: CheckResult = { id: 'btf', status: 'WARN', title: 'kernel BTF', detail: 'Not readable.', fix: 'Use a kernel with BTF.' };
  const fail: CheckResult = { id: 'privileges', status: 'FAIL', title: 'privileges', detail: 'No CAP_NET_RAW.', fix: 'Run it as root.' };

  it('exits 1 only when a check fails', () => {
    expect(exitStatus(summarize([pass, warn]))).toBe(0);
    expect(exitStatus(summarize([pass, warn, fail]))).toBe(1);
    expect(exitStatus(summarize([pass]))).toBe(0);
  });

  it('prints one line per check, a fix under each WARN and FAIL, and the verdict', () => {
    expect(formatText(summarize([pass, warn, fail]))).toEqual([
      'PASS  Node.js version: Node.js v20.20.2',
      'WARN  kernel BTF: Not readable.',
      '      fix: Use a kernel with BTF.',
      'FAIL  privileges: No CAP_NET_RAW.',
      '      fix: Run it as root.',
      'doctor: 1 passed, 1 warning, 1 failed: tracing cannot work until the failures are fixed.',
    ]);
    expect(formatText(summarize([pass])).at(-1)).toBe('doctor: 1 passed, 0 warnings, 0 failed: tracing can work.');
    expect(formatText(summarize([{ ...pass, fix: 'never shown' }]))).not.toContain('      fix: never shown');
  });

  it('--json: one object that parses back to the same report', () => {
    const report = summarize([pass, warn]);
    const text = formatJson(report);
    expect(text).not.toContain('\n');
    expect(JSON.parse(text)).toEqual({ ok: true, summary: { pass: 1, warn: 1, fail: 0 }, checks: [pass, warn] });
  });
});
