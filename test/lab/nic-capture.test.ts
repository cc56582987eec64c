/**
 * Capture on the host NIC alone (`-i <NIC>`, as many operators run it) must say what `-i any` says:
 * on an instance running containers behind a bridge with MASQUERADE (Docker's default), each in a
 * Docker-named cgroup scope, with the IMDS answering token PUTs with IP TTL 1 (HttpPutResponseHopLimit=1),
 * both tracers (eBPF backend) trace the same traffic side by side and must write the same records:
 * pid, argv, container id, the connection as the caller sent it (before NAT) and the address it left
 * with, the token PUT that never reached its container, and the v1_reason of the IMDSv1 fallback.
 */
import { spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  addContainer, createLab, labSupported, IMDS_V4, IMDS_V6, INSTANCE_V4, INSTANCE_V6, type ContainerInfo, type ImdsHandle, type Lab,
} from '../../lab/netns.js';
import { attachTracer, type TracerProcess } from '../../lab/traced.js';
import { CONNECT_EVENT_FIELDS } from '../../agent/src/attribution/ebpf/events.js';
import { validate } from '../../agent/src/schema.js';
import { makeDockerScopes, runInScope, type DockerScope, type DockerScopes } from '../helpers/containers.js';
import type { ClientRun } from '../helpers/clients.js';

const support = labSupported();
/** Kernel connect events carry the socket's initial sequence number (needed to join NATed connections). */
const KERNEL_ISN = 'isn' in CONNECT_EVENT_FIELDS;
type Rec = Record<string, any>;
const URL = `http://${IMDS_V4}/latest/meta-data/instance-id`;

const KEEPALIVE = `
import http.client, sys
c = http.client.HTTPConnection(sys.argv[1], 80, timeout=5)
for i in range(int(sys.argv[3])):
    c.request("GET", sys.argv[2] + str(i))
    c.getresponse().read()
print("done")`;

// What SDKs do: ask for a token (1 s time-out), fall back to IMDSv1 when none comes.
const TOKEN_THEN_FALLBACK = `
import http.client, sys
try:
    c = http.client.HTTPConnection(sys.argv[1], 80, timeout=1)
    c.request("PUT", "/latest/api/token", headers={"X-aws-ec2-metadata-token-ttl-seconds": "21600"})
    r = c.getresponse()
    tok = r.read().decode()
    c.request("GET", sys.argv[2], headers={"X-aws-ec2-metadata-token": tok})
    c.getresponse().read()
    print("v2")
except OSError:
    c = http.client.HTTPConnection(sys.argv[1], 80, timeout=5)
    c.request("GET", sys.argv[2])
    c.getresponse().read()
    print("fell back to v1")`;

/**
 * The tracer in the lab's instance network namespace but the host's mount namespace, as on a real
 * host: `ip netns exec` would remount /sys, hiding the cgroup tree the agent names an exited caller's
 * container from.
 */
function startTracer(lab: Lab, args: string[]): Promise<TracerProcess> {
  const proc = spawn('nsenter', [`--net=/var/run/netns/${lab.instanceNs}`, process.execPath, join(lab.repoRoot, 'dist', 'cli.js'), 'run', ...args],
    { stdio: ['ignore', 'pipe', 'pipe'] });
  return attachTracer(proc).catch((e) => { proc.kill('SIGKILL'); throw e; });
}

/** What must be the same whichever interface the tracer captured on. */
function essence(r: Rec): Rec {
  return {
    imds_version: r.imds_version, method: r.request.method, path: r.request.path,
    attribution: r.process.attribution, pid: r.process.pid, argv: r.process.argv, container: r.process.container,
    src: r.connection.src, sport: r.connection.sport, interface: r.connection.interface, nat: r.connection.nat,
    response: r.response, v1_reason: r.v1_reason,
  };
}

