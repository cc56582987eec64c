/** The libpcap filter for the metadata service endpoints. Pure. */
export function captureFilter(ipv4: readonly string[], ipv6: readonly string[], port: number): string {
  const hosts = [...ipv4, ...ipv6].map((a) => `host ${a}`).join(' or ');
  return `tcp port ${port} and (${hosts})`;
}
