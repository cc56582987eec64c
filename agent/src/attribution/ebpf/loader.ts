/**
 * I/O edge of the kernel side: spawns the eBPF loader binary
 * (bpf/.output/imds_connect), waits until its program is loaded and attached,
 * and streams its records as events.
 *
 *   const src = await startEbpfSource({});
 *   src.on('event', (e) => ...);            // ConnectEvent
 *   src.on('stats', (s) => ...);            // { lost, emitted, ... }
 *   src.on('exit', (code, reason) => ...);  // always emitted once, also on crash
 *   await src.stop();
 *
 * The loader's stdin is kept as a pipe: if this process dies, the loader sees
 * EOF and exits by itself. It also carries network namespace verdicts at run
 * time (setNetnsVerdict: one "keep|drop|forget INO" line each).
 *
 * Memory: records are decoded and emitted synchronously per chunk (the decoder holds at most one
 * unfinished record), so nothing queues here; when the agent is behind, the loader's own bounded
 * queue (16 MiB) holds the events and the kernel ring buffer waits behind it.
 */
import { HelperProcess } from '../../helper-process.js';
import { EventEmitter } from 'node:events';
import { accessSync, constants as fsConstants, existsSync } from 'node:fs';
import { isIPv4, isIPv6 } from 'node:net';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  MAX_NETNS,
  MAX_TARGETS,
  LAYOUT_VERSION,
  RecordDecoder,
  type ConnectEvent,
  type ReadyRecord,
  type StatsRecord,
} from './events.js';

export interface EbpfSourceOptions {
  /** Loader binary; default: <repo root>/bpf/.output/imds_connect */
  binaryPath?: string;
  /** IPv4 destinations to trace (default 169.254.169.254); at most 8 */
  ipv4?: string[];
  /** IPv6 destinations to trace (default fd00:ec2::254); at most 8 */
  ipv6?: string[];
  /** TCP destination ports to trace (default 80); at most 8 */
  ports?: number[];
  /** How long to wait for load+attach (default 30000 ms) */
  readyTimeoutMs?: number;
  /** Filter connections from network namespaces given verdict "drop" (on when keep/drop lists are given) */
  netnsFilter?: boolean;
  /** Network namespace inodes with verdict "keep" / "drop" from the start */
  keepNetns?: number[];
  dropNetns?: number[];
  /** Budget per source (network namespace + cgroup): events per second (0 or absent: none) and burst */
  budgetRate?: number;
  budgetBurst?: number;
  /** Kernel ring buffer bytes (a power of two, 4 KiB to 64 MiB; default the loader's 1 MiB). Tests only: a tiny ring. */
  ringbufBytes?: number;
}

export type NetnsVerdict = 'keep' | 'drop' | 'forget';

export type EbpfStats = StatsRecord;

export interface EbpfSource {
  /** pid of the loader process */
  readonly pid: number;
  readonly ready: ReadyRecord;
  /** time to load (verify) the program, ms (CLOCK_MONOTONIC) */
  readonly loadMs: number;
  /** time to attach it, ms */
  readonly attachMs: number;
  /** true once the loader has exited */
  readonly exited: boolean;
  on(event: 'event', listener: (e: ConnectEvent) => void): this;
  on(event: 'stats', listener: (s: EbpfStats) => void): this;
  on(event: 'exit', listener: (code: number | null, reason: string) => void): this;
  /** a line the loader wrote to stderr after it was ready (libbpf warnings) */
  on(event: 'warning', listener: (line: string) => void): this;
  once(event: 'exit', listener: (code: number | null, reason: string) => void): this;
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  off(event: string, listener: (...args: any[]) => void): this;
  /** Give a network namespace a verdict in the kernel; false if the loader is gone. */
  setNetnsVerdict(ino: number, verdict: NetnsVerdict): boolean;
  /** CLOCK_MONOTONIC ns (ConnectEvent.tsSynNs/tsEmitNs) -> ms since the epoch */
  monoToEpochMs(monoNs: string | bigint): number;
  /** SIGTERM the loader and wait for it to exit (SIGKILL after 5 s). */
  stop(): Promise<void>;
}

export const EBPF_NOT_BUILT = 'eBPF loader not built: run npm run build';

/** Walk up from this module to the directory holding bpf/ and package.json. */
export function defaultBinaryPath(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    if (existsSync(join(dir, 'package.json')) && existsSync(join(dir, 'bpf'))) {
      return join(dir, 'bpf', '.output', 'imds_connect');
    }
    const up = dirname(dir);
    if (up === dir) break;
    dir = up;
  }
  // agent/src/attribution/ebpf -> repo root, or dist/attribution/ebpf -> repo root
  return resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', '..', 'bpf', '.output', 'imds_connect');
}

