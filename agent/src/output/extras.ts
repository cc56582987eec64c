/**
 * What `run` adds around the tracer for issue 4: CloudWatch shipping (a line sink), the agent's own
 * CPU/RSS sampling, and the extra stats fields (own resources, log rotations, CloudWatch counters).
 * Kept here so run.ts only wires it.
 */
import { hostname } from 'node:os';
import { DEFAULTS } from '../defaults.js';
import type { StatsRecord } from '../record.js';
import type { CloudWatchShipper } from './cloudwatch.js';
import { imdsIdentity, resolveTarget, type InstanceIdentity } from './cloudwatch-target.js';
import type { LogFile } from './log-file.js';
import { ResourceSampler } from './resources.js';
import type { LineSink, RecordWriter } from './writer.js';

export interface ExtrasOptions {
  cloudwatchLogGroup?: string;
  cloudwatchLogStream?: string;
  cloudwatchRegion?: string;
  cloudwatchEndpoint?: string;
}

export interface ExtrasDeps {
  /** The instance identity (default: IMDSv2); tests inject one so the IMDS is never called. */
  identity?: () => Promise<InstanceIdentity>;
  env?: NodeJS.ProcessEnv;
}

export class RunExtras {
  private notes: string[] = [];
  readonly sinks: LineSink[] = [];

  private constructor(private readonly logFile: LogFile | null, readonly shipper: CloudWatchShipper | null,
    private readonly resources: ResourceSampler) {}

  /** Throws with a sentence saying what is wrong (e.g. no region for CloudWatch Logs). */
  static async create(o: ExtrasOptions, logFile: LogFile | null, deps: ExtrasDeps = {}): Promise<RunExtras> {
    let shipper: CloudWatchShipper | null = null;
    let notes: string[] = [];
    let writer: RecordWriter | null = null;
    if (o.cloudwatchLogGroup) {
      const env = deps.env ?? process.env;
      const t = await resolveTarget({
        logGroup: o.cloudwatchLogGroup, logStream: o.cloudwatchLogStream, region: o.cloudwatchRegion,
        endpoint: o.cloudwatchEndpoint,
      }, { env, identity: deps.identity ?? (() => imdsIdentity(env)), hostname });
      const { CloudWatchShipper } = await import('./cloudwatch.js'); // the SDK is loaded only when shipping
      shipper = new CloudWatchShipper({
        logGroup: t.logGroup, logStream: t.logStream, region: t.region, endpoint: t.endpoint,
        onError: (m) => writer?.error('cloudwatch', m),
        onNotice: (m) => writer?.notice('cloudwatch', m),
      });
      notes = [`shipping records to CloudWatch Logs: group ${t.logGroup}, stream ${t.logStream}, region ${t.region}${t.endpoint ? `, endpoint ${t.endpoint}` : ''}`, ...t.notes];
    }
    const self = new RunExtras(logFile, shipper, new ResourceSampler());
    if (shipper) self.sinks.push(shipper);
    self.notes = notes;
    self.setWriter = (w) => { writer = w; };
    self.resources.start(DEFAULTS.resourceSampleMs);
    return self;
  }

  private setWriter: (w: RecordWriter) => void = () => undefined;

  /** The writer that carries the shipper's errors and notices. */
  attach(writer: RecordWriter): void {
    this.setWriter(writer);
  }

  /** Write the notices held until the tracer is ready (where records go, CloudWatch fallbacks). */
  announce(writer: RecordWriter): void {
    for (const n of this.notes.splice(0)) writer.notice('cloudwatch', n);
  }

  statsExtra(): Partial<StatsRecord> {
    return {
      ...this.resources.fields(),
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
