/**
 * Faults with real processes: the capture helper SIGKILLed during a burst of short-lived callers
 * (with calls queued in it, and calls made while it is down), the capture helper stopped (SIGSTOP)
 * until the kernel's ring drops packets, the eBPF loader SIGKILLed, the eBPF loader stopped until the
 * kernel's ring buffer loses events, a connection without a request just before the agent stops, the capture
 * interface removed and made again, and an interface that is not captured at all. Every call the
 * clients made must be a record — from the wire, or from the kernel with a `wire_reason` — or a
 * counted, named reason; never both, never neither.
 *
 * How long a restart takes is held by a gate: the tracer runs the real helper (or loader) through a
 * script that, while a FIFO exists next to it, waits for the test to write a line into it. So the
 * calls "during the gap" are made while the restart is surely pending, without sleeping.
 */
import { execFileSync } from 'node:child_process';
import { chmodSync, mkdtempSync, readFileSync, rmSync, unlinkSync, writeFileSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLab, labSupported, IMDS_V4, INSTANCE_V4, type Lab } from '../../lab/netns.js';
import { startTracer, type TracedRecord, type TracerProcess } from '../../lab/traced.js';
import { validate } from '../../agent/src/schema.js';

const support = labSupported();
const ip = (...args: string[]): string => execFileSync('ip', args, { encoding: 'utf8' });
/** Unseen records are decided twice the join window (10 s) after their connection, on a 5 s sweep. */
const UNSEEN_WAIT_MS = 60_000;

interface Call { tag: string; pid: number }

/** A script that runs `real`, first waiting on `<script>.gate` while that FIFO exists. */
function gate(dir: string, name: string, real: string): { path: string; close(): Promise<void>; arm(): void } {
  const path = join(dir, name);
  const fifo = `${path}.gate`;
  writeFileSync(path, `#!/bin/sh\nif [ -p '${fifo}' ]; then read _ < '${fifo}'; fi\nexec '${real}' "$@"\n`);
  chmodSync(path, 0o755);
  return {
    path,
    arm: () => execFileSync('mkfifo', [fifo]),
    /** Let the waiting script go on (opening the FIFO waits for its reader), and remove the gate. */
    close: async () => {
      const fh = await open(fifo, 'w');
      unlinkSync(fifo);
      await fh.write('go\n');
      await fh.close();
    },
  };
}

