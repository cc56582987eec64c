/**
 * The output records: their types and pure builders. SCHEMA.md documents them; a test checks the
 * examples there against these types. Field names are a contract with users' scripts and queries:
 * add fields, never rename them.
 */
import type { Classification, Provider } from './classify.js';
import type { Ambiguity } from './wire/http-head.js';
import { isoTime } from './iso-time.js';

export type Attribution = 'ebpf' | 'proc' | 'none';

export interface Ancestor {
  pid: number;
  comm: string;
  argv: string[] | null;
  /** Present (true) when argv was cut at its bound (1024 bytes) or to fit the record. */
  argv_truncated?: boolean;
}

export interface ProcessInfo {
  attribution: Attribution;
  pid?: number;
  comm?: string;
  exe?: string | null;
  argv?: string[];
  argv_truncated?: boolean;
  uid?: number;
  user?: string | null;
  ppid?: number;
  ancestors?: Ancestor[];
  cgroup?: string | null;
  container?: ContainerInfo | null;
  systemd_unit?: string | null;
  /** The executable path was cut at the kernel walk's bound: `exe` holds its tail (`.../bin/x`). */
  exe_truncated?: boolean;
  /** A login session's unit (`session-N.scope`) as one caller: `user-UID.slice/session-*.scope`. */
  systemd_unit_group?: string;
  /** Why attribution is "none", in a few words. */
  reason?: string;
}

export interface ContainerInfo {
  runtime: string;
  id: string | null;
  pod_uid?: string;
  task_id?: string;
  /** Names a person recognises (found where Docker, the kubelet and the ECS agent keep them). */
  name?: string;
  k8s?: { namespace: string; pod: string; container: string | null };
  ecs?: { task_arn: string; family: string | null; revision: string | null; container: string | null };
}

export interface ConnectionInfo {
  src: string;
  sport: number;
  dst: string;
  dport: number;
  interface: string;
  family: 'ipv4' | 'ipv6';
  /** When the connection was NATed on its way out: the source address and port it left the host with. */
  nat?: { src: string; sport: number; interface: string };
}

export interface CallRecord {
  event: 'imds_call';
  time: string;
  imds_version: 'v1' | 'v2' | null;
  provider: Provider;
  /** null only on a record with wire_reason: the kernel saw the connection, the wire did not show its request. */
  request: {
    method: string;
    path: string;
    http_version: string;
    token_present: boolean;
    token_request: boolean;
    token_ttl_seconds?: number | null;
    user_agent: string | null;
    headers_truncated?: boolean;
    /** Why the request head cannot be trusted (the first reason found); such a request is IMDSv1. */
    ambiguity?: Ambiguity;
  } | null;
  response: {
    status: number | null;
    /** On token requests: IP TTL / hop limit of the answer as it reached the host (null: no answer seen). */
    ttl?: number | null;
    /** The answer was seen on the host but could not reach the caller. */
    dropped?: 'hop_limit';
  };
  connection: ConnectionInfo;
  process: ProcessInfo;
  /** Why this IMDSv1 call was made, when the agent can tell (an SDK falling back from IMDSv2). */
  v1_reason?: V1Reason;
  /** Present when the kernel saw this connection but the wire did not show its request: why. */
  wire_reason?: WireReason;
  /** On AWS calls: the SDK or tool that made it (from the User-Agent, else the executable) and what to do. */
  sdk?: SdkInfo;
  /** Fields shortened so the record fits in one CloudWatch Logs event (present only then). */
  truncated?: string[];
}

export type V1Reason = 'token_put_unanswered' | 'token_put_refused';

/**
 * Why a connection the kernel saw has no request read from the wire: capture was down
 * (`capture_gap`), libpcap or the capture helper dropped packets then (`capture_dropped`), or the
 * connection never crossed a captured interface (`not_captured`).
 */
export type WireReason = 'capture_gap' | 'capture_dropped' | 'not_captured';

export interface ReadyRecord {
  event: 'ready';
  time: string;
  version: string;
  pid: number;
  interface: string;
  link_type: string;
  /** How packets are captured: the native libpcap helper, or the `cap` binding (in process, or in a worker). */
  capture: 'helper' | 'cap' | 'cap-worker';
  backend: Attribution;
  backend_reason?: string;
  include_v2: boolean;
  log_file: string | null;
  /** Start of the process to this record, in milliseconds. */
  startup_ms: number;
  /** With the eBPF backend: time to load (verify) and attach the program. */
  ebpf?: { load_ms: number; attach_ms: number };
}

