import { describe, it, expect } from 'vitest';
import { decodeFrame } from '../../agent/src/wire/packet.js';
import { ipv6ToString } from '../../agent/src/net.js';
import {
  ETH_P_IP, ETH_P_IPV6, ethernet, frame, ipv4, ipv6, nullLink, sll, sll2, tcp, v6Bytes, IMDS4, IMDS6,
} from './frames.js';

const HTTP = 'GET /latest/meta-data/ HTTP/1.1\r\nHost: 169.254.169.254\r\n\r\n';
const v4seg = { src: '10.1.2.3', dst: IMDS4, sport: 40000, dport: 80, seq: 0xfffffff0, ack: 77, flags: { ack: true, psh: true }, payload: HTTP };
const v6seg = { ...v4seg, src: 'fd00::2', dst: IMDS6 };

describe('decodeFrame: link types', () => {
  for (const link of ['ETHERNET', 'LINKTYPE_LINUX_SLL', 'LINUX_SLL2', 'RAW', 'NULL'] as const) {
    it(`${link}: IPv4 TCP segment with all fields`, () => {
      const s = decodeFrame(link, frame(link, v4seg, 4));
      expect(s).not.toBeNull();
      expect(s!.family).toBe(4);
      expect(s!.src).toBe('10.1.2.3');
      expect(s!.dst).toBe(IMDS4);
      expect(s!.sport).toBe(40000);
      expect(s!.dport).toBe(80);
      expect(s!.seq).toBe(0xfffffff0);
      expect(s!.ack).toBe(77);
      expect(s!.flags).toEqual({ syn: false, ack: true, fin: false, rst: false, psh: true });
      expect(s!.payload.toString('latin1')).toBe(HTTP);
    });

    it(`${link}: IPv6 TCP segment`, () => {
      const s = decodeFrame(link, frame(link, v6seg, 4));
      expect(s).not.toBeNull();
      expect(s!.family).toBe(6);
      expect(s!.src).toBe('fd00::2');
      expect(s!.dst).toBe('fd00:ec2::254');
      expect(s!.payload.toString('latin1')).toBe(HTTP);
    });
  }

  it('cooked captures report the packet type; other links report null', () => {
    expect(decodeFrame('LINKTYPE_LINUX_SLL', frame('LINKTYPE_LINUX_SLL', v4seg, 4))!.pktType).toBe(4);
    expect(decodeFrame('LINKTYPE_LINUX_SLL', frame('LINKTYPE_LINUX_SLL', v4seg, 0))!.pktType).toBe(0);
    expect(decodeFrame('LINUX_SLL2', frame('LINUX_SLL2', v4seg, 3))!.pktType).toBe(3);
    expect(decodeFrame('LINUX_SLL2', frame('LINUX_SLL2', v4seg, 4))!.pktType).toBe(4);
    expect(decodeFrame('ETHERNET', frame('ETHERNET', v4seg))!.pktType).toBeNull();
    expect(decodeFrame('RAW', frame('RAW', v4seg))!.pktType).toBeNull();
    expect(decodeFrame('NULL', frame('NULL', v4seg))!.pktType).toBeNull();
  });

  it('unknown link type yields null', () => {
    expect(decodeFrame('IEEE802_11', frame('ETHERNET', v4seg))).toBeNull();
    expect(decodeFrame('', frame('RAW', v4seg))).toBeNull();
  });

  it('Ethernet with one and two 802.1Q tags', () => {
    const ip = ipv4({ src: '10.0.0.9', dst: IMDS4 }, tcp({ sport: 1, dport: 80, seq: 5, payload: 'x' }));
    const one = decodeFrame('ETHERNET', ethernet(ETH_P_IP, ip, [100]));
    expect(one?.src).toBe('10.0.0.9');
    expect(one?.payload.toString()).toBe('x');
    const two = decodeFrame('ETHERNET', ethernet(ETH_P_IP, ip, [100, 200]));
    expect(two?.src).toBe('10.0.0.9');
    const ip6 = ipv6({ src: 'fe80::1', dst: IMDS6 }, tcp({ sport: 1, dport: 80, seq: 5, payload: 'y' }));
    expect(decodeFrame('ETHERNET', ethernet(ETH_P_IPV6, ip6, [7]))?.payload.toString()).toBe('y');
  });

  it('non-IP EtherTypes (ARP) and truncated link headers yield null', () => {
    const ip = ipv4({ src: '10.0.0.9', dst: IMDS4 }, tcp({ sport: 1, dport: 80, seq: 5 }));
    expect(decodeFrame('ETHERNET', ethernet(0x0806, ip))).toBeNull();
    expect(decodeFrame('LINKTYPE_LINUX_SLL', sll(0, 0x0806, ip))).toBeNull();
    expect(decodeFrame('LINUX_SLL2', sll2(0, 0x0806, ip))).toBeNull();
    expect(decodeFrame('ETHERNET', Buffer.alloc(13))).toBeNull();
    expect(decodeFrame('LINKTYPE_LINUX_SLL', Buffer.alloc(15))).toBeNull();
    expect(decodeFrame('LINUX_SLL2', Buffer.alloc(19))).toBeNull();
    expect(decodeFrame('RAW', Buffer.alloc(0))).toBeNull();
    expect(decodeFrame('NULL', Buffer.alloc(4))).toBeNull();
    // VLAN tag with nothing after it
    const tagOnly = Buffer.alloc(18);
    tagOnly.writeUInt16BE(0x8100, 12);
    expect(decodeFrame('ETHERNET', tagOnly)).toBeNull();
  });

  it('EtherType and IP version must agree', () => {
    const ip4 = ipv4({ src: '10.0.0.9', dst: IMDS4 }, tcp({ sport: 1, dport: 80, seq: 5 }));
    const ip6 = ipv6({ src: '::1', dst: '::2' }, tcp({ sport: 1, dport: 80, seq: 5 }));
    expect(decodeFrame('ETHERNET', ethernet(ETH_P_IPV6, ip4))).toBeNull();
    expect(decodeFrame('ETHERNET', ethernet(ETH_P_IP, ip6))).toBeNull();
    // RAW/NULL take the version from the first nibble
    expect(decodeFrame('RAW', Buffer.concat([Buffer.from([0x50]), ip4.subarray(1)]))).toBeNull();
    expect(decodeFrame('NULL', nullLink(4, Buffer.concat([Buffer.from([0x75]), ip4.subarray(1)])))).toBeNull();
  });
});

