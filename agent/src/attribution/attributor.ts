/** What every attribution backend (/proc, eBPF) answers: the process behind a connection. */
import type { Tuple } from '../net.js';
import type { ProcessInfo } from '../record.js';

export type { Tuple };

export interface Attributor {
  /** The process behind a connection first seen at atMs (default: now). */
  lookup(t: Tuple, atMs?: number): Promise<ProcessInfo>;
}
