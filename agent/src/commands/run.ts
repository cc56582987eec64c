/** `imds-tracer run`: start the tracer, stop it on a signal or after --duration, flush, exit 0. */
import { readFileSync } from 'node:fs';
import { DEFAULTS, type Backend } from '../defaults.js';
import { canCapture } from '../privileges.js';
import { LogFile } from '../output/log-file.js';
import { RecordWriter } from '../output/writer.js';
import { discardsOutput, sameOutput, stderrIsJournal, SystemdNotifier } from '../output/notify.js';
import { RunExtras, type ExtrasDeps, type ExtrasOptions } from './run-outputs.js';
import { Tracer } from '../tracer.js';
import { LiveTable, resolveFormat, type OutputFormat } from '../format/live.js';

export interface RunOptions {
  interface: string;
  logFile: string | false;
  includeV2: boolean;
  includeOther: boolean;
  backend: Backend;
  duration?: number;
  ancestors: number;
  statsInterval: number;
  /** Rotation of the log file. */
  logMaxBytes?: number;
  logFiles?: number;
  /** Words added to the default scrub words (`--scrub-word`, repeatable). */
  scrubWord?: string[];
  /** stdout: JSON lines, or a table for a person (`auto`: a table on a terminal only). */
  format?: OutputFormat;
}

export const EXIT = { ok: 0, failure: 1, usage: 2 } as const;

export async function runTracer(o: RunOptions & ExtrasOptions, say: (line: string) => void,
  deps: ExtrasDeps = {}): Promise<number> {
  const status = (() => { try { return readFileSync('/proc/self/status', 'utf8'); } catch { return ''; } })();
  if (!canCapture(process.getuid?.() ?? 0, status)) {
    say('imds-tracer: capturing packets needs root or CAP_NET_RAW; run it with sudo.');
    return EXIT.usage;
  }
  // stdout as /dev/null (the systemd unit): records are not encoded and written there for nothing.
  const stdout = discardsOutput(1) ? null
    : resolveFormat(o.format, process.stdout.isTTY) === 'table' ? new LiveTable(process.stdout) : process.stdout;
  // Errors and notices also on stderr (the journal under systemd, where stdout goes nowhere).
  const errOut = { stderr: sameOutput() ? null : process.stderr, journalPriority: stderrIsJournal() };
  const writer0 = new RecordWriter({ stdout, logFile: null, ...errOut });
  let writerLate: RecordWriter | null = null; // once made, the log file's own errors go everywhere too
  let logFile: LogFile | null = null;
  if (o.logFile) {
    logFile = new LogFile({
      path: o.logFile, dirMode: DEFAULTS.logDirMode, fileMode: DEFAULTS.logFileMode,
      maxBytes: o.logMaxBytes ?? DEFAULTS.logMaxBytes, files: o.logFiles ?? DEFAULTS.logFiles,
      maxPendingBytes: DEFAULTS.logFileMaxPendingBytes,
      onError: (m) => (writerLate ?? writer0).error('log-file', m),
      onRecovered: (m) => (writerLate ?? writer0).notice('log-file', m),
      onNotice: (m) => (writerLate ?? writer0).notice('log-file', m),
    });
    try {
      logFile.open();
    } catch (err) {
      say(`imds-tracer: cannot open log file ${o.logFile}: ${(err as Error).message}`);
      return EXIT.failure;
    }
  }
  // CloudWatch shipping, own CPU/RSS, extra stats fields; SIGHUP reopens the log file.
  let extras: RunExtras;
  try {
    extras = await RunExtras.create(o, logFile, deps);
  } catch (err) {
    say(`imds-tracer: ${(err as Error).message}`);
    logFile?.close();
    return EXIT.failure;
  }
  const onHup = (): void => logFile?.reopen();
  process.on('SIGHUP', onHup);
  // SIGTERM and SIGINT are caught from here to the end: one that comes while tracing starts (systemd
  // stopping a unit that is starting, a Ctrl-C, a test right after `ready`) stops the agent cleanly
  // once it has started, and one that comes again while it writes its last records does not kill it.
  const stop = stopSignals();
  const writer = new RecordWriter({ stdout, logFile, sinks: extras.sinks, ...errOut });
  writerLate = writer;
  extras.attach(writer);
  const tracer = new Tracer({
    device: o.interface, includeV2: o.includeV2, includeOther: o.includeOther, backend: o.backend,
    ancestors: o.ancestors, logFile: o.logFile || null, statsIntervalMs: o.statsInterval * 1000, writer,
    statsExtra: () => extras.statsExtra(),
    scrubWords: o.scrubWord ?? [],
  });
  try {
    await tracer.start();
  } catch (err) {
    say(`imds-tracer: ${(err as Error).message}`);
    await tracer.stop().catch(() => undefined);
    await extras.close();
    process.off('SIGHUP', onHup);
    stop.release();
    await writer.close();
    return EXIT.failure;
  }
  extras.announce(writer);
  // Type=notify: ready now that capture and attribution are attached (the ready record is out).
  const notifier = SystemdNotifier.start((m) => writer.error('systemd', m));
  notifier?.send('READY', '1');
  notifier?.send('STATUS', `tracing IMDS calls on ${o.interface}`);
  await stop.requested(o.duration ? o.duration * 1000 : null);
  notifier?.send('STOPPING', '1');
  notifier?.send('STATUS', 'writing the last records');
  await extras.sample();
  // The final stats come after the CloudWatch exit flush, so they count what it could not ship.
  await tracer.stop(false);
  await extras.close();
  writer.write(tracer.stats());
  process.off('SIGHUP', onHup);
  stop.release();
  const delivered = await writer.close();
  await notifier?.close();
  // A stdout reader that took nothing in the exit flush's time (a stuck journal, a paused pipe) would
  // hold the process forever on the write still in flight: once the status is set, exit anyway.
  if (!delivered) setTimeout(() => process.exit(EXIT.ok), 0);
  return EXIT.ok;
}

/** SIGTERM and SIGINT, caught until release(); requested() resolves at the first (or after ms). */
function stopSignals(): { requested(ms: number | null): Promise<void>; release(): void } {
  let seen = false;
  let wake: (() => void) | null = null;
  const onSignal = (): void => {
    seen = true;
    wake?.();
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
  return {
    requested: (ms) => new Promise<void>((resolve) => {
      if (seen) { resolve(); return; }
      const timer = ms !== null ? setTimeout(() => { wake = null; resolve(); }, ms) : undefined;
      wake = () => { wake = null; clearTimeout(timer); resolve(); };
    }),
    release: () => {
      process.off('SIGTERM', onSignal);
      process.off('SIGINT', onSignal);
    },
  };
}