describe('decodeFrame: IPv4', () => {
  const t = tcp({ sport: 33000, dport: 80, seq: 1, payload: 'hello' });

  it('honours IP options (IHL > 5)', () => {
    const s = decodeFrame('RAW', ipv4({ src: '1.2.3.4', dst: IMDS4, ihl: 8 }, t));
    expect(s?.sport).toBe(33000);
    expect(s?.payload.toString()).toBe('hello');
  });

  it('IHL below 5 is malformed', () => {
    const p = ipv4({ src: '1.2.3.4', dst: IMDS4 }, t);
    p[0] = 0x44;
    expect(decodeFrame('RAW', p)).toBeNull();
  });

  it('non-TCP protocols yield null', () => {
    expect(decodeFrame('RAW', ipv4({ src: '1.2.3.4', dst: IMDS4, proto: 17 }, t))).toBeNull();
    expect(decodeFrame('RAW', ipv4({ src: '1.2.3.4', dst: IMDS4, proto: 1 }, t))).toBeNull();
  });

  it('fragments (offset or more-fragments) yield null, DF alone is fine', () => {
    expect(decodeFrame('RAW', ipv4({ src: '1.2.3.4', dst: IMDS4, frag: 0x2000 }, t))).toBeNull();
    expect(decodeFrame('RAW', ipv4({ src: '1.2.3.4', dst: IMDS4, frag: 0x0010 }, t))).toBeNull();
    expect(decodeFrame('RAW', ipv4({ src: '1.2.3.4', dst: IMDS4, frag: 0x4000 }, t))).not.toBeNull();
    expect(decodeFrame('RAW', ipv4({ src: '1.2.3.4', dst: IMDS4, frag: 0 }, t))).not.toBeNull();
  });

  it('Ethernet padding after the IP total length is not payload', () => {
    const ip = ipv4({ src: '1.2.3.4', dst: IMDS4 }, tcp({ sport: 1, dport: 80, seq: 9 }));
    const padded = ethernet(ETH_P_IP, Buffer.concat([ip, Buffer.from('PADDINGPADDING')]));
    const s = decodeFrame('ETHERNET', padded);
    expect(s).not.toBeNull();
    expect(s!.payload.length).toBe(0);
  });

  it('a snapped frame shorter than total length keeps what was captured', () => {
    const ip = ipv4({ src: '1.2.3.4', dst: IMDS4 }, t);
    const s = decodeFrame('RAW', ip.subarray(0, ip.length - 2));
    expect(s?.payload.toString()).toBe('hel');
  });

  it('total length 0 (TSO) falls back to the captured length', () => {
    const ip = ipv4({ src: '1.2.3.4', dst: IMDS4, totalLength: 0 }, t);
    expect(decodeFrame('RAW', ip)?.payload.toString()).toBe('hello');
  });

  it('total length cutting into the TCP header yields null', () => {
    const ip = ipv4({ src: '1.2.3.4', dst: IMDS4, totalLength: 30 }, t);
    expect(decodeFrame('RAW', ip)).toBeNull();
  });

  it('truncated IPv4 header yields null', () => {
    const ip = ipv4({ src: '1.2.3.4', dst: IMDS4 }, t);
    expect(decodeFrame('RAW', ip.subarray(0, 19))).toBeNull();
    expect(decodeFrame('RAW', ip.subarray(0, 39))).toBeNull();
  });
});