// Each case waits for records the agent writes only after its join window (20-25 s), and for
// restarts: on a loaded machine that is more than the default 60 s a test may take.
describe.skipIf(!support.ok)(`every call is a record or a counted reason through capture faults${support.ok ? '' : ` (skipped: ${support.reason})`}`, { timeout: 150_000 }, () => {
  let lab: Lab;
  let dir: string;
  const tracers: TracerProcess[] = [];

  beforeAll(async () => {
    lab = await createLab();
    await lab.startImds();
    dir = mkdtempSync(join(tmpdir(), 'imdst-gaps-'));
  });

  afterAll(async () => {
    for (const t of tracers) await t.stop();
    await lab?.destroy();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  const start = async (args: string[], env: NodeJS.ProcessEnv = {}): Promise<TracerProcess> => {
    const t = await startTracer(lab, ['--stats-interval', '3600', '--backend', 'ebpf', ...args], 20_000, { ...process.env, ...env });
    tracers.push(t);
    return t;
  };

  let n = 0;
  /** One short-lived curl IMDSv1 call, tagged in its path (and so in its argv). */
  const call = async (phase: string, retry = false): Promise<Call> => {
    const tag = `${phase}-${n++}`;
    const r = await lab.exec(lab.instanceNs, 'curl', ['-s', '-o', '/dev/null', '--max-time', '20',
      ...(retry ? ['--retry', '20', '--retry-connrefused', '--retry-delay', '0', '--retry-all-errors'] : []),
      `http://${IMDS_V4}/latest/meta-data/instance-id?tag=${tag}`]);
    expect(r.exitCode, r.stderr).toBe(0);
    return { tag, pid: r.pid };
  };
  const calls = async (phase: string, k: number, retry = false): Promise<Call[]> => {
    const out: Call[] = [];
    for (let i = 0; i < k; i++) out.push(await call(phase, retry));
    return out;
  };

  const isCall = (r: TracedRecord): boolean => r.event === 'imds_call';
  const fromWire = (c: Call) => (r: TracedRecord): boolean => isCall(r) && r.request !== null && r.request.path.endsWith(`?tag=${c.tag}`);
  const fromKernel = (c: Call) => (r: TracedRecord): boolean => isCall(r) && r.request === null && r.process.pid === c.pid;
  const recordsOf = (t: TracerProcess, c: Call): TracedRecord[] => t.records.filter((r) => fromWire(c)(r) || fromKernel(c)(r));

  /** Each call is exactly one record; returns them in call order. */
  const oneRecordEach = (t: TracerProcess, cs: Call[]): TracedRecord[] => cs.map((c) => {
    const mine = recordsOf(t, c);
    expect(mine, `records of ${c.tag}`).toHaveLength(1);
    return mine[0];
  });

  const finalStats = (t: TracerProcess): TracedRecord => t.records.filter((r) => r.event === 'stats').at(-1) as TracedRecord;
  /** Every connection counted as unseen by the wire is a record with wire_reason, or counted as unrecorded or filtered. */
  const accountedFor = (t: TracerProcess): void => {
    const s = finalStats(t);
    const counted = s.calls_unseen.capture_gap + s.calls_unseen.capture_dropped + s.calls_unseen.not_captured;
    expect(counted).toBe(t.records.filter((r) => isCall(r) && r.wire_reason).length + s.calls_unseen_unrecorded + s.calls_unseen_filtered);
  };

  const helperPid = (t: TracerProcess): number =>
    Number(execFileSync('pgrep', ['-P', String(t.proc.pid), '-f', 'imds_capture'], { encoding: 'utf8' }).trim().split('\n')[0]);

  it('the capture helper SIGKILLed with calls queued in it, during a burst, and calls during its restart: each call is one record', async () => {
    const g = gate(dir, 'capture-gate.sh', join(lab.repoRoot, 'native', '.output', 'imds_capture'));
    const logFile = join(dir, 'kill-helper', 'calls.jsonl');
    const t = await start(['--log-file', logFile], { IMDS_TRACER_CAPTURE_HELPER: g.path });
    const before = await calls('before', 3);
    await t.count((r) => before.some((c) => fromWire(c)(r)), 3, 20_000, 'calls before the kill');

    // Calls whose packets the helper holds (stopped, it hands nothing over) when it is killed.
    const pid = helperPid(t);
    process.kill(pid, 'SIGSTOP');
    const queued = await calls('queued', 3);
    g.arm();
    const burst = Promise.all(Array.from({ length: 10 }, () => call('burst')));
    process.kill(pid, 'SIGKILL');
    const stopped = await t.next((r) => r.event === 'error' && r.component === 'capture' && /stopped at/.test(r.message), 10_000, 'capture stopped');
    const during = await calls('during', 3); // the restart waits at the gate
    const burstCalls = await burst;
    await g.close();
    const resumed = await t.next((r) => r.event === 'notice' && r.component === 'capture' && /resumed at .* down from/.test(r.message), 20_000, 'capture resumed');
    const after = await calls('after', 3);
    await t.count((r) => after.some((c) => fromWire(c)(r)), 3, 20_000, 'calls after the restart');
    const gapCalls = [...queued, ...during];
    await t.count((r) => gapCalls.some((c) => fromKernel(c)(r)), gapCalls.length, UNSEEN_WAIT_MS, 'records of the calls capture missed');
    expect(await t.stop()).toBe(0);

    for (const r of oneRecordEach(t, [...before, ...after])) expect(r).toMatchObject({ imds_version: 'v1', process: { attribution: 'ebpf' } });
    for (const [i, r] of oneRecordEach(t, gapCalls).entries()) {
      expect(r).toMatchObject({ imds_version: null, request: null, wire_reason: 'capture_gap', provider: 'unknown',
        response: { status: null }, connection: { src: INSTANCE_V4, dst: IMDS_V4, dport: 80, family: 'ipv4' },
        process: { attribution: 'ebpf', pid: gapCalls[i].pid, comm: 'curl' } });
      expect(r.process.argv.at(-1)).toMatch(new RegExp(`\\?tag=${gapCalls[i].tag}$`));
    }
    const burstRecords = oneRecordEach(t, burstCalls); // on the wire or not, each once
    const stats = finalStats(t);
    const unseenBurst = burstRecords.filter((r) => r.wire_reason).length;
    // Other labs on this machine call their IMDS too, and the kernel program sees every namespace:
    // what is counted is at least ours, and every count is a record or an unrecorded count.
    expect(stats.calls_unseen.capture_gap).toBeGreaterThanOrEqual(gapCalls.length + unseenBurst);
    accountedFor(t);
    expect(stats.capture_gaps).toBe(1);
    expect(stats.capture_gap_ms).toBeGreaterThan(0);
    for (const r of t.records) expect(validate(r)).toEqual([]);
    // The gap's start and end are in the log file too, with the records.
    const inFile = readFileSync(logFile, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as TracedRecord);
    expect(inFile).toContainEqual(stopped);
    expect(inFile).toContainEqual(resumed);
    for (const c of [...gapCalls, ...burstCalls]) expect(inFile.filter((r) => fromWire(c)(r) || fromKernel(c)(r))).toHaveLength(1);
  });

  it('the capture helper kept off the CPU while calls go on: the kernel ring drops, one error, then a notice with the count; each call is one record', async () => {
    const t = await start(['--no-log-file', '-i', lab.instanceIf]);
    const before = await calls('d-before', 3);
    await t.count((r) => before.some((c) => fromWire(c)(r)), 3, 20_000, 'calls before');
    const pid = helperPid(t);
    process.kill(pid, 'SIGSTOP');
    // The kernel's ring is 16 blocks, each closed 10 ms after its first packet and given back only by
    // the helper: one call after another for a second fill it whatever their speed, and the rest drop.
    const held: Call[] = [];
    const from = Date.now();
    while (Date.now() - from < 1000 || held.length < 40) held.push(await call('d-held'));
    process.kill(pid, 'SIGCONT');
    const dropping = await t.next((r) => r.event === 'error' && r.component === 'capture' && /is dropping packets/.test(r.message), 10_000, 'drops said');
    expect(dropping.message).toMatch(new RegExp(`^capture on ${lab.instanceIf} is dropping packets: .*stats\\.pcap\\.dropped`));
    const after = await calls('d-after', 3);
    await t.count((r) => after.some((c) => fromWire(c)(r)), 3, 20_000, 'calls after');
    // Stopping decides at once every connection the kernel saw and the wire did not.
    expect(await t.stop()).toBe(0);

    for (const r of oneRecordEach(t, [...before, ...after])) expect(r).toMatchObject({ imds_version: 'v1', process: { attribution: 'ebpf' } });
    const stats = finalStats(t);
    // Each held call is one record, from the wire or from the kernel; past the budget for records from
    // the kernel (DEFAULTS.unseenRecordBurst) a call is counted in calls_unseen_unrecorded instead.
    const heldRecords = held.flatMap((c) => {
      const mine = recordsOf(t, c);
      expect(mine.length, `records of ${c.tag}`).toBeLessThanOrEqual(1);
      return mine;
    });
    expect(held.length - heldRecords.length).toBeLessThanOrEqual(stats.calls_unseen_unrecorded);
    const missed = heldRecords.filter((r) => r.wire_reason);
    expect(missed.length).toBeGreaterThan(0);
    for (const r of missed) expect(r).toMatchObject({ wire_reason: 'capture_dropped', request: null, process: { attribution: 'ebpf', comm: 'curl' } });
    for (const r of heldRecords.filter((x) => !x.wire_reason)) expect(r).toMatchObject({ imds_version: 'v1' });
    const dropped = stats.pcap.dropped; // the kernel ring's and the helper queue's (the interface's own are not the agent's)
    expect(dropped).toBeGreaterThan(0);
    // One error for the drops, and at stop one notice with exactly the count stats has.
    expect(t.records.filter((r) => r.event === 'error' && r.component === 'capture')).toEqual([dropping]);
    const ended = t.records.filter((r) => r.event === 'notice' && r.component === 'capture');
    expect(ended).toHaveLength(1);
    expect(ended[0].message).toMatch(new RegExp(`^capture on ${lab.instanceIf} (?:stopped|keeps up again): ${dropped} packets were dropped between \\S+Z and \\S+Z$`));
    expect(stats.calls_unseen.capture_dropped).toBeGreaterThanOrEqual(held.length - (heldRecords.length - missed.length));
    // Past the budget for records from the kernel, the calls counted and not written are said too.
    const overBudget = t.records.filter((r) => /over their budget|counted, not written/.test(r.message ?? ''));
    expect(overBudget.map((r) => r.event)).toEqual(stats.calls_unseen_unrecorded > 0 ? ['error', 'notice'] : []);
    if (stats.calls_unseen_unrecorded > 0) expect(overBudget[1].message).toMatch(new RegExp(`: ${stats.calls_unseen_unrecorded} were counted, not written, `));
    accountedFor(t);
    for (const r of t.records) expect(validate(r)).toEqual([]);
  });

  it('the eBPF loader SIGKILLed: calls while it is down that /proc cannot name say so and are counted', async () => {
    const g = gate(dir, 'loader-gate.sh', join(lab.repoRoot, 'bpf', '.output', 'imds_connect'));
    const t = await start(['--no-log-file'], { IMDS_TRACER_EBPF_LOADER: g.path });
    const before = await calls('l-before', 3);
    await t.count((r) => before.some((c) => fromWire(c)(r)), 3, 20_000, 'calls before the kill');
    const loaderPid = Number(execFileSync('pgrep', ['-P', String(t.proc.pid), '-f', 'imds_connect'], { encoding: 'utf8' }).trim().split('\n')[0]);
    g.arm();
    const burst = Promise.all(Array.from({ length: 10 }, () => call('l-burst')));
    process.kill(loaderPid, 'SIGKILL');
    await t.next((r) => r.event === 'error' && r.component === 'ebpf' && /exited at/.test(r.message), 10_000, 'loader exit error');
    const during = await calls('l-during', 3);
    const burstCalls = await burst;
    await t.count((r) => during.some((c) => fromWire(c)(r)), 3, 20_000, 'calls while the loader is down');
    await g.close();
    await t.next((r) => r.event === 'notice' && r.component === 'ebpf' && /restarted.*down from/.test(r.message), 20_000, 'loader restarted');
    const after = await calls('l-after', 3);
    await t.count((r) => [...after, ...burstCalls].some((c) => fromWire(c)(r)), 13, 20_000, 'calls after the restart');
    expect(await t.stop()).toBe(0);

    for (const r of oneRecordEach(t, [...before, ...after])) expect(r.process).toMatchObject({ attribution: 'ebpf' });
    // Short-lived callers are mostly gone before /proc is read: those are unnamed, and say why.
    const duringRecords = oneRecordEach(t, during);
    for (const [i, r] of duringRecords.entries()) {
      expect(r.imds_version).toBe('v1');
      if (r.process.attribution === 'proc') expect(r.process.pid).toBe(during[i].pid);
      else expect(r.process.reason).toMatch(/^eBPF loader down \(exited at .*\): no kernel connect event; /);
    }
    const unnamed = [...duringRecords, ...oneRecordEach(t, burstCalls)].filter((r) => r.process.attribution === 'none');
    for (const r of unnamed) expect(r.process.reason).toMatch(/^eBPF loader down/);
    const stats = finalStats(t);
    expect(stats.kernel).toMatchObject({ loader_restarts: 1, loader_gaps: 1, loader_gap_unattributed: unnamed.length });
    expect(stats.kernel.loader_gap_ms).toBeGreaterThan(0);
    // The wire saw them all: no second record for any of them.
    expect(t.records.filter((r) => r.wire_reason && [...before, ...during, ...burstCalls, ...after].some((c) => fromKernel(c)(r)))).toEqual([]);
    accountedFor(t);
    for (const r of t.records) expect(validate(r)).toEqual([]);
  });

  it('the eBPF loader kept off the CPU during a burst of connects: the lost kernel events are one error, then a notice with the count', async () => {
    const t = await start(['--no-log-file', '-i', lab.instanceIf], { IMDS_TRACER_EBPF_BUDGET: '0' }); // no budget: the ring itself fills
    const before = await calls('e-before', 3);
    await t.count((r) => before.some((c) => fromWire(c)(r) && r.process.attribution === 'ebpf'), 3, 20_000, 'calls before');
    const loaderPid = Number(execFileSync('pgrep', ['-P', String(t.proc.pid), '-f', 'imds_connect'], { encoding: 'utf8' }).trim().split('\n')[0]);
    process.kill(loaderPid, 'SIGSTOP');
    // Connections with no request (not calls): each is a kernel event, ~1.8 KB in a 1 MiB ring the
    // stopped loader does not read, so 3,000 of them overflow it.
    const flood = await lab.exec(lab.instanceNs, 'python3', ['-c',
      'import socket, sys\nfor _ in range(int(sys.argv[2])):\n  s = socket.create_connection((sys.argv[1], 80)); s.close()\n', IMDS_V4, '3000']);
    expect(flood.exitCode, flood.stderr).toBe(0);
    process.kill(loaderPid, 'SIGCONT');
    const losing = await t.next((r) => r.event === 'error' && r.component === 'ebpf' && /kernel connect events are being lost/.test(r.message), 20_000, 'losses said');
    expect(losing.message).toMatch(/stats\.kernel\.events_lost\)$/);
    const after = await calls('e-after', 3);
    await t.count((r) => after.some((c) => fromWire(c)(r)), 3, 20_000, 'calls after');
    expect(await t.stop()).toBe(0);

    for (const r of oneRecordEach(t, [...before, ...after])) expect(r).toMatchObject({ imds_version: 'v1' });
    const stats = finalStats(t);
    expect(stats.kernel.events_lost).toBeGreaterThan(0);
    // The events that were not lost came after more wire connections than the agent keeps (2,048):
    // the flood's connections carried no request, and none of them may become a call.
    expect(t.records.filter((r) => r.event === 'imds_call' && r.process.comm === 'python3')).toEqual([]);
    expect(stats.kernel.events_wire_forgotten).toBeGreaterThan(0);
    expect(t.records.filter((r) => r.event === 'error' && r.component === 'ebpf')).toEqual([losing]);
    const ended = t.records.filter((r) => r.event === 'notice' && r.component === 'ebpf' && /were lost between/.test(r.message));
    expect(ended).toHaveLength(1);
    expect(ended[0].message).toMatch(new RegExp(`^(?:eBPF attribution stopped|kernel connect events are no longer lost): ${stats.kernel.events_lost} were lost between \\S+Z and \\S+Z$`));
    accountedFor(t);
    for (const r of t.records) expect(validate(r)).toEqual([]);
  });

  it('a connection that carried no request and ended is no call, even with the agent stopped right after it', async () => {
    const t = await start(['--no-log-file', '-i', lab.instanceIf]);
    const before = await calls('p-before', 1);
    await t.count((r) => before.some((c) => fromWire(c)(r)), 1, 20_000, 'the call before');
    // A reachability probe: connect, send nothing, close. Its request could not come after its FIN, so
    // the agent stopping (capture closing) just after it is no reason to think capture lost one.
    const probe = await lab.exec(lab.instanceNs, 'python3', ['-c', 'import socket, sys\nsocket.create_connection((sys.argv[1], 80)).close()\n', IMDS_V4]);
    expect(probe.exitCode, probe.stderr).toBe(0);
    expect(await t.stop()).toBe(0); // hands over the wire's packets and the kernel's events, then decides
    const stats = finalStats(t);
    expect(stats.kernel.events).toBeGreaterThanOrEqual(2); // the probe's connect reached the agent
    expect(t.records.filter((r) => r.event === 'imds_call' && r.process.pid === probe.pid)).toEqual([]);
    for (const r of oneRecordEach(t, before)) expect(r).toMatchObject({ imds_version: 'v1', process: { attribution: 'ebpf' } });
    accountedFor(t);
  });

  it('the capture interface removed and made again: calls before capture is back are records from the kernel', async () => {
    const g = gate(dir, 'capture-gate-if.sh', join(lab.repoRoot, 'native', '.output', 'imds_capture'));
    const t = await start(['--no-log-file', '-i', lab.instanceIf], { IMDS_TRACER_CAPTURE_HELPER: g.path });
    const before = await calls('i-before', 3);
    await t.count((r) => before.some((c) => fromWire(c)(r)), 3, 20_000, 'calls before');
    g.arm();
    ip('-n', lab.instanceNs, 'link', 'del', lab.instanceIf);
    await t.next((r) => r.event === 'error' && r.component === 'capture' && /stopped at/.test(r.message), 10_000, 'capture stopped');
    ip('link', 'add', lab.instanceIf, 'netns', lab.instanceNs, 'type', 'veth', 'peer', 'name', lab.imdsIf, 'netns', lab.imdsNs);
    ip('-n', lab.instanceNs, 'addr', 'add', `${INSTANCE_V4}/16`, 'dev', lab.instanceIf);
    ip('-n', lab.imdsNs, 'addr', 'add', `${IMDS_V4}/16`, 'dev', lab.imdsIf);
    ip('-n', lab.instanceNs, 'link', 'set', lab.instanceIf, 'up');
    ip('-n', lab.imdsNs, 'link', 'set', lab.imdsIf, 'up');
    const during = await calls('i-during', 3, true); // the link may still be coming up
    await g.close();
    await t.next((r) => r.event === 'notice' && r.component === 'capture' && /resumed at/.test(r.message), 30_000, 'capture resumed');
    const after = await calls('i-after', 3, true);
    await t.count((r) => after.some((c) => fromWire(c)(r)), 3, 20_000, 'calls after');
    await t.count((r) => during.some((c) => fromKernel(c)(r)), 3, UNSEEN_WAIT_MS, 'records of the calls made while capture was down');
    expect(await t.stop()).toBe(0);

    for (const r of oneRecordEach(t, [...before, ...after])) expect(r).toMatchObject({ imds_version: 'v1', connection: { interface: lab.instanceIf } });
    for (const r of oneRecordEach(t, during)) expect(r).toMatchObject({ wire_reason: 'capture_gap', process: { attribution: 'ebpf', comm: 'curl' } });
    const stats = finalStats(t);
    expect(stats.calls_unseen.capture_gap).toBeGreaterThanOrEqual(during.length);
    expect(stats.capture_gaps).toBe(1);
    accountedFor(t);
  });

  it('calls over an interface that is not captured are records from the kernel, marked not_captured', async () => {
    const t = await start(['--no-log-file', '-i', 'lo']);
    const cs = await calls('not-captured', 3);
    await t.count((r) => cs.some((c) => fromKernel(c)(r)), 3, UNSEEN_WAIT_MS, 'records of the calls not captured');
    expect(await t.stop()).toBe(0);
    for (const r of oneRecordEach(t, cs)) expect(r).toMatchObject({ imds_version: null, request: null, wire_reason: 'not_captured' });
    const stats = finalStats(t);
    expect(stats.calls_unseen.not_captured).toBeGreaterThanOrEqual(cs.length);
    expect(stats.capture_gaps).toBe(0);
    accountedFor(t);
  });
});
