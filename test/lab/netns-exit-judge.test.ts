/**
 * A connection from a network namespace the capture cannot see, made just before the agent stops:
 * its namespace's judgement (an `ip link` listing inside it) is still under way when the agent
 * decides the kernel events the wire did not show. It must be counted as filtered (the namespace is
 * unreachable), not written as an IMDS call that capture missed. `ip` is made slow (a wrapper first
 * on PATH) so that the judgement is surely still under way at the stop.
 */
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { addIsolated, createLab, labSupported, IMDS_V4, type Lab } from '../../lab/netns.js';
import { startTracer, type TracedRecord } from '../../lab/traced.js';

const support = labSupported();

// Listen on the namespace's own 169.254.169.254:80, connect to it (established), send a request.
const CONNECT = `
import socket
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("${IMDS_V4}", 80)); srv.listen(1)
c = socket.create_connection(("${IMDS_V4}", 80))
a, _ = srv.accept()
c.sendall(b"GET /latest/meta-data/ HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n")
a.recv(1024); c.close(); a.close(); srv.close()
`;

describe.skipIf(!support.ok)(`namespaces judged at exit${support.ok ? '' : ` (skipped: ${support.reason})`}`, () => {
  let lab: Lab;
  let bin = '';
  beforeAll(async () => {
    lab = await createLab();
    await lab.startImds({});
    bin = mkdtempSync(join(tmpdir(), 'slow-ip-'));
    const realIp = execFileSync('sh', ['-c', 'command -v ip'], { encoding: 'utf8' }).trim();
    writeFileSync(join(bin, 'ip'), `#!/bin/sh\nsleep 0.5\nexec ${realIp} "$@"\n`);
    chmodSync(join(bin, 'ip'), 0o755);
  });
  afterAll(async () => {
    await lab?.destroy();
    if (bin) rmSync(bin, { recursive: true, force: true });
  });

  it('a connection from an unreachable namespace just before the stop is counted as filtered, not written as a call', async () => {
    const env = { ...process.env, PATH: `${bin}:${process.env.PATH}` };
    const tracer = await startTracer(lab, ['--no-log-file', '--backend', 'ebpf', '--stats-interval', '3600'], 60_000, env);
    // The first pass over the host's namespaces is over: the isolated namespace, made now, is new.
    await tracer.next((r) => r.event === 'notice' && /network namespaces judged/.test(r.message), 60_000, 'namespaces judged');
    const isolated = await addIsolated(lab, [`${IMDS_V4}/32`]);
    const r = await lab.exec(isolated, 'python3', ['-c', CONNECT]);
    expect(r.exitCode, r.stderr).toBe(0);
    expect(await tracer.stop()).toBe(0);
    const stats = tracer.records.filter((x: TracedRecord) => x.event === 'stats').at(-1)!;
    // The kernel saw the connection and the agent decided it (so the test is not vacuous) ...
    const unseen = Object.values(stats.calls_unseen ?? {}).reduce((a: number, b) => a + Number(b), 0);
    expect(unseen).toBeGreaterThanOrEqual(1);
    // ... as filtered: its namespace was judged at the stop (not a "capture_gap" because capture had
    // just closed), and nothing was written for it.
    expect(stats.calls_unseen).toEqual({ capture_gap: 0, capture_dropped: 0, not_captured: unseen });
    expect(stats.calls_unseen_filtered).toBe(unseen);
    expect(tracer.records.filter((x: TracedRecord) => x.event === 'imds_call' && x.wire_reason)).toEqual([]);
  }, 120_000);
});
