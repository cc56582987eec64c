/**
 * `imds-tracer doctor --cloudwatch`: can this instance ship records to its CloudWatch Logs group?
 * Four checks, in the order a failure is best explained: the region (and log stream) as the agent
 * resolves them, the credentials the SDK's default chain finds, the group (CreateLogStream of a
 * doctor stream: it exists and the role may create streams in it), and one PutLogEvents of a test
 * event into that stream. The group, stream and region come from the options, else from the
 * service's own options in /etc/default/imds-tracer (IMDS_TRACER_ARGS). Like the agent it reads the
 * region and instance id from the IMDS with IMDSv2 only, and only when they are not given.
 */
import { readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import type { CheckResult } from './checks.js';
import { imdsIdentity, resolveTarget, type InstanceIdentity, type Target } from '../cloudwatch/target.js';

export interface CloudWatchDoctorOptions {
  logGroup?: string;
  logStream?: string;
  region?: string;
  endpoint?: string;
  /** Where the service's options are (default /etc/default/imds-tracer). */
  envFile?: string;
}

export interface CloudWatchDoctorDeps {
  env?: NodeJS.ProcessEnv;
  identity?: () => Promise<InstanceIdentity>;
}

/** The CloudWatch options in an IMDS_TRACER_ARGS="…" line (the unit splits it on whitespace). Pure. */
export function cloudwatchArgs(envFileText: string): CloudWatchDoctorOptions {
  const m = /^IMDS_TRACER_ARGS="([^"]*)"/m.exec(envFileText);
  const words = m ? m[1].split(/\s+/).filter(Boolean) : [];
  const out: CloudWatchDoctorOptions = {};
  const keys: Record<string, keyof CloudWatchDoctorOptions> = {
    '--cloudwatch-log-group': 'logGroup', '--cloudwatch-log-stream': 'logStream',
    '--cloudwatch-region': 'region', '--cloudwatch-endpoint': 'endpoint',
  };
  for (let i = 0; i < words.length; i++) {
    const [flag, inline] = words[i].split(/=(.*)/s, 2);
    const key = keys[flag];
    if (!key) continue;
    const value = inline ?? words[++i];
    if (value) out[key] = value;
  }
  return out;
}

const IAM_FIX = 'The instance role needs logs:CreateLogStream and logs:PutLogEvents on arn:aws:logs:REGION:ACCOUNT:log-group:GROUP:* (docs/cloudwatch.md lists every action).';

export async function cloudwatchChecks(o: CloudWatchDoctorOptions, deps: CloudWatchDoctorDeps = {}): Promise<CheckResult[]> {
  const env = deps.env ?? process.env;
  let fromFile: CloudWatchDoctorOptions = {};
  try {
    fromFile = cloudwatchArgs(readFileSync(o.envFile ?? '/etc/default/imds-tracer', 'utf8'));
  } catch { /* no service options: the command line only */ }
  const opts = o.logGroup ? o : { ...fromFile, ...Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) };
  const results: CheckResult[] = [];
  const region = { id: 'cloudwatch-region' as const, title: 'CloudWatch Logs target (group, stream, region)' };
  if (!opts.logGroup) {
    results.push({
      ...region, status: 'FAIL', detail: 'No log group: neither --cloudwatch-log-group nor IMDS_TRACER_ARGS in /etc/default/imds-tracer names one.',
      fix: 'Pass --cloudwatch-log-group NAME (and --cloudwatch-region), or install with --log-group NAME.',
    });
    return results;
  }
  let t: Target;
  try {
    t = await resolveTarget({ logGroup: opts.logGroup, logStream: opts.logStream, region: opts.region, endpoint: opts.endpoint },
      { env, identity: deps.identity ?? (() => imdsIdentity(env)), hostname });
  } catch (err) {
    results.push({ ...region, status: 'FAIL', detail: (err as Error).message, fix: 'Set --cloudwatch-region (or AWS_REGION), or check that the IMDS answers IMDSv2 here.' });
    return results;
  }
  const where = `group ${t.logGroup}, region ${t.region}${t.endpoint ? `, endpoint ${t.endpoint}` : ''}`;
  results.push({ ...region, status: 'PASS', data: { group: t.logGroup, stream: t.logStream, region: t.region }, detail: `Group ${t.logGroup}, stream ${t.logStream}, region ${t.region}${t.notes.length ? ` (${t.notes.join('; ')})` : ''}.` });

  const sdk = await import('@aws-sdk/client-cloudwatch-logs');
  const { IMDS_V2_ONLY, forbidImdsV1 } = await import('../cloudwatch/shipper.js');
  const { describeError } = await import('../cloudwatch/batch.js');
  forbidImdsV1();
  const client = new sdk.CloudWatchLogsClient({
    ...IMDS_V2_ONLY, region: t.region, ...(t.endpoint ? { endpoint: t.endpoint } : {}), maxAttempts: 2,
    requestHandler: { requestTimeout: 10_000, connectionTimeout: 5_000 },
  });
  try {
    const cred = { id: 'cloudwatch-credentials' as const, title: 'AWS credentials (the SDK\'s default chain)' };
    try {
      const c = await client.config.credentials();
      const kind = c.sessionToken ? 'temporary (role or session) credentials' : 'long-term access keys';
      results.push({ ...cred, status: 'PASS', detail: `Found ${kind}${c.expiration ? `, valid until ${c.expiration.toISOString()}` : ''}.` });
    } catch (err) {
      results.push({
        ...cred, status: 'FAIL', detail: `No credentials: ${describeError(err)}`,
        fix: 'Attach an instance profile (role) to the instance; with IMDSv2 required and a container hop, set the hop limit to 2.',
      });
      return results;
    }

    const stream = `${t.logStream}-doctor`;
    const group = { id: 'cloudwatch-group' as const, title: `CloudWatch Logs group (${where})` };
    try {
      await client.send(new sdk.CreateLogStreamCommand({ logGroupName: t.logGroup, logStreamName: stream }));
    } catch (err) {
      const name = (err as { name?: string }).name;
      if (name === 'ResourceNotFoundException') {
        results.push({
          ...group, status: 'FAIL', detail: `Log group ${t.logGroup} does not exist in region ${t.region}.`,
          fix: 'Create it (aws logs create-log-group), or run the agent with --cloudwatch-create-group (needs logs:CreateLogGroup).',
        });
        return results;
      }
      if (name !== 'ResourceAlreadyExistsException') {
        results.push({ ...group, status: 'FAIL', detail: `CreateLogStream ${stream} failed: ${describeError(err)}`, fix: IAM_FIX });
        return results;
      }
    }
    results.push({ ...group, status: 'PASS', detail: `Exists; log stream ${stream} created (or there already).` });

    const put = { id: 'cloudwatch-put' as const, title: 'a test event shipped (PutLogEvents)' };
    try {
      const message = JSON.stringify({ event: 'doctor', time: new Date().toISOString(), message: 'imds-tracer doctor --cloudwatch test event' });
      await client.send(new sdk.PutLogEventsCommand({ logGroupName: t.logGroup, logStreamName: stream, logEvents: [{ timestamp: Date.now(), message }] }));
      results.push({ ...put, status: 'PASS', detail: `One event written to ${t.logGroup}/${stream}.` });
    } catch (err) {
      results.push({ ...put, status: 'FAIL', detail: `PutLogEvents to ${t.logGroup}/${stream} failed: ${describeError(err)}`, fix: IAM_FIX });
    }
    return results;
  } finally {
    client.destroy();
  }
}
