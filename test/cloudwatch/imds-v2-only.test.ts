/**
 * The agent never calls IMDSv1, neither itself nor through its AWS SDK: the real SDK credential
 * chain of the CloudWatch shipper, and the agent's own identity look-up, against the IMDS stand-in
 * on 127.0.0.1 (AWS_EC2_METADATA_SERVICE_ENDPOINT), with the token PUT refused (405: SDKs then fall
 * back to IMDSv1) and allowed. The stand-in's request log is the ledger. No root needed.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { createImdsServer, type ImdsRequestEvent, type ImdsServer } from '../../lab/imds-server.js';
import { CloudWatchShipper } from '../../agent/src/cloudwatch/shipper.js';
import { imdsIdentity } from '../../agent/src/cloudwatch/target.js';
import { FakeLogs } from './fake-logs.js';

const saved = { ...process.env };
let imds: ImdsServer | null = null;
let seen: ImdsRequestEvent[] = [];
let fake: FakeLogs;

async function standIn(putStatus?: number): Promise<string> {
  seen = [];
  imds = await createImdsServer({ listen: ['127.0.0.1'], port: 0, putStatus, onRequest: (e) => seen.push(e) });
  const base = `http://127.0.0.1:${imds.addresses()[0].port}`;
  process.env.AWS_EC2_METADATA_SERVICE_ENDPOINT = base;
  return base;
}

/** IMDSv1 requests: data requests without a token. */
const v1 = (): ImdsRequestEvent[] => seen.filter((e) => e.kind === 'data' && e.token === 'none');

beforeAll(async () => {
  for (const k of Object.keys(process.env)) if (/^AWS_/.test(k)) delete process.env[k];
  // Only the instance-metadata provider can answer: no keys, no profile, no container endpoint.
  Object.assign(process.env, { AWS_CONFIG_FILE: '/dev/null', AWS_SHARED_CREDENTIALS_FILE: '/dev/null' });
  fake = new FakeLogs();
  await fake.start();
});
afterEach(async () => { await imds?.close(); imds = null; });
afterAll(async () => {
  await fake.stop();
  for (const k of Object.keys(process.env)) if (!(k in saved)) delete process.env[k];
  Object.assign(process.env, saved);
});

function shipper(): { s: CloudWatchShipper; errors: string[]; firstError: Promise<string> } {
  const errors: string[] = [];
  let resolve: (m: string) => void = () => undefined;
  const firstError = new Promise<string>((r) => { resolve = r; });
  const s = new CloudWatchShipper({
    logGroup: 'g', logStream: 's', region: 'eu-west-1', endpoint: fake.endpoint, flushIntervalMs: 20,
    retryBaseMs: 50, retryMaxMs: 100,
    onError: (m) => { errors.push(m); resolve(m); }, onNotice: () => undefined,
  });
  return { s, errors, firstError };
}

describe('the CloudWatch shipper\'s SDK never falls back to IMDSv1', () => {
  it('token PUT refused (405): no IMDSv1 request, credentials refused, records kept', async () => {
    await standIn(405);
    const { s, firstError } = shipper();
    s.write('{"event":"notice","n":1}');
    // Either the credentials are refused (right) or, had it fallen back to IMDSv1, the batch arrives.
    const first = await Promise.race([firstError, fake.waitForEvents(1, 15_000).then(() => 'shipped')]);
    await s.close(300);
    expect(seen.filter((e) => e.kind === 'token').length).toBeGreaterThanOrEqual(1); // it asked for a token…
    expect(v1()).toEqual([]); // …and never went on without one
    expect(first).toMatch(/cannot send records to CloudWatch Logs/);
    expect(fake.events()).toEqual([]);
  });

  it('token PUT answered: credentials through IMDSv2 only, the records are shipped', async () => {
    await standIn();
    const { s } = shipper();
    s.write('{"event":"notice","n":2}');
    await fake.waitForEvents(1, 15_000);
    await s.close(2000);
    expect(fake.events().map((e) => JSON.parse(e.message).n)).toContain(2);
    expect(seen.map((e) => [e.method, e.kind, e.token])).toEqual(expect.arrayContaining([['PUT', 'token', 'none'], ['GET', 'data', 'valid']]));
    expect(v1()).toEqual([]);
  });
});

describe('the agent\'s own identity look-up (log stream, region) is IMDSv2 only', () => {
  it('a refused token PUT ends it: no IMDSv1 request instead', async () => {
    const base = await standIn(405);
    await expect(imdsIdentity({}, 2000, base)).rejects.toThrow(/token request answered 405/);
    expect(seen.map((e) => [e.method, e.path])).toEqual([['PUT', '/latest/api/token']]);
  });

  it('with a token it reads the identity document', async () => {
    const base = await standIn();
    await expect(imdsIdentity({}, 2000, base)).resolves.toEqual({ instanceId: 'i-0123456789abcdef0', region: 'us-east-1' });
    expect(v1()).toEqual([]);
  });
});
