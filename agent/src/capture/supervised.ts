/**
 * Capture through a supervised process — native/imds_capture (libpcap with TPACKET_V3 blocks, drop
 * counts, interface names on `any`), or where that is not built, worker.ts (the `cap` binding).
 * When the process dies (its interface was removed) it is started again with backoff until the
 * interface is back; the gap is reported (an `error` record when capture stops, a `notice` when it
 * resumes).
 *
 * Memory: each chunk of the helper's pipe is parsed and handed on synchronously, so nothing queues
 * in the agent; the parse buffer holds at most one unfinished record (MAX_RECORD, larger is a corrupt
 * stream). When the agent is behind it simply reads later: the pipe fills, and the helper keeps the
 * rest in its own bounded queue (16 MiB, dropped beyond and counted in stats.pcap.dropped).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ROOT } from '../paths.js';
import {
  FRAME_OPEN, FRAME_PACKET, FRAME_STATS, parseStats, RecordReader, splitPacket, type CaptureStats,
} from './framing.js';
import type { PcapSource } from './pcap.js';

/** The native capture helper of this installation, if built. */
export function nativeHelper(): string | null {
  const p = process.env.IMDS_TRACER_CAPTURE_HELPER ?? join(ROOT, 'native', '.output', 'imds_capture');
  return existsSync(p) ? p : null;
}

export interface SupervisedOptions {
  device: string;
  filter: string;
  bufferBytes: number;
  /** The program to run: the native helper, or null for the `cap` worker. */
  helper: string | null;
  onFrame(frame: Buffer, linkType: string, tsUs: number): void;
  onStats?(s: CaptureStats): void;
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
      const args = [this.o.device, this.o.filter, String(this.o.bufferBytes)];
      const child = this.o.helper
        ? spawn(this.o.helper, args, { stdio: ['pipe', 'pipe', 'pipe'] })
        : spawn(process.execPath, [WORKER, ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
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
          if (r.type === FRAME_PACKET) {
            const { tsUs, frame } = splitPacket(r.payload);
            this.o.onFrame(frame, this.linkType, tsUs);
          } else if (r.type === FRAME_STATS) {
            this.o.onStats?.(parseStats(r.payload));
          } else if (r.type === FRAME_OPEN) {
            open = true;
            this.linkType = r.payload.toString('latin1');
            this.backoffMs = 500;
            resolve();
          }
        }
      });
      child.once('error', (err) => {
        stderr += `${err.message}\n`;
        if (first && !open) reject(new Error(`cannot start the capture helper: ${err.message}`));
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

  /** Stop: the capture process hands over what the kernel still holds, then exits (bounded wait). */
  async close(): Promise<void> {
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    const child = this.child;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise<void>((resolve) => child.once('close', () => resolve())); // after its stdout is read
    child.stdin?.end();
    const timer = setTimeout(() => child.kill('SIGKILL'), 2000);
    await exited;
    clearTimeout(timer);
  }
}
