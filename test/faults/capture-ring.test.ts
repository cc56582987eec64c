/**
 * The capture helper's kernel ring is sized in one place, DEFAULTS.pcapBufferBytes: the helper has no
 * default of its own (it refuses to start without the size), and the agent passes that default. The
 * ring is mmap'd whole when capture starts, so its size is RSS from the first second.
 */
import { spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEFAULTS } from '../../agent/src/defaults.js';
import { createLab, labSupported, type Lab } from '../../lab/netns.js';
import { startTracer, type TracerProcess } from '../../lab/traced.js';

const ROOT = join(import.meta.dirname, '../..');
const HELPER = join(ROOT, 'native', '.output', 'imds_capture');
const support = labSupported();

describe.skipIf(!existsSync(HELPER))(`the capture helper's ring size${existsSync(HELPER) ? '' : ' (skipped: native/.output/imds_capture not built: npm run build)'}`, () => {
  it('has no default of its own: without BUFFER_BYTES (or with a bad one) it exits 2 with its usage, before opening anything', () => {
    for (const args of [['lo', 'tcp port 80'], ['lo', 'tcp port 80', '0'], ['lo', 'tcp port 80', 'lots']]) {
      const r = spawnSync(HELPER, args, { encoding: 'utf8', input: '' });
      expect(r.status, `${args.join(' ')}: ${r.stderr}`).toBe(2);
      expect(r.stderr).toMatch(/^usage: imds_capture DEVICE FILTER BUFFER_BYTES/);
    }
  });
});

describe.skipIf(!support.ok || !existsSync(HELPER))(`the agent sizes the helper's ring${support.ok ? '' : ` (skipped: ${support.reason})`}`, () => {
  let lab: Lab;
  let dir: string;
  let tracer: TracerProcess | null = null;

  beforeAll(async () => {
    lab = await createLab();
    dir = mkdtempSync(join(tmpdir(), 'imdst-ring-'));
  });

  afterAll(async () => {
    await tracer?.stop();
    await lab?.destroy();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('passes DEFAULTS.pcapBufferBytes, and the helper maps that ring whole (it is in its RSS at once, with no traffic)', async () => {
    // A wrapper that notes its arguments and pid, then execs the real helper (same pid).
    const wrapper = join(dir, 'imds_capture');
    const argsFile = join(dir, 'args');
    writeFileSync(wrapper, `#!/bin/sh\nprintf '%s\\n' "$$" "$@" > '${argsFile}'\nexec '${HELPER}' "$@"\n`);
    chmodSync(wrapper, 0o755);
    tracer = await startTracer(lab, ['--no-log-file', '--stats-interval', '3600', '--backend', 'proc', '-i', lab.instanceIf], 20_000,
      { ...process.env, IMDS_TRACER_CAPTURE_HELPER: wrapper });
    const [pid, device, , bytes] = readFileSync(argsFile, 'utf8').trim().split('\n');
    expect(device).toBe(lab.instanceIf);
    expect(bytes).toBe(String(DEFAULTS.pcapBufferBytes));
    // The ring is the helper's largest mapping: a socket mapping of exactly that size, all resident.
    const smaps = readFileSync(`/proc/${pid}/smaps`, 'utf8');
    const ring = smaps.split(/\n(?=[0-9a-f]+-[0-9a-f]+ )/).find((m) => /socket:\[\d+\]/.test(m.split('\n')[0]));
    expect(ring, `no socket mapping in the helper's smaps:\n${smaps.slice(0, 2000)}`).toBeDefined();
    const kb = (field: string): number => Number(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(ring as string)?.[1]);
    expect(kb('Size') * 1024).toBe(DEFAULTS.pcapBufferBytes);
    expect(kb('Rss') * 1024).toBe(DEFAULTS.pcapBufferBytes);
  });
});
