import { describe, expect, it } from 'vitest';
import { JoinTable } from '../../agent/src/attribution/ebpf/join.js';
import { cgroup2Mount } from '../../agent/src/attribution/ebpf/cgroup-paths.js';

const ev = (over: Partial<{ saddr: string; sport: number; daddr: string; dport: number; netnsIno: number; id: string }> = {}) => ({
  saddr: '169.254.10.2', sport: 40000, daddr: '169.254.169.254', dport: 80, netnsIno: 1, id: 'a', ...over,
});
const tuple = { client: '169.254.10.2', cport: 40000, server: '169.254.169.254', sport: 80 };

describe('JoinTable', () => {
  it('joins by 4-tuple within the window only', () => {
    const t = new JoinTable(10_000, 100, 1);
    t.add(ev(), 1000);
    expect(t.find(tuple, 1500)?.id).toBe('a');
    expect(t.find(tuple, 1000 + 10_001)).toBeNull(); // a reused port much later is another connection
    expect(t.find({ ...tuple, cport: 40001 }, 1500)).toBeNull();
  });

  it('matches IPv4-mapped addresses from the wire to plain IPv4 events', () => {
    const t = new JoinTable(10_000, 100, 1);
    t.add(ev(), 1000);
    expect(t.find({ ...tuple, client: '::ffff:169.254.10.2', server: '::ffff:169.254.169.254' }, 1000)?.id).toBe('a');
  });

  it('prefers the agent\'s own network namespace, then the nearest in time', () => {
    const t = new JoinTable(10_000, 100, 7);
    t.add(ev({ id: 'other-ns', netnsIno: 9 }), 1000);
    t.add(ev({ id: 'own-ns-early', netnsIno: 7 }), 500);
    t.add(ev({ id: 'own-ns-near', netnsIno: 7 }), 1100);
    expect(t.find(tuple, 1000)?.id).toBe('own-ns-near');
    const u = new JoinTable(10_000, 100, 7);
    u.add(ev({ id: 'far', netnsIno: 9 }), 100);
    u.add(ev({ id: 'near', netnsIno: 8 }), 990);
    expect(u.find(tuple, 1000)?.id).toBe('near');
  });

  it('is bounded: the oldest event is evicted and counted; sweep forgets old events', () => {
    const t = new JoinTable(1000, 3, 1);
    for (let i = 0; i < 5; i++) t.add(ev({ sport: 40000 + i, id: String(i) }), 100 * i);
    expect(t.size).toBe(3);
    expect(t.evicted).toBe(2);
    expect(t.find({ ...tuple, cport: 40000 }, 0)).toBeNull();
    t.sweep(100_000);
    expect(t.size).toBe(0);
  });
});

describe('cgroup2Mount', () => {
  it('finds the cgroup2 mount point in mountinfo (unified and hybrid layouts)', () => {
    const hybrid = [
      '30 25 0:26 / /sys/fs/cgroup ro,nosuid shared:9 - tmpfs tmpfs ro,mode=755',
      '31 30 0:27 / /sys/fs/cgroup/unified rw,nosuid shared:10 - cgroup2 cgroup2 rw,nsdelegate',
    ].join('\n');
    expect(cgroup2Mount(hybrid)).toBe('/sys/fs/cgroup/unified');
    expect(cgroup2Mount('35 24 0:30 / /sys/fs/cgroup rw,nosuid shared:9 - cgroup2 cgroup2 rw')).toBe('/sys/fs/cgroup');
    expect(cgroup2Mount('22 1 8:1 / / rw - ext4 /dev/vda rw')).toBeNull();
  });
});
