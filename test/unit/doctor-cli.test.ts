/**
 * The built `imds-tracer doctor`, end to end on this machine (root: it opens a capture and loads
 * the eBPF program, then closes both). npm test builds dist/ first.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { CHECK_IDS } from '../../agent/src/doctor/checks.js';
import { CLI, REPO } from '../helpers/repo.js';

const reason = !existsSync(join(REPO, 'dist', 'commands', 'doctor.js')) ? 'dist/ not built: run npm run build'
  : process.getuid?.() !== 0 ? 'needs root (capture and eBPF)' : '';
if (reason) console.warn(`doctor end-to-end skipped: ${reason}`);

const doctor = (...args: string[]) => spawnSync(process.execPath, [CLI, 'doctor', ...args], { encoding: 'utf8', timeout: 60_000 });

describe.skipIf(Boolean(reason))('imds-tracer doctor (built CLI, as root)', () => {
  const dir = mkdtempSync(join(tmpdir(), 'imds-tracer-doctor-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('--json: exit 0, one JSON object, every check present, capture and eBPF really tried', () => {
    const logDir = join(dir, 'logs');
    const r = doctor('--json', '--log-file', join(logDir, 'calls.jsonl'));
    expect(r.status, r.stdout + r.stderr).toBe(0);
    expect(r.stdout.trim().split('\n')).toHaveLength(1);
    const report = JSON.parse(r.stdout) as { ok: boolean; summary: { fail: number }; checks: { id: string; status: string; data?: Record<string, unknown> }[] };
    expect(report.ok).toBe(true);
    expect(report.summary.fail).toBe(0);
    expect(report.checks.map((c) => c.id)).toEqual([...CHECK_IDS]);
    const byId = Object.fromEntries(report.checks.map((c) => [c.id, c]));
    expect(byId.privileges.status).toBe('PASS');
    expect(byId.libpcap.status).toBe('PASS');
    expect(byId['log-dir'].status).toBe('PASS');
    // the eBPF program was loaded and attached here (this machine has BTF and the loader is built)
    expect(byId.ebpf.status).toBe('PASS');
    expect(byId.ebpf.data?.load_ms).toBeGreaterThan(0);
    // the probe of a missing log directory leaves nothing behind
    expect(existsSync(logDir)).toBe(false);
    expect(readdirSync(dir)).toEqual([]);
  });

  it('text: a line per check and the verdict; exit 1 with a FAIL and its fix when the log directory cannot be made', () => {
    const r = doctor('--log-file', '/proc/imds-tracer-doctor/calls.jsonl');
    expect(r.status).toBe(1);
    const lines = r.stdout.trim().split('\n');
    expect(lines.filter((l) => /^(PASS|WARN|FAIL) {2}\S/.test(l))).toHaveLength(CHECK_IDS.length);
    const fail = lines.findIndex((l) => l.startsWith('FAIL  log directory: /proc/imds-tracer-doctor'));
    expect(fail, r.stdout).toBeGreaterThanOrEqual(0);
    expect(lines[fail + 1]).toMatch(/^ {6}fix: /);
    expect(lines.at(-1)).toMatch(/^doctor: \d+ passed, \d+ warnings?, 1 failed: tracing cannot work/);
  });
});
