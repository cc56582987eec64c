/**
 * Capture on a named interface through a supervised worker process: when the interface is removed
 * the worker dies, and it is started again with backoff until the interface is back. The gap is
 * reported (an `error` record when capture stops, a `notice` when it resumes).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { FRAME_OPEN, FRAME_PACKET, RecordReader } from './framing.js';
import type { PcapSource } from './pcap.js';

export interface SupervisedOptions {
  device: string;
  filter: string;
  bufferBytes: number;
  onFrame(frame: Buffer, linkType: string): void;
  onError(message: string): void;
  onNotice(message: string): void;
  maxBackoffMs?: number;
}

const WORKER = fileURLToPath(new URL('./worker.js', import.meta.url));

export class SupervisedCapture implements PcapSource {
  linkType = '';
  private child: ChildProcess | null = null;
  private closed = false;
  private backoffMs = 500;
  private timer: NodeJS.Timeout | null = null;
  restarts = 0;

  private constructor(private readonly o: SupervisedOptions) {}

  /** Resolves once capture is open; rejects with the device's error on the first attempt. */
  static async open(o: SupervisedOptions): Promise<SupervisedCapture> {
    const s = new SupervisedCapture(o);
    await s.start(true);
    return s;
  }

  private start(first: boolean): Promise<void> {
    return new Promise((resolve, reject) => {
      const child = spawn(process.execPath, [WORKER, this.o.device, this.o.filter, String(this.o.bufferBytes)],
        { stdio: ['pipe', 'pipe', 'pipe'] });
      this.child = child;
      const reader = new RecordReader();
      let stderr = '';
      let open = false;
      child.stderr!.on('data', (b: Buffer) => { stderr += b.toString(); });
      child.stdout!.on('data', (chunk: Buffer) => {
        let records;
        try {
          records = reader.push(chunk);
        } catch (err) {
          this.o.onError((err as Error).message);
          child.kill('SIGKILL');
          return;
        }
        for (const r of records) {
          if (r.type === FRAME_PACKET) this.o.onFrame(r.payload, this.linkType);
          else if (r.type === FRAME_OPEN) {
            open = true;
            this.linkType = r.payload.toString('latin1');
            this.backoffMs = 500;
            resolve();
          }
        }
      });
      child.once('exit', (code, signal) => {
        if (this.child === child) this.child = null;
        const why = stderr.trim().split('\n').filter(Boolean).at(-1) ?? `exit ${code ?? signal}`;
        if (first && !open) {
          reject(new Error(why));
          return;
        }
        if (this.closed) return;
        if (open) this.o.onError(`capture on ${this.o.device} stopped (${why}); retrying until the interface is back`);
        this.retry();
      });
    });
  }

  private retry(): void {
    this.timer = setTimeout(() => {
      this.timer = null;
      if (this.closed) return;
      this.start(false).then(() => {
        this.restarts++;
        this.o.onNotice(`capture on ${this.o.device} resumed`);
      }, () => undefined);
    }, this.backoffMs);
    this.backoffMs = Math.min(this.backoffMs * 2, this.o.maxBackoffMs ?? 30_000);
  }

  close(): void {
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    this.child?.stdin?.end();
    this.child?.kill('SIGTERM');
  }
}