describe('decodeFrame: TCP', () => {
  it('every flag is decoded independently', () => {
    const names = ['fin', 'syn', 'rst', 'psh', 'ack'] as const;
    for (const n of names) {
      const s = decodeFrame('RAW', ipv4({ src: '1.1.1.1', dst: IMDS4 }, tcp({ sport: 1, dport: 80, seq: 0, flags: { [n]: true } })));
      for (const m of names) expect(s!.flags[m]).toBe(m === n);
    }
  });

  it('TCP options are skipped (data offset)', () => {
    const opts = Buffer.from([2, 4, 5, 0xb4, 1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2]);
    const s = decodeFrame('RAW', ipv4({ src: '1.1.1.1', dst: IMDS4 }, tcp({ sport: 1, dport: 80, seq: 0, options: opts, payload: 'DATA' })));
    expect(s?.payload.toString()).toBe('DATA');
  });

  it('data offset below 5 words, or past the end, yields null', () => {
    const t1 = tcp({ sport: 1, dport: 80, seq: 0, payload: 'abc' });
    t1[12] = 4 << 4;
    expect(decodeFrame('RAW', ipv4({ src: '1.1.1.1', dst: IMDS4 }, t1))).toBeNull();
    const t2 = tcp({ sport: 1, dport: 80, seq: 0, payload: 'abc' });
    t2[12] = 15 << 4;
    expect(decodeFrame('RAW', ipv4({ src: '1.1.1.1', dst: IMDS4 }, t2))).toBeNull();
  });

  it('the payload is a copy, not a view of the capture buffer', () => {
    const f = frame('RAW', v4seg);
    const s = decodeFrame('RAW', f)!;
    f.fill(0);
    expect(s.payload.toString('latin1')).toBe(HTTP);
  });

  it('truncated TCP header yields null', () => {
    const ip = ipv4({ src: '1.1.1.1', dst: IMDS4 }, tcp({ sport: 1, dport: 80, seq: 0 }));
    expect(decodeFrame('RAW', ip.subarray(0, 39))).toBeNull();
  });
});

