/**
 * Capture through a supervised process — native/imds_capture (libpcap with TPACKET_V3 blocks, drop
 * counts, interface names on `any`), or where that is not built, worker.ts (the `cap` binding).
 * When the process dies (killed, or its interface was removed) it is started again at once, and with
 * backoff only while restarts keep failing (until the interface is back); the gap is reported (one
 * `error` record when capture stops, one `notice` when it resumes, with both times) and handed to
 * onGap, with the moment from which packets were lost (what the dead process had not handed over).
 * Packets dropped (the kernel's ring or the helper's queue full) are one `error` when the drop counters
 * start to grow and one `notice` with the count once they have stopped (DEFAULTS.lossQuietMs).
 *
 * Memory: each chunk of the helper's pipe is parsed and handed on synchronously, so nothing queues
 * in the agent; the parse buffer holds at most one unfinished record (MAX_RECORD, larger is a corrupt
 * stream). When the agent is behind it simply reads later: the pipe fills, and the helper keeps the
 * rest in its own bounded queue (16 MiB, dropped beyond and counted in stats.pcap.dropped).
 */
import { HelperProcess, HelperRestarts } from '../helper-process.js';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { DEFAULTS } from '../defaults.js';
import { LossSpell } from '../loss-spell.js';
import { ROOT } from '../paths.js';
import {
  CorruptStreamError, FRAME_OPEN, FRAME_PACKET, FRAME_STATS, packetTime, parseStats, RecordReader, type CaptureStats,
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
  /** Capture stopped at atMs; packets it captured after lostFromMs never reached the agent. */
  onDown?(atMs: number, lostFromMs: number): void;
  /** Capture resumed at atMs. */
  onUp?(atMs: number): void;
  /** The drop counters grew between two readings (fromMs, toMs]. */
  onDrops?(fromMs: number, toMs: number): void;
  maxBackoffMs?: number;
  /** A capture process that ran at least this long before dying is restarted at once. */
  stableMs?: number;
  /** How far back, at most, packets are taken as lost with a dead capture process. */
  maxLossMs?: number;
  /** Drops are said to have stopped (a `notice` with their count) once none is counted for this long. */
  lossQuietMs?: number;
}

const WORKER = fileURLToPath(new URL('./worker.js', import.meta.url));

export class SupervisedCapture implements PcapSource {
  linkType = '';
  private helper: HelperProcess | null = null;
  private closed = false;
  /** Restarts: at once after a capture that ran for stableMs, with growing delays while they keep failing. */
  private readonly restartsDue: HelperRestarts;
  private downAt: number | null = null;
  /** Packets dropped: one error when the drop counters start to grow, one notice when they stop. */
  private readonly drops: LossSpell;
  restarts = 0;

  private constructor(private readonly o: SupervisedOptions) {
    this.restartsDue = new HelperRestarts(500, o.maxBackoffMs ?? 30_000, o.stableMs ?? 10_000);
    this.drops = new LossSpell({
      quietMs: o.lossQuietMs ?? DEFAULTS.lossQuietMs,
      began: () => o.onError(`capture on ${o.device} is dropping packets: the kernel's capture ring or the capture helper's `
        + 'queue is full, the agent is not keeping up; IMDS calls in the dropped packets may have no record '
        + '(counted in stats.pcap.dropped; a connection the kernel saw is still recorded, with wire_reason capture_dropped)'),
      ended: (lost, fromMs, toMs, stopped) => o.onNotice(`capture on ${o.device} ${stopped ? 'stopped' : 'keeps up again'}: `
        + `${lost} packets were dropped between ${new Date(fromMs).toISOString()} and ${new Date(toMs).toISOString()}`),
    });
  }

  /** Resolves once capture is open; rejects with the device's error on the first attempt. */
  static async open(o: SupervisedOptions): Promise<SupervisedCapture> {
    const s = new SupervisedCapture(o);
    await s.start(true);
    return s;
  }

