import { describe, expect, it } from 'vitest';
import { AncestorCache, CgroupFacts, LastProcess, exeOf, processFromEvent, sameJson } from '../../agent/src/attribution/ebpf/process.js';
import { CgroupPaths } from '../../agent/src/attribution/ebpf/cgroup-paths.js';
import { UserNames } from '../../agent/src/attribution/proc/process.js';
import { containerFromCgroup, sessionGroup, unitFromCgroup } from '../../agent/src/attribution/proc/parse.js';
import type { ConnectEvent } from '../../agent/src/attribution/ebpf/events.js';

const ev = (exe: string | null, exeTruncated = false): ConnectEvent => ({ tgid: 4242, exe, exeTruncated } as ConnectEvent);

describe('exeOf: which executable path a kernel-named caller gets', () => {
  it('the whole path the kernel walked, even while /proc would say something else (exec-ed since, deleted)', () => {
    expect(exeOf(ev('/usr/bin/curl'), () => '/usr/bin/sleep')).toEqual({ exe: '/usr/bin/curl', exeTruncated: false });
    expect(exeOf(ev('/opt/x/bin/agent'), () => '/opt/x/bin/agent (deleted)').exe).toBe('/opt/x/bin/agent');
  });
  it('a cut path: /proc while the caller lives; else the tail, marked', () => {
    const asked: string[] = [];
    expect(exeOf(ev('.../bin/curl', true), (p) => { asked.push(p); return '/very/deep/bin/curl'; }))
      .toEqual({ exe: '/very/deep/bin/curl', exeTruncated: false });
    expect(asked).toEqual(['/proc/4242/exe']);
    expect(exeOf(ev('.../bin/curl', true), () => null)).toEqual({ exe: '.../bin/curl', exeTruncated: true });
  });
  it('no path from the kernel: /proc, else null', () => {
    expect(exeOf(ev(null), () => '/usr/bin/python3.11').exe).toBe('/usr/bin/python3.11');
    expect(exeOf(ev(null), () => null)).toEqual({ exe: null, exeTruncated: false });
  });
});

describe('CgroupFacts: container, unit and session group once per cgroup path', () => {
  const paths = [
    '/system.slice/docker-4f5e6d7c8b9a0000000000000000000000000000000000000000000000000000.scope',
    '/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod12345678_1234_1234_1234_123456789abc.slice/cri-containerd-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.scope',
    '/user.slice/user-1000.slice/session-42.scope',
    '/system.slice/legacy-agent.service',
    '/init.scope',
    '/',
  ];
  it('the same answers as working them out each time, in any order, past its bound too', () => {
    const facts = new CgroupFacts(2);
    for (const p of [...paths, ...paths.slice().reverse(), ...paths]) {
      const unit = unitFromCgroup(p);
      expect(facts.of(p)).toEqual({ container: containerFromCgroup(p), unit, group: sessionGroup(unit, p) });
    }
    expect(facts.of(paths[2]).group).toEqual({ systemd_unit_group: 'user-1000.slice/session-*.scope' });
  });
  it('keeps at most its bound', () => {
    const facts = new CgroupFacts(2);
    const a = facts.of(paths[0]);
    expect(facts.of(paths[0])).toBe(a); // cached
    facts.of(paths[1]);
    facts.of(paths[2]); // the oldest (paths[0]) goes
    expect(facts.of(paths[0])).not.toBe(a);
    expect(facts.of(paths[0])).toEqual(a);
  });
});

