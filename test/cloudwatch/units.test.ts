/** The pure parts of CloudWatch shipping, the stream/region resolution, the CPU % arithmetic and the memory the stats record reports. */
import { describe, expect, it } from 'vitest';
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { once } from 'node:events';
import {
  backoffMs, batchBytes, batchLength, describeError, failureAction, type QueuedEvent,
} from '../../agent/src/cloudwatch/batch.js';
import { resolveTarget } from '../../agent/src/cloudwatch/target.js';
import { cpuPercent, ResourceSampler, statusMemory } from '../../agent/src/self/resources.js';

const LIMITS = { maxEvents: 10_000, maxBytes: 1_048_576, overheadBytes: 26, maxSpanMs: 24 * 3600_000 };
const ev = (bytes: number, timestamp = 0): QueuedEvent => ({ message: 'm'.repeat(bytes), bytes, timestamp });

describe('batchLength', () => {
  it.each([
    ['empty', [], LIMITS, 0],
    ['all fit', [ev(10), ev(10)], LIMITS, 2],
    ['count limit', Array.from({ length: 10_005 }, () => ev(1)), LIMITS, 10_000],
    // 1022 × (1000 + 26) = 1,048,572 ≤ 1,048,576 < 1023 × 1026
    ['byte limit counts 26 per event', Array.from({ length: 2000 }, () => ev(1000)), LIMITS, 1022],
    ['exactly the byte limit', [ev(1_048_576 - 52), ev(0)], LIMITS, 2],
    ['one byte over', [ev(1_048_576 - 51), ev(0)], LIMITS, 1],
    ['24 h span', [ev(1, 0), ev(1, 24 * 3600_000), ev(1, 24 * 3600_000 + 1)], LIMITS, 2],
    ['at least one', [ev(2_000_000)], LIMITS, 1],
  ])('%s', (_name, events, limits, n) => {
    expect(batchLength(events as QueuedEvent[], 0, limits)).toBe(n);
  });

  it('from an offset, within the byte limit as the service counts it', () => {
    const events = Array.from({ length: 5000 }, (_, i) => ev(200 + (i % 300), i));
    let start = 0;
    const sizes: number[] = [];
    while (start < events.length) {
      const n = batchLength(events, start, LIMITS);
      expect(batchBytes(events.slice(start, start + n), 26)).toBeLessThanOrEqual(LIMITS.maxBytes);
      if (start + n < events.length) {
        expect(batchBytes(events.slice(start, start + n + 1), 26)).toBeGreaterThan(LIMITS.maxBytes); // as full as allowed
      }
      sizes.push(n);
      start += n;
    }
    expect(sizes.reduce((a, b) => a + b, 0)).toBe(5000);
  });
});

