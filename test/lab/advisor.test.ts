/**
 * The migration advisor against real parts: real clients (curl, botocore, aws-sdk v2, @aws-sdk v3)
 * with their real User-Agents, traced by the built agent; the stand-in answering 429 (its
 * per-second throttle) and 401 (tokens required); `report --verdict --fail-on-v1` on what the agent
 * wrote. The stand-in's request log is the ledger for 429s and 401s.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLab, labSupported, type ImdsHandle, type ImdsStartOptions, type Lab } from '../../lab/netns.js';
import { startTracer, type TracedRecord, type TracerProcess } from '../../lab/traced.js';
import { validate } from '../../agent/src/schema.js';
import { awsSdkV2, awsSdkV3, botocoreCredentials, curlRequests, curlV1, runClient } from '../helpers/clients.js';
import { CLI } from '../helpers/repo.js';

/** botocore's own credential chain (a session's resolver, as boto3 uses it): its IMDS calls carry the session's User-Agent. */
const PY_BOTOCORE_CHAIN = `
import sys, botocore.session
from botocore.credentials import create_credential_resolver
s = botocore.session.get_session()
c = create_credential_resolver(s).load_credentials()
if c is None:
    sys.stderr.write('no credentials\\n'); sys.exit(1)
print(c.method)
`;

const support = labSupported();
const ROLE_PATH = '/latest/meta-data/iam/security-credentials/imds-tracer-lab-role';

function report(args: string[]): { code: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [CLI, 'report', ...args], { encoding: 'utf8' });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

