import { describe, expect, it } from 'vitest';
import { DeferredShipper } from '../../agent/src/cloudwatch/deferred.js';
import type { CloudWatchShipper } from '../../agent/src/cloudwatch/shipper.js';

/** Stands in for the real shipper (named as a mock: only its LineSink surface is used here). */
function mockShipper() {
  const lines: string[] = [];
  const s = {
    lines,
    write: (line: string) => { lines.push(line); },
    stats: () => ({ sent: lines.length, failed_batches: 0, retries: 0, dropped: 0, queued: 0 }),
    close: async () => undefined,
  };
  return s;
}

describe('DeferredShipper', () => {
  it('keeps records while the target cannot be resolved, then hands them over in order', async () => {
    const errors: string[] = [];
    const notices: string[] = [];
    const real = mockShipper();
    let attempts = 0;
    let resolved!: () => void;
    const connected = new Promise<void>((r) => { resolved = r; });
    const d = new DeferredShipper({
      maxQueueBytes: 1 << 20, retryBaseMs: 5, retryMaxMs: 20,
      connect: async () => {
        if (++attempts < 3) throw new Error('no AWS region for CloudWatch Logs');
        resolved();
        return real as unknown as CloudWatchShipper;
      },
      onError: (m) => errors.push(m), onNotice: (m) => notices.push(m),
    });
    const rec = { event: 'notice' } as never;
    d.write('a\n', rec);
    d.write('b\n', rec);
    expect(d.stats()).toMatchObject({ queued: 2, sent: 0 });
    await connected;
    await new Promise((r) => setImmediate(r));
    d.write('c\n', rec);
    expect(real.lines).toEqual(['a\n', 'b\n', 'c\n']);
    expect(attempts).toBe(3);
    expect(errors).toEqual(['CloudWatch Logs shipping waits: no AWS region for CloudWatch Logs; keeping records and retrying']);
    expect(notices).toEqual(['CloudWatch Logs target resolved; shipping the records kept meanwhile']);
    await d.close(0);
  });

  it('is bounded while waiting, and counts what it never shipped', async () => {
    const d = new DeferredShipper({
      maxQueueBytes: 10, retryBaseMs: 60_000, retryMaxMs: 60_000,
      connect: async () => { throw new Error('offline'); },
      onError: () => undefined, onNotice: () => undefined,
    });
    for (let i = 0; i < 5; i++) d.write('12345\n', {} as never);
    expect(d.stats()).toMatchObject({ queued: 1, dropped: 4 });
    await d.close(0);
    expect(d.stats()).toMatchObject({ queued: 0, dropped: 5 });
  });
});
