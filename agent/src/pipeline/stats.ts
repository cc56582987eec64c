/**
 * The stats record, built in one place from the pipeline (its counters, flow table, waiting calls,
 * capture timeline, unseen calls) and from what the lifecycle owns (capture helper, eBPF, writer).
 */
import type { CaptureStats } from '../capture/framing.js';
import type { EbpfAttributor } from '../attribution/ebpf/attributor.js';
import type { StatsRecord } from '../record.js';
import type { Pipeline } from './pipeline.js';

export interface StatsSources {
  pipeline: Pipeline;
  nowMs: number;
  startedAt: number;
  writer: { written: number; writeErrors: number };
  pcap: CaptureStats | null;
  ebpf: EbpfAttributor | null;
  /** More fields from outside the tracer (own CPU/RSS, log rotation, CloudWatch). */
  extra?: Partial<StatsRecord>;
}

export function buildStats(s: StatsSources): StatsRecord {
  const { pipeline: p } = s;
  const c = p.counters;
  const f = p.flows.stats;
  const st: StatsRecord = {
    event: 'stats', time: new Date(s.nowMs).toISOString(),
    uptime_s: Math.round((s.nowMs - s.startedAt) / 1000),
    packets: c.packets, packets_undecodable: c.undecodable,
    flows_open: p.flows.size, flows_evicted: f.flowsEvicted, nat_duplicates: f.natDuplicates,
    http_malformed: f.malformed, tcp_gaps: f.gaps, buffered_bytes: f.bufferedBytes,
    calls: { v1: c.v1, v2: c.v2, other: c.other },
    calls_unattributed: c.unattributed, calls_dropped: p.calls.forced,
    records_written: s.writer.written, write_errors: s.writer.writeErrors,
    calls_self: c.self,
    calls_self_v1: c.selfCalls.v1, calls_self_v2: c.selfCalls.v2,
    calls_ambiguous: c.ambiguous, tcp_overlap_conflicts: f.overlapConflicts, tcp_urgent: f.urgent,
    capture_gaps: p.timeline.gapCount(), capture_gap_ms: p.timeline.gapMs(s.nowMs),
  };
  if (p.calls.unattributedOverload > 0) st.calls_unattributed_overload = p.calls.unattributedOverload;
  if (s.pcap) st.pcap = {
    received: s.pcap.received, dropped: s.pcap.dropped + s.pcap.queueDropped,
    if_dropped: s.pcap.ifDropped,
  };
  if (s.ebpf) {
    const k = s.ebpf.counters;
    st.kernel = { loaded: s.ebpf.loaded, events: k.events, events_lost: k.lost, joined: k.joined,
      proc_fallbacks: k.fallbacks, loader_restarts: k.restarts, events_evicted: s.ebpf.joinsEvicted,
      events_wire_forgotten: s.ebpf.wireForgotten,
      events_filtered: k.filtered, events_over_budget: k.overBudget, netns_filtered: s.ebpf.netnsFiltered,
      sources_over_budget: s.ebpf.sourcesOverBudget };
    const g = s.ebpf.gapTotals();
    Object.assign(st.kernel, { loader_gaps: g.gaps, loader_gap_ms: g.gapMs, loader_gap_unattributed: c.loaderGapUnattributed });
    st.calls_unseen = { ...p.unseen.counts };
    st.calls_unseen_unrecorded = p.unseen.unrecorded;
    st.calls_unseen_filtered = p.unseen.filtered;
  }
  Object.assign(st, s.extra);
  return st;
}
