/**
 * Built-in shipping to CloudWatch Logs, through the REAL AWS SDK, against a local stand-in
 * (fake-logs.ts) on 127.0.0.1: every record arrives exactly once and in order, within the
 * PutLogEvents limits, across transient failures; the queue is bounded; exit waits a bounded time.
 * Once end to end through the built CLI (root: it captures packets).
 */
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { CloudWatchShipper, type CloudWatchOptions } from '../../agent/src/cloudwatch/shipper.js';
import { FakeLogs } from './fake-logs.js';
import { CLI, REPO } from '../helpers/repo.js';

const ROOT = REPO;
const CREDS = { AWS_ACCESS_KEY_ID: 'AKIAFAKEFAKEFAKEFAKE', AWS_SECRET_ACCESS_KEY: 'fake-secret-for-tests', AWS_REGION: 'eu-west-1', AWS_EC2_METADATA_DISABLED: 'true' };
const saved: Record<string, string | undefined> = {};

let fake: FakeLogs;
beforeAll(async () => {
  for (const [k, v] of Object.entries(CREDS)) { saved[k] = process.env[k]; process.env[k] = v; }
  delete process.env.AWS_PROFILE;
});
afterAll(() => {
  for (const [k, v] of Object.entries(saved)) { if (v === undefined) delete process.env[k]; else process.env[k] = v; }
});

async function freshFake(): Promise<FakeLogs> {
  fake = new FakeLogs();
  await fake.start();
  return fake;
}
afterEach(async () => { await fake?.stop(); });

function shipper(over: Partial<CloudWatchOptions> = {}): { s: CloudWatchShipper; errors: string[]; notices: string[] } {
  const errors: string[] = [];
  const notices: string[] = [];
  const s = new CloudWatchShipper({
    logGroup: 'g', logStream: 's', region: 'eu-west-1', endpoint: fake.endpoint,
    flushIntervalMs: 50, retryBaseMs: 10, retryMaxMs: 100,
    onError: (m) => errors.push(m), onNotice: (m) => notices.push(m), ...over,
  });
  return { s, errors, notices };
}

const line = (i: number): string => `${JSON.stringify({ event: 'stats', seq: i, pad: 'x'.repeat(i % 7) })}\n`;