const validIno = (ino: number): boolean => Number.isInteger(ino) && ino > 0 && ino <= 0xffffffff;

function buildArgs(opts: EbpfSourceOptions): string[] {
  const args: string[] = [];
  const check = (list: unknown[] | undefined, what: string): void => {
    if (list !== undefined && list.length > MAX_TARGETS) {
      throw new Error(`too many ${what} (at most ${MAX_TARGETS})`);
    }
    if (list !== undefined && list.length === 0) throw new Error(`empty ${what} list`);
  };
  check(opts.ipv4, 'IPv4 addresses');
  check(opts.ipv6, 'IPv6 addresses');
  check(opts.ports, 'ports');
  for (const a of opts.ipv4 ?? []) {
    if (!isIPv4(a)) throw new Error(`not an IPv4 address: ${a}`);
    args.push('--ipv4', a);
  }
  for (const a of opts.ipv6 ?? []) {
    if (!isIPv6(a)) throw new Error(`not an IPv6 address: ${a}`);
    args.push('--ipv6', a);
  }
  for (const p of opts.ports ?? []) {
    if (!Number.isInteger(p) || p < 1 || p > 65535) throw new Error(`not a TCP port: ${p}`);
    args.push('--port', String(p));
  }
  const inos = [...(opts.keepNetns ?? []), ...(opts.dropNetns ?? [])];
  if (inos.length > MAX_NETNS) throw new Error(`too many network namespaces (at most ${MAX_NETNS})`);
  for (const ino of inos) if (!validIno(ino)) throw new Error(`not a network namespace inode: ${ino}`);
  if (opts.netnsFilter) args.push('--netns-filter');
  for (const ino of opts.keepNetns ?? []) args.push('--keep-netns', String(ino));
  for (const ino of opts.dropNetns ?? []) args.push('--drop-netns', String(ino));
  if (opts.budgetRate) {
    const burst = opts.budgetBurst ?? 1;
    if (!Number.isInteger(opts.budgetRate) || opts.budgetRate < 0) throw new Error(`bad budget rate: ${opts.budgetRate}`);
    if (!Number.isInteger(burst) || burst < 1) throw new Error(`bad budget burst: ${burst}`);
    args.push('--budget-rate', String(opts.budgetRate), '--budget-burst', String(burst));
  }
  if (opts.ringbufBytes !== undefined) {
    const n = opts.ringbufBytes;
    if (!Number.isInteger(n) || n < 4096 || n > 64 * 2 ** 20 || (n & (n - 1)) !== 0) {
      throw new Error(`bad ring buffer size: ${n} (a power of two, 4096 to ${64 * 2 ** 20})`);
    }
    args.push('--ringbuf-bytes', String(n));
  }
  return args;
}

/** The reason a loader gave for failing: its "imds-connect: ..." line. */
function failureReason(lines: string[], code: number | null, signal: NodeJS.Signals | null): string {
  const own = lines.filter((l) => l.startsWith('imds-connect:'));
  if (own.length > 0) return own[own.length - 1];
  if (lines.length > 0) return `imds-connect: ${lines[lines.length - 1]}`;
  if (signal) return `imds-connect: killed by ${signal}`;
  return `imds-connect: exited with code ${code}`;
}

class EbpfSourceImpl extends EventEmitter implements EbpfSource {
  private readonly helper: HelperProcess;
  private readonly clockOffsetNs: bigint;
  /** The same offset in ms, for the common case of a clock reading that a double holds exactly. */
  private readonly clockOffsetMs: number;
  private stopping = false;
  exited = false;

  constructor(
    helper: HelperProcess,
    readonly ready: ReadyRecord,
  ) {
    super();
    this.helper = helper;
    this.clockOffsetNs = BigInt(ready.realtimeNs) - BigInt(ready.monoNs);
    this.clockOffsetMs = Number(this.clockOffsetNs) / 1e6;
  }

  get pid(): number {
    return this.ready.loaderPid;
  }

  get loadMs(): number {
    return this.ready.loadMs;
  }

  get attachMs(): number {
    return this.ready.attachMs;
  }

  get isStopping(): boolean {
    return this.stopping;
  }

