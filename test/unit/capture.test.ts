import { describe, it, expect } from 'vitest';
import { readFileSync } from 'node:fs';
import { networkInterfaces } from 'node:os';
import { interfaceFor, type InterfaceTable } from '../../agent/src/capture/interfaces.js';
import { captureFilter } from '../../agent/src/capture/filter.js';
import { canCapture } from '../../agent/src/privileges.js';

type Net = NonNullable<InterfaceTable[string]>[number];
const v4 = (address: string, cidr: string): Net => ({
  address, netmask: '', family: 'IPv4', mac: '00:00:00:00:00:00', internal: false, cidr,
});
const v6 = (address: string, cidr: string | null): Net => ({
  address, netmask: '', family: 'IPv6', mac: '00:00:00:00:00:00', internal: false, cidr, scopeid: 0,
});

const TABLE: InterfaceTable = {
  lo: [v4('127.0.0.1', '127.0.0.1/8'), v6('::1', '::1/128')],
  eth0: [v4('10.0.0.5', '10.0.0.5/24'), v6('fd00::2', 'fd00::2/64'), v6('fe80::fc:ff:fe00:1', 'fe80::fc:ff:fe00:1/64')],
  docker0: [v4('172.17.0.1', '172.17.0.1/16'), v6('fd00:dead:beef::1', 'fd00:dead:beef::1/48')],
  veth1: [v4('172.17.0.2', '172.17.0.2/32')],
  tun0: [v4('100.64.0.9', '100.64.0.9/0')],
};

describe('interfaceFor', () => {
  it('exact address match', () => {
    expect(interfaceFor('10.0.0.5', TABLE)).toBe('eth0');
    expect(interfaceFor('127.0.0.1', TABLE)).toBe('lo');
    expect(interfaceFor('::1', TABLE)).toBe('lo');
    expect(interfaceFor('fd00::2', TABLE)).toBe('eth0');
  });

  it('exact match beats an earlier subnet match', () => {
    // 172.17.0.2 lies in docker0's /16 (listed first) but is veth1's own address.
    expect(interfaceFor('172.17.0.2', TABLE)).toBe('veth1');
  });

  it('IPv4 subnet match (a container behind a bridge)', () => {
    expect(interfaceFor('172.17.5.9', TABLE)).toBe('docker0');
    expect(interfaceFor('10.0.0.77', TABLE)).toBe('eth0');
    expect(interfaceFor('127.5.5.5', TABLE)).toBe('lo');
  });

  it('IPv6 subnet match', () => {
    expect(interfaceFor('fd00::99', TABLE)).toBe('eth0');
    expect(interfaceFor('fd00:dead:beef:12::5', TABLE)).toBe('docker0');
    expect(interfaceFor('fe80::1234', TABLE)).toBe('eth0');
  });

  it('the most specific matching subnet wins, as routing would choose; /0 matches anything of its family', () => {
    expect(interfaceFor('8.8.8.8', TABLE)).toBe('tun0');
    const t: InterfaceTable = { a: [v4('10.0.0.1', '10.0.0.1/8')], b: [v4('10.1.0.1', '10.1.0.1/16')] };
    expect(interfaceFor('10.1.2.3', t)).toBe('b');
    expect(interfaceFor('10.2.2.3', t)).toBe('a');
  });

  it('no match: null; families never mix', () => {
    const t: InterfaceTable = { eth0: [v4('10.0.0.5', '10.0.0.5/24'), v6('fd00::2', 'fd00::2/64')] };
    expect(interfaceFor('192.168.1.1', t)).toBeNull();
    expect(interfaceFor('2001:db8::1', t)).toBeNull();
    expect(interfaceFor('::ffff:10.0.0.7', t)).toBeNull();
    expect(interfaceFor('10.0.0.7', { x: [v6('::', '::/0')] })).toBeNull();
  });

  it('subnet boundaries', () => {
    const t: InterfaceTable = { n: [v4('192.168.1.129', '192.168.1.129/25')], m: [v6('2001:db8:0:1::1', '2001:db8:0:1::1/63')] };
    expect(interfaceFor('192.168.1.128', t)).toBe('n');
    expect(interfaceFor('192.168.1.255', t)).toBe('n');
    expect(interfaceFor('192.168.1.127', t)).toBeNull();
    expect(interfaceFor('2001:db8::5', t)).toBe('m');
    expect(interfaceFor('2001:db8:0:2::5', t)).toBeNull();
  });

  it('entries without a cidr, undefined lists and scoped addresses', () => {
    const t: InterfaceTable = {
      none: undefined, nocidr: [v4('10.0.0.5', null as unknown as string)],
      ll: [v6('fe80::1%eth0', 'fe80::1/64')],
    };
    expect(interfaceFor('10.0.0.5', t)).toBe('nocidr');
    expect(interfaceFor('10.0.0.6', t)).toBeNull();
    expect(interfaceFor('fe80::99', t)).toBe('ll');
  });

  it('works with this machine\'s real interface table', () => {
    const real = networkInterfaces();
    for (const [name, nets] of Object.entries(real)) {
      for (const n of nets ?? []) {
        const got = interfaceFor(n.address, real);
        // Exact match returns the first interface that owns the address.
        const owner = Object.entries(real).find(([, ns]) => ns?.some((x) => x.address === n.address))![0];
        expect(got).toBe(owner);
        if (n.address === '127.0.0.1') expect(name).toBe('lo');
      }
    }
  });
});

describe('captureFilter', () => {
  it('tcp on the port, to or from any of the service addresses', () => {
    expect(captureFilter(['169.254.169.254'], ['fd00:ec2::254'], 80))
      .toBe('tcp port 80 and (host 169.254.169.254 or host fd00:ec2::254)');
    expect(captureFilter(['169.254.169.254'], [], 8080)).toBe('tcp port 8080 and (host 169.254.169.254)');
  });
});

describe('canCapture', () => {
  const status = (capEff: string): string => `Name:\tnode\nCapInh:\t0000000000000000\nCapPrm:\t${capEff}\nCapEff:\t${capEff}\nCapBnd:\t000001ffffffffff\n`;

  it('root can always capture', () => {
    expect(canCapture(0, '')).toBe(true);
    expect(canCapture(0, status('0000000000000000'))).toBe(true);
  });

  it('non-root needs CAP_NET_RAW (bit 13) in CapEff', () => {
    expect(canCapture(1000, status('0000000000002000'))).toBe(true);
    expect(canCapture(1000, status('000001fffeffffff'))).toBe(true);
    expect(canCapture(1000, status('0000000000001000'))).toBe(false); // CAP_NET_ADMIN only is bit 12
    expect(canCapture(1000, status('0000000000000000'))).toBe(false);
    expect(canCapture(1000, status('ffffffffffffdfff'))).toBe(false);
  });

  it('looks at CapEff, not CapPrm or CapBnd', () => {
    const s = 'CapPrm:\t0000000000002000\nCapEff:\t0000000000000000\nCapBnd:\t0000000000002000\n';
    expect(canCapture(1000, s)).toBe(false);
  });

  it('no CapEff line: cannot capture', () => {
    expect(canCapture(1000, 'Name:\tx\n')).toBe(false);
  });

  it('agrees with this process\'s real status', () => {
    const text = readFileSync('/proc/self/status', 'utf8');
    const eff = BigInt(`0x${/^CapEff:\s*([0-9a-f]+)$/m.exec(text)![1]}`);
    expect(canCapture(1000, text)).toBe(((eff >> 13n) & 1n) === 1n);
  });
});
