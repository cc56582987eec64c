/**
 * `doctor --cloudwatch` through the real AWS SDK against the recorded-response fake of CloudWatch
 * Logs (fake-logs.ts on 127.0.0.1, not the service): region, credentials, group and a test event;
 * each failure named with the region and group and the fix. The IMDS is never reached
 * (AWS_EC2_METADATA_DISABLED, region and stream given).
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { cloudwatchArgs, cloudwatchChecks } from '../../agent/src/doctor/cloudwatch.js';
import { FakeLogs } from './fake-logs.js';

const CREDS = { AWS_ACCESS_KEY_ID: 'AKIAFAKEFAKEFAKEFAKE', AWS_SECRET_ACCESS_KEY: 'fake-secret-for-tests', AWS_EC2_METADATA_DISABLED: 'true',
  AWS_CONFIG_FILE: '/nonexistent/config', AWS_SHARED_CREDENTIALS_FILE: '/nonexistent/credentials' };
const saved: Record<string, string | undefined> = {};
const KEYS = [...Object.keys(CREDS), 'AWS_PROFILE', 'AWS_REGION', 'AWS_DEFAULT_REGION', 'AWS_SESSION_TOKEN'];
let fake: FakeLogs;
let dir: string;

beforeAll(() => {
  for (const k of KEYS) saved[k] = process.env[k];
  for (const k of ['AWS_PROFILE', 'AWS_REGION', 'AWS_DEFAULT_REGION', 'AWS_SESSION_TOKEN']) delete process.env[k];
  Object.assign(process.env, CREDS);
  dir = mkdtempSync(join(tmpdir(), 'imds-tracer-doctor-cw-'));
});
afterAll(() => {
  for (const k of KEYS) { if (saved[k] === undefined) delete process.env[k]; else process.env[k] = saved[k]; }
  rmSync(dir, { recursive: true, force: true });
});
afterEach(async () => { await fake?.stop(); });

async function freshFake(): Promise<FakeLogs> {
  fake = new FakeLogs();
  await fake.start();
  return fake;
}
const noEnvFile = (): string => join(dir, 'absent');
const statuses = (r: { id: string; status: string }[]): string[] => r.map((c) => `${c.id}:${c.status}`);

describe('doctor --cloudwatch (real SDK, recorded-response fake)', () => {
  it('all four pass; the test event is in the doctor stream next to the agent\'s', async () => {
    await freshFake();
    const r = await cloudwatchChecks({ logGroup: 'g', logStream: 's', region: 'eu-west-1', endpoint: fake.endpoint, envFile: noEnvFile() });
    expect(statuses(r)).toEqual(['cloudwatch-region:PASS', 'cloudwatch-credentials:PASS', 'cloudwatch-group:PASS', 'cloudwatch-put:PASS']);
    expect(r[0].detail).toBe('Group g, stream s, region eu-west-1.');
    const events = fake.events('s-doctor').map((e) => JSON.parse(e.message) as { event: string });
    expect(events).toEqual([expect.objectContaining({ event: 'doctor' })]);
    expect(fake.events('s')).toEqual([]); // the agent's own stream is not touched
  });

  it('a missing group fails naming the group and the region, with the fix; nothing is sent', async () => {
    await freshFake();
    fake.groups.clear();
    const r = await cloudwatchChecks({ logGroup: 'fleet/imds', logStream: 's', region: 'eu-west-1', endpoint: fake.endpoint, envFile: noEnvFile() });
    expect(statuses(r)).toEqual(['cloudwatch-region:PASS', 'cloudwatch-credentials:PASS', 'cloudwatch-group:FAIL']);
    expect(r[2].detail).toBe('Log group fleet/imds does not exist in region eu-west-1.');
    expect(r[2].fix).toMatch(/--cloudwatch-create-group/);
    expect(fake.ops).not.toContain('PutLogEvents');
  });

  it('a role without logs:PutLogEvents fails the test event, saying which action', async () => {
    await freshFake();
    fake.denied.add('PutLogEvents');
    const r = await cloudwatchChecks({ logGroup: 'g', logStream: 's', region: 'eu-west-1', endpoint: fake.endpoint, envFile: noEnvFile() });
    expect(statuses(r).at(-1)).toBe('cloudwatch-put:FAIL');
    expect(r.at(-1)!.detail).toMatch(/AccessDeniedException: .*not authorized to perform: logs:PutLogEvents/);
    expect(r.at(-1)!.fix).toMatch(/logs:CreateLogStream and logs:PutLogEvents/);
  });

  it('no credentials: fails there, before any request', async () => {
    await freshFake();
    const keep = { id: process.env.AWS_ACCESS_KEY_ID, secret: process.env.AWS_SECRET_ACCESS_KEY };
    delete process.env.AWS_ACCESS_KEY_ID;
    delete process.env.AWS_SECRET_ACCESS_KEY;
    try {
      const r = await cloudwatchChecks({ logGroup: 'g', logStream: 's', region: 'eu-west-1', endpoint: fake.endpoint, envFile: noEnvFile() });
      expect(statuses(r)).toEqual(['cloudwatch-region:PASS', 'cloudwatch-credentials:FAIL']);
      expect(r[1].fix).toMatch(/instance profile/);
      expect(fake.ops).toEqual([]);
    } finally {
      process.env.AWS_ACCESS_KEY_ID = keep.id;
      process.env.AWS_SECRET_ACCESS_KEY = keep.secret;
    }
  });

  it('with no options, the service\'s own from /etc/default/imds-tracer (IMDS_TRACER_ARGS); with none there, a FAIL saying what to pass', async () => {
    await freshFake();
    const env = join(dir, 'imds-tracer');
    writeFileSync(env, `# written by install.sh\nIMDS_TRACER_ARGS="--cloudwatch-log-group g --include-v2 --cloudwatch-region=eu-west-1 --cloudwatch-log-stream s --cloudwatch-endpoint ${fake.endpoint}"\n`);
    const r = await cloudwatchChecks({ envFile: env });
    expect(statuses(r)).toEqual(['cloudwatch-region:PASS', 'cloudwatch-credentials:PASS', 'cloudwatch-group:PASS', 'cloudwatch-put:PASS']);
    const none = await cloudwatchChecks({ envFile: noEnvFile() });
    expect(statuses(none)).toEqual(['cloudwatch-region:FAIL']);
    expect(none[0].fix).toMatch(/--cloudwatch-log-group NAME/);
  });

  it('cloudwatchArgs reads the CloudWatch options out of IMDS_TRACER_ARGS, either spelling', () => {
    expect(cloudwatchArgs('IMDS_TRACER_ARGS="--cloudwatch-log-group fleet/x --ancestors 6 --cloudwatch-region=us-east-2"'))
      .toEqual({ logGroup: 'fleet/x', region: 'us-east-2' });
    expect(cloudwatchArgs('IMDS_TRACER_ARGS=""')).toEqual({});
    expect(cloudwatchArgs('# nothing')).toEqual({});
  });
});
