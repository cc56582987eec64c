/**
 * Addresses and connections as text, in one place: the 4-tuple of a TCP connection, the keys it is
 * found by, and the text form of IPv6 and IPv4-mapped addresses.
 */

/** A TCP connection as its client opened it. `sport` is the server's port. */
export interface Tuple {
  client: string;
  cport: number;
  server: string;
  sport: number;
  /** The client's initial sequence number when the wire saw its SYN (joins NATed connections). */
  isn?: number | null;
}

/** IPv4-mapped IPv6 ("::ffff:1.2.3.4") as plain IPv4, everything else unchanged. */
export function unmapV4(addr: string): string {
  if (addr.charCodeAt(0) !== 0x3a) return addr; // not "::…": nothing to unmap (the common case, without a regex)
  const m = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(addr);
  return m ? m[1] : addr;
}

/** RFC 5952 text form (lower case, longest zero run compressed), as Node prints addresses. */
export function ipv6ToString(b: Buffer, off: number): string {
  const words: number[] = [];
  for (let i = 0; i < 8; i++) words.push(b.readUInt16BE(off + i * 2));
  // IPv4-mapped: ::ffff:a.b.c.d
  if (words.slice(0, 5).every((w) => w === 0) && words[5] === 0xffff) {
    return `::ffff:${b[off + 12]}.${b[off + 13]}.${b[off + 14]}.${b[off + 15]}`;
  }
  let bestStart = -1;
  let bestLen = 0;
  for (let i = 0; i < 8;) {
    if (words[i] !== 0) { i++; continue; }
    let j = i;
    while (j < 8 && words[j] === 0) j++;
    if (j - i > bestLen && j - i >= 2) { bestStart = i; bestLen = j - i; }
    i = j;
  }
  const hex = words.map((w) => w.toString(16));
  if (bestStart < 0) return hex.join(':');
  const head = hex.slice(0, bestStart).join(':');
  const tail = hex.slice(bestStart + bestLen).join(':');
  return `${head}::${tail}`;
}

/** The key of a 4-tuple, IPv4-mapped addresses unmapped: the same connection seen by the wire, /proc or the kernel. */
export const tupleKey = (client: string, cport: number, server: string, sport: number): string =>
  `${unmapV4(client)}|${cport}|${unmapV4(server)}|${sport}`;

/** The key of a connection by its destination and client ISN (a NATed connection keeps its ISN). */
export const isnKey = (server: string, sport: number, isn: number): string =>
  `${unmapV4(server)}|${sport}|${isn >>> 0}`;

/** The key of a destination (server address and port). */
export const serverKey = (server: string, port: number): string => `${unmapV4(server)}|${port}`;

/** The key of a flow exactly as the wire carried it (addresses as decoded, not unmapped). */
export const wireKey = (client: string, cport: number, server: string, sport: number): string =>
  `${client}|${cport}|${server}|${sport}`;
