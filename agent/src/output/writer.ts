/**
 * Where records go: one JSON line each, through one pino logger, on stdout, in the log file and to
 * the other sinks (CloudWatch); diagnostics (`error`, `notice`) also on stderr (the journal).
 *
 * The record kinds are pino's levels (`imds_call`, `ready`, `stats`, `notice`, `error`): the level
 * formatter writes `"event":<kind>` where pino writes `"level"`, and the record's own `event` key is
 * serialized away, so a line is byte for byte `JSON.stringify(record)` — no level, pid, hostname, time
 * or msg of pino's (base: null, timestamp: false). Call records, the hot path, take pino's raw write
 * to the same destination with the line made by JSON.stringify (the same bytes, cheaper per record). The log file is a SonicBoom (log-file.ts); stdout
 * and stderr are bounded (std-stream.ts). Whatever cannot wait is dropped, counted
 * (`stats.records_dropped`) and reported by an `error` record where it can still be read.
 */
import pino, { type Logger } from 'pino';
import type { Writable } from 'node:stream';
import { DEFAULTS } from '../defaults.js';
import { errorRecord, noticeRecord, type OutputRecord } from '../record.js';
import type { LogFile } from './log-file.js';
import { BoundedStream } from './std-stream.js';

/** Another place records go (CloudWatch Logs): given each line written to the log file. */
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

  constructor(private readonly o: WriterOptions) {
    this.out = o.stdout ? new BoundedStream({
      stream: o.stdout, maxBytes: o.maxStdoutBytes ?? DEFAULTS.stdoutMaxBufferBytes, batch: true,
      onDropStart: () => this.diagnostic(errorRecord('output',
        'stdout is not read fast enough: records are dropped from stdout (counted in stats.records_dropped.stdout); the log file still gets them'), false),
      onRecovered: (n) => this.notice('output', `stdout is read again; ${n} records were dropped from it`),
    }) : null;
    this.err = o.stderr ? new BoundedStream({ stream: o.stderr, maxBytes: o.maxStderrBytes ?? DEFAULTS.stderrMaxBufferBytes }) : null;
    // One destination, routed by the record kind (cheaper per record than pino.multistream).
    this.logger = recordLogger({ write: (line: string) => this.fanOut(line) });
  }

  private fanOut(line: string): void {
    const rec = this.current as OutputRecord;
    if (rec.event === 'error' || rec.event === 'notice') this.toStderr(rec, line); // diagnostics: the journal too
    this.out?.write(line);
    this.o.logFile?.write(line);
    this.toSinks(rec, line);
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
      // The hot path: pino's raw write to the same destination, the line made by JSON.stringify (the
      // same bytes; pino's own serialization measured ~1 µs slower per call record, +30 % CPU for
      // the writer at 200,000 records).
      this.dest.write(`${JSON.stringify(rec)}\n`);
    } else {
      this.logger[rec.event as Kind](rec);
    }
    this.current = null;
    this.written++;
  }

  /** The logger's destination (pino.symbols.streamSym): what both paths above write to. */
  private get dest(): pino.DestinationStream {
    return (this.logger as unknown as Record<symbol, pino.DestinationStream>)[pino.symbols.streamSym];
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
    const line = `${JSON.stringify(rec)}\n`;
    if (toStdout) this.out?.write(line);
    this.toStderr(rec, line);
    this.o.logFile?.write(line);
    this.toSinks(rec, line);
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
