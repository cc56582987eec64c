/**
 * `imds-tracer read FILE...`: the call records of capture files taken elsewhere (pcap, pcapng, as
 * `tcpdump -w` writes them), through the same pipeline as live capture. Time is the file's: a
 * request waits for its answer in file time, and at the end of each file every call still waiting is
 * written. No process can be named from a file: attribution is `none`, the reason says why.
 * Records are JSON lines on stdout (and --log-file); a final stats record per file counts the rest.
 */
import { closeSync, fstatSync, openSync, writeSync } from 'node:fs';
import { DEFAULTS } from '../defaults.js';
import { callLine } from '../fit.js';
import { ByteRuns, LineEncoder } from '../output/line-bytes.js';
import { Pipeline, type RecordSink } from '../pipeline/pipeline.js';
import { buildStats } from '../pipeline/stats.js';
import { FileClock } from '../offline/file-clock.js';
import { CaptureBytes, CaptureFileError, capturePackets, NOTHING_YET, type CapturedPacket, type CaptureSummary } from '../offline/capture-file.js';
import { errorRecord, type OutputRecord, type ProcessInfo } from '../record.js';
import type { Attributor } from '../attribution/attributor.js';
import { EXIT } from './run.js';

export interface ReadOptions {
  includeV2: boolean;
  includeOther: boolean;
  scrubWord?: string[];
  logFile?: string | false;
}

const NO_INTERFACES = {};

export const READ_REASON = 'read from a capture file: no process to look up';

/** No process can be found for a connection seen in a file. */
const noProcess = (): ProcessInfo => ({ attribution: 'none', reason: READ_REASON });
const fileAttributor: Attributor = { lookup: async () => noProcess(), answerNow: noProcess };

/** The interface a packet of a file was seen on: its name in the file, else what the link says. */
export function packetInterface(p: CapturedPacket): string {
  if (p.link === 'LINUX_SLL2' && p.data.length >= 20 && (p.ifName === null || p.ifName === 'any')) {
    return `ifindex:${p.data.readUInt32BE(4)}`;
  }
  return p.ifName ?? `link:${p.link}`;
}

/**
 * JSON lines to stdout (waiting for it to drain, never dropping) and to a file when named. A line
 * is encoded at once into a chunk outside the JS heap (line-bytes.ts, as `run`'s writer does), and
 * both take those bytes: the lines of a batch do not stay on the heap until it is written. Call
 * records pass the same size guard as in `run` (fit.ts callLine).
 */
class LineOut {
  written = 0;
  writeErrors = 0;
  private readonly lines = new LineEncoder();
  private readonly batch = new ByteRuns();
  constructor(private readonly fd: number | null) {}
  write(rec: OutputRecord): void {
    const json = rec.event === 'imds_call' ? callLine(rec, DEFAULTS.cloudwatch.maxEventBytes) : JSON.stringify(rec);
    const l = this.lines;
    l.encode(json); // its newline written after it (no second string of line + "\n")
    this.batch.add(l.chunk, l.start, l.end);
    this.written++;
  }
  async flush(): Promise<void> {
    if (this.batch.bytes === 0) return;
    const data = this.batch.take();
    if (this.fd !== null) {
      try { writeSync(this.fd, data); } catch { this.writeErrors++; }
    }
    if (!process.stdout.write(data)) await new Promise<void>((resolve) => process.stdout.once('drain', resolve));
  }
}

