/**
 * The IMDS sends its answers with a small IP TTL / IPv6 hop limit (`HttpPutResponseHopLimit` for
 * token answers, 1 by default on many instances). The host sees such an answer arrive on its NIC;
 * if the caller is not the host's own stack (a container behind a bridge, NATed or routed), the
 * answer must still be forwarded, and forwarding a packet whose TTL is 1 drops it. Pure.
 */

/** `'hop_limit'` when an answer seen on the host with this TTL cannot reach its caller, else null. */
export function answerDropped(ttl: number | null, callerIsLocal: boolean): 'hop_limit' | null {
  return ttl !== null && ttl <= 1 && !callerIsLocal ? 'hop_limit' : null;
}
