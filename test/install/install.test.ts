/**
 * scripts/install.sh and scripts/uninstall.sh, into a scratch root (--root), without packages or
 * systemctl, from this checkout's build (--from-build: npm test builds first). Checks what is
 * written, that running it again changes nothing, and that uninstall leaves only the records.
 */
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, lstatSync, mkdirSync, mkdtempSync, symlinkSync, readdirSync, readFileSync, readlinkSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLI, REPO } from '../helpers/repo.js';

const INSTALL = join(REPO, 'scripts', 'install.sh');
const UNINSTALL = join(REPO, 'scripts', 'uninstall.sh');
const VERSION = JSON.parse(readFileSync(join(REPO, 'package.json'), 'utf8')).version as string;

const built = ['dist/cli.js', 'bpf/.output/imds_connect', 'node_modules/cap/build/Release/cap.node'].filter((f) => !existsSync(join(REPO, f)));
const isRoot = process.getuid?.() === 0;
const skipReason = built.length > 0 ? `not built (${built.join(', ')} missing): run npm run build` : !isRoot ? 'install.sh runs as root (file ownership)' : '';
if (skipReason) console.warn(`install tests skipped: ${skipReason}`);

function sh(script: string, args: string[]): { status: number | null; out: string } {
  const r = spawnSync('bash', [script, ...args], { encoding: 'utf8', timeout: 120_000 });
  return { status: r.status, out: `${r.stdout}${r.stderr}` };
}

/** Every entry under dir: path, type, mode, owner, link target, content hash. */
function tree(dir: string): Map<string, string> {
  const out = new Map<string, string>();
  const walk = (d: string): void => {
    for (const name of readdirSync(d).sort()) {
      const p = join(d, name);
      const st = lstatSync(p);
      const kind = st.isSymbolicLink() ? `l->${readlinkSync(p)}` : st.isDirectory() ? 'd' : `f:${createHash('sha256').update(readFileSync(p)).digest('hex')}`;
      out.set(relative(dir, p), `${kind} ${(st.mode & 0o7777).toString(8)} ${st.uid}:${st.gid}`);
      if (st.isDirectory() && !st.isSymbolicLink()) walk(p);
    }
  };
  walk(dir);
  return out;
}

function changes(a: Map<string, string>, b: Map<string, string>): string[] {
  const keys = new Set([...a.keys(), ...b.keys()]);
  return [...keys].filter((k) => a.get(k) !== b.get(k)).map((k) => `${k}: ${a.get(k) ?? 'absent'} -> ${b.get(k) ?? 'absent'}`);
}

const mode = (p: string): string => (lstatSync(p).mode & 0o7777).toString(8);