export async function runRead(files: string[], o: ReadOptions, say: (line: string) => void): Promise<number> {
  let fd: number | null = null;
  if (o.logFile) {
    try {
      fd = openSync(o.logFile, 'a', DEFAULTS.logFileMode);
    } catch (err) {
      say(`imds-tracer read: cannot open log file ${o.logFile}: ${(err as Error).message}`);
      return EXIT.failure;
    }
  }
  const out = new LineOut(fd);
  let status: number = EXIT.ok;
  // Ctrl-C (or SIGTERM) stops reading at the next turn: the calls read until then are written, with
  // the file's stats, rather than lost with the process (a second one ends it at once).
  let heard = (): void => undefined;
  const stop: ReadStop = { signal: null, heard: new Promise<void>((resolve) => { heard = resolve; }) };
  const onSignal = (signal: NodeJS.Signals): void => {
    if (stop.signal) process.exit(EXIT_INTERRUPTED);
    stop.signal = signal;
    heard();
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  try {
    for (const file of files) {
      if (stop.signal) break;
      const s = await readOne(file, o, out, say, stop);
      if (s !== EXIT.ok) status = s;
    }
    // A signal that came while a read of a pipe was blocked is handled at a turn of the event loop.
    await new Promise<void>((resolve) => setImmediate(resolve));
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    await out.flush();
    if (fd !== null) closeSync(fd);
  }
  if (stop.signal) {
    say(`imds-tracer read: interrupted (${stop.signal}): the calls read until then are written`);
    return EXIT_INTERRUPTED;
  }
  return status;
}

/** read's exit status when a signal stopped it (128 + SIGINT's number, as a shell reports it). */
export const EXIT_INTERRUPTED = 130;

/** The signal that asked read to stop, once one has. */
interface ReadStop {
  signal: NodeJS.Signals | null;
  /** Settles when the signal comes (a quiet pipe is waited on until then). */
  heard: Promise<void>;
}

async function readOne(file: string, o: ReadOptions, out: LineOut, say: (line: string) => void,
  stop: ReadStop): Promise<number> {
  if (file === '-') { // standard input, as tcpdump -r -
    nonBlockingStandardInput();
    return readCaptureFile(file, CaptureBytes.file(0), o, out, say, stop);
  }
  let fd: number;
  try {
    fd = openSync(file, 'r');
  } catch (err) {
    say(`imds-tracer read: ${file}: ${(err as Error).message}`);
    return EXIT.failure;
  }
  try {
    return await readCaptureFile(file, CaptureBytes.file(fd), o, out, say, stop);
  } finally {
    closeSync(fd);
  }
}

/**
 * Standard input made non-blocking when it is a pipe or a socket, so that while its writer is quiet
 * (`tcpdump -w -` between calls) read waits on the event loop, where a signal is heard and the records
 * decided so far are written, not in a read(2) that no signal ends. Node's own stdin stream does it:
 * libuv opens a pipe or a socket non-blocking (O_NONBLOCK on fd 0); the stream itself is never read
 * (its reads would allocate a buffer per chunk: +7 % CPU on a piped capture), and is closed before
 * exit. A regular file, or a terminal (libuv opens a terminal of its own), stays as it is.
 */
function nonBlockingStandardInput(): void {
  try {
    if (fstatSync(0).isFile()) return;
    const stdin = process.stdin;
    stdin.pause();
    process.once('beforeExit', () => stdin.destroy());
  } catch { /* read as it is */ }
}

/** One capture file, read a window at a time (memory bounded whatever its size): its records, then its stats. */
async function readCaptureFile(file: string, bytes: CaptureBytes, o: ReadOptions, out: LineOut,
  say: (line: string) => void, stop: ReadStop): Promise<number> {
  const clock = new FileClock();
  const sink: RecordSink = {
    write: (rec) => out.write(rec),
    error: (component, message) => {
      say(`imds-tracer read: ${file}: ${component}: ${message}`);
      out.write(errorRecord(component, message));
    },
  };
  const pipeline = new Pipeline({
    device: 'any', includeV2: o.includeV2, includeOther: o.includeOther, scrubWords: o.scrubWord ?? [],
    attributor: fileAttributor, sink, clock: () => clock.now(), responseTimers: clock,
    interfaces: () => NO_INTERFACES, // the host the file was taken on is not this one
    ifname: () => null, selfPid: -1,
  });
  let first: number | null = null;
  const unknownLinks = new Set<string>();
  let nextSweep = 0;
  const push = (p: CapturedPacket): void => {
    if (p.tsUs !== null) {
      const ms = p.tsUs / 1000;
      first ??= ms;
      clock.advance(ms); // requests whose answer is overdue in file time are decided before this packet
      if (ms >= nextSweep) {
        pipeline.sweep(clock.now());
        nextSweep = clock.now() + DEFAULTS.readSweepMs;
      }
    }
    if (p.link.startsWith('LINKTYPE_') && p.link !== 'LINKTYPE_LINUX_SLL') unknownLinks.add(p.link);
    pipeline.push(p.data, p.link, p.tsUs ?? undefined, packetInterface(p));
  };
  // Pushed in batches, the records decided so far written out between them.
  const packets = capturePackets(bytes);
  let summary: CaptureSummary | null = null; // null: stopped by a signal before the end
  try {
    let n = 0;
    let quietMs = 0;
    for (let r = packets.next(); ; r = packets.next()) {
      if (r.done) { summary = r.value; break; }
      if (r.value === NOTHING_YET) {
        // A quiet pipe: what is decided is written now, then read waits (longer the longer it is quiet,
        // up to readQuietMaxMs) for more, or for a signal.
        await out.flush();
        quietMs = Math.min(DEFAULTS.readQuietMaxMs, quietMs * 2 || DEFAULTS.readQuietMs);
        await Promise.race([new Promise<void>((resolve) => setTimeout(resolve, quietMs)), stop.heard]);
        if (stop.signal) break;
        continue;
      }
      quietMs = 0;
      push(r.value);
      if (++n % DEFAULTS.readTurnPackets === 0) {
        // A turn of the event loop: the records decided so far are made and written into the
        // chunk now, not kept (promoted by the garbage collector) until the batch ends.
        await new Promise<void>((resolve) => setImmediate(resolve));
        if (n % DEFAULTS.readBatchPackets === 0) await out.flush();
        if (stop.signal) break;
      }
    }
  } catch (err) {
    if (!(err instanceof CaptureFileError)) throw err;
    say(`imds-tracer read: ${file}: ${err.message}`);
    return EXIT.failure;
  }
  await pipeline.endOfCapture(); // every call still waiting for its answer is written now
  const end = clock.now();
  out.write(buildStats({ pipeline, nowMs: end, startedAt: first ?? end, writer: out, pcap: null, ebpf: null }));
  await out.flush();
  for (const link of unknownLinks) {
    say(`imds-tracer read: ${file}: link type ${link.slice('LINKTYPE_'.length)} is not one read here (Ethernet, Linux cooked, raw IP, loopback): its packets are counted in stats.packets_undecodable`);
  }
  if (summary === null) return EXIT.ok; // stopped by a signal: runRead says so
  if (summary.orphanPackets > 0) {
    say(`imds-tracer read: ${file}: packets of an interface the file never described, skipped: ${summary.orphanPackets}`);
  }
  if (summary.cut) {
    say(`imds-tracer read: ${file}: ${summary.cut.truncated ? 'cut' : 'broken'} at byte ${summary.cut.offset} `
      + `after ${summary.packets} packets: ${summary.cut.why}`);
    if (!summary.cut.truncated) return EXIT.failure;
  }
  return EXIT.ok;
}
