/**
 * Lab plumbing: namespaces come and go without a trace, nothing touches the root namespace, and
 * the container case reaches the IMDS through the instance's MASQUERADE.
 */
import { spawnSync } from 'node:child_process';
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { INSTANCE } from '../../lab/imds-server.js';
import {
  addContainer,
  cleanupStaleLabs,
  createLab,
  labSupported,
  listNamespaces,
  run,
  CONTAINER_V4,
  INSTANCE_V4,
  type ContainerInfo,
  type ImdsHandle,
  type Lab,
} from '../../lab/netns.js';
import { curlV1, curlV2, startLongLivedCaller } from '../helpers/clients.js';

const support = labSupported();
const TIMEOUT = 60_000;

/** Addresses and link names of the root namespace (where this test process runs). */
async function rootNamespaceState(): Promise<{ addrs: string[]; links: string[] }> {
  const a = await run('ip', ['-j', 'addr', 'show']);
  expect(a.exitCode, a.stderr).toBe(0);
  const ifaces = JSON.parse(a.stdout) as { ifname: string; addr_info?: { local: string }[] }[];
  return {
    links: ifaces.map((i) => i.ifname).sort(),
    addrs: ifaces.flatMap((i) => (i.addr_info ?? []).map((x) => x.local)).sort(),
  };
}