describe('decodeFrame: IPv6 extension headers', () => {
  const t = tcp({ sport: 5555, dport: 80, seq: 42, payload: 'v6data' });

  it('skips hop-by-hop, routing and destination options', () => {
    const p = ipv6({ src: 'fd00::2', dst: IMDS6, ext: [{ type: 0 }, { type: 43, len8: 1 }, { type: 60, len8: 2 }] }, t);
    const s = decodeFrame('RAW', p);
    expect(s?.sport).toBe(5555);
    expect(s?.seq).toBe(42);
    expect(s?.payload.toString()).toBe('v6data');
  });

  it('fragment header (44) and non-TCP next headers yield null', () => {
    expect(decodeFrame('RAW', ipv6({ src: 'fd00::2', dst: IMDS6, ext: [{ type: 44 }] }, t))).toBeNull();
    expect(decodeFrame('RAW', ipv6({ src: 'fd00::2', dst: IMDS6, next: 17 }, t))).toBeNull();
    expect(decodeFrame('RAW', ipv6({ src: 'fd00::2', dst: IMDS6, next: 58 }, t))).toBeNull();
  });

  it('an extension header running past the packet yields null', () => {
    const p = ipv6({ src: 'fd00::2', dst: IMDS6, ext: [{ type: 0 }] }, t);
    expect(decodeFrame('RAW', p)).not.toBeNull();
    p[41] = 200; // hop-by-hop length claims 1608 bytes
    expect(decodeFrame('RAW', p)).toBeNull();
    const cut = ipv6({ src: 'fd00::2', dst: IMDS6, ext: [{ type: 0 }] }, Buffer.alloc(0));
    expect(decodeFrame('RAW', cut.subarray(0, 44))).toBeNull();
  });

  it('payload length bounds the segment (trailing link padding ignored)', () => {
    const p = ipv6({ src: 'fd00::2', dst: IMDS6 }, t);
    const s = decodeFrame('RAW', Buffer.concat([p, Buffer.from('trailer')]));
    expect(s?.payload.toString()).toBe('v6data');
  });

  it('a header chain longer than 8 extension headers is not followed', () => {
    const ext = Array.from({ length: 9 }, () => ({ type: 60 }));
    expect(decodeFrame('RAW', ipv6({ src: 'fd00::2', dst: IMDS6, ext }, t))).toBeNull();
    const ok = Array.from({ length: 8 }, () => ({ type: 60 }));
    expect(decodeFrame('RAW', ipv6({ src: 'fd00::2', dst: IMDS6, ext: ok }, t))?.payload.toString()).toBe('v6data');
  });

  it('IPv6 header shorter than 40 bytes yields null', () => {
    const p = ipv6({ src: 'fd00::2', dst: IMDS6 }, t);
    expect(decodeFrame('RAW', p.subarray(0, 39))).toBeNull();
  });
});

describe('ipv6ToString (RFC 5952)', () => {
  const cases: Array<[string, string]> = [
    ['0:0:0:0:0:0:0:0', '::'],
    ['0:0:0:0:0:0:0:1', '::1'],
    ['fd00:ec2:0:0:0:0:0:254', 'fd00:ec2::254'],
    ['2001:db8:0:0:1:0:0:1', '2001:db8::1:0:0:1'], // first of equal-length runs
    ['2001:0:0:1:0:0:0:1', '2001:0:0:1::1'], // longest run wins
    ['2001:db8:0:1:1:1:1:1', '2001:db8:0:1:1:1:1:1'], // a single zero word is not compressed
    ['fe80:0:0:0:fc:ff:fe00:1', 'fe80::fc:ff:fe00:1'],
    ['1:0:0:0:0:0:0:0', '1::'],
    ['0:0:0:0:0:ffff:a9fe:a9fe', '::ffff:169.254.169.254'],
    ['ABCD:EF01:2345:6789:ABCD:EF01:2345:6789', 'abcd:ef01:2345:6789:abcd:ef01:2345:6789'],
    ['0:1:2:3:4:5:6:0', '0:1:2:3:4:5:6:0'],
    ['0:0:1:0:0:0:0:0', '0:0:1::'],
  ];
  for (const [input, want] of cases) {
    it(`${input} -> ${want}`, () => {
      expect(ipv6ToString(Buffer.from(v6Bytes(input)), 0)).toBe(want);
    });
  }

  it('reads at an offset', () => {
    const b = Buffer.concat([Buffer.from([9, 9, 9]), Buffer.from(v6Bytes('fd00:ec2::254'))]);
    expect(ipv6ToString(b, 3)).toBe('fd00:ec2::254');
  });
});

describe('decodeFrame: urgent data', () => {
  it('the URG flag gives the urgent pointer; without it there is none', () => {
    const urg = decodeFrame('ETHERNET', frame('ETHERNET', { ...v4seg, flags: { ack: true, urg: true }, urgentPointer: 7 }))!;
    expect(urg.urgent).toBe(7);
    const zero = decodeFrame('ETHERNET', frame('ETHERNET', { ...v6seg, flags: { ack: true, urg: true }, urgentPointer: 0 }))!;
    expect(zero.urgent).toBe(0);
    const none = decodeFrame('ETHERNET', frame('ETHERNET', { ...v4seg, urgentPointer: 7 }))!;
    expect(none.urgent).toBeUndefined();
  });
});
