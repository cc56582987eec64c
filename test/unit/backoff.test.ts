/** The one backoff the helper processes (capture helper, eBPF loader) and CloudWatch retries use. */
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { backoffMs, RestartBackoff } from '../../agent/src/backoff.js';

describe('RestartBackoff', () => {
  it('restarts at once, then waits base, 2·base, … up to max while restarts keep failing', () => {
    const b = new RestartBackoff(500, 3000, 10_000);
    expect(Array.from({ length: 6 }, () => b.next())).toEqual([0, 500, 1000, 2000, 3000, 3000]);
  });

  it('a process that ran for stableMs makes the next restart immediate; a short run does not', () => {
    const b = new RestartBackoff(1000, 60_000, 10_000);
    b.next(); b.next(); b.next();
    b.ended(9_999);
    expect(b.next()).toBe(4000);
    b.ended(10_000);
    expect([b.next(), b.next()]).toEqual([0, 1000]);
  });
});

describe('backoffMs', () => {
  it('without jitter: base·2^attempt capped at max', () => {
    expect([0, 1, 2, 3, 10, 100].map((a) => backoffMs(a, 200, 5000))).toEqual([200, 400, 800, 1600, 5000, 5000]);
  });

  it('with jitter: within [half, whole) of the capped exponential, never above max', () => {
    fc.assert(fc.property(fc.nat(64), fc.integer({ min: 1, max: 10_000 }), fc.integer({ min: 1, max: 600_000 }),
      fc.double({ min: 0, max: 1, maxExcluded: true, noNaN: true }), (attempt, base, max, r) => {
        const exp = Math.min(max, base * 2 ** Math.min(attempt, 30));
        const d = backoffMs(attempt, base, max, r);
        return d >= Math.round(exp / 2) && d <= exp && d <= max;
      }));
  });
});
