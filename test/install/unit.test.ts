/**
 * systemd/imds-tracer.service: its hardening score stays at or under the one docs/fleet.md
 * documents, systemd-analyze verify accepts it, and its capabilities are exactly what the agent
 * needs — the built agent's doctor passes with only them, as another user, and fails a check
 * without any one of them. The system calls a real run makes are all allowed by its filter.
 */
import { spawnSync } from 'node:child_process';
import { chownSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stageBuild, type StagedBuild } from '../helpers/staged.js';

const REPO = join(import.meta.dirname, '..', '..');
const UNIT_PATH = join(REPO, 'systemd', 'imds-tracer.service');
const UNIT = readFileSync(UNIT_PATH, 'utf8');
const CLI = join(REPO, 'dist', 'cli.js');

const has = (cmd: string): boolean => spawnSync('sh', ['-c', `command -v ${cmd}`]).status === 0;
const isRoot = process.getuid?.() === 0;
const built = existsSync(CLI) && existsSync(join(REPO, 'bpf/.output/imds_connect'));

/** Values of a setting (every occurrence, split on whitespace). */
function setting(name: string): string[] {
  return UNIT.split('\n').filter((l) => l.startsWith(`${name}=`)).flatMap((l) => l.slice(name.length + 1).trim().split(/\s+/)).filter(Boolean);
}

const NEEDED = ['CAP_NET_RAW', 'CAP_BPF', 'CAP_PERFMON', 'CAP_SYS_PTRACE', 'CAP_DAC_READ_SEARCH'];

describe('the unit file', () => {
  it('grants exactly the capabilities the agent needs, each explained by a comment', () => {
    expect(setting('CapabilityBoundingSet').sort()).toEqual([...NEEDED].sort());
    expect(setting('AmbientCapabilities').sort()).toEqual([...NEEDED].sort());
    for (const cap of NEEDED) expect(UNIT, `no comment line for ${cap}`).toMatch(new RegExp(`^# ${cap}\\s+\\S`, 'm'));
  });

  it('keeps what the agent relies on: other processes visible, W+X memory for V8, the log directory', () => {
    expect(setting('ProtectProc')).toEqual([]); // default: every process visible in /proc
    expect(setting('ProcSubset')).toEqual([]); // pidusage reads /proc/stat and /proc/uptime
    expect(setting('MemoryDenyWriteExecute')).toEqual([]); // V8's JIT
    expect(setting('PrivateNetwork')).toEqual([]);
    expect(setting('LogsDirectory')).toEqual(['imds-tracer']);
    expect(setting('LogsDirectoryMode')).toEqual(['0700']);
    expect(setting('ExecStart')).toEqual(['/usr/local/bin/imds-tracer', 'run', '$IMDS_TRACER_ARGS']);
    expect(setting('RestrictAddressFamilies').sort()).toEqual(['AF_INET', 'AF_INET6', 'AF_NETLINK', 'AF_PACKET', 'AF_UNIX']);
  });
});

