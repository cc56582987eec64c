import { describe, expect, it } from 'vitest';
import { exeOf } from '../../agent/src/attribution/ebpf/process.js';
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
