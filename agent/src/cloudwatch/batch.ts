/**
 * The pure parts of shipping to CloudWatch Logs: how many queued events make the next PutLogEvents
 * batch (within the service's limits), what to do after a failed request, how long to back off.
 */
import { backoffMs as backoff } from '../backoff.js';

export interface QueuedEvent {
  message: string;
  /** Milliseconds since the epoch; non-decreasing along the queue. */
  timestamp: number;
  /** UTF-8 size of message. */
  bytes: number;
}

export interface BatchLimits {
  maxEvents: number;
  maxBytes: number;
  /** Counted by the service for every event on top of its message. */
  overheadBytes: number;
  /** First and last event of a batch at most this far apart. */
  maxSpanMs: number;
}

/**
 * The number of events, from `start`, that go into the next batch: as many as fit within the count,
 * byte (message + overhead each) and time-span limits, and at least one when any is queued (a
 * single event never exceeds the byte limit: larger ones are refused when queued).
 */
export function batchLength(events: readonly QueuedEvent[], start: number, limits: BatchLimits): number {
  let n = 0;
  let bytes = 0;
  for (let i = start; i < events.length && n < limits.maxEvents; i++) {
    const e = events[i];
    const size = e.bytes + limits.overheadBytes;
    if (n > 0 && (bytes + size > limits.maxBytes || e.timestamp - events[start].timestamp > limits.maxSpanMs)) break;
    bytes += size;
    n++;
  }
  return n;
}

/** Bytes a batch of these events counts for, as the service measures it. */
export function batchBytes(events: readonly QueuedEvent[], overheadBytes: number): number {
  return events.reduce((sum, e) => sum + e.bytes + overheadBytes, 0);
}

/**
 * After a failed request: `create-stream` (the log stream is missing: create it, then send again),
 * `drop` (the service refuses this batch as invalid: sending it again cannot succeed), or `retry`
 * (throttling, 5xx, network, time-out — and access or credential errors, which an operator can fix
 * while the bounded queue waits), or `accepted` (the service already has this batch).
 */
export type FailureAction = 'create-stream' | 'drop' | 'retry' | 'accepted';

const INVALID = new Set(['InvalidParameterException', 'ValidationException', 'SerializationException',
  'InvalidSequenceTokenException']);

export function failureAction(err: unknown): FailureAction {
  const name = (err as { name?: unknown })?.name;
  if (name === 'ResourceNotFoundException') return 'create-stream';
  if (name === 'DataAlreadyAcceptedException') return 'accepted';
  if (typeof name === 'string' && INVALID.has(name)) return 'drop';
  return 'retry';
}

/** Exponential backoff with jitter: base·2^attempt capped at max, times a factor in [0.5, 1). */
export function backoffMs(attempt: number, baseMs: number, maxMs: number, random = Math.random()): number {
  return backoff(attempt, baseMs, maxMs, random);
}

/** A short, readable description of an SDK or network error. */
export function describeError(err: unknown): string {
  const e = err as { name?: string; message?: string; code?: string; $metadata?: { httpStatusCode?: number } };
  const status = e?.$metadata?.httpStatusCode;
  const name = e?.name && e.name !== 'Error' ? e.name : e?.code;
  const parts = [name, e?.message].filter((p): p is string => typeof p === 'string' && p.length > 0);
  const text = [...new Set(parts)].join(': ') || String(err);
  return status ? `${text} (HTTP ${status})` : text;
}
