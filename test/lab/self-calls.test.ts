/**
 * The agent's own IMDS calls (the AWS SDK fetching credentials for CloudWatch Logs shipping) are
 * never reported as someone else's: they are seen, counted in stats.calls_self, and not written.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLab, labSupported, type Lab } from '../../agent/src/lab/netns.js';
import { startTracer, type TracerProcess } from '../../agent/src/lab/traced.js';

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
    // (Other labs' calls, seen by the kernel program only, come as `request: null` with their own pids.)
    expect(tracer.records.filter((r) => r.event === 'imds_call' && (r.request !== null || r.process.pid === tracer.proc.pid))).toEqual([]);
  });
});
