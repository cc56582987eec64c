/** Where records go: one JSON line each, on stdout and in the log file. */
import type { Writable } from 'node:stream';
import { errorRecord, noticeRecord, type OutputRecord } from '../record.js';
import { LogFile } from './log-file.js';

/** Another place records go (CloudWatch Logs): given each line written to the log file. */
export interface LineSink {
  write(line: string, rec: OutputRecord): void;
}

export interface WriterOptions {
  stdout: Writable | null;
  logFile: LogFile | null;
  sinks?: LineSink[];
  /**
   * A copy of every error and notice record (the journal under systemd, where stdout is null).
   * Lines get a syslog priority prefix ("<3>" error, "<5>" notice) when journalPriority is set:
   * journald strips it and files the line at that priority (`journalctl -p err`).
   */
  stderr?: Writable | null;
  journalPriority?: boolean;
}

export class RecordWriter {
  written = 0;

  constructor(private readonly o: WriterOptions) {}

  write(rec: OutputRecord): void {
    const line = `${JSON.stringify(rec)}\n`;
    this.o.stdout?.write(line);
    this.o.logFile?.write(line);
    for (const s of this.o.sinks ?? []) s.write(line, rec);
    this.written++;
  }

  /**
   * Problems go where records go, so a reader of the log learns of a gap in it; except to where the
   * problem is: the log file's own errors come through a writer without it (run.ts), CloudWatch's
   * are not shipped to CloudWatch.
   */
  error(component: string, message: string): void {
    const rec = errorRecord(component, message);
    this.toStderr(3, rec);
    const line = `${JSON.stringify(rec)}\n`;
    this.o.stdout?.write(line);
    this.o.logFile?.write(line);
    if (component !== 'cloudwatch') for (const s of this.o.sinks ?? []) s.write(line, rec);
    this.written++;
  }

  /** Notices go where records go: they tell a reader of the log what happened to the tracing. */
  notice(component: string, message: string): void {
    this.toStderr(5, noticeRecord(component, message));
    this.write(noticeRecord(component, message));
  }

  private toStderr(priority: number, rec: OutputRecord): void {
    if (!this.o.stderr) return;
    this.o.stderr.write(`${this.o.journalPriority ? `<${priority}>` : ''}${JSON.stringify(rec)}\n`);
  }

  get writeErrors(): number {
    return this.o.logFile?.errors ?? 0;
  }

  async close(): Promise<void> {
    this.o.logFile?.close();
    const out = this.o.stdout;
    if (out && out.writableNeedDrain) await new Promise((r) => out.once('drain', r));
  }
}