describe.skipIf(!has('systemd-analyze'))('systemd-analyze', () => {
  it('security --offline=true: exposure at or under the score documented in docs/fleet.md', () => {
    const doc = readFileSync(join(REPO, 'docs', 'fleet.md'), 'utf8');
    const documented = Number(/exposure\s+score:\s*\**([0-9]+\.[0-9])/i.exec(doc)?.[1]);
    expect(documented, 'docs/fleet.md names no "exposure score: N.N"').toBeGreaterThan(0);
    const r = spawnSync('systemd-analyze', ['security', '--offline=true', '--no-pager', UNIT_PATH], { encoding: 'utf8' });
    const score = Number(/Overall exposure level for imds-tracer\.service:\s*([0-9.]+)/.exec(r.stdout)?.[1]);
    expect(score, r.stdout + r.stderr).toBeGreaterThan(0);
    expect(score).toBeLessThanOrEqual(documented);
    expect(score).toBeLessThanOrEqual(4.9); // "OK" or better
  });

  it('verify: no errors (ExecStart pointed at an executable that exists here)', () => {
    const dir = mkdtempSync(join(tmpdir(), 'imds-tracer-verify-'));
    try {
      // The installed command is not here; anything else in the unit is verified as is.
      const copy = join(dir, 'imds-tracer.service');
      writeFileSync(copy, UNIT.replace('ExecStart=/usr/local/bin/imds-tracer ', `ExecStart=${process.execPath} `));
      const r = spawnSync('systemd-analyze', ['verify', copy], { encoding: 'utf8' });
      expect(r.stderr.trim()).toBe('');
      expect(r.status).toBe(0);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

/**
 * Runs the built doctor (`cli`: a staged copy nobody can read, wherever the checkout lives) as
 * nobody with exactly `caps` (ambient, like the unit), returns its checks.
 */
function doctorWith(cli: string, caps: string[], logDir: string): Record<string, string> {
  const list = caps.map((c) => `+${c.replace(/^CAP_/, '').toLowerCase()}`).join(',');
  const set = caps.length ? `-all,${list}` : '-all';
  const r = spawnSync('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', `--inh-caps=${set}`, `--ambient-caps=${set}`,
    `--bounding-set=${set}`, process.execPath, cli, 'doctor', '--json', '--log-file', join(logDir, 'calls.jsonl')],
  { encoding: 'utf8', timeout: 60_000 });
  let report: { checks: { id: string; status: string }[] };
  try {
    report = JSON.parse(r.stdout) as typeof report;
  } catch {
    throw new Error(`doctor as nobody printed no JSON (exit ${r.status}): ${r.stdout}${r.stderr}`);
  }
  return Object.fromEntries(report.checks.map((c) => [c.id, c.status]));
}

describe.skipIf(!isRoot || !built || !has('setpriv'))('the capabilities are what the agent needs (as another user, like DynamicUser=)', () => {
  const logDir = mkdtempSync(join(tmpdir(), 'imds-tracer-caps-'));
  chownSync(logDir, 65534, 65534);
  // nobody may not be able to enter the checkout (a clone under /root): it runs a readable copy.
  let staged: StagedBuild;
  beforeAll(() => { staged = stageBuild(REPO); });
  afterAll(() => {
    staged?.remove();
    rmSync(logDir, { recursive: true, force: true });
  });

  it("with the unit's capabilities every check the capabilities decide passes", () => {
    const got = doctorWith(staged.cli, setting('AmbientCapabilities'), logDir);
    expect(got).toMatchObject({ privileges: 'PASS', libpcap: 'PASS', ebpf: 'PASS', proc: 'PASS', 'log-dir': 'PASS' });
  });

  it.each([
    ['CAP_NET_RAW', 'privileges', 'FAIL'], // and the capture is not even tried
    ['CAP_BPF', 'ebpf', 'WARN'],
    ['CAP_PERFMON', 'ebpf', 'WARN'],
    ['CAP_SYS_PTRACE', 'proc', 'WARN'],
    ['CAP_DAC_READ_SEARCH', 'proc', 'WARN'],
  ])('without %s the %s check does not pass', (cap, check, status) => {
    const got = doctorWith(staged.cli, NEEDED.filter((c) => c !== cap), logDir);
    expect(got[check]).toBe(status);
  });
});

/** Every system call name in a SystemCallFilter= allow list, groups expanded. */
function allowedSyscalls(filter: string[]): Set<string> {
  const out = new Set<string>();
  const expand = (name: string, seen: Set<string>): void => {
    if (!name.startsWith('@')) { out.add(name); return; }
    if (seen.has(name)) return;
    seen.add(name);
    const r = spawnSync('systemd-analyze', ['syscall-filter', name], { encoding: 'utf8' });
    for (const line of r.stdout.split('\n').slice(1)) {
      const s = line.trim();
      if (s && !s.startsWith('#')) expand(s, seen);
    }
  };
  for (const f of filter) expand(f, new Set());
  return out;
}

describe.skipIf(!isRoot || !built || !has('strace') || !has('systemd-analyze'))('SystemCallFilter=', () => {
  it('allows every system call a real run makes (node, the capture helper, the eBPF loader)', () => {
    const dir = mkdtempSync(join(tmpdir(), 'imds-tracer-strace-'));
    try {
      const trace = join(dir, 'strace.txt');
      const r = spawnSync('strace', ['-f', '-qq', '-o', trace, process.execPath, CLI, 'run', '--duration', '2', '--backend', 'ebpf',
        '--log-file', join(dir, 'calls.jsonl')], { encoding: 'utf8', timeout: 60_000 });
      expect(r.status, r.stderr).toBe(0);
      const used = new Set<string>();
      for (const line of readFileSync(trace, 'utf8').split('\n')) {
        const m = /^\d+\s+([a-z_0-9]+)\(/.exec(line);
        if (m) used.add(m[1]);
      }
      expect(used.has('bpf')).toBe(true); // the trace saw the loader
      const allowed = allowedSyscalls(setting('SystemCallFilter'));
      expect([...used].filter((s) => !allowed.has(s)).sort()).toEqual([]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
