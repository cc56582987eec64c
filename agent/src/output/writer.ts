/**
 * Where records go: one JSON line each, through one pino logger, on stdout, in the log file and to
 * the other sinks (CloudWatch); diagnostics (`error`, `notice`) also on stderr (the journal).
 *
 * The record kinds are pino's levels (`imds_call`, `ready`, `stats`, `notice`, `error`): the level
 * formatter writes `"event":<kind>` where pino writes `"level"`, and the record's own `event` key is
 * serialized away, so a line is byte for byte `JSON.stringify(record)` — no level, pid, hostname, time
 * or msg of pino's (base: null, timestamp: false). Call records, the hot path, go to pino's
 * destination directly with the line made by JSON.stringify (the same bytes, cheaper per record),
 * through the size guard (fit.ts callLine: no call record larger than a CloudWatch Logs event, or
 * maxRecordBytes). The log file is a SonicBoom (log-file.ts); stdout
 * and stderr are bounded (std-stream.ts). Whatever cannot wait is dropped, counted
 * (`stats.records_dropped`) and reported by an `error` record where it can still be read.
 *
 * A line is encoded to UTF-8 once (line-bytes.ts): stdout and the log file take the same bytes; the
 * other sinks get the line as a string; stderr (diagnostics only) gets its own string.
 */
import pino, { type Logger } from 'pino';
import type { Writable } from 'node:stream';
import { DEFAULTS } from '../defaults.js';
import { callLine } from '../fit.js';
import { errorRecord, noticeRecord, type CallRecord, type OutputRecord } from '../record.js';
import { LineEncoder } from './line-bytes.js';
import type { LogFile } from './log-file.js';
import { BoundedStream } from './std-stream.js';

/** Another place records go (CloudWatch Logs): given each line written to the log file, without its newline. */
export interface LineSink {
  write(line: string, rec: OutputRecord): void;
}

export interface WriterOptions {
  stdout: Writable | null;
  /**
   * Diagnostics (error, notice) also go here: the journal under systemd, where stdout is null.
   * Lines get a syslog priority prefix ("<3>" error, "<5>" notice) when journalPriority is set:
   * journald strips it and files the line at that priority (`journalctl -p err`).
   */
  stderr?: Writable | null;
  journalPriority?: boolean;
  logFile: LogFile | null;
  sinks?: LineSink[];
  /** Bytes that may wait for a slow stdout/stderr reader before lines are dropped. */
  maxStdoutBytes?: number;
  maxStderrBytes?: number;
  /** A call record larger than this (its line without the newline) is shrunk to fit; default: a CloudWatch Logs event's limit. */
  maxRecordBytes?: number;
}

/** pino levels, one per record kind; notice and error are the diagnostics (also on stderr). */
export const RECORD_LEVELS = { imds_call: 30, ready: 31, stats: 32, notice: 40, error: 50 } as const;
type Kind = keyof typeof RECORD_LEVELS;

/** A pino logger whose lines are exactly `JSON.stringify(record)`: the record kind is the level. */
export function recordLogger(dest: pino.DestinationStream): Logger<Kind, true> {
  return pino<Kind, true>({
    base: null,
    timestamp: false,
    customLevels: RECORD_LEVELS,
    useOnlyCustomLevels: true,
    level: 'imds_call',
    formatters: { level: (label) => ({ event: label }) },
    serializers: { event: () => undefined },
  }, dest);
}

export interface RecordsDropped {
  stdout: number;
  stderr: number;
  log_file: number;
}

export class RecordWriter {
  written = 0;
  private readonly logger: Logger<Kind, true>;
  private readonly out: BoundedStream | null;
  private readonly err: BoundedStream | null;
  private current: OutputRecord | null = null;
  private readonly lines = new LineEncoder();
  private readonly maxRecordBytes: number;

  constructor(private readonly o: WriterOptions) {
    this.out = o.stdout ? new BoundedStream({
      stream: o.stdout, maxBytes: o.maxStdoutBytes ?? DEFAULTS.stdoutMaxBufferBytes, batch: true,
      onDropStart: () => this.diagnostic(errorRecord('output',
        'stdout is not read fast enough: records are dropped from stdout (counted in stats.records_dropped.stdout); the log file still gets them'), false),
      onRecovered: (n) => this.notice('output', `stdout is read again; ${n} records were dropped from it`),
    }) : null;
    this.err = o.stderr ? new BoundedStream({ stream: o.stderr, maxBytes: o.maxStderrBytes ?? DEFAULTS.stderrMaxBufferBytes }) : null;
    this.maxRecordBytes = o.maxRecordBytes ?? DEFAULTS.cloudwatch.maxEventBytes;
    // One destination, routed by the record kind (cheaper per record than pino.multistream).
    this.logger = recordLogger({ write: (line: string) => this.fanOut(line.endsWith('\n') ? line.slice(0, -1) : line) });
  }

