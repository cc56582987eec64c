import { describe, expect, it } from 'vitest';
import { linkedTo, netnsInode, NetnsReach, parseIpLinks, type NetLink } from '../../agent/src/attribution/ebpf/netns-reach.js';

// `ip -j link show` as iproute2 prints it (trimmed): the agent's namespace has lo, eth0, a bridge and a
// veth whose peer (ifindex 2, in another namespace) is a container's eth0.
const OWN = JSON.stringify([
  { ifindex: 1, ifname: 'lo', link_type: 'loopback' },
  { ifindex: 2, ifname: 'eth0', link_type: 'ether' },
  { ifindex: 3, ifname: 'docker0', link_type: 'ether' },
  { ifindex: 7, link_index: 2, ifname: 'veth1a2b', master: 'docker0', link_netnsid: 0, linkinfo: { info_kind: 'veth' } },
]);
const CONTAINER = JSON.stringify([
  { ifindex: 1, ifname: 'lo' },
  { ifindex: 2, link_index: 7, ifname: 'eth0', link_netnsid: 0, linkinfo: { info_kind: 'veth' } },
]);
const ELSEWHERE = JSON.stringify([ // a veth pair to some third namespace, same small indexes
  { ifindex: 1, ifname: 'lo' },
  { ifindex: 2, link_index: 2, ifname: 'veth0', link_netnsid: 3, linkinfo: { info_kind: 'veth' } },
]);
const MACVLAN = JSON.stringify([{ ifindex: 1, ifname: 'lo' }, { ifindex: 4, link_index: 2, ifname: 'mv0', link_netnsid: 0, linkinfo: { info_kind: 'macvlan' } }]);

describe('network namespace reachability (pure)', () => {
  it('parses ip -j link and rejects what is not its output', () => {
    expect(parseIpLinks(OWN)[3]).toEqual({ ifindex: 7, ifname: 'veth1a2b', link_index: 2, link_netnsid: 0, kind: 'veth' });
    expect(parseIpLinks(OWN)[0]).toEqual({ ifindex: 1, ifname: 'lo' });
    expect(() => parseIpLinks('{"a":1}')).toThrow(/JSON array/);
    expect(() => parseIpLinks('not json')).toThrow();
  });
  it('a veth peer is linked; an unrelated pair with the same indexes is not; a macvlan on our eth0 is', () => {
    const own = parseIpLinks(OWN);
    expect(linkedTo(own, parseIpLinks(CONTAINER))).toBe(true);
    expect(linkedTo(own, parseIpLinks(ELSEWHERE))).toBe(false);
    expect(linkedTo(own, parseIpLinks(MACVLAN))).toBe(true);
    expect(linkedTo(own, [{ ifindex: 1, ifname: 'lo' }])).toBe(false);
  });
  it('reads net:[inode] links', () => {
    expect(netnsInode('net:[4026531840]')).toBe(4026531840);
    expect(netnsInode('mnt:[4026531840]')).toBeNull();
  });
});

describe('NetnsReach', () => {
  const setup = () => {
    const listing = new Map<number, string>([[100, 'own'], [200, 'container'], [300, 'elsewhere']]);
    const files: Record<string, string> = { container: CONTAINER, elsewhere: ELSEWHERE };
    const told: Array<[number, string]> = [];
    const reach = new NetnsReach(100, {
      max: 16,
      onVerdict: (ino, v) => told.push([ino, v]),
      onError: (m) => { throw new Error(m); },
      list: () => new Map(listing),
      links: async (path: string | null): Promise<NetLink[]> => parseIpLinks(path === null ? OWN : files[path]),
    });
    return { reach, listing, told };
  };
  it('keeps its own and linked namespaces, drops the others, forgets vanished ones', async () => {
    const { reach, listing, told } = setup();
    await reach.refresh();
    expect([...reach.verdicts].sort()).toEqual([[100, 'keep'], [200, 'keep'], [300, 'drop']]);
    expect(told.sort()).toEqual([[200, 'keep'], [300, 'drop']]);
    listing.delete(300);
    await reach.refresh();
    expect(reach.verdicts.has(300)).toBe(false);
    expect(told).toContainEqual([300, 'forget']);
  });
  it('judges a dropped namespace again when its link appears later (sandbox first, veth after)', async () => {
    const listing = new Map<number, string>([[100, 'own'], [200, 'container']]);
    let own = JSON.stringify(JSON.parse(OWN).slice(0, 3)); // no veth yet
    let container = JSON.stringify([{ ifindex: 1, ifname: 'lo' }]);
    const reach = new NetnsReach(100, {
      max: 16, onVerdict: () => {}, onError: (m) => { throw new Error(m); }, list: () => new Map(listing),
      links: async (path: string | null): Promise<NetLink[]> => parseIpLinks(path === null ? own : container),
    });
    await reach.refresh();
    expect(reach.verdicts.get(200)).toBe('drop');
    await reach.refresh(); // nothing changed: not judged again
    expect(reach.verdicts.get(200)).toBe('drop');
    own = OWN;
    container = CONTAINER;
    await reach.refresh();
    expect(reach.verdicts.get(200)).toBe('keep');
  });
  it('judges a namespace first seen in an event; one with no process left stays unknown', async () => {
    const { reach } = setup();
    expect(await reach.judge(300)).toBe('drop');
    expect(await reach.judge(999)).toBeNull();
    expect(reach.verdicts.has(999)).toBe(false);
  });
});
