/**
 * The pipeline's own counters, in one object: every packet and every call is counted here once, at
 * the stage that decides about it. The stats record reads them (pipeline/stats.ts).
 */
import { SelfCalls } from './self-calls.js';

export class Counters {
  /** Frames pushed into the pipeline. */
  packets = 0;
  /** Frames the decoder could not read as TCP over IP. */
  undecodable = 0;
  /** Requests by version as classified (re-counted when a request turns out ambiguous). */
  v1 = 0;
  v2 = 0;
  other = 0;
  /** Requests that are ambiguous below or in HTTP (counted as IMDSv1). */
  ambiguous = 0;
  /** Records written whose caller was not found. */
  unattributed = 0;
  /** Of those, the ones not found while the eBPF loader was down. */
  loaderGapUnattributed = 0;
  /** The agent's own calls (never written). */
  self = 0;
  /** The agent's own calls by version; an IMDSv1 one raises an error record. */
  readonly selfCalls = new SelfCalls();

  /** Count a request by the version it was classified as. */
  version(v: 'v1' | 'v2' | null, by = 1): void {
    if (v === 'v1') this.v1 += by;
    else if (v === 'v2') this.v2 += by;
    else this.other += by;
  }
}
