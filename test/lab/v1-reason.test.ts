/**
 * An SDK whose token request is refused (403/404/405) falls back to IMDSv1: its IMDSv1 calls say why.
 * Real botocore against the stand-in answering every token PUT with 403.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLab, labSupported, type Lab } from '../../lab/netns.js';
import { startTracer, type TracerProcess } from '../../lab/traced.js';
import { botocoreCredentials } from '../helpers/clients.js';

const support = labSupported();

describe.skipIf(!support.ok)(`v1_reason token_put_refused${support.ok ? '' : ` (skipped: ${support.reason})`}`, () => {
  let lab: Lab;
  let tracer: TracerProcess;
  beforeAll(async () => {
    lab = await createLab();
    await lab.startImds({ putStatus: 403 });
    tracer = await startTracer(lab, ['--no-log-file', '--stats-interval', '3600']);
  });
  afterAll(async () => {
    await tracer?.stop();
    await lab?.destroy();
  });

  it('botocore falls back to IMDSv1 after a 403, and each fallback call says so', async () => {
    const run = await botocoreCredentials(lab);
    expect(run.exitCode, run.stderr).toBe(0);
    const recs = await tracer.count((r) => r.event === 'imds_call' && r.process.pid === run.pid, 2, 10_000, 'botocore v1 calls');
    for (const r of recs) expect(r).toMatchObject({ imds_version: 'v1', v1_reason: 'token_put_refused' });
    expect(recs.map((r) => r.request.path)).toEqual([
      '/latest/meta-data/iam/security-credentials/', expect.stringMatching(/^\/latest\/meta-data\/iam\/security-credentials\/.+/),
    ]);
  });
});
