/**
 * What `run` adds around the tracer: CloudWatch shipping (a line sink), the agent's own
 * CPU/RSS sampling, and the extra stats fields (own resources, log rotations, CloudWatch counters).
 * Kept here so run.ts only wires it.
 */
import { hostname } from 'node:os';
import { DEFAULTS } from '../defaults.js';
import type { StatsRecord } from '../record.js';
import { DeferredShipper } from '../cloudwatch/deferred.js';
import { imdsIdentity, resolveTarget, type InstanceIdentity } from '../cloudwatch/target.js';
import type { LogFile } from '../output/log-file.js';
import { ResourceSampler } from '../self/resources.js';
import type { LineSink, RecordWriter } from '../output/writer.js';

export interface ExtrasOptions {
  cloudwatchLogGroup?: string;
  cloudwatchLogStream?: string;
  cloudwatchRegion?: string;
  cloudwatchEndpoint?: string;
  /** Create the group when missing; with a retention (days) on a group it created. */
  cloudwatchCreateGroup?: boolean;
  cloudwatchRetentionDays?: number;
}

export interface ExtrasDeps {
  /** The instance identity (default: IMDSv2); tests inject one so the IMDS is never called. */
  identity?: () => Promise<InstanceIdentity>;
  env?: NodeJS.ProcessEnv;
}

/** The V8 heap now (cheap: no /proc read), for the stats record. */
export function heapFields(): { heap_used_bytes: number; heap_total_bytes: number; external_bytes: number } {
  const m = process.memoryUsage();
  return { heap_used_bytes: m.heapUsed, heap_total_bytes: m.heapTotal, external_bytes: m.external + m.arrayBuffers };
}

export class RunExtras {
  private notes: Array<{ kind: 'error' | 'notice'; m: string }> = [];
  readonly sinks: LineSink[] = [];

  private constructor(private readonly logFile: LogFile | null, public shipper: DeferredShipper | null,
    private readonly resources: ResourceSampler) {}

  /** Never waits for CloudWatch: its target is resolved in the background (see cloudwatch-deferred.ts). */
  static async create(o: ExtrasOptions, logFile: LogFile | null, deps: ExtrasDeps = {}): Promise<RunExtras> {
    let shipper: DeferredShipper | null = null;
    let writer: RecordWriter | null = null;
    const self = new RunExtras(logFile, null, new ResourceSampler());
    if (o.cloudwatchLogGroup) {
      const env = deps.env ?? process.env;
      const group = o.cloudwatchLogGroup;
      shipper = new DeferredShipper({
        maxQueueBytes: DEFAULTS.cloudwatch.maxQueueBytes, retryBaseMs: 2000, retryMaxMs: 60_000,
        onError: (m) => self.say('error', `${m} (log group ${group})`, writer),
        onNotice: (m) => self.say('notice', `${m} (log group ${group})`, writer),
        connect: async () => {
          const t = await resolveTarget({
            logGroup: group, logStream: o.cloudwatchLogStream, region: o.cloudwatchRegion, endpoint: o.cloudwatchEndpoint,
          }, { env, identity: deps.identity ?? (() => imdsIdentity(env)), hostname });
          const { CloudWatchShipper } = await import('../cloudwatch/shipper.js'); // the SDK is loaded only when shipping
          const s = new CloudWatchShipper({
            logGroup: t.logGroup, logStream: t.logStream, region: t.region, endpoint: t.endpoint,
            createGroup: o.cloudwatchCreateGroup, retentionDays: o.cloudwatchRetentionDays,
            onError: (m) => writer?.error('cloudwatch', m),
            onNotice: (m) => writer?.notice('cloudwatch', m),
          });
          for (const n of [`shipping records to CloudWatch Logs: group ${t.logGroup}, stream ${t.logStream}, region ${t.region}${t.endpoint ? `, endpoint ${t.endpoint}` : ''}`, ...t.notes]) {
            self.say('notice', n, writer);
          }
          return s;
        },
      });
      self.shipper = shipper;
      self.sinks.push(shipper);
    }
    self.setWriter = (w) => { writer = w; };
    self.resources.start(DEFAULTS.resourceSampleMs);
    return self;
  }

  /** Messages before the tracer is ready wait for announce(), so they follow the ready record. */
  private say(kind: 'error' | 'notice', m: string, writer: RecordWriter | null): void {
    if (writer && this.announced) writer[kind]('cloudwatch', m);
    else this.notes.push({ kind, m });
  }

  private announced = false;

  private setWriter: (w: RecordWriter) => void = () => undefined;

  /** The writer that carries the shipper's errors and notices. */
  attach(writer: RecordWriter): void {
    this.setWriter(writer);
    this.writer = writer;
  }

  private writer: RecordWriter | null = null;

  /** Write the notices held until the tracer is ready (where records go, CloudWatch fallbacks). */
  announce(writer: RecordWriter): void {
    this.announced = true;
    for (const n of this.notes.splice(0)) writer[n.kind]('cloudwatch', n.m);
  }

  statsExtra(): Partial<StatsRecord> {
    return {
      ...this.resources.fields(),
      ...heapFields(),
      ...(this.writer ? { records_dropped: this.writer.dropped } : {}),
      ...(this.logFile ? { log_rotations: this.logFile.rotations } : {}),
      ...(this.shipper ? { cloudwatch: this.shipper.stats() } : {}),
    };
  }

  /** A fresh CPU/RSS sample, for the final stats record. */
  sample(): Promise<void> {
    return this.resources.sample();
  }

  async close(): Promise<void> {
    this.resources.stop();
    await this.shipper?.close(DEFAULTS.cloudwatch.exitFlushMs);
  }
}
