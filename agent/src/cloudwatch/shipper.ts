/**
 * Ships the records the agent writes (the same JSON lines as the log file) to CloudWatch Logs, off
 * the hot path: write() only queues. A batch goes out when one is full or every flush interval, one
 * request at a time so a stream stays in order; a failed batch is kept and sent again with
 * exponential backoff (throttling, 5xx, network), so a transient failure loses nothing. The queue is
 * bounded (the oldest are dropped and counted beyond it). close() sends what is left, within a
 * bounded wait. Credentials come from the SDK's default provider chain.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import {
  CloudWatchLogsClient, CreateLogGroupCommand, CreateLogStreamCommand, PutLogEventsCommand, PutRetentionPolicyCommand,
  type PutLogEventsCommandOutput,
} from '@aws-sdk/client-cloudwatch-logs';
import { DEFAULTS } from '../defaults.js';
import type { OutputRecord } from '../record.js';
import type { LineSink } from '../output/writer.js';
import {
  backoffMs, batchLength, describeError, failureAction, type BatchLimits, type QueuedEvent,
} from './batch.js';

type Sender = Pick<CloudWatchLogsClient, 'send'>;

export interface CloudWatchOptions {
  logGroup: string;
  logStream: string;
  region: string;
  /** Endpoint override (tests, VPC endpoints). */
  endpoint?: string;
  /** Create the log group when it is missing (`--cloudwatch-create-group`; logs:CreateLogGroup). */
  createGroup?: boolean;
  /** Retention set on a group this agent created (`--cloudwatch-retention-days`; logs:PutRetentionPolicy). */
  retentionDays?: number;
  /** For tests: the client to send through (default: a CloudWatchLogsClient). */
  client?: Sender;
  flushIntervalMs?: number;
  maxQueueBytes?: number;
  limits?: Partial<BatchLimits>;
  retryBaseMs?: number;
  retryMaxMs?: number;
  now?: () => number;
  onError(message: string): void;
  onNotice(message: string): void;
}

export interface CloudWatchCounters {
  /** Events the service accepted. */
  sent: number;
  /** Batches the service refused as invalid (their events are counted in dropped). */
  failed_batches: number;
  /** Requests sent again after a transient failure. */
  retries: number;
  /** Events waiting to be sent (queued or in flight). */
  queued: number;
  /** Events given up: queue full, too large, too old, refused by the service, unsent at exit. */
  dropped: number;
}

const CW = DEFAULTS.cloudwatch;

/**
 * The agent never calls IMDSv1, also not through its AWS SDK. When the token PUT is refused
 * (403/404/405) or times out, the SDK's instance-metadata credential provider falls back to IMDSv1
 * unless told not to: by the `ec2MetadataV1Disabled` option (handed from the client's configuration
 * to the default credential chain) and by AWS_EC2_METADATA_V1_DISABLED, which
 * @smithy/credential-provider-imds reads from process.env at each credential fetch (that also covers
 * providers built from a config profile, e.g. `credential_source = Ec2InstanceMetadata`).
 * `defaultsMode: 'legacy'` (the SDK's default) pins it against AWS_DEFAULTS_MODE=auto, which would
 * have the SDK look the region up in the IMDS.
 */
export const IMDS_V2_ONLY = { ec2MetadataV1Disabled: true, defaultsMode: 'legacy' } as const;

export function forbidImdsV1(env: NodeJS.ProcessEnv = process.env): void {
  env.AWS_EC2_METADATA_V1_DISABLED = 'true';
}

export class CloudWatchShipper implements LineSink {
  private readonly client: Sender;
  private readonly limits: BatchLimits;
  private readonly now: () => number;
  private queue: QueuedEvent[] = [];
  private head = 0;
  private queueBytes = 0;
  private inflight: QueuedEvent[] = [];
  private lastTs = 0;
  private streamReady = false;
  private timer: NodeJS.Timeout | null = null;
  private running: Promise<void> | null = null;
  private closing = false;
  private readonly stop = new AbortController();
  private failing = false;
  /** The cause last reported while failing: a different one is reported too. */
  private failCause = '';
  private tooLargeReported = false;
  private overflowReported = false;
  readonly counters = { sent: 0, failed_batches: 0, retries: 0, dropped: 0 };

  constructor(private readonly o: CloudWatchOptions) {
    forbidImdsV1();
    this.client = o.client ?? new CloudWatchLogsClient({
      ...IMDS_V2_ONLY,
      region: o.region,
      ...(o.endpoint ? { endpoint: o.endpoint } : {}),
      maxAttempts: 1, // retries are ours: counted, with backoff, and without losing the batch
      requestHandler: { requestTimeout: CW.requestTimeoutMs, connectionTimeout: CW.requestTimeoutMs },
    });
    this.limits = {
      maxEvents: CW.maxBatchEvents, maxBytes: CW.maxBatchBytes, overheadBytes: CW.eventOverheadBytes,
      maxSpanMs: CW.maxBatchSpanMs, ...o.limits,
    };
    this.now = o.now ?? Date.now;
  }