  private start(first: boolean): Promise<void> {
    return new Promise((resolve, reject) => {
      const args = [this.o.device, this.o.filter, String(this.o.bufferBytes)];
      const reader = new RecordReader();
      /** Capture time of the newest packet this process handed over. */
      let lastPacketMs = 0;
      let lastStats: { at: number; lost: number; ours: number } | null = null;
      const onRecord = (type: number, buf: Buffer, start: number, end: number): void => {
        if (type === FRAME_PACKET) {
          const tsUs = packetTime(buf, start);
          lastPacketMs = Math.max(lastPacketMs, tsUs / 1000);
          this.o.onFrame(buf.subarray(start + 8, end), this.linkType, tsUs);
        } else if (type === FRAME_STATS) {
          const st = parseStats(buf.subarray(start, end));
          const now = Date.now();
          const lost = st.dropped + st.ifDropped + st.queueDropped;
          // What capture itself dropped (its ring or queue full: the agent behind), not the interface's own drops.
          const ours = st.dropped + st.queueDropped;
          const since = lastStats?.at ?? helper.readyAt;
          if (lost > (lastStats?.lost ?? 0)) this.o.onDrops?.(since, now);
          this.drops.grew(ours - (lastStats?.ours ?? 0), since, now);
          lastStats = { at: now, lost, ours };
          this.o.onStats?.(st);
        } else if (type === FRAME_OPEN) {
          helper.ready(); // the handshake: capture is open
          this.linkType = buf.toString('latin1', start, end);
          resolve();
        }
      };
      const helper: HelperProcess = new HelperProcess(this.o.helper ?? process.execPath, this.o.helper ? args : [WORKER, ...args], {
        onStdout: (chunk) => {
          try {
            reader.push(chunk, onRecord);
          } catch (err) {
            if (!(err instanceof CorruptStreamError)) throw err;
            this.o.onError(err.message);
            helper.kill();
          }
        },
        onSpawnError: (err) => {
          if (first && !helper.isReady) reject(new Error(`cannot start the capture helper: ${err.message}`));
        },
        onClose: (code, signal) => {
          if (this.helper === helper) this.helper = null;
          const why = helper.failureReason(code, signal);
          if (first && !helper.isReady) {
            reject(new Error(why));
            return;
          }
          if (this.closed) return;
          if (helper.isReady) {
            const now = Date.now();
            const openedAt = helper.readyAt;
            // What the dead process held (its kernel ring, its output queue) is lost: from the newest
            // packet it handed over, bounded.
            const lostFrom = Math.max(lastPacketMs, openedAt, now - (this.o.maxLossMs ?? 10_000));
            this.downAt = now;
            this.restartsDue.ended(now - openedAt);
            this.o.onDown?.(now, lostFrom);
            this.o.onError(`capture on ${this.o.device} stopped at ${new Date(now).toISOString()} (${why}); `
              + `packets captured since ${new Date(lostFrom).toISOString()} that it had not handed over are lost; restarting`);
          }
          this.retry();
        },
      });
      this.helper = helper;
    });
  }

  /** At once after a process that had run for a while; with growing backoff while restarts keep failing. */
  private retry(): void {
    this.restartsDue.schedule(() => {
      if (this.closed) return;
      this.start(false).then(() => {
        this.restarts++;
        const now = Date.now();
        const from = this.downAt ?? now;
        this.downAt = null;
        this.o.onUp?.(now);
        this.o.onNotice(`capture on ${this.o.device} resumed at ${new Date(now).toISOString()}; `
          + `it was down from ${new Date(from).toISOString()} (${now - from} ms)`);
      }, () => undefined);
    });
  }

  /** Stop: the capture process hands over what the kernel still holds, then exits (bounded wait). */
  async close(): Promise<void> {
    this.closed = true;
    this.restartsDue.cancel();
    await this.helper?.stop('eof', 2000); // resolves after its stdout is read
    this.drops.end();
  }
}
