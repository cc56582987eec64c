/**
 * The record schema at run time, tied to the TypeScript types: each object spec must name exactly
 * the keys of its type (a missing or extra key is a compile error). Tests validate SCHEMA.md's
 * examples and the lab's real records with validate().
 */
import type {
  Ancestor, CallRecord, ConnectionInfo, ContainerInfo, ErrorRecord, NoticeRecord, ProcessInfo, ReadyRecord, StatsRecord,
} from './record.js';
import { AMBIGUITIES } from './wire/http-head.js';

export type Spec =
  | 'string' | 'number' | 'boolean' | 'null'
  | { enum: readonly (string | number | boolean | null)[] }
  | { anyOf: Spec[] }
  | { array: Spec }
  | { object: Record<string, Spec>; optional?: readonly string[] };

type Shape<T> = { [K in keyof Required<T>]: Spec };
const obj = <T>(fields: Shape<T>, optional: readonly (keyof T & string)[] = []): Spec => ({ object: fields, optional });
const nullable = (s: Spec): Spec => ({ anyOf: [s, 'null'] });

const ancestor = obj<Ancestor>({ pid: 'number', comm: 'string', argv: nullable({ array: 'string' }), argv_truncated: 'boolean' },
  ['argv_truncated']);
const container = obj<ContainerInfo>({ runtime: 'string', id: nullable('string'), pod_uid: 'string', task_id: 'string',
  name: 'string',
  k8s: { object: { namespace: 'string', pod: 'string', container: nullable('string') } },
  ecs: { object: { task_arn: 'string', family: nullable('string'), revision: nullable('string'), container: nullable('string') } },
}, ['pod_uid', 'task_id', 'name', 'k8s', 'ecs']);
const processSpec = obj<ProcessInfo>({
  attribution: { enum: ['ebpf', 'proc', 'none'] }, pid: 'number', comm: 'string', exe: nullable('string'),
  argv: { array: 'string' }, argv_truncated: 'boolean', uid: 'number', user: nullable('string'), ppid: 'number',
  ancestors: { array: ancestor }, cgroup: nullable('string'), container: nullable(container),
  systemd_unit: nullable('string'), reason: 'string',
  exe_truncated: 'boolean', systemd_unit_group: 'string',
}, ['pid', 'comm', 'exe', 'argv', 'argv_truncated', 'uid', 'user', 'ppid', 'ancestors', 'cgroup', 'container',
  'systemd_unit', 'reason', 'exe_truncated', 'systemd_unit_group']);
const connection = obj<ConnectionInfo>({
  src: 'string', sport: 'number', dst: 'string', dport: 'number', interface: 'string', family: { enum: ['ipv4', 'ipv6'] },
  nat: obj<NonNullable<ConnectionInfo['nat']>>({ src: 'string', sport: 'number', interface: 'string' }),
}, ['nat']);