  get queued(): number {
    return this.queue.length - this.head + this.inflight.length;
  }

  stats(): CloudWatchCounters {
    return { ...this.counters, queued: this.queued };
  }

  /** Queue one line (with or without its newline). Never blocks, never throws. */
  write(line: string, _rec?: OutputRecord): void {
    if (this.closing) return;
    const message = line.endsWith('\n') ? line.slice(0, -1) : line;
    const bytes = Buffer.byteLength(message);
    if (bytes > CW.maxEventBytes || bytes + this.limits.overheadBytes > this.limits.maxBytes) {
      this.counters.dropped++;
      if (!this.tooLargeReported) this.o.onError(`a record of ${bytes} bytes is larger than a CloudWatch Logs event may be; not shipped (counted in stats cloudwatch.dropped)`);
      this.tooLargeReported = true;
      return;
    }
    // Chronological order is required within a batch: the event time is when the agent wrote the
    // record (the record's own "time" field keeps when the call was seen).
    this.lastTs = Math.max(this.lastTs, this.now());
    this.queue.push({ message, timestamp: this.lastTs, bytes });
    this.queueBytes += bytes;
    const max = this.o.maxQueueBytes ?? CW.maxQueueBytes;
    while (this.queueBytes > max && this.queue.length - this.head > 1) {
      this.queueBytes -= this.queue[this.head].bytes;
      this.head++;
      this.counters.dropped++;
      if (!this.overflowReported) this.o.onError(`CloudWatch Logs queue full (${max} bytes); dropping the oldest records (counted in stats cloudwatch.dropped)`);
      this.overflowReported = true;
    }
    if (this.batchFull()) this.kick(false);
    else this.arm();
  }

  /** Events already queued fill a batch. */
  private batchFull(): boolean {
    const n = this.queue.length - this.head;
    return n >= this.limits.maxEvents || this.queueBytes + n * this.limits.overheadBytes > this.limits.maxBytes;
  }

  private arm(): void {
    if (this.timer || this.running || this.closing || this.queued === 0) return;
    this.timer = setTimeout(() => { this.timer = null; this.kick(true); }, this.o.flushIntervalMs ?? CW.flushIntervalMs);
    this.timer.unref();
  }

  private kick(force: boolean): void {
    if (this.running) return;
    if (this.timer) { clearTimeout(this.timer); this.timer = null; }
    this.running = this.pump(force).finally(() => {
      this.running = null;
      if (this.batchFull() && !this.closing) this.kick(false);
      else this.arm();
    });
  }

  /** Send batches: the first one even if not full when forced (timer, exit), then every full one. */
  private async pump(force: boolean): Promise<void> {
    while (!this.stop.signal.aborted) {
      if (this.inflight.length === 0) {
        const waiting = this.queue.length - this.head;
        if (waiting === 0) return;
        const n = batchLength(this.queue, this.head, this.limits);
        if (!force && !this.closing && n === waiting && !this.batchFull()) return;
        this.inflight = this.queue.slice(this.head, this.head + n);
        for (const e of this.inflight) this.queueBytes -= e.bytes;
        this.head += n;
        if (this.head > 4096 && this.head * 2 > this.queue.length) {
          this.queue = this.queue.slice(this.head);
          this.head = 0;
        }
      }
      await this.sendInflight();
      force = false;
    }
  }

  /** Send the batch in flight until it is accepted, refused, or the exit wait runs out. */
  private async sendInflight(): Promise<void> {
    for (let attempt = 0; this.inflight.length > 0 && !this.stop.signal.aborted; attempt++) {
      this.dropTooOld();
      if (this.inflight.length === 0) return;
      try {
        if (!this.streamReady) await this.createStream();
        const out = await this.client.send(new PutLogEventsCommand({
          logGroupName: this.o.logGroup, logStreamName: this.o.logStream,
          logEvents: this.inflight.map((e) => ({ timestamp: e.timestamp, message: e.message })),
        }), { abortSignal: this.stop.signal });
        this.accepted(out);
        return;
      } catch (err) {
        if (this.stop.signal.aborted) return;
        const action = failureAction(err);
        if (action === 'accepted') { this.accepted(undefined); return; }
        if (action === 'drop') {
          this.counters.failed_batches++;
          this.counters.dropped += this.inflight.length;
          this.o.onError(`CloudWatch Logs refused a batch of ${this.inflight.length} records (${describeError(err)}); dropped`);
          this.inflight = [];
          return;
        }
        if (action === 'create-stream') {
          this.streamReady = false; // deleted under us: create it again (at once the first time)
          if (attempt === 0) { this.counters.retries++; continue; }
        }
        this.counters.retries++;
        const cause = failureCause(err);
        if (!this.failing || cause !== this.failCause) {
          this.o.onError(`cannot send records to CloudWatch Logs (${this.where()}): ${describeError(err)}; ${this.failing ? 'the cause changed; ' : ''}keeping them and retrying`);
        }
        this.failing = true;
        this.failCause = cause;
        try {
          await sleep(backoffMs(attempt, this.o.retryBaseMs ?? CW.retryBaseMs, this.o.retryMaxMs ?? CW.retryMaxMs),
            undefined, { signal: this.stop.signal, ref: false });
        } catch { return; /* exit wait ran out */ }
      }
    }
  }