  /** One record's JSON (no newline): encoded once for stdout and the log file; a string for the rest. */
  private fanOut(json: string): void {
    const rec = this.current as OutputRecord;
    if (rec.event === 'error' || rec.event === 'notice') this.toStderr(rec, `${json}\n`); // diagnostics: the journal too
    this.toBytes(json, true);
    this.toSinks(rec, json);
  }

  /** json and its newline to the log file, and to stdout unless told not to: the same bytes, encoded once. */
  private toBytes(json: string, toStdout: boolean): void {
    const out = toStdout ? this.out : null;
    const file = this.o.logFile;
    if (!out && !file) return;
    const l = this.lines;
    l.encode(json);
    // Held here: a destination's own diagnostic (stdout drops, a log file error) encodes its line
    // with the same encoder before this one reaches the next destination.
    const { chunk, start, end } = l;
    out?.writeBytes(chunk, start, end);
    file?.writeBytes(chunk, start, end);
  }

  private toStderr(rec: OutputRecord, line: string): void {
    if (!this.err) return;
    this.err.write(this.o.journalPriority ? `<${rec.event === 'error' ? 3 : 5}>${line}` : line);
  }

  /** CloudWatch's own errors are not shipped to CloudWatch (where the problem is). */
  private toSinks(rec: OutputRecord, line: string): void {
    if (rec.event === 'error' && rec.component === 'cloudwatch') return;
    for (const s of this.o.sinks ?? []) s.write(line, rec);
  }

  write(rec: OutputRecord): void {
    this.current = rec;
    if (rec.event === 'imds_call') {
      // The hot path: the line made by JSON.stringify (the same bytes as pino's; pino's own
      // serialization measured ~1 µs slower per call record, +30 % CPU for the writer at 200,000
      // records), through the size guard, straight to the destination pino writes to (fanOut).
      this.fanOut(callLine(rec as CallRecord, this.maxRecordBytes));
    } else {
      this.logger[rec.event as Kind](rec);
    }
    this.current = null;
    this.written++;
  }

  /** Problems go where records go (stdout, log file, CloudWatch but its own) and to stderr (the journal). */
  error(component: string, message: string): void {
    this.write(errorRecord(component, message));
  }

  /** Notices go where records go: they tell a reader of the log what happened to the tracing. */
  notice(component: string, message: string): void {
    this.write(noticeRecord(component, message));
  }

  /** A diagnostic about stdout itself: it goes everywhere but stdout. */
  private diagnostic(rec: OutputRecord, toStdout: boolean): void {
    const json = JSON.stringify(rec);
    this.toStderr(rec, `${json}\n`);
    this.toBytes(json, toStdout);
    this.toSinks(rec, json);
  }

  get writeErrors(): number {
    return this.o.logFile?.errors ?? 0;
  }

  /** Records that did not reach a destination because it could not take them (stats.records_dropped). */
  get dropped(): RecordsDropped {
    return { stdout: this.out?.dropped ?? 0, stderr: this.err?.dropped ?? 0, log_file: this.o.logFile?.dropped ?? 0 };
  }

  /**
   * Flush the log file now; wait (bounded) for stdout's reader to take what waits. False when stdout
   * still holds lines its reader did not take in that time (said on stderr): only an explicit exit
   * ends a process with a write to a pipe still in flight.
   */
  async close(timeoutMs: number = DEFAULTS.stdoutExitFlushMs): Promise<boolean> {
    this.o.logFile?.close();
    const waiting = (): number => this.out?.waitingBytes ?? 0;
    const [out] = await Promise.all([this.out?.flush(timeoutMs) ?? true, this.err?.flush(timeoutMs)]);
    if (out) return true;
    const rec = errorRecord('output', `stdout's reader did not take every record in ${timeoutMs} ms at exit: ${waiting()} bytes of records were not delivered to stdout (the log file has them)`);
    this.toStderr(rec, `${JSON.stringify(rec)}\n`);
    return false;
  }
}