describe('failureAction', () => {
  const err = (name: string, status?: number) => Object.assign(new Error('x'), { name, $metadata: { httpStatusCode: status } });
  it.each([
    ['ThrottlingException', 400, 'retry'],
    ['ServiceUnavailableException', 503, 'retry'],
    ['InternalFailure', 500, 'retry'],
    ['AccessDeniedException', 400, 'retry'],
    ['UnrecognizedClientException', 400, 'retry'],
    ['TimeoutError', undefined, 'retry'],
    ['ResourceNotFoundException', 400, 'create-stream'],
    ['InvalidParameterException', 400, 'drop'],
    ['DataAlreadyAcceptedException', 400, 'accepted'],
  ])('%s (%s) → %s', (name, status, action) => expect(failureAction(err(name, status))).toBe(action));
  it('a network error (no name) is retried', () => {
    expect(failureAction(Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:1'), { code: 'ECONNREFUSED' }))).toBe('retry');
  });
});

describe('backoffMs', () => {
  it.each([
    [0, 0, 250], [0, 0.999, 500], [1, 0, 500], [3, 0.5, 3000], [10, 0, 15_000], [10, 0.999, 29_985], [99, 0.999, 29_985],
  ])('attempt %i, random %f → %i ms', (attempt, random, ms) => {
    expect(backoffMs(attempt, 500, 30_000, random)).toBe(ms);
  });
});

describe('describeError', () => {
  it('names the error, its message and the HTTP status', () => {
    expect(describeError(Object.assign(new Error('Rate exceeded'), { name: 'ThrottlingException', $metadata: { httpStatusCode: 400 } })))
      .toBe('ThrottlingException: Rate exceeded (HTTP 400)');
    expect(describeError(Object.assign(new Error('connect ECONNREFUSED'), { code: 'ECONNREFUSED' }))).toBe('ECONNREFUSED: connect ECONNREFUSED');
  });
});

describe('resolveTarget', () => {
  const never = () => Promise.reject(new Error('must not be called'));
  const noImds = () => Promise.reject(new Error('not on EC2, or the IMDS is unreachable: IMDS did not answer within 1000 ms'));
  const onEc2 = () => Promise.resolve({ instanceId: 'i-0abc', region: 'ap-south-1' });

  it('given stream and region: the instance is not asked', async () => {
    expect(await resolveTarget({ logGroup: 'g', logStream: 's', region: 'eu-west-1', endpoint: 'http://127.0.0.1:1' },
      { env: {}, identity: never, hostname: () => 'h' }))
      .toEqual({ logGroup: 'g', logStream: 's', region: 'eu-west-1', endpoint: 'http://127.0.0.1:1', notes: [] });
    expect((await resolveTarget({ logGroup: 'g', logStream: 's' }, { env: { AWS_REGION: 'us-east-2' }, identity: never, hostname: () => 'h' })).region)
      .toBe('us-east-2');
    expect((await resolveTarget({ logGroup: 'g', logStream: 's' }, { env: { AWS_DEFAULT_REGION: 'us-west-1' }, identity: never, hostname: () => 'h' })).region)
      .toBe('us-west-1');
  });

  it('on an instance: the stream is the instance id, the region the instance\'s', async () => {
    expect(await resolveTarget({ logGroup: 'g' }, { env: {}, identity: onEc2, hostname: () => 'h' }))
      .toEqual({ logGroup: 'g', logStream: 'i-0abc', region: 'ap-south-1', notes: [] });
  });

  it('no instance id: the hostname, saying so; no region at all: a sentence saying what to set', async () => {
    const t = await resolveTarget({ logGroup: 'g' }, { env: { AWS_REGION: 'eu-west-1' }, identity: noImds, hostname: () => 'build-box' });
    expect(t.logStream).toBe('build-box');
    expect(t.notes).toEqual(['no instance id (not on EC2, or the IMDS is unreachable: IMDS did not answer within 1000 ms); CloudWatch log stream named after the hostname build-box']);
    await expect(resolveTarget({ logGroup: 'g', logStream: 's' }, { env: {}, identity: noImds, hostname: () => 'h' }))
      .rejects.toThrow(/^no AWS region for CloudWatch Logs: set AWS_REGION or --cloudwatch-region/);
  });
});

describe('cpu_percent and rss_bytes', () => {
  const s = (timestamp: number, ctime: number, elapsed = 0, rss = 1) => ({ timestamp, ctime, elapsed, rss });
  it.each([
    [null, s(0, 500, 1000), 50], // since process start
    [s(0, 100), s(10_000, 2100), 20], // 2 s of CPU in 10 s
    [s(0, 100), s(1000, 2100), 200], // two cores busy
    [s(5, 100), s(5, 100), 0],
  ])('%j → %j: %f %%', (prev, cur, pct) => expect(cpuPercent(prev, cur)).toBe(pct));

  it('each stats record gets the CPU % since the previous one; nothing before the first sample', async () => {
    const samples = [s(1000, 100, 1000, 10), s(11_000, 1100, 11_000, 20), s(21_000, 6100, 21_000, 30)];
    const r = new ResourceSampler(1, async () => samples.shift()!);
    expect(r.fields()).toEqual({});
    await r.sample();
    expect(r.fields()).toEqual({ cpu_percent: 10, rss_bytes: 10 });
    await r.sample();
    expect(r.fields()).toEqual({ cpu_percent: 10, rss_bytes: 20 });
    expect(r.fields()).toEqual({ cpu_percent: 10, rss_bytes: 20 }); // no new sample: the same figure
    await r.sample();
    expect(r.fields()).toEqual({ cpu_percent: 50, rss_bytes: 30 });
  });

  it('the real pidusage measures this process; /proc its tree (a child of it too) and its own memory', async () => {
    const child = spawn('sleep', ['600'], { stdio: 'ignore' });
    await once(child, 'spawn');
    try {
      const r = new ResourceSampler();
      await r.sample();
      const f = r.fields() as { cpu_percent: number; rss_bytes: number; rss_tree_bytes: number; rss_anon_bytes: number };
      r.stop();
      expect(f.rss_bytes).toBeGreaterThan(10 * 1024 * 1024);
      expect(f.cpu_percent).toBeGreaterThanOrEqual(0);
      const sleepRss = statusMemory(readFileSync(`/proc/${child.pid}/status`, 'utf8')).rss!;
      expect(sleepRss).toBeGreaterThan(0);
      // Sampled at different moments: node's own RSS moves a little between the two reads.
      expect(f.rss_tree_bytes).toBeGreaterThan(f.rss_bytes + sleepRss / 2);
      expect(f.rss_anon_bytes).toBeGreaterThan(0);
      expect(f.rss_anon_bytes).toBeLessThan(f.rss_bytes);
    } finally {
      child.kill();
    }
  });

  it('reads VmRSS and RssAnon from a status text, bytes; null where absent', () => {
    expect(statusMemory('Name:\tnode\nVmRSS:\t   81234 kB\nRssAnon:\t   30000 kB\nRssFile:\t   51234 kB\n'))
      .toEqual({ rss: 81234 * 1024, anon: 30000 * 1024 });
    expect(statusMemory('Name:\tkthreadd\n')).toEqual({ rss: null, anon: null });
  });

  it('tree and anonymous RSS are in the fields when the sample has them', async () => {
    const r = new ResourceSampler(1, async () => ({ timestamp: 1000, ctime: 100, elapsed: 1000, rss: 10, rssTree: 25, rssAnon: 4 }));
    await r.sample();
    expect(r.fields()).toEqual({ cpu_percent: 10, rss_bytes: 10, rss_tree_bytes: 25, rss_anon_bytes: 4 });
  });
});