export const SCHEMAS: Record<string, Spec> = {
  imds_call: obj<CallRecord>({
    event: { enum: ['imds_call'] }, time: 'string', imds_version: { enum: ['v1', 'v2', null] },
    provider: { enum: ['aws', 'gce', 'azure', 'oci', 'openstack', 'digitalocean', 'hetzner', 'alibaba', 'unknown'] },
    request: nullable(obj<NonNullable<CallRecord['request']>>({
      method: 'string', path: 'string', http_version: 'string', token_present: 'boolean', token_request: 'boolean',
      token_ttl_seconds: nullable('number'), user_agent: nullable('string'), headers_truncated: 'boolean',
      ambiguity: { enum: AMBIGUITIES },
    }, ['token_ttl_seconds', 'headers_truncated', 'ambiguity'])),
    response: obj<CallRecord['response']>({ status: nullable('number'), ttl: nullable('number'), dropped: { enum: ['hop_limit'] } },
      ['ttl', 'dropped']),
    connection, process: processSpec,
    v1_reason: { enum: ['token_put_unanswered', 'token_put_refused'] },
    sdk: { object: { name: 'string', version: nullable('string'), imdsv2_min: nullable('string'), advice: 'string' } },
    truncated: { array: 'string' },
    wire_reason: { enum: ['capture_gap', 'capture_dropped', 'not_captured'] },
  }, ['v1_reason', 'sdk', 'truncated', 'wire_reason']),
  ready: obj<ReadyRecord>({
    event: { enum: ['ready'] }, time: 'string', version: 'string', pid: 'number', interface: 'string',
    link_type: 'string', capture: { enum: ['helper', 'cap', 'cap-worker'] }, backend: { enum: ['ebpf', 'proc', 'none'] }, backend_reason: 'string',
    include_v2: 'boolean', log_file: nullable('string'), startup_ms: 'number',
    ebpf: obj<NonNullable<ReadyRecord['ebpf']>>({ load_ms: 'number', attach_ms: 'number' }),
  }, ['backend_reason', 'ebpf']),
  stats: obj<StatsRecord>({
    event: { enum: ['stats'] }, time: 'string', uptime_s: 'number', packets: 'number', packets_undecodable: 'number',
    flows_open: 'number', flows_evicted: 'number', nat_duplicates: 'number', http_malformed: 'number',
    tcp_gaps: 'number', buffered_bytes: 'number', calls: obj<StatsRecord['calls']>({ v1: 'number', v2: 'number', other: 'number' }),
    calls_unattributed: 'number', calls_dropped: 'number', records_written: 'number', write_errors: 'number',
    calls_self: 'number', calls_self_v1: 'number', calls_self_v2: 'number', calls_ambiguous: 'number', tcp_overlap_conflicts: 'number', tcp_urgent: 'number',
    pcap: obj<NonNullable<StatsRecord['pcap']>>({ received: 'number', dropped: 'number', if_dropped: 'number' }),
    kernel: obj<NonNullable<StatsRecord['kernel']>>({
      loaded: 'boolean', events: 'number', events_lost: 'number', joined: 'number', proc_fallbacks: 'number',
      loader_restarts: 'number', events_evicted: 'number', events_wire_forgotten: 'number',
      events_filtered: 'number', events_over_budget: 'number', netns_filtered: 'number',
      sources_over_budget: { array: { object: { netns_ino: 'number', cgroup_id: 'string', cgroup: nullable('string'), dropped: 'number', lost: 'number' } } },
      loader_gaps: 'number', loader_gap_ms: 'number', loader_gap_unattributed: 'number',
    }, ['loader_gaps', 'loader_gap_ms', 'loader_gap_unattributed', 'events_wire_forgotten']),
    capture_gaps: 'number', capture_gap_ms: 'number', calls_unattributed_overload: 'number',
    calls_unseen: obj<NonNullable<StatsRecord['calls_unseen']>>({ capture_gap: 'number', capture_dropped: 'number', not_captured: 'number' }),
    calls_unseen_unrecorded: 'number', calls_unseen_filtered: 'number',
    cpu_percent: 'number', rss_bytes: 'number', rss_tree_bytes: 'number', rss_anon_bytes: 'number', log_rotations: 'number',
    heap_used_bytes: 'number', heap_total_bytes: 'number', external_bytes: 'number',
    records_dropped: obj<NonNullable<StatsRecord['records_dropped']>>({ stdout: 'number', stderr: 'number', log_file: 'number' }),
    cloudwatch: obj<NonNullable<StatsRecord['cloudwatch']>>({
      sent: 'number', failed_batches: 'number', retries: 'number', queued: 'number', dropped: 'number',
    }),
  }, ['kernel', 'pcap', 'cpu_percent', 'rss_bytes', 'rss_tree_bytes', 'rss_anon_bytes', 'log_rotations', 'cloudwatch', 'calls_self_v1', 'calls_self_v2', 'calls_ambiguous',
    'tcp_overlap_conflicts', 'tcp_urgent', 'capture_gaps', 'capture_gap_ms', 'calls_unattributed_overload', 'calls_unseen', 'calls_unseen_unrecorded', 'calls_unseen_filtered',
    'heap_used_bytes', 'heap_total_bytes', 'external_bytes', 'records_dropped']),
  error: obj<ErrorRecord>({ event: { enum: ['error'] }, time: 'string', component: 'string', message: 'string' }),
  notice: obj<NoticeRecord>({ event: { enum: ['notice'] }, time: 'string', component: 'string', message: 'string' }),
};

/** Problems of value against spec, as "path: what" strings; empty when it conforms. */
export function check(value: unknown, spec: Spec, path = '$'): string[] {
  if (typeof spec === 'string') {
    const ok = spec === 'null' ? value === null : typeof value === spec;
    return ok ? [] : [`${path}: expected ${spec}, got ${JSON.stringify(value)}`];
  }
  if ('enum' in spec) return spec.enum.includes(value as never) ? [] : [`${path}: ${JSON.stringify(value)} not in ${JSON.stringify(spec.enum)}`];
  if ('anyOf' in spec) {
    if (spec.anyOf.some((s) => check(value, s, path).length === 0)) return [];
    const others = spec.anyOf.filter((s) => s !== 'null');
    // A nullable value that is not null: say what is wrong with it.
    return value !== null && others.length === 1 ? check(value, others[0], path) : [`${path}: matches no alternative`];
  }
  if ('array' in spec) {
    if (!Array.isArray(value)) return [`${path}: expected array`];
    return value.flatMap((v, i) => check(v, spec.array, `${path}[${i}]`));
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return [`${path}: expected object`];
  const rec = value as Record<string, unknown>;
  const problems: string[] = [];
  for (const k of Object.keys(rec)) if (!(k in spec.object)) problems.push(`${path}.${k}: not in the schema`);
  for (const [k, s] of Object.entries(spec.object)) {
    if (!(k in rec)) {
      if (!spec.optional?.includes(k)) problems.push(`${path}.${k}: missing`);
      continue;
    }
    problems.push(...check(rec[k], s, `${path}.${k}`));
  }
  return problems;
}

export function validate(rec: unknown): string[] {
  const event = (rec as { event?: unknown })?.event;
  const spec = typeof event === 'string' ? SCHEMAS[event] : undefined;
  if (!spec) return [`$.event: unknown record kind ${JSON.stringify(event)}`];
  const problems = check(rec, spec);
  const r = rec as Record<string, unknown>;
  // A call's request is null exactly when the wire did not show it, and the record says why.
  if (event === 'imds_call' && (r.request === null) !== ('wire_reason' in r)) problems.push('$.request: null exactly when wire_reason is present');
  return problems;
}