export interface StatsRecord {
  event: 'stats';
  time: string;
  uptime_s: number;
  packets: number;
  packets_undecodable: number;
  flows_open: number;
  flows_evicted: number;
  nat_duplicates: number;
  http_malformed: number;
  tcp_gaps: number;
  /** Bytes the flow table holds right now (bounded: see SCHEMA.md). */
  buffered_bytes: number;
  calls: { v1: number; v2: number; other: number };
  calls_unattributed: number;
  calls_dropped: number;
  /** Of calls_unattributed, those written without waiting for their caller: too many were waiting (a burst); present once one was. */
  calls_unattributed_overload?: number;
  records_written: number;
  write_errors: number;
  /** The agent's own IMDS calls, never reported as someone else's. */
  calls_self: number;
  /** The agent's own IMDS requests by version, whether written or not (never v1: see docs/cloudwatch.md). */
  calls_self_v1?: number;
  calls_self_v2?: number;
  /** Requests whose head was ambiguous (request.ambiguity), counted in `calls` as well. */
  calls_ambiguous?: number;
  /** TCP segments carrying bytes that differ from another copy of the same bytes. */
  tcp_overlap_conflicts?: number;
  /** TCP segments with urgent data (the URG flag). */
  tcp_urgent?: number;
  /** libpcap's counters (native helper only; since the capture process started). */
  pcap?: { received: number; dropped: number; if_dropped: number };
  /** With the eBPF backend. */
  kernel?: {
    loaded: boolean;
    events: number;
    events_lost: number;
    joined: number;
    proc_fallbacks: number;
    loader_restarts: number;
    events_evicted: number;
    /**
     * Events that came after a wire connection from their client port had been forgotten to keep the
     * bound (2,048 kept): taken as shown on the wire, a record only if capture was down or dropping then.
     */
    events_wire_forgotten?: number;
    /** Target connections from network namespaces the capture cannot see, dropped in the kernel. */
    events_filtered: number;
    /** Target connections over their source's budget in the kernel (not traced). */
    events_over_budget: number;
    /** Network namespaces judged unreachable from the capture (filtered) right now. */
    netns_filtered: number;
    /** The sources (network namespace + cgroup) with the most budget drops + lost events, most first. */
    sources_over_budget: Array<{ netns_ino: number; cgroup_id: string; cgroup: string | null; dropped: number; lost: number }>;
    /** Times the loader was down (the current time included), and their total, ms. */
    loader_gaps?: number;
    loader_gap_ms?: number;
    /** Calls made while the loader was down whose caller /proc could not name. */
    loader_gap_unattributed?: number;
  };
  /** Times capture was down (its process dead, not yet back), the current time included, and their total, ms. */
  capture_gaps?: number;
  capture_gap_ms?: number;
  /** With eBPF: connections the kernel saw that the wire did not show, by reason (recorded or not). */
  calls_unseen?: { capture_gap: number; capture_dropped: number; not_captured: number };
  /** Of calls_unseen, those beyond the record budget: counted only, no record. */
  calls_unseen_unrecorded?: number;
  /** Of calls_unseen.not_captured, those from network namespaces judged unreachable from the capture: counted only. */
  calls_unseen_filtered?: number;
  // --- the agent's own resources, log rotation, CloudWatch shipping ---
  /** The agent's CPU use since the previous stats record (100 = one core); from the first sample on. */
  cpu_percent?: number;
  /** The agent's resident memory, bytes. */
  rss_bytes?: number;
  /** The resident memory of the agent and its helper processes (capture helper, eBPF loader), bytes. */
  rss_tree_bytes?: number;
  /** The agent's anonymous resident memory (its own, without mapped files such as the node binary), bytes. */
  rss_anon_bytes?: number;
  /** Size-based rotations of the log file since start (with a log file). */
  log_rotations?: number;
  /** V8 heap in use and reserved, and memory outside it (Buffers), bytes. */
  heap_used_bytes?: number;
  heap_total_bytes?: number;
  external_bytes?: number;
  /** Records a destination could not take (a stdout reader that stopped, a log file that could not be written for long). */
  records_dropped?: { stdout: number; stderr: number; log_file: number };
  /** With --cloudwatch-log-group. */
  cloudwatch?: { sent: number; failed_batches: number; retries: number; queued: number; dropped: number };
}

export interface ErrorRecord {
  event: 'error';
  time: string;
  component: string;
  message: string;
}

/** Something worth knowing that is not a failure (a component recovered, a fallback was taken). */
export interface NoticeRecord {
  event: 'notice';
  time: string;
  component: string;
  message: string;
}

export type OutputRecord = CallRecord | ReadyRecord | StatsRecord | ErrorRecord | NoticeRecord;

export interface CallFacts {
  at: Date;
  classification: Classification;
  method: string;
  target: string;
  httpVersion: string;
  tokenPresent: boolean;
  tokenTtlSeconds: number | null;
  userAgent: string | null;
  headersTruncated: boolean;
  ambiguity?: Ambiguity | null;
  status: number | null;
  connection: ConnectionInfo;
  process: ProcessInfo;
}

export function buildCallRecord(f: CallFacts, redact: (s: string) => string): CallRecord {
  const rec: CallRecord & { request: NonNullable<CallRecord['request']> } = {
    event: 'imds_call',
    time: isoTime(f.at.getTime()),
    imds_version: f.classification.imdsVersion,
    provider: f.classification.provider,
    request: {
      method: f.method,
      path: redact(f.target),
      http_version: f.httpVersion,
      token_present: f.tokenPresent,
      token_request: f.classification.tokenRequest,
      user_agent: f.userAgent === null ? null : redact(f.userAgent),
    },
    response: { status: f.status },
    connection: f.connection,
    process: f.process,
  };
  if (f.classification.tokenRequest) rec.request.token_ttl_seconds = f.tokenTtlSeconds;
  if (f.headersTruncated) rec.request.headers_truncated = true;
  if (f.ambiguity) rec.request.ambiguity = f.ambiguity;
  return rec;
}

export function errorRecord(component: string, message: string, at = new Date()): ErrorRecord {
  return { event: 'error', time: at.toISOString(), component, message };
}

export function noticeRecord(component: string, message: string, at = new Date()): NoticeRecord {
  return { event: 'notice', time: at.toISOString(), component, message };
}

/** The AWS SDK or tool behind a call and what to do (advice/sdk.ts reads it from the User-Agent). */
export interface SdkInfo {
  /** The SDK or tool (`botocore`, `aws-sdk-java`, `curl`, …), or `unknown`. */
  name: string;
  /** Its version as the User-Agent gives it, or null. */
  version: string | null;
  /** The first version that supports IMDSv2 (AWS's published table), or null (no SDK, or unknown). */
  imdsv2_min: string | null;
  /** What to do, in one sentence. */
  advice: string;
}
