/** Whether this process may capture packets: root, or CAP_NET_RAW in its effective set. Pure. */
const CAP_NET_RAW = 13n;

export function canCapture(uid: number, procStatus: string): boolean {
  if (uid === 0) return true;
  const m = /^CapEff:\s*([0-9a-f]+)$/m.exec(procStatus);
  return m ? ((BigInt(`0x${m[1]}`) >> CAP_NET_RAW) & 1n) === 1n : false;
}
