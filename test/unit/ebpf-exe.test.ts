import { describe, expect, it } from 'vitest';
import { CgroupFacts, exeOf } from '../../agent/src/attribution/ebpf/process.js';
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