  /** Group, stream and region, for messages: which of several regions or accounts is wrong. */
  private where(): string {
    return `group ${this.o.logGroup}, stream ${this.o.logStream}, region ${this.o.region}${this.o.endpoint ? `, endpoint ${this.o.endpoint}` : ''}`;
  }

  private async createStream(): Promise<void> {
    const stream = (): Promise<unknown> => this.client.send(
      new CreateLogStreamCommand({ logGroupName: this.o.logGroup, logStreamName: this.o.logStream }), { abortSignal: this.stop.signal });
    try {
      await stream();
    } catch (err) {
      const name = (err as { name?: string }).name;
      if (name === 'ResourceNotFoundException' && this.o.createGroup) {
        await this.createGroup();
        await stream().catch((e: { name?: string }) => { if (e.name !== 'ResourceAlreadyExistsException') throw e; });
      } else if (name === 'ResourceNotFoundException') {
        throw Object.assign(new Error(`log group ${this.o.logGroup} does not exist in region ${this.o.region} (create it, or run with --cloudwatch-create-group; the agent creates only its log stream)`), { name: 'LogGroupMissing' });
      } else if (name !== 'ResourceAlreadyExistsException') {
        throw err;
      }
    }
    this.streamReady = true;
  }

  /** CreateLogGroup (another instance may win the race: fine), then its retention if asked. */
  private async createGroup(): Promise<void> {
    try {
      await this.client.send(new CreateLogGroupCommand({ logGroupName: this.o.logGroup }), { abortSignal: this.stop.signal });
    } catch (err) {
      if ((err as { name?: string }).name !== 'ResourceAlreadyExistsException') throw err;
      return; // someone else's group: its retention is theirs
    }
    let note = `created log group ${this.o.logGroup} in region ${this.o.region}`;
    if (this.o.retentionDays) {
      try {
        await this.client.send(new PutRetentionPolicyCommand({ logGroupName: this.o.logGroup, retentionInDays: this.o.retentionDays }),
          { abortSignal: this.stop.signal });
        note += ` with a retention of ${this.o.retentionDays} days`;
      } catch (err) {
        this.o.onError(`created log group ${this.o.logGroup} in region ${this.o.region} but could not set its retention to ${this.o.retentionDays} days: ${describeError(err)} (needs logs:PutRetentionPolicy); its events are kept forever until it is set`);
      }
    }
    this.o.onNotice(note);
  }

  private accepted(out: PutLogEventsCommandOutput | undefined): void {
    const n = this.inflight.length;
    const r = out?.rejectedLogEventsInfo;
    let rejected = 0;
    if (r) {
      const tooOld = Math.max(r.tooOldLogEventEndIndex ?? 0, r.expiredLogEventEndIndex ?? 0);
      const tooNew = r.tooNewLogEventStartIndex !== undefined ? n - r.tooNewLogEventStartIndex : 0;
      rejected = Math.min(n, tooOld + Math.max(0, tooNew));
    }
    this.counters.sent += n - rejected;
    this.counters.dropped += rejected;
    this.inflight = [];
    if (this.failing) {
      this.failing = false;
      this.o.onNotice(`CloudWatch Logs reachable again (${this.where()}); nothing was lost`);
    }
  }

  private dropTooOld(): void {
    const oldest = this.now() - CW.maxEventAgeMs;
    let k = 0;
    while (k < this.inflight.length && this.inflight[k].timestamp < oldest) k++;
    if (k > 0) {
      this.counters.dropped += k;
      this.inflight = this.inflight.slice(k);
    }
  }

  /** Send everything queued, waiting at most timeoutMs; what is left is counted as dropped. */
  async close(timeoutMs: number = CW.exitFlushMs): Promise<void> {
    if (this.closing) return;
    this.closing = true;
    if (this.timer) { clearTimeout(this.timer); this.timer = null; }
    const deadline = setTimeout(() => this.stop.abort(), timeoutMs);
    try {
      if (this.running) await this.running;
      if (this.queued > 0 && !this.stop.signal.aborted) {
        this.running = this.pump(true);
        await this.running;
        this.running = null;
      }
    } finally {
      clearTimeout(deadline);
      this.stop.abort();
      if (!this.o.client) (this.client as CloudWatchLogsClient).destroy();
    }
    const left = this.queued;
    if (left > 0) {
      this.counters.dropped += left;
      this.o.onError(`${left} records not shipped to CloudWatch Logs (${this.where()}) within ${timeoutMs} ms at exit (the log file, if any, has them)`);
    }
  }
}

/** What kind of failure: its error name and HTTP status (not the message, which varies per request). */
export function failureCause(err: unknown): string {
  const e = err as { name?: string; code?: string; $metadata?: { httpStatusCode?: number } };
  return `${e?.name ?? e?.code ?? 'Error'}/${e?.$metadata?.httpStatusCode ?? ''}`;
}