describe.skipIf(Boolean(skipReason))('install.sh / uninstall.sh in a scratch root', () => {
  let root: string;
  const base = (): string[] => ['--root', root, '--skip-packages', '--no-systemctl', '--from-build'];
  const args = (): string[] => [...base(), '--log-group', 'fleet/imds-v1', '--agent-args', '--include-v2   --ancestors 6'];
  let first: Map<string, string>;

  beforeAll(() => {
    root = mkdtempSync(join(tmpdir(), 'imds-tracer-install-'));
    const r = sh(INSTALL, args());
    expect(r.status, r.out).toBe(0);
    first = tree(root);
  });
  afterAll(() => {
    if (root) rmSync(root, { recursive: true, force: true });
  });

  it('installs the agent under opt/imds-tracer, built, production dependencies only, readable by the service user', () => {
    const opt = join(root, 'opt', 'imds-tracer');
    for (const f of ['package.json', 'bin/imds-tracer.js', 'dist/cli.js', 'dist/commands/doctor.js', 'bpf/.output/imds_connect', 'node_modules/cap/build/Release/cap.node', 'scripts/uninstall.sh']) {
      expect(existsSync(join(opt, f)), f).toBe(true);
    }
    expect(mode(join(opt, 'bpf/.output/imds_connect'))).toBe('755');
    expect(existsSync(join(opt, 'node_modules/commander'))).toBe(true);
    expect(existsSync(join(opt, 'node_modules/vitest')), 'dev dependencies pruned').toBe(false);
    expect(existsSync(join(opt, 'node_modules/typescript')), 'dev dependencies pruned').toBe(false);
    // nothing left from staging, everything root-owned, world-readable, writable by root only
    expect(readdirSync(join(root, 'opt'))).toEqual(['imds-tracer']);
    for (const [path, info] of first) {
      if (!path.startsWith('opt/')) continue;
      const [kind, m, owner] = info.split(' ');
      if (kind.startsWith('l->')) continue;
      const bits = parseInt(m, 8);
      expect(owner, path).toBe('0:0');
      expect(bits & 0o022, `${path} is writable by group/others (${m})`).toBe(0);
      expect(bits & 0o004, `${path} is not world-readable (${m})`).toBe(0o004);
    }
  });

  it('writes the command, the unit and the environment file with their modes; leaves the log directory to systemd', () => {
    const cmd = join(root, 'usr/local/bin/imds-tracer');
    expect(mode(cmd)).toBe('755');
    const unit = join(root, 'etc/systemd/system/imds-tracer.service');
    expect(mode(unit)).toBe('644');
    expect(readFileSync(unit, 'utf8')).toBe(readFileSync(join(REPO, 'systemd/imds-tracer.service'), 'utf8'));
    const env = join(root, 'etc/default/imds-tracer');
    expect(mode(env)).toBe('644');
    const assignments = readFileSync(env, 'utf8').split('\n').filter((l) => l && !l.startsWith('#'));
    expect(assignments).toEqual(['IMDS_TRACER_ARGS="--cloudwatch-log-group fleet/imds-v1 --include-v2 --ancestors 6"']);
    // LogsDirectory= with DynamicUser=: systemd makes /var/log/private/imds-tracer and the link
    expect(existsSync(join(root, 'var/log/imds-tracer'))).toBe(false);
  });

  it('the installed command runs from the scratch root', () => {
    const cmd = join(root, 'usr/local/bin/imds-tracer');
    const v = spawnSync(cmd, ['--version'], { encoding: 'utf8' });
    expect(v.status, v.stderr).toBe(0);
    expect(v.stdout.trim()).toBe(VERSION);
    const h = spawnSync(cmd, ['--help'], { encoding: 'utf8' });
    expect(h.status, h.stderr).toBe(0);
    expect(h.stdout).toMatch(/\bdoctor\b/);
    expect(h.stdout).toMatch(/\brun\b/);
  });

  it('a second run changes nothing; --force rebuilds the same tree', () => {
    const again = sh(INSTALL, args());
    expect(again.status, again.out).toBe(0);
    expect(again.out).toContain('is up to date');
    expect(again.out).not.toMatch(/wrote|installed \//);
    expect(changes(first, tree(root))).toEqual([]);
    const forced = sh(INSTALL, [...args(), '--force']);
    expect(forced.status, forced.out).toBe(0);
    expect(forced.out).toContain('installed');
    expect(changes(first, tree(root))).toEqual([]);
  });

  it('keeps the environment file when run without --log-group/--agent-args, replaces it when given', () => {
    const env = join(root, 'etc/default/imds-tracer');
    const before = readFileSync(env, 'utf8');
    expect(sh(INSTALL, base()).status).toBe(0);
    expect(readFileSync(env, 'utf8')).toBe(before);
    const r = sh(INSTALL, [...base(), '--agent-args', '--backend proc']);
    expect(r.status, r.out).toBe(0);
    expect(r.out).toContain('wrote /etc/default/imds-tracer');
    expect(readFileSync(env, 'utf8')).toContain('IMDS_TRACER_ARGS="--backend proc"\n');
  });

  it('refuses bad options with a clear message and exit status 2, writing nothing', () => {
    const snapshot = tree(root);
    const bad: [string[], RegExp][] = [
      [['--log-group', 'has space'], /not a valid CloudWatch Logs group name/],
      [['--agent-args', '--x "quoted"'], /may not contain quotes/],
      [['--agent-args', '$(reboot)'], /may not contain quotes/],
      [['--bogus'], /unknown option --bogus/],
    ];
    for (const [extra, message] of bad) {
      const r = sh(INSTALL, [...base(), ...extra]);
      expect(r.status, r.out).toBe(2);
      expect(r.out).toMatch(message);
    }
    expect(changes(snapshot, tree(root))).toEqual([]);
  });

  it.skipIf(!existsSync('/usr/bin/systemctl') && !existsSync('/bin/systemctl'))('enables the unit offline when systemd is not running there (image builds)', () => {
    const r = sh(INSTALL, ['--root', root, '--skip-packages', '--from-build']);
    expect(r.status, r.out).toBe(0);
    const link = join(root, 'etc/systemd/system/multi-user.target.wants/imds-tracer.service');
    expect(readlinkSync(link)).toBe('/etc/systemd/system/imds-tracer.service');
  });

  it('uninstall leaves only the records; --purge-logs removes them too', () => {
    // what systemd made at the first start: /var/log/private/imds-tracer, linked from /var/log/imds-tracer
    mkdirSync(join(root, 'var/log/private/imds-tracer'), { recursive: true, mode: 0o700 });
    symlinkSync('private/imds-tracer', join(root, 'var/log/imds-tracer'));
    const record = join(root, 'var/log/imds-tracer/calls.jsonl');
    writeFileSync(record, '{"event":"stats"}\n', { mode: 0o600 });
    const r = sh(UNINSTALL, ['--root', root, '--no-systemctl']);
    expect(r.status, r.out).toBe(0);
    expect(r.out).toContain('kept the records');
    const files = [...tree(root)].filter(([, info]) => !info.startsWith('d ')).map(([p]) => p);
    expect(files).toEqual(['var/log/imds-tracer', 'var/log/private/imds-tracer/calls.jsonl']);
    // what stays are the system's own directories (empty here) and the log directory
    const dirs = [...tree(root)].filter(([, info]) => info.startsWith('d ')).map(([p]) => p).sort();
    expect(dirs).toEqual(['etc', 'etc/default', 'etc/systemd', 'etc/systemd/system', 'etc/systemd/system/multi-user.target.wants',
      'opt', 'usr', 'usr/local', 'usr/local/bin', 'var', 'var/log', 'var/log/private', 'var/log/private/imds-tracer'].filter((d) => existsSync(join(root, d))));
    expect(existsSync(join(root, 'opt/imds-tracer'))).toBe(false);
    expect(existsSync(join(root, 'etc/systemd/system/multi-user.target.wants/imds-tracer.service'))).toBe(false);

    const again = sh(UNINSTALL, ['--root', root, '--no-systemctl']);
    expect(again.status, again.out).toBe(0);
    expect(again.out).not.toContain('removed');

    const purge = sh(UNINSTALL, ['--root', root, '--no-systemctl', '--purge-logs']);
    expect(purge.status, purge.out).toBe(0);
    expect([...tree(root)].filter(([, info]) => !info.startsWith('d ')).map(([p]) => p)).toEqual([]);
    expect(existsSync(join(root, 'var/log/imds-tracer'))).toBe(false);
    expect(existsSync(join(root, 'var/log/private/imds-tracer'))).toBe(false);
  });
});
