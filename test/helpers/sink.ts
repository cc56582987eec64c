/**
 * Test helper in the manner of pino's sink(): collects JSON lines from a stream (or text) and parses
 * them, so tests assert on fields, and lets a test await the first record that matches.
 */
import type { Readable } from 'node:stream';

export type Rec = Record<string, any>;

export function parseLines(text: string): Rec[] {
  return text.split('\n').filter((l) => l.trim() !== '').map((l) => JSON.parse(l) as Rec);
}

export class Sink {
  readonly records: Rec[] = [];
  readonly raw: string[] = [];
  private buf = '';
  private waiters: Array<{ pred: (r: Rec) => boolean; resolve: (r: Rec) => void }> = [];

  constructor(stream?: Readable) {
    stream?.on('data', (chunk: Buffer) => this.push(chunk.toString('utf8')));
  }

  push(text: string): void {
    this.buf += text;
    let nl: number;
    while ((nl = this.buf.indexOf('\n')) >= 0) {
      const line = this.buf.slice(0, nl);
      this.buf = this.buf.slice(nl + 1);
      if (!line.trim()) continue;
      this.raw.push(line);
      const rec = JSON.parse(line) as Rec;
      this.records.push(rec);
      this.waiters = this.waiters.filter((w) => (w.pred(rec) ? (w.resolve(rec), false) : true));
    }
  }

  /** The first record (already seen or still to come) for which pred holds. */
  next(pred: (r: Rec) => boolean, timeoutMs = 20_000, what = 'record'): Promise<Rec> {
    const seen = this.records.find(pred);
    if (seen) return Promise.resolve(seen);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), timeoutMs);
      this.waiters.push({ pred, resolve: (r) => { clearTimeout(timer); resolve(r); } });
    });
  }

  calls(): Rec[] {
    return this.records.filter((r) => r.event === 'imds_call');
  }
}