  monoToEpochMs(monoNs: string | bigint): number {
    // Monotonic clocks stay below 2^53 ns (104 days of uptime) nearly always: no BigInt then.
    if (typeof monoNs === 'string' && monoNs.length < 16) return Number(monoNs) / 1e6 + this.clockOffsetMs;
    return Number(BigInt(monoNs) + this.clockOffsetNs) / 1e6;
  }

  setNetnsVerdict(ino: number, verdict: NetnsVerdict): boolean {
    if (!validIno(ino)) throw new Error(`not a network namespace inode: ${ino}`);
    const stdin = this.helper.child.stdin;
    if (this.exited || !stdin || stdin.destroyed || !stdin.writable) return false;
    stdin.write(`${verdict} ${ino}\n`);
    return true;
  }

  async stop(): Promise<void> {
    if (this.exited) return;
    this.stopping = true;
    await this.helper.stop('SIGTERM', 5000);
  }
}

export function startEbpfSource(opts: EbpfSourceOptions = {}): Promise<EbpfSource> {
  return new Promise<EbpfSource>((resolvePromise, rejectPromise) => {
    let args: string[];
    try {
      args = buildArgs(opts);
    } catch (err) {
      rejectPromise(err instanceof Error ? err : new Error(String(err)));
      return;
    }
    const binary = opts.binaryPath ?? defaultBinaryPath();
    try {
      accessSync(binary, fsConstants.X_OK);
    } catch {
      rejectPromise(new Error(`${EBPF_NOT_BUILT} (missing ${binary})`));
      return;
    }

    // Its own process group, like the capture helper (helper-process.ts): a terminal's Ctrl-C reaches
    // the agent only, which stops the loader itself; the loader also ends when its stdin closes.
    const decoder = new RecordDecoder();
    let source: EbpfSourceImpl | undefined;
    let settled = false;
    let fatal: string | undefined;

    const fail = (err: Error): void => {
      if (settled) return;
      settled = true;
      clearTimeout(readyTimer);
      rejectPromise(err);
    };

    const onStdout = (chunk: Buffer): void => {
      if (fatal) return;
      let records;
      try {
        records = decoder.push(chunk);
      } catch (err) {
        fatal = `imds-connect: bad output: ${err instanceof Error ? err.message : String(err)}`;
        helper.kill();
        return;
      }
      for (const rec of records) {
        if (rec.kind === 'ready') {
          if (source) continue;
          if (rec.ready.layoutVersion !== LAYOUT_VERSION) {
            fatal = `imds-connect: layout version ${rec.ready.layoutVersion}, expected ${LAYOUT_VERSION}: rebuild (npm run build)`;
            helper.kill();
            return;
          }
          settled = true;
          clearTimeout(readyTimer);
          helper.ready(); // the handshake: the program is loaded and attached
          source = new EbpfSourceImpl(helper, rec.ready);
          resolvePromise(source);
        } else if (!source) {
          fatal = `imds-connect: ${rec.kind} record before the ready record`;
          helper.kill();
          return;
        } else if (rec.kind === 'connect') {
          source.emit('event', rec.event);
        } else {
          source.emit('stats', rec.stats);
        }
      }
    };

    const helper: HelperProcess = new HelperProcess(binary, args, {
      onStdout,
      onStderrLine: (line) => { source?.emit('warning', line); }, // libbpf warnings once ready
      onSpawnError: (err) => {
        // spawn failure (ENOENT, EACCES, ...); 'close' may not follow
        if (!settled) {
          fail(
            new Error(
              err.code === 'ENOENT' ? `${EBPF_NOT_BUILT} (missing ${binary})` : `imds-connect: spawn failed: ${err.message}`,
            ),
          );
        }
      },
      onClose: (code, signal) => {
        clearTimeout(readyTimer);
        if (!source) {
          fail(new Error(fatal ?? failureReason(helper.stderrLines(), code, signal)));
          return;
        }
        source.exited = true;
        let reason: string;
        if (fatal) reason = fatal;
        else if (source.isStopping && (code === 0 || signal === 'SIGTERM' || signal === 'SIGKILL')) reason = 'stopped';
        else if (code === 0) reason = 'imds-connect: exited';
        else reason = failureReason(helper.stderrLines(), code, signal);
        source.emit('exit', code, reason);
      },
    });

    const readyTimer = setTimeout(() => {
      if (settled) return;
      fatal = `imds-connect: not ready after ${opts.readyTimeoutMs ?? 30000} ms`;
      helper.kill();
    }, opts.readyTimeoutMs ?? 30000);
  });
}