describe.skipIf(!support.ok)(`capture on the NIC alone equals -i any${support.ok ? '' : ` (skipped: ${support.reason})`}`, () => {
  let lab: Lab;
  let imds: ImdsHandle;
  let containers: ContainerInfo[];
  let cg: DockerScopes;
  let scopes: DockerScope[];
  let any: TracerProcess;
  let nic: TracerProcess;
  const common = ['--no-log-file', '--include-v2', '--backend', 'ebpf', '--stats-interval', '3600'];

  beforeAll(async () => {
    lab = await createLab();
    imds = await lab.startImds({ logRequests: true, hopLimit: 1 });
    containers = [await addContainer(lab), await addContainer(lab, { index: 1 })];
    cg = makeDockerScopes(lab, 2);
    scopes = cg.scopes;
    any = await startTracer(lab, ['-i', 'any', ...common]);
    nic = await startTracer(lab, ['-i', lab.instanceIf, ...common]);
  });

  afterAll(async () => {
    await any?.stop();
    await nic?.stop();
    await lab?.destroy();
    cg?.remove();
  });

  const calls = (t: TracerProcess, pred: (r: Rec) => boolean): Rec[] => t.records.filter((r) => r.event === 'imds_call' && pred(r));
  type Where = 'host' | 0 | 1;
  const runs = new Map<string, { run: ClientRun; where: Where }>();
  let hostTok: ClientRun;
  let hostTok6: ClientRun;
  let fallback: ClientRun;
  const puts = (t: TracerProcess, pid: number) => calls(t, (x) => x.request.token_request && x.process.pid === pid);

  /** Both tracers' records of the workload (-i any: every one right; -i NIC: host callers right). */
  it('short-lived and keep-alive callers on the host and in two NATed containers, a token PUT dying at the hop limit: -i any names all, from the wire', async () => {
    const before = imds.requests().length;
    const run = async (where: 'host' | 0 | 1, cmd: string, args: string[]): Promise<ClientRun> => {
      const r = where === 'host'
        ? await lab.exec(lab.instanceNs, cmd, args).then((x) => ({ pid: x.pid, argv: x.argv, exitCode: x.exitCode, stdout: x.stdout, stderr: x.stderr }))
        : await runInScope(lab, containers[where].ns, scopes[where], cmd, args);
      expect(r.exitCode, r.stderr).toBe(0);
      return r;
    };
    const curl = (where: 'host' | 0 | 1, tag: string) => run(where, 'curl', ['-s', '-o', '/dev/null', '--max-time', '10', `${URL}?w=${tag}`]);
    // Short-lived callers, a few at a time from each place.
    for (let i = 0; i < 3; i++) {
      const batch = await Promise.all([curl('host', `host-${i}`), curl(0, `c0-${i}`), curl(1, `c1-${i}`)]);
      runs.set(`host-${i}`, { run: batch[0], where: 'host' });
      runs.set(`c0-${i}`, { run: batch[1], where: 0 });
      runs.set(`c1-${i}`, { run: batch[2], where: 1 });
    }
    // A keep-alive caller in each container: four requests on one connection.
    for (const where of [0, 1] as const) {
      const r = await run(where, 'python3', ['-c', KEEPALIVE, IMDS_V4, `/latest/meta-data/ami-id?w=ka${where}-`, '4']);
      for (let i = 0; i < 4; i++) runs.set(`ka${where}-${i}`, { run: r, where });
    }
    // Token PUTs answered with TTL 1: the host gets its token, the container never does and falls back.
    hostTok = await run('host', 'python3', ['-c', TOKEN_THEN_FALLBACK, IMDS_V4, '/latest/meta-data/hostname?w=host-v2']);
    expect(hostTok.stdout.trim()).toBe('v2');
    hostTok6 = await run('host', 'python3', ['-c', TOKEN_THEN_FALLBACK, IMDS_V6, '/latest/meta-data/hostname?w=host-v6']);
    expect(hostTok6.stdout.trim()).toBe('v2');
    fallback = await run(0, 'python3', ['-c', TOKEN_THEN_FALLBACK, IMDS_V4, '/latest/meta-data/hostname?w=c0-fallback']);
    expect(fallback.stdout.trim()).toBe('fell back to v1');
    runs.set('host-v2', { run: hostTok, where: 'host' });
    runs.set('host-v6', { run: hostTok6, where: 'host' });
    runs.set('c0-fallback', { run: fallback, where: 0 });

    // The stand-in's ledger: 9 curls, 8 keep-alive GETs, 3 PUTs, 3 GETs.
    const ledger = (await imds.waitForRequests(before + 23)).slice(before);
    expect(ledger).toHaveLength(23);
    // Every request the stand-in answered or not is a record in each (this lab carries nothing else).
    const isOurs = (r: Rec): boolean => r.event === 'imds_call' && (/[?&]w=/.test(r.request.path) || r.request.token_request);
    const fromAny = await any.count(isOurs, 23, 20_000, 'records (-i any)');
    const fromNic = await nic.count(isOurs, 23, 20_000, `records (-i ${lab.instanceIf})`);
    expect(fromAny).toHaveLength(23);
    expect(fromNic).toHaveLength(23);

    for (const [tag, { run: r, where }] of runs) {
      const a = calls(any, (x) => x.request.path.endsWith(`w=${tag}`));
      const n = calls(nic, (x) => x.request.path.endsWith(`w=${tag}`));
      expect(a, tag).toHaveLength(1);
      expect(n, tag).toHaveLength(1);
      if (where === 'host') expect(essence(n[0]), tag).toEqual(essence(a[0])); // joined by 4-tuple: no ISN needed
      expect(a[0].process, tag).toMatchObject({ attribution: 'ebpf', pid: r.pid });
      // argv[0] may be the interpreter's real path (pyenv shims exec it)
      // (the token scripts name the token header: the agent scrubs what follows it, as it should)
      if (r.argv.some((x) => /token/i.test(x))) expect(a[0].process.argv.slice(-2), tag).toEqual(r.argv.slice(-2));
      else expect(a[0].process.argv.slice(1), tag).toEqual(r.argv.slice(1));
      expect(a[0].process.argv[0].split('/').at(-1), tag).toBe(r.argv[0]);
      if (where === 'host') {
        expect(a[0].process.container, tag).toBeNull();
        expect(a[0].connection, tag).toMatchObject({ src: tag === 'host-v6' ? INSTANCE_V6 : INSTANCE_V4, interface: lab.instanceIf });
        expect(a[0].connection.nat, tag).toBeUndefined();
      } else {
        expect(a[0].process.container, tag).toEqual({ runtime: 'docker', id: scopes[where].id });
        expect(a[0].connection, tag).toMatchObject({
          src: containers[where].address, interface: containers[where].bridge,
          nat: { src: INSTANCE_V4, interface: lab.instanceIf },
        });
        expect(a[0].connection.nat.sport).toBeGreaterThan(0);
      }
    }
    // The keep-alive requests share one connection.
    for (const where of [0, 1]) {
      const ports = new Set(calls(any, (x) => x.request.path.includes(`w=ka${where}-`)).map((x) => x.connection.sport));
      expect(ports.size).toBe(1);
    }
    // The token PUTs, and the fallback's reason.
    for (const t of [any]) {
      const [hostPut] = puts(t, hostTok.pid);
      expect(hostPut.response).toEqual({ status: 200, ttl: 1 }); // TTL 1 is enough for the host itself
      const [hostPut6] = puts(t, hostTok6.pid);
      expect(hostPut6.response).toEqual({ status: 200, ttl: 1 }); // IPv6: the hop limit
      const [containerPut] = puts(t, fallback.pid);
      expect(containerPut.response).toEqual({ status: null, ttl: 1, dropped: 'hop_limit' });
      expect(containerPut.connection.src).toBe(containers[0].address);
      const [v1] = calls(t, (x) => x.request.path.endsWith('w=c0-fallback'));
      expect(v1).toMatchObject({ imds_version: 'v1', v1_reason: 'token_put_unanswered' });
      const [v2] = calls(t, (x) => x.request.path.endsWith('w=host-v2'));
      expect(v2.imds_version).toBe('v2');
    }
    expect(essence(puts(nic, hostTok.pid)[0])).toEqual(essence(puts(any, hostTok.pid)[0]));
    expect(essence(puts(nic, hostTok6.pid)[0])).toEqual(essence(puts(any, hostTok6.pid)[0]));
    for (const x of [...any.records, ...nic.records]) expect(validate(x)).toEqual([]);
  });

  it.skipIf(!KERNEL_ISN)(`-i NIC alone writes the same records as -i any: containers joined to their kernel events by ISN${KERNEL_ISN ? '' : ' (skipped: the eBPF program does not report the ISN yet: ConnectEvent has no isn)'}`, () => {
    expect(runs.size).toBe(20);
    for (const [tag] of runs) {
      const [a] = calls(any, (x) => x.request.path.endsWith(`w=${tag}`));
      const [n] = calls(nic, (x) => x.request.path.endsWith(`w=${tag}`));
      expect(essence(n), tag).toEqual(essence(a));
    }
    const [put] = puts(nic, fallback.pid);
    expect(put.response).toEqual({ status: null, ttl: 1, dropped: 'hop_limit' });
    expect(essence(put)).toEqual(essence(puts(any, fallback.pid)[0]));
    const [v1] = calls(nic, (x) => x.request.path.endsWith('w=c0-fallback'));
    expect(v1).toMatchObject({ imds_version: 'v1', v1_reason: 'token_put_unanswered' });
    expect(calls(nic, (x) => x.process.attribution === 'none' && /[?&]w=/.test(x.request.path) && !x.request.path.endsWith('w=unjoinable'))).toEqual([]);
  });

  it('a container connection older than the agent: -i NIC says why it cannot name the caller (no SYN, no kernel event), -i any finds it through /proc', async () => {
    const script = `
import http.client, sys
c = http.client.HTTPConnection(sys.argv[1], 80, timeout=5)
for line in sys.stdin:
    c.request("GET", sys.argv[2] + line.strip())
    c.getresponse().read()
    print("ok", flush=True)`;
    const child = lab.spawn(containers[1].ns, 'sh', ['-c', 'read go && exec "$@"', 'sh', 'python3', '-c', script, IMDS_V4, '/latest/meta-data/ami-id?w=old-'],
      { stdio: ['pipe', 'pipe', 'inherit'] });
    writeFileSync(join(scopes[1].dir, 'cgroup.procs'), String(child.pid));
    const lines = createInterface({ input: child.stdout! })[Symbol.asyncIterator]();
    const late: TracerProcess[] = [];
    try {
      child.stdin!.write('go\n1\n');
      expect((await lines.next()).value).toBe('ok');
      // Agents started now never saw this connection's SYN, nor its connect in the kernel.
      late.push(await startTracer(lab, ['-i', lab.instanceIf, ...common]), await startTracer(lab, ['-i', 'any', ...common]));
      child.stdin!.write('2\n');
      expect((await lines.next()).value).toBe('ok');
      const isOld = (x: Rec): boolean => x.event === 'imds_call' && x.request.path.endsWith('w=old-2');
      const [viaNic] = await late[0].count(isOld, 1, 10_000, 'the old connection (-i NIC)');
      expect(viaNic.process.attribution).toBe('none');
      // (Other labs on this machine may be making connections to 169.254.169.254 too: the eBPF program sees them all.)
      expect(viaNic.process.reason).toMatch(/^(no kernel connect event for this connection \(its SYN was not captured: it began before the agent started capturing\)|\d+ kernel connect events? to 169\.254\.169\.254:80 near this time not joined: none has this connection's 4-tuple, and its SYN was not captured, .*); socket not found/);
      expect(viaNic.process.reason).not.toMatch(/older than the agent, or the loader was down/);
      const [viaAny] = await late[1].count(isOld, 1, 10_000, 'the old connection (-i any)');
      expect(viaAny.process).toMatchObject({ attribution: 'proc', pid: child.pid, container: { runtime: 'docker', id: scopes[1].id } });
      expect(viaAny.connection.src).toBe(containers[1].address);
    } finally {
      child.stdin!.end();
      await new Promise((resolve) => (child.exitCode !== null ? resolve(null) : child.once('exit', resolve)));
      for (const t of late) await t.stop();
    }
  });

  it('-i NIC with the /proc backend says at start that NATed callers cannot be named, and reports them unnamed, never wrong', async () => {
    const procNic = await startTracer(lab, ['-i', lab.instanceIf, '--no-log-file', '--backend', 'proc', '--stats-interval', '3600']);
    const procAny = await startTracer(lab, ['-i', 'any', '--no-log-file', '--backend', 'proc', '--stats-interval', '3600']);
    try {
      const notice = await procNic.next((x) => x.event === 'notice' && x.component === 'capture', 5000, 'the capture notice');
      expect(notice.message).toMatch(new RegExp(`^capturing on ${lab.instanceIf} alone with the /proc backend: .*Capture on any, or use the eBPF backend`));
      const r = await runInScope(lab, containers[0].ns, scopes[0], 'curl', ['-s', '-o', '/dev/null', '--max-time', '10', `${URL}?w=proc-nic`]);
      expect(r.exitCode, r.stderr).toBe(0);
      const isIt = (x: Rec): boolean => x.event === 'imds_call' && x.request.path.endsWith('w=proc-nic');
      const [viaNic] = await procNic.count(isIt, 1, 10_000);
      expect(viaNic.process.attribution).toBe('none');
      expect(viaNic.connection.src).toBe(INSTANCE_V4); // all the NIC shows without the kernel's view
      await procAny.count(isIt, 1, 10_000);
      expect(procAny.records.filter((x) => x.event === 'notice' && x.component === 'capture')).toEqual([]);
    } finally {
      await procNic.stop();
      await procAny.stop();
    }
  });

  it.skipIf(KERNEL_ISN)('without an ISN in kernel events, -i NIC says a kernel event exists but could not be joined (skipped once the eBPF program reports the ISN)', async () => {
    const r = await runInScope(lab, containers[1].ns, scopes[1], 'curl', ['-s', '-o', '/dev/null', '--max-time', '10', `${URL}?w=unjoinable`]);
    expect(r.exitCode, r.stderr).toBe(0);
    const [viaAny] = await any.count((x) => x.event === 'imds_call' && x.request.path.endsWith('w=unjoinable'), 1, 10_000);
    expect(viaAny.process).toMatchObject({ attribution: 'ebpf', pid: r.pid, container: { id: scopes[1].id } });
    expect(viaAny.connection).toMatchObject({ src: containers[1].address, interface: containers[1].bridge, nat: { src: INSTANCE_V4 } });
    const [viaNic] = await nic.count((x) => x.event === 'imds_call' && x.request.path.endsWith('w=unjoinable'), 1, 10_000);
    expect(viaNic.process.attribution).toBe('none');
    expect(viaNic.process.reason).toMatch(/^\d+ kernel connect events? to 169\.254\.169\.254:80 near this time not joined: .*no initial sequence number/);
    expect(viaNic.process.reason).not.toMatch(/older than the agent/);
  });
});
