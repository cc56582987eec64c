/**
 * Where built-in shipping goes: log group (given), log stream (given, else the instance id, else the
 * hostname — saying so), region (given, else AWS_REGION / AWS_DEFAULT_REGION, else the instance's).
 * The instance look-up is injected, so nothing here calls the IMDS unless the caller lets it.
 */
import { DEFAULTS } from '../defaults.js';

export interface InstanceIdentity {
  instanceId: string;
  region: string;
}

export interface TargetOptions {
  logGroup: string;
  logStream?: string;
  region?: string;
  endpoint?: string;
}

export interface TargetDeps {
  env: NodeJS.ProcessEnv;
  /** The instance's identity, or a rejection saying why it cannot be had. */
  identity(): Promise<InstanceIdentity>;
  hostname(): string;
}

export interface Target {
  logGroup: string;
  logStream: string;
  region: string;
  endpoint?: string;
  /** Things worth telling (a fallback taken). */
  notes: string[];
}

/** Resolve the target; throws with a sentence saying what to set when no region can be found. */
export async function resolveTarget(o: TargetOptions, deps: TargetDeps): Promise<Target> {
  const notes: string[] = [];
  let region = o.region || deps.env.AWS_REGION || deps.env.AWS_DEFAULT_REGION || undefined;
  let logStream = o.logStream;
  if (!logStream || !region) {
    let id: InstanceIdentity | null = null;
    let why = '';
    try {
      id = await deps.identity();
    } catch (err) {
      why = (err as Error).message;
    }
    if (!region) {
      if (!id) throw new Error(`no AWS region for CloudWatch Logs: set AWS_REGION or --cloudwatch-region (the instance's region could not be read: ${why})`);
      region = id.region;
    }
    if (!logStream) {
      if (id) {
        logStream = id.instanceId;
      } else {
        logStream = deps.hostname();
        notes.push(`no instance id (${why}); CloudWatch log stream named after the hostname ${logStream}`);
      }
    }
  }
  return { logGroup: o.logGroup, logStream, region, ...(o.endpoint ? { endpoint: o.endpoint } : {}), notes };
}

/**
 * The instance identity document through IMDSv2 only (token first), with a short time-out. A token
 * request that is refused or unanswered ends it: never an IMDSv1 request instead.
 */
export async function imdsIdentity(env: NodeJS.ProcessEnv = process.env,
  timeoutMs: number = DEFAULTS.cloudwatch.imdsTimeoutMs, base = `http://${DEFAULTS.imdsIPv4[0]}`): Promise<InstanceIdentity> {
  if (env.AWS_EC2_METADATA_DISABLED === 'true') throw new Error('AWS_EC2_METADATA_DISABLED is set');
  const signal = AbortSignal.timeout(timeoutMs);
  try {
    const t = await fetch(`${base}/latest/api/token`, {
      method: 'PUT', headers: { 'X-aws-ec2-metadata-token-ttl-seconds': '60' }, signal,
    });
    if (!t.ok) throw new Error(`token request answered ${t.status}`);
    const token = await t.text();
    const d = await fetch(`${base}/latest/dynamic/instance-identity/document`, {
      headers: { 'X-aws-ec2-metadata-token': token }, signal,
    });
    if (!d.ok) throw new Error(`identity document answered ${d.status}`);
    const doc = await d.json() as { instanceId?: unknown; region?: unknown };
    if (typeof doc.instanceId !== 'string' || typeof doc.region !== 'string') throw new Error('identity document without instanceId/region');
    return { instanceId: doc.instanceId, region: doc.region };
  } catch (err) {
    const e = err as Error;
    const msg = e.name === 'TimeoutError' || e.name === 'AbortError' ? `IMDS did not answer within ${timeoutMs} ms` : e.message;
    throw new Error(`not on EC2, or the IMDS is unreachable: ${msg}`);
  }
}
