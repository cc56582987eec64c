/**
 * End to end: exact request bytes from a real TCP client (python3 sockets in the lab's instance
 * namespace) to the IMDS stand-in at 169.254.169.254, traced by the real agent. Heads that a header
 * or a head shape would otherwise hide, or fake as IMDSv2, each give an IMDSv1 record (naming the
 * ambiguity where there is one); nothing is hidden, no token value is written. The stand-in is a Node
 * server (llhttp) and refuses some of these heads with 400: the record must exist all the same.
 */
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLab, labSupported, IMDS_V4, type Lab } from '../../lab/netns.js';
import { startTracer, type TracerProcess } from '../../lab/traced.js';
import { validate } from '../../agent/src/schema.js';

const support = labSupported();

interface Case { name: string; bytes: string; ambiguity: string | null; tokenPresent: boolean; path: string; method?: string }

const CREDS = '/latest/meta-data/iam/security-credentials/';
const CASES: Case[] = [
  { name: 'Metadata-Flavor: Google on the credentials path', ambiguity: null, tokenPresent: false, path: CREDS,
    bytes: `GET ${CREDS} HTTP/1.1\r\nHost: 169.254.169.254\r\nMetadata-Flavor: Google\r\nConnection: close\r\n\r\n` },
  { name: 'Metadata-Flavor: NotGoogle', ambiguity: null, tokenPresent: false, path: CREDS,
    bytes: `GET ${CREDS} HTTP/1.1\r\nHost: 169.254.169.254\r\nMetadata-Flavor: NotGoogle\r\nConnection: close\r\n\r\n` },
  { name: 'a bare-LF head (HTTP/1.0)', ambiguity: 'bare_lf', tokenPresent: false, path: '/latest/meta-data/',
    bytes: 'GET /latest/meta-data/ HTTP/1.0\n\n' },
  { name: 'the token header after a bare-LF blank line', ambiguity: 'bare_lf', tokenPresent: false, path: '/latest/meta-data/ami-id',
    bytes: 'GET /latest/meta-data/ami-id HTTP/1.1\nHost: 169.254.169.254\n\nX-aws-ec2-metadata-token: {TOKEN}\r\n\r\n' },
  { name: 'the token header as an obs-fold continuation', ambiguity: 'obs_fold', tokenPresent: false, path: '/latest/meta-data/hostname',
    bytes: 'GET /latest/meta-data/hostname HTTP/1.1\r\nHost: 169.254.169.254\r\nUser-Agent: x\r\n X-aws-ec2-metadata-token: {TOKEN}\r\n\r\n' },
  { name: 'whitespace before the colon of the token header', ambiguity: 'space_before_colon', tokenPresent: true, path: '/latest/meta-data/instance-id',
    bytes: 'GET /latest/meta-data/instance-id HTTP/1.1\r\nHost: 169.254.169.254\r\nX-aws-ec2-metadata-token : {TOKEN}\r\n\r\n' },
  { name: 'dot segments and percent-encoding through another cloud\'s path', ambiguity: null, tokenPresent: false,
    path: '/computeMetadata/%2e%2e/latest/meta-data/', bytes: 'GET /computeMetadata/%2e%2e/latest/meta-data/ HTTP/1.1\r\nHost: 169.254.169.254\r\n\r\n' },
  { name: 'a head the client closed before its blank line', ambiguity: 'head_incomplete', tokenPresent: false, path: '/latest/meta-data/local-ipv4',
    bytes: 'GET /latest/meta-data/local-ipv4 HTTP/1.1\r\nHost: 169.254.169.254\r\n' },
  { name: 'a lowercase "put" on the token path', ambiguity: 'nonstandard_method', tokenPresent: false, path: '/latest/api/token', method: 'put',
    bytes: 'put /latest/api/token HTTP/1.1\r\nHost: 169.254.169.254\r\nX-aws-ec2-metadata-token-ttl-seconds: 60\r\n\r\n' },
];

describe.skipIf(!support.ok)(`hostile and odd request heads end to end${support.ok ? '' : ` (skipped: ${support.reason})`}`, () => {
  let lab: Lab;
  let tracer: TracerProcess; // every record: v1, v2 and other clouds
  let v1only: TracerProcess; // the defaults: IMDSv1 only
  beforeAll(async () => {
    lab = await createLab();
    await lab.startImds({ canary: 'CANARYTOKEN' });
    tracer = await startTracer(lab, ['--no-log-file', '--include-v2', '--include-other', '--stats-interval', '3600']);
    v1only = await startTracer(lab, ['--no-log-file', '--stats-interval', '3600', '--backend', 'proc']);
  });
  afterAll(async () => {
    await tracer?.stop();
    await v1only?.stop();
    await lab?.destroy();
  });

  it('each request is one IMDSv1 record, with the ambiguity named, and nothing is hidden by default', async () => {
    const run = await lab.exec(lab.instanceNs, 'python3', [join(lab.repoRoot, 'test/helpers/raw-http.py')], {
      input: JSON.stringify({ host: IMDS_V4, port: 80, token_first: true, requests: CASES.map((c) => c.bytes) }),
      timeoutMs: 30_000,
    });
    expect(run.exitCode, run.stderr).toBe(0);
    const out = JSON.parse(run.stdout) as { token_port: number; results: Array<{ port: number; status: string | null }> };
    expect(out.results).toHaveLength(CASES.length);
    const ports = out.results.map((r) => r.port);
    const isCase = (r: Record<string, any>): boolean => r.event === 'imds_call' && ports.includes(r.connection.sport);
    const mine = await tracer.count(isCase, CASES.length, 20_000, 'records of the raw requests');
    const defaults = await v1only.count(isCase, CASES.length, 20_000, 'default (v1-only) records of the raw requests');
    // The token request itself is a real IMDSv2 call: reported as such with --include-v2.
    const put = await tracer.next((r) => r.event === 'imds_call' && r.connection.sport === out.token_port, 10_000, 'the token PUT');
    expect(put).toMatchObject({ imds_version: 'v2', request: { token_request: true } });

    CASES.forEach((c, i) => {
      for (const [who, recs] of [['all', mine], ['defaults', defaults]] as const) {
        const got = recs.filter((r) => r.connection.sport === ports[i]);
        expect(got, `${c.name} (${who}; stand-in said ${out.results[i].status})`).toHaveLength(1);
        const r = got[0];
        expect(r, `${c.name} (${who})`).toMatchObject({
          imds_version: 'v1', provider: 'aws',
          request: { method: c.method ?? 'GET', path: c.path, token_present: c.tokenPresent, token_request: false },
        });
        if (c.ambiguity) expect(r.request.ambiguity, c.name).toBe(c.ambiguity);
        else expect(r.request.ambiguity, c.name).toBeUndefined();
        expect(validate(r)).toEqual([]);
      }
    });
    // The credentials path with a GCE header was served (it is an IMDSv1 call the IMDS answers).
    expect(out.results[0].status).toMatch(/^HTTP\/1\.1 200/);
  });

  it('the final stats count the ambiguous calls, and no token value reached any output', async () => {
    await tracer.stop();
    const stats = tracer.records.filter((r) => r.event === 'stats').at(-1)!;
    expect(validate(stats)).toEqual([]);
    expect(stats.calls_ambiguous).toBeGreaterThanOrEqual(CASES.filter((c) => c.ambiguity).length);
    expect(stats.calls.v1).toBeGreaterThanOrEqual(CASES.length);
    const text = JSON.stringify(tracer.records) + tracer.stderr();
    expect(text).not.toContain('CANARYTOKEN'); // every token of the stand-in holds it
  });
});
