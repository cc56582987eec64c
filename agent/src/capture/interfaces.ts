/** Which host interface a captured address belongs to, from the interfaces' addresses. Pure. */
import type { NetworkInterfaceInfo } from 'node:os';
import { isIPv4 } from 'node:net';

export type InterfaceTable = Record<string, NetworkInterfaceInfo[] | undefined>;

function v4ToInt(a: string): number {
  return a.split('.').reduce((n, o) => ((n << 8) | Number(o)) >>> 0, 0);
}

function v6ToBigInt(a: string): bigint {
  const [head, tail] = a.includes('::') ? a.split('::') : [a, ''];
  const h = head ? head.split(':') : [];
  const t = tail ? tail.split(':') : [];
  const words = [...h, ...Array(8 - h.length - t.length).fill('0'), ...t];
  return words.reduce((n, w) => (n << 16n) | BigInt(parseInt(w || '0', 16)), 0n);
}

function inSubnet(addr: string, net: NetworkInterfaceInfo): boolean {
  if (!net.cidr) return false;
  const bits = Number(net.cidr.split('/')[1]);
  if (isIPv4(addr)) {
    if (net.family !== 'IPv4') return false;
    const mask = bits === 0 ? 0 : (~0 << (32 - bits)) >>> 0;
    return ((v4ToInt(addr) & mask) >>> 0) === ((v4ToInt(net.address) & mask) >>> 0);
  }
  if (net.family !== 'IPv6' || addr.includes('.')) return false;
  const shift = BigInt(128 - bits);
  return (v6ToBigInt(addr) >> shift) === (v6ToBigInt(net.address.split('%')[0]) >> shift);
}

/**
 * The interface that owns the client address exactly, else the one whose subnet holds it (a
 * container behind a bridge; the most specific subnet when several do), else null.
 */
export function interfaceFor(clientAddr: string, table: InterfaceTable): string | null {
  let bySubnet: string | null = null;
  let bestBits = -1;
  for (const [name, nets] of Object.entries(table)) {
    for (const net of nets ?? []) {
      if (net.address === clientAddr) return name;
      const bits = Number(net.cidr?.split('/')[1] ?? -1);
      if (bits > bestBits && inSubnet(clientAddr, net)) { bySubnet = name; bestBits = bits; }
    }
  }
  return bySubnet;
}

/** Whether addr is an address of one of the host's interfaces (not merely in one of their subnets). */
export function isHostAddress(addr: string, table: InterfaceTable): boolean {
  return Object.values(table).some((nets) => (nets ?? []).some((net) => net.address.split('%')[0] === addr));
}
