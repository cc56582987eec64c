/**
 * The agent's own IMDS calls (the AWS SDK fetching credentials for CloudWatch Logs shipping) are
 * never reported as someone else's: they are seen, counted in stats.calls_self, and not written.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLab, labSupported, type ImdsHandle, type Lab } from '../../lab/netns.js';
import { startTracer, type TracerProcess } from '../../lab/traced.js';
import { startLabFakeLogs, type LabFakeLogs } from '../helpers/lab-fake-logs.js';

const support = labSupported();

describe.skipIf(!support.ok)(`the agent's own IMDS calls${support.ok ? '' : ` (skipped: ${support.reason})`}`, () => {
  let lab: Lab;
  let tracer: TracerProcess;

  beforeAll(async () => {
    lab = await createLab();
    await lab.startImds({ logRequests: true });
  });
  afterAll(async () => {
    await tracer?.stop();
    await lab?.destroy();
  });

  it('are counted in calls_self and never written, even with --include-v2', async () => {
    const env: NodeJS.ProcessEnv = { PATH: process.env.PATH, HOME: '/nonexistent', AWS_REGION: 'eu-west-1',
      AWS_CONFIG_FILE: '/dev/null', AWS_SHARED_CREDENTIALS_FILE: '/dev/null' };
    // No credentials in the environment: the SDK's default chain asks the (lab's) IMDS for them.
    // The endpoint is a closed port on the lab's own loopback: shipping fails and retries, harmlessly.
    tracer = await startTracer(lab, ['--no-log-file', '--include-v2', '--include-other', '--stats-interval', '1',
      '--cloudwatch-log-group', 'g', '--cloudwatch-log-stream', 's', '--cloudwatch-endpoint', 'http://127.0.0.1:9'], 20_000, env);
    const stats = await tracer.next((r) => r.event === 'stats' && r.calls_self >= 2, 30_000, 'stats with the agent\'s own calls');
    expect(stats.calls.v2).toBeGreaterThanOrEqual(2); // seen on the wire (token PUT, credentials)
    expect(stats.calls_self_v1).toBe(0); // by version: IMDSv2 only
    expect(stats.calls_self_v2).toBeGreaterThanOrEqual(2);
    // (Other labs' calls, seen by the kernel program only, come as `request: null` with their own pids.)
    expect(tracer.records.filter((r) => r.event === 'imds_call' && (r.request !== null || r.process.pid === tracer.proc.pid))).toEqual([]);
  });
});

/**
 * The agent never calls IMDSv1 itself: with the token PUT refused (405, after which SDKs fall back
 * to IMDSv1) its AWS SDK and its own identity look-up stay on IMDSv2 and fail instead; with the PUT
 * answered, credentials come from the IMDS through IMDSv2 and the records reach CloudWatch (the fake
 * endpoint). The stand-in's request log is the ledger; stats count the agent's own calls by version.
 */
describe.skipIf(!support.ok)(`the agent never calls IMDSv1 itself${support.ok ? '' : ` (skipped: ${support.reason})`}`, () => {
  let lab: Lab;
  let cw: LabFakeLogs;
  let tracer: TracerProcess | null = null;
  const env = (extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv => ({ PATH: process.env.PATH, HOME: '/nonexistent',
    AWS_CONFIG_FILE: '/dev/null', AWS_SHARED_CREDENTIALS_FILE: '/dev/null', ...extra });
  const v1Requests = (imds: ImdsHandle): Record<string, unknown>[] =>
    imds.requests().filter((r) => r.kind === 'data' && r.token === 'none');

  beforeAll(async () => {
    lab = await createLab();
    cw = await startLabFakeLogs(lab);
  });
  afterAll(async () => {
    await tracer?.stop();
    await cw?.stop();
    await lab?.destroy();
  });

  it('token PUT refused (405): no IMDSv1 request from the agent; its calls counted by version', async () => {
    const imds = await lab.startImds({ putStatus: 405, logRequests: true });
    // No credentials and no log stream given: the SDK asks the IMDS for credentials, the agent for its identity.
    tracer = await startTracer(lab, ['--no-log-file', '--stats-interval', '1', '--cloudwatch-log-group', 'g',
      '--cloudwatch-endpoint', cw.endpoint], 20_000, env({ AWS_REGION: 'eu-west-1' }));
    // The shipper fails for want of credentials (right), or an IMDSv1 request shows on the wire (wrong).
    await tracer.next((r) => (r.event === 'error' && r.component === 'cloudwatch' && /cannot send records/.test(r.message))
      || (r.event === 'stats' && r.calls.v1 > 0), 30_000, 'the shipper failing for want of credentials');
    const stats = await tracer.next((r) => r.event === 'stats' && r.calls_self_v2 >= 1, 30_000, 'own IMDSv2 calls in stats');
    await tracer.stop();
    const last = tracer.records.filter((r) => r.event === 'stats').at(-1)!;
    expect(imds.requests().filter((r) => r.kind === 'token').length).toBeGreaterThanOrEqual(2); // identity + SDK
    expect(v1Requests(imds)).toEqual([]);
    expect(last.calls.v1).toBe(0); // not one IMDSv1 request on the wire
    expect(last.calls_self_v1).toBe(0);
    expect(stats.calls_self_v2).toBeGreaterThanOrEqual(1);
    expect(tracer.records.filter((r) => r.event === 'error' && r.component === 'self')).toEqual([]);
    expect(tracer.records.filter((r) => r.event === 'imds_call' && (r.request !== null || r.process.pid === tracer!.proc.pid))).toEqual([]); // other labs' calls come from the kernel only
    expect(tracer.records).toContainEqual(expect.objectContaining({ event: 'notice', message: expect.stringMatching(/log stream named after the hostname/) }));
    await imds.stop();
  });

  it('token PUT answered: credentials and identity through IMDSv2 only, records shipped to CloudWatch', async () => {
    const imds = await lab.startImds({ logRequests: true });
    // Neither region nor log stream given: both come from the instance identity document.
    tracer = await startTracer(lab, ['--no-log-file', '--stats-interval', '1', '--cloudwatch-log-group', 'g',
      '--cloudwatch-endpoint', cw.endpoint], 20_000, env());
    await cw.fake.waitForEvents(1, 30_000);
    const stats = await tracer.next((r) => r.event === 'stats' && r.calls_self_v2 >= 1, 30_000, 'own IMDSv2 calls in stats');
    await tracer.stop();
    expect(cw.fake.batches[0].stream).toBe('i-0123456789abcdef0');
    expect(cw.fake.events().map((e) => JSON.parse(e.message).event)).toContain('ready');
    expect(imds.requests().some((r) => r.path === '/latest/meta-data/iam/security-credentials/imds-tracer-lab-role' && r.token === 'valid')).toBe(true);
    expect(v1Requests(imds)).toEqual([]);
    const last = tracer.records.filter((r) => r.event === 'stats').at(-1)!;
    expect(last.calls.v1).toBe(0);
    expect(last.calls_self_v1).toBe(0);
    expect(stats.calls_self_v2).toBeGreaterThanOrEqual(1);
    expect(tracer.records.filter((r) => r.event === 'error')).toEqual([]);
    await imds.stop();
  });
});
