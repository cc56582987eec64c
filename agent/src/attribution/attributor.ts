/** What every attribution backend (/proc, eBPF) answers: the process behind a connection. */
import type { Tuple } from '../net.js';
import type { ProcessInfo } from '../record.js';

export type { Tuple };

export interface Attributor {
  /** The process behind a connection first seen at atMs (default: now). */
  lookup(t: Tuple, atMs?: number): Promise<ProcessInfo>;
  /**
   * For a backend whose answer never needs a wait and is final (a capture file's: no process can be
   * found): that answer, so records are made without a look-up.
   */
  answerNow?(t: Tuple): ProcessInfo;
}
