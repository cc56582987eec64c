/**
 * CloudWatch shipping that never holds up tracing: the records are queued (bounded) while the
 * target (region, log stream) is resolved in the background — which may need the instance's
 * identity, not reachable yet early in boot — with retries and backoff; once it is known the real
 * shipper takes the queue over and everything after it.
 */
import type { OutputRecord } from '../record.js';
import type { CloudWatchCounters, CloudWatchShipper } from './shipper.js';
import type { LineSink } from '../output/writer.js';

export interface DeferredOptions {
  maxQueueBytes: number;
  retryBaseMs: number;
  retryMaxMs: number;
  /** Resolve the target and build the shipper; rejects with a sentence saying what is missing. */
  connect(): Promise<CloudWatchShipper>;
  onError(message: string): void;
  onNotice(message: string): void;
}

export class DeferredShipper implements LineSink {
  private shipper: CloudWatchShipper | null = null;
  private queue: Array<{ line: string; rec: OutputRecord }> = [];
  private queueBytes = 0;
  private dropped = 0;
  private timer: NodeJS.Timeout | null = null;
  private closed = false;
  private reported = false;

  constructor(private readonly o: DeferredOptions) {
    void this.attempt(o.retryBaseMs);
  }

  private async attempt(nextDelay: number): Promise<void> {
    try {
      const s = await this.o.connect();
      if (this.closed) { await s.close(0); return; }
      this.shipper = s;
      for (const q of this.queue) s.write(q.line, q.rec);
      this.queue = [];
      this.queueBytes = 0;
      if (this.reported) this.o.onNotice('CloudWatch Logs target resolved; shipping the records kept meanwhile');
    } catch (err) {
      if (this.closed) return;
      if (!this.reported) {
        this.o.onError(`CloudWatch Logs shipping waits: ${(err as Error).message}; keeping records and retrying`);
        this.reported = true;
      }
      this.timer = setTimeout(() => void this.attempt(Math.min(nextDelay * 2, this.o.retryMaxMs)), nextDelay);
      this.timer.unref();
    }
  }

  write(line: string, rec: OutputRecord): void {
    if (this.shipper) {
      this.shipper.write(line, rec);
      return;
    }
    if (this.closed) return;
    this.queue.push({ line, rec });
    this.queueBytes += line.length;
    while (this.queueBytes > this.o.maxQueueBytes && this.queue.length > 1) {
      this.queueBytes -= (this.queue.shift() as { line: string }).line.length;
      this.dropped++;
    }
  }

  stats(): CloudWatchCounters {
    const s = this.shipper?.stats() ?? { sent: 0, failed_batches: 0, retries: 0, dropped: 0, queued: 0 };
    return { ...s, dropped: s.dropped + this.dropped, queued: s.queued + this.queue.length };
  }

  async close(timeoutMs: number): Promise<void> {
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    this.dropped += this.queue.length; // never shipped: the target was never known
    this.queue = [];
    await this.shipper?.close(timeoutMs);
  }
}