describe('LastProcess: one description for the events of a caller that connects again and again', () => {
  const caller = (over: Partial<ConnectEvent> = {}): ConnectEvent => ({
    tgid: 999_999_001, pid: 999_999_001, ppid: 999_999_000, uid: 0, gid: 0, comm: 'loop', parentComm: 'sh',
    ancestors: [{ pid: 999_999_000, comm: 'sh' }, { pid: 1, comm: 'init' }], cgroupId: '4242', netnsIno: 1,
    family: 4, saddr: '10.0.0.2', daddr: '169.254.169.254', sport: 40000, dport: 80, tsSynNs: '1', tsEmitNs: '2',
    argv: ['loop', '--fast'], argvTruncated: false, argvError: false, v4Mapped: false, newState: 1,
    newStateName: 'ESTABLISHED', isn: 7, exe: '/usr/bin/loop', exeTruncated: false, ...over,
  });
  const setup = async () => {
    const users = new UserNames();
    await users.name(0); // /etc/passwd read: uid 0 known from now on
    const cgroups = new CgroupPaths();
    cgroups.remember('4242', '/system.slice/docker-4f5e6d7c8b9a0000000000000000000000000000000000000000000000000000.scope');
    const parents = new AncestorCache();
    const facts = new CgroupFacts();
    const last = new LastProcess();
    return (e: ConnectEvent) => processFromEvent(e, 4, users, cgroups, 1000, parents, facts, last);
  };

  it('the same description is handed out again (the same object); another caller gets its own', async () => {
    const describe = await setup();
    const a = describe(caller());
    const b = describe(caller({ sport: 40001, isn: 8, tsSynNs: '3', argv: ['loop', '--fast'] }));
    expect(b).toBe(a);
    const p = await a;
    expect(p).toMatchObject({ attribution: 'ebpf', pid: 999_999_001, argv: ['loop', '--fast'], exe: '/usr/bin/loop',
      container: { runtime: 'docker' } });
    for (const other of [caller({ tgid: 999_999_002 }), caller({ argv: ['loop', '--slow'] }), caller({ argvTruncated: true }),
      caller({ uid: 65_534 }), caller({ comm: 'loop2' }), caller({ ancestors: [{ pid: 999_999_000, comm: 'bash' }, { pid: 1, comm: 'init' }] })]) {
      const q = describe(other);
      expect(q).not.toBe(a);
      expect(await q).not.toEqual(p);
    }
    // And back to the first caller: made again, equal to the first.
    const c = describe(caller());
    expect(c).not.toBe(a);
    expect(await c).toEqual(p);
  });

  it('a failure while describing is the promise\'s (rejected), never a throw at the caller', async () => {
    const users = new UserNames();
    await users.name(0);
    const cgroups = new CgroupPaths();
    cgroups.remember('4242', '/x');
    const facts = { of: () => { throw new Error('boom'); } } as unknown as CgroupFacts;
    let p: Promise<unknown> | undefined;
    expect(() => { p = processFromEvent(caller(), 4, users, cgroups, 1000, new AncestorCache(), facts, new LastProcess()); }).not.toThrow();
    await expect(p).rejects.toThrow('boom');
  });

  it('the same JSON: keys in the same order, values equal (arrays and objects compared through)', () => {
    expect(sameJson({ a: 1, b: [1, { c: 'x' }] }, { a: 1, b: [1, { c: 'x' }] })).toBe(true);
    expect(sameJson({ a: 1, b: 2 }, { b: 2, a: 1 })).toBe(false); // order is printed
    expect(sameJson({ p: [{ a: 1, b: { x: 1, y: 2 } }] }, { p: [{ a: 1, b: { y: 2, x: 1 } }] })).toBe(false); // nested too
    expect(sameJson({ p: [{ a: 1, b: { x: 1, y: [2] } }], q: 'z' }, { p: [{ a: 1, b: { x: 1, y: [2] } }], q: 'z' })).toBe(true);
    expect(sameJson({ a: 1, b: 2 }, { a: 1 })).toBe(false);
    expect(sameJson({ a: 1 }, { a: 1, b: undefined })).toBe(false);
    expect(sameJson({ a: 1, b: undefined }, { a: 1 })).toBe(false);
    expect(sameJson({ a: [1, 2] }, { a: [1, 2, 3] })).toBe(false);
    expect(sameJson({ a: [] }, { a: {} })).toBe(false);
    expect(sameJson({ a: null }, { a: {} })).toBe(false);
    expect(sameJson({ a: { b: 'x' } }, { a: { b: 'y' } })).toBe(false);
  });
});
