/** The V8 heap limits the agent starts with are the same wherever it is started. */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { DEFAULTS } from '../../agent/src/defaults.js';
import { agentNodeFlags } from '../../lab/traced.js';

const ROOT = join(import.meta.dirname, '../..');
const flags = DEFAULTS.agentNodeFlags.join(' ');

describe('agent node flags', () => {
  it('bin/imds-tracer.js starts node with them (npx imds-tracer)', () => {
    expect(readFileSync(join(ROOT, 'bin/imds-tracer.js'), 'utf8').split('\n')[0]).toBe(`#!/usr/bin/env -S node ${flags}`);
  });

  it('the command scripts/install.sh writes (the systemd unit runs it) starts node with them', () => {
    expect(readFileSync(join(ROOT, 'scripts/install.sh'), 'utf8')).toContain(`exec $NODE ${flags} "\\$here/../../../opt/imds-tracer/bin/imds-tracer.js"`);
  });

  it('a release starts its bundled runtime with them: the tarball\'s bin/imds-tracer (scripts/release.sh) and the command install.sh writes from a release', () => {
    expect(readFileSync(join(ROOT, 'scripts/release.sh'), 'utf8')).toContain(`exec "$here/../runtime/bin/node" ${flags} "$here/imds-tracer.js" "$@"`);
    expect(readFileSync(join(ROOT, 'scripts/install.sh'), 'utf8')).toContain(`exec "\\$here/../../../$NODE_REL" ${flags} "\\$here/../../../opt/imds-tracer/bin/imds-tracer.js" "\\$@"`);
  });

  it('the installed commands and a release\'s launcher export the agent\'s environment (DEFAULTS.agentEnv) before starting node', () => {
    const exports = Object.entries(DEFAULTS.agentEnv).map(([k, v]) => `export ${k}=${v}  #`);
    expect(exports.length).toBeGreaterThan(0);
    const install = readFileSync(join(ROOT, 'scripts/install.sh'), 'utf8');
    const release = readFileSync(join(ROOT, 'scripts/release.sh'), 'utf8');
    for (const e of exports) {
      expect(install.split(e).length - 1, `scripts/install.sh: ${e}`).toBe(2); // the checkout's command and the release's
      expect(release.split(e).length - 1, `scripts/release.sh: ${e}`).toBe(1);
    }
  });

  it('the lab starts the agent with them (read from bin/imds-tracer.js: the lab imports nothing of the agent)', () => {
    expect(agentNodeFlags(ROOT)).toEqual(DEFAULTS.agentNodeFlags);
  });

  it('they take effect: the heap limit of a node started so is near 128 MB', async () => {
    const { spawnSync } = await import('node:child_process');
    const r = spawnSync(process.execPath, [...DEFAULTS.agentNodeFlags, '-p', 'require("v8").getHeapStatistics().heap_size_limit'], { encoding: 'utf8' });
    expect(Number(r.stdout)).toBeLessThan(160 * 1024 * 1024);
  });
});
