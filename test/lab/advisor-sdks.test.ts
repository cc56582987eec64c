/**
 * The SDK table against the real clients people run, from Debian's packages (test/helpers/sdk-clients.ts:
 * botocore, the legacy boto, aws-sdk-ruby, aws-sdk-go v1 and v2, ec2-metadata, cloud-init): with the
 * token answered, and refused (403, after which the SDKs fall back to IMDSv1). Every record of each
 * client's calls must name the client from its real User-Agent and say the right thing to do.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLab, labSupported, type ImdsHandle, type Lab } from '../../lab/netns.js';
import { startTracer, type TracedRecord, type TracerProcess } from '../../lab/traced.js';
import { buildGoClients, goClients, goSdkSupport, SDK_CLIENTS, type GoBuild, type SdkClient } from '../helpers/sdk-clients.js';

const support = labSupported();
const goSupport = goSdkSupport();
const FALLBACK = /^supports IMDSv2: the v1 call is a fallback — see v1_reason \(the token request was refused/;

/** Per client: the sdk names its records may carry, and the advice on its IMDSv1 calls when its token request is refused. */
const EXPECT: Record<string, { names: string[]; v1Advice: RegExp | null }> = {
  botocore: { names: ['botocore'], v1Advice: FALLBACK },
  // boto 2's own IMDS code sends urllib's User-Agent, and never a token.
  'boto (legacy)': { names: ['python-urllib'], v1Advice: /^urllib's own User-Agent: legacy boto 2 \(never uses IMDSv2: move to boto3\)/ },
  'aws-sdk-ruby': { names: ['aws-sdk-ruby'], v1Advice: FALLBACK },
  'aws-sdk-go': { names: ['aws-sdk-go'], v1Advice: FALLBACK },
  'aws-sdk-go-v2': { names: ['aws-sdk-go-v2'], v1Advice: FALLBACK },
  // These two give up when the token is refused: no IMDSv1 call at all.
  'ec2-metadata': { names: ['curl'], v1Advice: null },
  'cloud-init': { names: ['cloud-init', 'python-requests'], v1Advice: null },
};

describe.skipIf(!support.ok)(`SDK advice for Debian's real clients${support.ok ? '' : ` (skipped: ${support.reason})`}`, () => {
  let lab: Lab;
  let tracer: TracerProcess | undefined;
  let imds: ImdsHandle | undefined;
  let go: GoBuild | undefined;
  let home = '';
  const clients: SdkClient[] = [...SDK_CLIENTS];

  beforeAll(async () => {
    home = mkdtempSync(join(tmpdir(), 'imdst-advisor-sdks-'));
    if (goSupport.ok) {
      go = buildGoClients();
      clients.push(...goClients(go));
    }
    lab = await createLab();
    tracer = await startTracer(lab, ['--no-log-file', '--include-v2', '--stats-interval', '3600']);
  }, 300_000);
  afterAll(async () => {
    await tracer?.stop();
    await imds?.stop();
    await lab?.destroy();
    go?.remove();
    if (home) rmSync(home, { recursive: true, force: true });
  });

  const callsOf = (pid: number) => (r: TracedRecord): boolean => r.event === 'imds_call'
    && (r.process.pid === pid || (r.process.ancestors ?? []).some((a: { pid: number }) => a.pid === pid));

  for (const [scenario, putStatus] of [['token answered', undefined], ['token refused (403)', 403]] as const) {
    it(`${scenario}: each client named from its User-Agent, with the right advice`, async () => {
      await imds?.stop();
      imds = await lab.startImds({ ipv6: false, logRequests: true, ...(putStatus ? { putStatus } : {}) });
      const problems: string[] = [];
      for (const client of clients) {
        const before = imds.requests().length;
        const run = await client.run(lab, lab.instanceNs, home, 60_000);
        const served = imds.requests().length - before;
        if (served === 0) { problems.push(`${client.name}: sent nothing (exit ${run.exitCode})`); continue; }
        // Every request the stand-in served for it has its record (the agent writes v1 and v2).
        const recs = await tracer!.count(callsOf(run.pid), served, 20_000, `${client.name}'s calls`).catch(() => tracer!.records.filter(callsOf(run.pid)));
        const want = EXPECT[client.name];
        if (putStatus && want.v1Advice && !recs.some((r) => r.imds_version === 'v1')) problems.push(`${client.name}: no IMDSv1 fallback call seen`);
        if (!putStatus && recs.length === 0) problems.push(`${client.name}: no record`);
        for (const r of recs) {
          if (!want.names.includes(r.sdk?.name)) problems.push(`${client.name}: sdk ${JSON.stringify(r.sdk)} for User-Agent ${r.request.user_agent}`);
          if (r.imds_version === 'v2' && r.sdk?.advice !== 'uses IMDSv2') problems.push(`${client.name}: v2 call advised ${r.sdk?.advice}`);
          if (r.imds_version === 'v1') {
            if (!want.v1Advice) problems.push(`${client.name}: unexpected v1 call ${r.request.path}`);
            else if (!want.v1Advice.test(r.sdk?.advice ?? '')) problems.push(`${client.name}: v1 call advised "${r.sdk?.advice}"`);
          }
        }
      }
      expect(problems).toEqual([]);
    }, 300_000);
  }
});