describe('CloudWatch shipping (real SDK, local stand-in)', () => {
  it('25,000 records arrive exactly once, in order, in batches within the limits, across a 500 and a throttle', async () => {
    await freshFake();
    fake.putFault = (n) => (n === 2 ? '500' : n === 3 ? 'throttle' : null);
    const { s, errors, notices } = shipper();
    const t0 = Date.now();
    for (let i = 0; i < 25_000; i++) s.write(line(i));
    expect(Date.now() - t0).toBeLessThan(2000); // write() only queues
    await fake.waitForEvents(25_000);
    await s.close(5000);

    const seqs = fake.events('s').map((e) => (JSON.parse(e.message) as { seq: number }).seq);
    expect(seqs).toHaveLength(25_000);
    expect(seqs).toEqual([...Array(25_000).keys()]);
    expect(fake.violations).toEqual([]);
    expect(fake.batches.length).toBeGreaterThanOrEqual(3); // 10,000 events at most per batch
    expect(Math.max(...fake.batches.map((b) => b.events.length))).toBeLessThanOrEqual(10_000);
    expect(fake.ops[0]).toBe('CreateLogStream');
    expect(s.stats()).toEqual({ sent: 25_000, failed_batches: 0, retries: 2, queued: 0, dropped: 0 });
    // the failure streak is reported once per cause (a 500, then throttling)…
    expect(errors).toHaveLength(2);
    expect(errors[0]).toMatch(/cannot send records to CloudWatch Logs \(group g, stream s, region eu-west-1, endpoint http:\/\/127\.0\.0\.1:\d+\): InternalFailure/);
    expect(errors[1]).toMatch(/\(group g, stream s, region eu-west-1, .*\): ThrottlingException: Rate exceeded .*the cause changed; keeping them/);
    expect(notices).toEqual([expect.stringMatching(/reachable again/)]); // …and the recovery
  });

  it('splits by bytes: large records make batches under 1,048,576 bytes counting 26 per event', async () => {
    await freshFake();
    const { s } = shipper();
    const big = 'y'.repeat(100_000);
    for (let i = 0; i < 25; i++) s.write(JSON.stringify({ seq: i, big }));
    await s.close(10_000);
    expect(fake.events().map((e) => JSON.parse(e.message).seq)).toEqual([...Array(25).keys()]);
    expect(fake.batches.length).toBeGreaterThanOrEqual(3);
    expect(fake.violations).toEqual([]);
  });

  it('sends a partial batch by the flush interval, without being closed', async () => {
    await freshFake();
    const { s } = shipper({ flushIntervalMs: 100 });
    s.write(line(1));
    s.write(line(2));
    await fake.waitForEvents(2, 5000); // arrived before close()
    expect(fake.batches).toHaveLength(1);
    await s.close(1000);
    expect(s.stats()).toMatchObject({ sent: 2, queued: 0 });
  });

  it('an existing stream is fine; a stream deleted under it is created again', async () => {
    await freshFake();
    fake.streams.add('g/s');
    fake.putFault = (n) => (n === 1 ? 'not-found' : null);
    const { s } = shipper();
    s.write(line(1));
    await s.close(5000);
    expect(fake.ops).toEqual(['CreateLogStream', 'PutLogEvents', 'CreateLogStream', 'PutLogEvents']);
    expect(fake.events()).toHaveLength(1);
  });

  it('a missing log group is reported in a sentence and retried', async () => {
    await freshFake();
    fake.groups.clear();
    const { s, errors } = shipper();
    s.write(line(1));
    await s.close(300);
    expect(errors[0]).toMatch(/log group g does not exist in region eu-west-1 \(create it, or run with --cloudwatch-create-group/);
    expect(errors.filter((e) => /does not exist/.test(e)), 'the same cause again is not repeated').toHaveLength(1);
    expect(s.stats().retries).toBeGreaterThan(0);
    expect(errors.at(-1)).toMatch(/1 records not shipped to CloudWatch Logs \(group g, stream s, region eu-west-1, .*\) within 300 ms at exit/);
  });

  it('a batch refused as invalid is dropped and counted, the next ones still go', async () => {
    await freshFake();
    fake.putFault = (n) => (n === 1 ? 'invalid' : null);
    const { s, errors } = shipper();
    s.write(line(1));
    await s.close(2000); // the first batch (record 1) is refused
    const { s: s2 } = shipper();
    s2.write(line(2));
    await s2.close(2000);
    expect(s.stats()).toMatchObject({ failed_batches: 1, dropped: 1, sent: 0 });
    expect(errors[0]).toMatch(/refused a batch of 1 records \(InvalidParameterException/);
    expect(fake.events().map((e) => JSON.parse(e.message).seq)).toEqual([2]);
  });

  it('keeps the queue bounded while the service is down, dropping the oldest (counted)', async () => {
    await freshFake();
    fake.putFault = () => 'hang';
    const { s, errors } = shipper({ maxQueueBytes: 10_000 });
    for (let i = 0; i < 2000; i++) s.write(line(i));
    const st = s.stats();
    expect(st.dropped).toBeGreaterThan(1000);
    expect(st.queued).toBe(2000 - st.dropped);
    expect(errors).toContainEqual(expect.stringMatching(/queue full \(10000 bytes\); dropping the oldest/));
    const t0 = Date.now();
    await s.close(500); // a request that never returns does not hold the exit
    expect(Date.now() - t0).toBeLessThan(3000);
    expect(s.stats().dropped).toBe(2000);
  });
});

const isRoot = process.getuid?.() === 0;
const built = existsSync(join(ROOT, 'dist/cli.js'));

describe.skipIf(!isRoot || !built)('end to end through the CLI (root)', () => {
  it('run --cloudwatch-… ships the ready, notice and stats records to the endpoint', async () => {
    await freshFake();
    const child = spawn(process.execPath, [join(ROOT, 'dist/cli.js'), 'run', '--no-log-file', '--backend', 'proc',
      '--duration', '2', '--stats-interval', '1', '--cloudwatch-log-group', 'g', '--cloudwatch-log-stream', 's',
      '--cloudwatch-endpoint', fake.endpoint], { env: { ...process.env, ...CREDS }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => { stdout += c.toString(); });
    child.stderr.on('data', (c: Buffer) => { stderr += c.toString(); });
    const [code] = await new Promise<[number | null]>((r) => child.on('close', (c) => r([c])));
    expect(code, stderr).toBe(0);
    const shipped = fake.events('s').map((e) => JSON.parse(e.message) as Record<string, any>);
    const written = stdout.split('\n').filter(Boolean).map((l) => JSON.parse(l) as Record<string, any>)
      .filter((r) => r.event !== 'error');
    // The same records, in order, but for the final stats: written after the exit flush (they count
    // what it could not ship), they are in the log file and on stdout only.
    expect(written.at(-1)?.event).toBe('stats');
    expect(shipped.map((r) => r.event)).toEqual(written.slice(0, -1).map((r) => r.event));
    expect(shipped[0].event).toBe('ready');
    expect(shipped).toContainEqual(expect.objectContaining({ event: 'notice', component: 'cloudwatch',
      message: expect.stringMatching(/group g, stream s, region eu-west-1/) }));
    const stats = shipped.filter((r) => r.event === 'stats');
    expect(stats.length).toBeGreaterThanOrEqual(1);
    expect(stats.at(-1)).toMatchObject({ cpu_percent: expect.any(Number), rss_bytes: expect.any(Number),
      cloudwatch: { failed_batches: 0, dropped: 0 } });
    expect(stats.at(-1)!.rss_bytes).toBeGreaterThan(10 * 1024 * 1024);
    expect(stats.at(-1)).toMatchObject({ rss_tree_bytes: expect.any(Number), rss_anon_bytes: expect.any(Number) });
    expect(stats.at(-1)!.rss_anon_bytes).toBeLessThan(stats.at(-1)!.rss_bytes);
    expect(fake.violations).toEqual([]);
  });
});

describe('--cloudwatch-create-group (real SDK, the recorded-response fake test/cloudwatch/fake-logs.ts, not the service)', () => {
  it('a missing group is created, with its retention, once; the records then arrive', async () => {
    await freshFake();
    fake.groups.clear();
    const { s, errors, notices } = shipper({ createGroup: true, retentionDays: 30 });
    s.write(line(1));
    await fake.waitForEvents(1);
    await s.close(2000);
    expect(errors).toEqual([]);
    expect(fake.ops.slice(0, 4)).toEqual(['CreateLogStream', 'CreateLogGroup', 'PutRetentionPolicy', 'CreateLogStream']);
    expect(fake.retention.get('g')).toBe(30);
    expect(notices).toContainEqual('created log group g in region eu-west-1 with a retention of 30 days');
  });

  it('a group another instance created first is used as it is: no retention set on it', async () => {
    await freshFake();
    fake.groups.clear();
    fake.groupAppearsOnCreate = true; // CreateLogGroup answers ResourceAlreadyExists: another instance won
    const { s, errors } = shipper({ createGroup: true, retentionDays: 30 });
    s.write(line(1));
    await fake.waitForEvents(1);
    await s.close(2000);
    expect(errors).toEqual([]);
    expect(fake.ops).not.toContain('PutRetentionPolicy');
  });

  it('without the IAM action for retention the group is still used, and the error says which action', async () => {
    await freshFake();
    fake.groups.clear();
    fake.denied.add('PutRetentionPolicy');
    const { s, errors } = shipper({ createGroup: true, retentionDays: 30 });
    s.write(line(1));
    await fake.waitForEvents(1);
    await s.close(2000);
    expect(errors).toEqual([expect.stringMatching(/could not set its retention to 30 days: AccessDeniedException.*logs:PutRetentionPolicy/)]);
  });
});