describe.skipIf(!support.ok)(`lab plumbing${support.ok ? '' : ` — SKIPPED: ${support.reason}`}`, { timeout: TIMEOUT }, () => {
  it('creates two namespaces joined by a veth, and destroy() removes everything (idempotent)', async () => {
    const before = await rootNamespaceState();
    const lab = await createLab();
    try {
      const names = await listNamespaces();
      expect(names).toContain(lab.instanceNs);
      expect(names).toContain(lab.imdsNs);
      expect(lab.instanceNs).toMatch(/^imdst-i-/);
      expect(lab.imdsNs).toMatch(/^imdst-m-/);
      expect(lab.instanceIf.length).toBeLessThanOrEqual(15);

      const inst = await lab.exec(lab.instanceNs, 'ip', ['-j', 'addr', 'show', 'dev', lab.instanceIf]);
      expect(inst.exitCode, inst.stderr).toBe(0);
      expect(inst.stdout).toContain(INSTANCE_V4);
      expect(inst.stdout).toContain('fd00:ec2::2');
      // The IMDS addresses are on-link through the veth (no ping on this machine: reachability
      // itself is proven by the stand-in tests).
      for (const dst of ['169.254.169.254', 'fd00:ec2::254']) {
        const route = await lab.exec(lab.instanceNs, 'ip', ['route', 'get', dst]);
        expect(route.exitCode, route.stderr).toBe(0);
        expect(route.stdout).toContain(`dev ${lab.instanceIf}`);
      }
      const imdsAddrs = await lab.exec(lab.imdsNs, 'ip', ['-j', 'addr', 'show', 'dev', lab.imdsIf]);
      const info = (JSON.parse(imdsAddrs.stdout) as { addr_info: { local: string; tentative?: boolean }[] }[])[0].addr_info;
      expect(info.map((a) => a.local)).toEqual(expect.arrayContaining(['169.254.169.254', 'fd00:ec2::254']));
      // nodad: the IPv6 endpoint is usable at once.
      expect(info.find((a) => a.local === 'fd00:ec2::254')?.tentative).toBeUndefined();

      // Nothing leaked into the root namespace.
      const during = await rootNamespaceState();
      expect(during.links).toEqual(before.links);
      expect(during.addrs).not.toContain('169.254.169.254');
      expect(during.addrs).not.toContain('fd00:ec2::254');
    } finally {
      await lab.destroy();
    }
    const after = await listNamespaces();
    expect(after.filter((n) => n.endsWith(lab.id))).toEqual([]);
    expect((await rootNamespaceState()).links).toEqual(before.links);
    await expect(lab.destroy()).resolves.toBeUndefined();
  });

  it('destroy() kills the processes it spawned, stand-in included', async () => {
    const lab = await createLab();
    let sleeper = 0;
    let server = 0;
    try {
      sleeper = lab.spawn(lab.instanceNs, 'sleep', ['600']).pid!;
      server = (await lab.startImds()).pid;
      expect(() => process.kill(sleeper, 0)).not.toThrow();
      expect(() => process.kill(server, 0)).not.toThrow();
    } finally {
      await lab.destroy();
    }
    expect(() => process.kill(sleeper, 0)).toThrow();
    expect(() => process.kill(server, 0)).toThrow();
  });

  it('refuses namespaces that are not part of the lab', async () => {
    const lab = await createLab();
    try {
      await expect(lab.exec('some-other-ns', 'true', [])).rejects.toThrow(/not part of lab/);
      expect(() => lab.spawn('some-other-ns', 'true', [])).toThrow(/not part of lab/);
    } finally {
      await lab.destroy();
    }
  });

  it('startImds() rejects with the server error when it cannot start', async () => {
    const lab = await createLab();
    try {
      const first = await lab.startImds();
      await expect(lab.startImds()).rejects.toThrow(/exited before ready.*EADDRINUSE/s);
      await first.stop();
    } finally {
      await lab.destroy();
    }
  });

  it('cleanupStaleLabs() deletes namespaces of dead owners only', async () => {
    const dead = spawnSync('true').pid!; // a pid that has just exited
    const stale = `imdst-i-${dead.toString(36)}-beef`;
    const staleSecondContainer = `imdst-c1-${dead.toString(36)}-beef`;
    for (const ns of [stale, staleSecondContainer]) {
      const add = await run('ip', ['netns', 'add', ns]);
      expect(add.exitCode, add.stderr).toBe(0);
    }
    const live = await createLab();
    try {
      const removed = await cleanupStaleLabs();
      expect(removed).toContain(stale);
      expect(removed).toContain(staleSecondContainer);
      expect(removed).not.toContain(live.instanceNs);
      const names = await listNamespaces();
      expect(names).not.toContain(stale);
      expect(names).toContain(live.instanceNs);
    } finally {
      await live.destroy();
      for (const ns of [stale, staleSecondContainer]) await run('ip', ['netns', 'del', ns]);
    }
  });

  describe('container behind a bridge with MASQUERADE', () => {
    let lab: Lab;
    let imds: ImdsHandle;
    let container: ContainerInfo;

    beforeAll(async () => {
      lab = await createLab();
      imds = await lab.startImds({ logRequests: true });
      container = await addContainer(lab);
    }, TIMEOUT);

    afterAll(async () => {
      await lab?.destroy();
      if (lab) expect((await listNamespaces()).filter((n) => n.endsWith(lab.id))).toEqual([]);
    }, TIMEOUT);

    it('names the namespace and the iptables binary that worked', () => {
      expect(container.ns).toBe(`imdst-c-${lab.id}`);
      expect(lab.namespaces()).toContain(container.ns);
      expect(container.iptables).toMatch(/iptables/);
    });

    it('reaches the IMDS (v1 and v2) from the container, seen as the instance address', async () => {
      const before = imds.requests().length;
      const v1 = await curlV1(lab, { ns: container.ns });
      expect(v1.exitCode, v1.stderr).toBe(0);
      expect(v1.stdout).toBe(INSTANCE.instanceId);
      const v2 = await curlV2(lab, { ns: container.ns });
      expect(v2.exitCode, v2.stderr).toBe(0);
      expect(v2.stdout).toBe(INSTANCE.instanceId);
      const reqs = (await imds.waitForRequests(before + 3)).slice(before);
      expect(reqs.map((e) => e.remoteAddress)).toEqual([INSTANCE_V4, INSTANCE_V4, INSTANCE_V4]);
      expect(reqs.map((e) => e.token)).toEqual(['none', 'none', 'valid']);
    });

    it('the container caller keeps its own address and pid inside the container ns', async () => {
      const caller = startLongLivedCaller(lab, { runtime: 'python', version: 'v1', ns: container.ns });
      try {
        const report = await caller.called;
        expect(report.status).toBe(200);
        expect(report.pid).toBe(caller.pid);
        const ss = await lab.exec(container.ns, 'ss', ['-tnpH', 'state', 'established', `sport = :${report.localPort}`]);
        expect(ss.exitCode, ss.stderr).toBe(0);
        expect(ss.stdout).toContain(`${CONTAINER_V4}:${report.localPort}`);
        expect(ss.stdout).toContain(`pid=${caller.pid},`);
      } finally {
        await caller.stop();
      }
    });

    it('the MASQUERADE rule is in the instance ns', async () => {
      const r = await lab.exec(lab.instanceNs, container.iptables, ['-t', 'nat', '-S', 'POSTROUTING']);
      expect(r.exitCode, r.stderr).toBe(0);
      expect(r.stdout).toMatch(/-s 169\.254\.20\.0\/24 -d 169\.254\.169\.254\/32 -j MASQUERADE/);
    });
  });
});
