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

describe('JoinTable: lookups by number', () => {
  it('tells apart events that share a client port (other addresses, other server port)', () => {
    const t = new JoinTable(10_000, 100, 1);
    t.add(ev({ id: 'other-client', saddr: '169.254.10.3' }), 1000);
    t.add(ev({ id: 'other-server', daddr: '169.254.170.2' }), 1000);
    t.add(ev({ id: 'other-port', dport: 8080 }), 1000);
    expect(t.find(tuple, 1000)).toBeNull();
    t.add(ev({ id: 'this' }), 1000);
    expect(t.find(tuple, 1000)?.id).toBe('this');
    expect(t.find({ ...tuple, client: '169.254.10.3' }, 1000)?.id).toBe('other-client');
    expect(t.find({ ...tuple, sport: 8080 }, 1000)?.id).toBe('other-port');
  });

  it('joins by ISN only to the same destination, IPv4-mapped or not, and hands back what was added with the event', () => {
    const t = new JoinTable<ReturnType<typeof ev> & { isn: number }, string>(10_000, 100, 1);
    t.add({ ...ev({ id: 'other-dst', saddr: '172.17.0.2', daddr: '169.254.170.2' }), isn: 42 }, 1000, 'x');
    expect(t.join({ ...tuple, client: '10.0.0.5', cport: 61000, isn: 42 }, 1000)).toBeNull();
    t.add({ ...ev({ id: 'nat', saddr: '172.17.0.2' }), isn: 42 }, 1000, 'its process');
    const j = t.join({ client: '::ffff:10.0.0.5', cport: 61000, server: '::ffff:169.254.169.254', sport: 80, isn: 42 }, 1000);
    expect(j && { id: j.event.id, by: j.by, data: j.data }).toEqual({ id: 'nat', by: 'isn', data: 'its process' });
  });

  it('decides events oldest first whatever order they came in, and evicts the oldest', () => {
    const unseen: string[] = [];
    const t = new JoinTable<ReturnType<typeof ev>, number>(1000, 3, 1, (e, _at, _kind, data) => unseen.push(`${e.id}:${data}`));
    t.add(ev({ sport: 1, id: 'b' }), 200, 2);
    t.add(ev({ sport: 2, id: 'a' }), 100, 1); // its SYN came earlier (a slow handshake)
    t.add(ev({ sport: 3, id: 'c' }), 5000, 3);
    t.sweep(2300); // a and b are past twice the window, c is not
    expect(unseen).toEqual(['a:1', 'b:2']);
    expect(t.size).toBe(1);
    t.add(ev({ sport: 4, id: 'e' }), 5200);
    t.add(ev({ sport: 5, id: 'd' }), 5100);
    t.add(ev({ sport: 6, id: 'f' }), 5300); // over the bound: c, the oldest, goes
    expect(t.evicted).toBe(1);
    expect(t.find({ ...tuple, cport: 3 }, 5000)).toBeNull();
    expect(t.pending().map((e) => e.id)).toEqual(['d', 'e', 'f']);
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