describe.skipIf(!support.ok)(`migration advisor in the lab${support.ok ? '' : ` (skipped: ${support.reason})`}`, () => {
  let lab: Lab;
  let imds: ImdsHandle | undefined;
  let tracer: TracerProcess | undefined;
  let dir = '';
  const restartImds = async (o: ImdsStartOptions): Promise<ImdsHandle> => {
    await imds?.stop();
    imds = await lab.startImds({ logRequests: true, ...o });
    return imds;
  };

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'advisor-lab-'));
    lab = await createLab();
  });
  afterAll(async () => {
    await tracer?.stop();
    await imds?.stop();
    await lab?.destroy();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('names each real client\'s SDK from its User-Agent, and says what to do', async () => {
    await restartImds({});
    const log = join(dir, 'sdk.jsonl');
    tracer = await startTracer(lab, ['--log-file', log, '--include-v2', '--stats-interval', '3600']);
    const curl = await curlV1(lab);
    const boto = await botocoreCredentials(lab);
    const js2 = await awsSdkV2(lab, 'v1');
    const js3 = await awsSdkV3(lab, 'v1');
    for (const r of [curl, boto, js2, js3]) expect(r.exitCode, r.stderr).toBe(0);
    const byPid = async (pid: number, n = 1): Promise<TracedRecord[]> =>
      tracer!.count((r) => r.event === 'imds_call' && r.process?.pid === pid, n, 15_000, `calls of pid ${pid}`);
    const [c] = await byPid(curl.pid);
    expect(c.sdk).toEqual({ name: 'curl', version: expect.stringMatching(/^\d+\.\d+/), imdsv2_min: null,
      advice: 'no AWS SDK: the code calls IMDS itself: add the token PUT' });
    // botocore's InstanceMetadataFetcher without a session sends urllib3's own User-Agent: said so, no guess.
    const b = await byPid(boto.pid, 3);
    expect(b.every((r) => r.imds_version === 'v2' && r.sdk.name === 'python-urllib3' && r.sdk.advice === 'uses IMDSv2')).toBe(true);
    const [j2] = await byPid(js2.pid);
    expect(j2.request.user_agent).toMatch(/^aws-sdk-nodejs\/2\.\d+\.\d+ linux\/v/);
    expect(j2.sdk).toMatchObject({ name: 'aws-sdk-js', imdsv2_min: '2.722.0', advice: expect.stringMatching(/^supports IMDSv2: the v1 call is a fallback — see v1_reason/) });
    // @aws-sdk v3's IMDS client sends no User-Agent and node says nothing by itself: unknown.
    const [j3] = await byPid(js3.pid);
    expect(j3.request.user_agent).toBeNull();
    expect(j3.sdk).toMatchObject({ name: 'unknown', version: null });
    for (const r of [c, ...b, j2, j3]) expect(validate(r)).toEqual([]);
    expect(await tracer.stop()).toBe(0);
    tracer = undefined;

    const v = report(['--verdict', '--json', '--fail-on-v1', log]);
    expect(v.code, v.stderr).toBe(3);
    const verdict = JSON.parse(v.stdout);
    expect(verdict.status).toBe('not_ready');
    expect(verdict.callers.map((g: TracedRecord) => g.sdk.name).sort()).toEqual(['aws-sdk-js', 'curl', 'unknown']);
  });

  it('a caller fetching its credentials in a loop: throttled (429) as the stand-in counted, flagged as not caching', async () => {
    const server = await restartImds({ throttlePerSecond: 2 });
    const log = join(dir, 'throttle.jsonl');
    tracer = await startTracer(lab, ['--log-file', log, '--stats-interval', '3600']);
    const loop = await curlRequests(lab, Array.from({ length: 12 }, () => ({ path: ROLE_PATH })));
    expect(loop.transfers).toHaveLength(12);
    const served = await server.waitForRequests(12);
    const ledger429 = served.filter((e) => e.status === 429).length;
    expect(ledger429).toBeGreaterThan(0);
    await tracer.count((r) => r.event === 'imds_call' && r.process?.pid === loop.pid, 12, 15_000, 'the loop\'s calls');
    expect(await tracer.stop()).toBe(0);
    tracer = undefined;
    const groups = JSON.parse(report(['--json', log]).stdout);
    const g = groups.find((x: TracedRecord) => x.exe?.endsWith('/curl'));
    expect(g.rates).toMatchObject({ throttled: ledger429, credential_fetches: 12, credentials_not_cached: true });
    expect(g.rates.peak_per_minute).toBeGreaterThanOrEqual(6);
    expect(report([log]).stdout).toMatch(new RegExp(`throttled \\(429\\) ×${ledger429}; fetches credentials \\d+ times a minute instead of caching them`));
  });

  it('after enforcement (tokens required): IMDSv1 callers answered 401 are listed as broken by enforcement', async () => {
    const server = await restartImds({ tokensRequired: true });
    const log = join(dir, 'enforced.jsonl');
    tracer = await startTracer(lab, ['--log-file', log, '--stats-interval', '3600']);
    const curl = await curlV1(lab);
    expect(curl.exitCode).toBe(22); // curl --fail on 401
    expect((await server.waitForRequests(1))[0]).toMatchObject({ status: 401, token: 'none' });
    await tracer.next((r) => r.event === 'imds_call' && r.process?.pid === curl.pid, 15_000, 'the rejected call');
    expect(await tracer.stop()).toBe(0);
    tracer = undefined;
    const r = report(['--verdict', '--fail-on-v1', log]);
    expect(r.code).toBe(3);
    expect(r.stdout.split('\n')[0]).toBe('not ready: 1 caller broken by enforcement');
    expect(r.stdout).toMatch(/broken by enforcement \(IMDSv1 calls answered 401: the MetadataNoTokenRejected callers\):\n1\. \/usr\/bin\/curl/);
  });

  it('botocore through a session falls back to IMDSv1 after a refused token request: its User-Agent names it, the advice points at v1_reason', async () => {
    await restartImds({ putStatus: 403 });
    tracer = await startTracer(lab, ['--no-log-file', '--stats-interval', '3600']);
    const run = await runClient(lab, '/usr/bin/python3', ['-c', PY_BOTOCORE_CHAIN]);
    expect(run.exitCode, run.stderr).toBe(0);
    expect(run.stdout.trim()).toBe('iam-role');
    const recs = await tracer.count((r) => r.event === 'imds_call' && r.process?.pid === run.pid, 2, 15_000, 'botocore fallback calls');
    for (const r of recs) {
      expect(r.request.user_agent).toMatch(/^Botocore\/1\.\d+\.\d+ /);
      expect(r).toMatchObject({ imds_version: 'v1', v1_reason: 'token_put_refused',
        sdk: { name: 'botocore', imdsv2_min: '1.13.25', advice: expect.stringMatching(/^supports IMDSv2: the v1 call is a fallback — see v1_reason \(the token request was refused/) } });
    }
    expect(await tracer.stop()).toBe(0);
    tracer = undefined;
  });
});
