/**
 * The command line. `main(argv)` returns the exit status; the module runs it only when executed
 * directly, so tests can import it.
 */
import { Command, InvalidArgumentError, Option } from 'commander';
import { pathToFileURL } from 'node:url';
import { DEFAULTS } from './defaults.js';
import { VERSION } from './paths.js';
import { EXIT, runTracer, type RunOptions } from './commands/run.js';
import type { ExtrasOptions } from './commands/run-outputs.js';
import { validScrubWord } from './scrub.js';

function positiveInt(name: string) {
  return (v: string): number => {
    if (!/^\d+$/.test(v) || Number(v) <= 0) throw new InvalidArgumentError(`${name} must be a positive whole number`);
    return Number(v);
  };
}

/** --scrub-word: repeatable, each a name-character word of two or more characters. */
function scrubWord(v: string, all: string[] = []): string[] {
  if (!validScrubWord(v)) throw new InvalidArgumentError('--scrub-word takes a word of letters, digits, "_", "." or "-" (at least 2)');
  return [...all, v];
}

/** --cloudwatch-retention-days: one of the values CloudWatch Logs accepts. */
export const RETENTION_DAYS = [1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653];
function retentionDays(v: string): number {
  if (!/^\d+$/.test(v) || !RETENTION_DAYS.includes(Number(v))) {
    throw new InvalidArgumentError(`--cloudwatch-retention-days must be one of ${RETENTION_DAYS.join(', ')}`);
  }
  return Number(v);
}

export async function main(argv: string[], say = (l: string) => process.stderr.write(`${l}\n`)): Promise<number> {
  let status: number = EXIT.ok;
  const program = new Command('imds-tracer')
    .description('Find the processes that call the EC2 instance metadata service with IMDSv1.')
    .version(VERSION)
    .exitOverride()
    .configureOutput({ writeErr: (s) => say(s.trimEnd()), writeOut: (s) => process.stdout.write(s) });

  const run = program.command('run', { isDefault: true })
    .description('trace IMDS calls until stopped (the default command)')
    .option('-i, --interface <name>', 'capture device', DEFAULTS.interface)
    .option('--log-file <path>', 'JSON lines file', DEFAULTS.logFile)
    .option('--no-log-file', 'write records to stdout only')
    .option('--include-v2', 'also record IMDSv2 calls', false)
    .option('--include-other', "also record other clouds' metadata probes (never counted as IMDSv1)", false)
    .addOption(new Option('--backend <kind>', 'how callers are attributed').choices(['auto', 'ebpf', 'proc']).default(DEFAULTS.backend))
    .option('--duration <seconds>', 'stop after this many seconds', positiveInt('--duration'))
    .option('--ancestors <n>', 'parent processes to include', positiveInt('--ancestors'), DEFAULTS.ancestors)
    .option('--stats-interval <seconds>', 'seconds between stats records', positiveInt('--stats-interval'), DEFAULTS.statsIntervalMs / 1000)
    // log rotation, CloudWatch Logs shipping
    .option('--log-max-bytes <n>', 'rotate the log file before it would pass this size', positiveInt('--log-max-bytes'), DEFAULTS.logMaxBytes)
    .option('--log-files <n>', 'rotated log files kept (calls.jsonl.1 … .N)', positiveInt('--log-files'), DEFAULTS.logFiles)
    .option('--cloudwatch-log-group <name>', 'also ship records to this CloudWatch Logs group')
    .option('--cloudwatch-log-stream <name>', 'log stream (default: the instance id, else the hostname)')
    .option('--cloudwatch-region <region>', 'region of the log group (default: AWS_REGION, else the instance\'s)')
    .option('--cloudwatch-endpoint <url>', 'CloudWatch Logs endpoint override (VPC endpoint, tests)')
    .option('--scrub-word <word>', 'also treat argument names containing this word as secrets (repeatable)', scrubWord)
    .option('--cloudwatch-create-group', 'create the log group when it does not exist (logs:CreateLogGroup)')
    .option('--cloudwatch-retention-days <days>', 'retention set on a log group the agent created (with --cloudwatch-create-group; logs:PutRetentionPolicy)', retentionDays)
    .addOption(new Option('--format <kind>', 'stdout: JSON lines, or one readable line per call (auto: table on a terminal)').choices(['auto', 'json', 'table']).default('auto'))
    .action(async (opts: RunOptions & ExtrasOptions) => {
      if (opts.cloudwatchRetentionDays && !opts.cloudwatchCreateGroup) {
        say('imds-tracer: --cloudwatch-retention-days needs --cloudwatch-create-group (the agent sets retention only on a group it created)');
        status = EXIT.usage;
        return;
      }
      status = await runTracer(opts, say);
    });
  void run;

  program.command('report')
    .description('list the distinct IMDSv1 callers found in JSON lines files (default: the log file and its rotated siblings)')
    .argument('[files...]', 'JSON lines files to read')
    .option('--json', 'print a JSON array of caller groups', false)
    .option('--include-v2', 'also list IMDSv2 callers', false)
    .option('--max-paths <n>', 'paths listed per caller before "+N more"', positiveInt('--max-paths'), DEFAULTS.reportMaxPaths)
    .option('--log-file <path>', 'with no files named: read this file and its rotated siblings', DEFAULTS.logFile)
    .option('--verdict', 'say whether HttpTokens=required is safe: no IMDSv1 call, or the callers to fix', false)
    .option('--fail-on-v1', 'exit 3 when any IMDSv1 call (or a call that could not be read) is in the files read', false)
    .action(async (files: string[], opts: { json: boolean; includeV2: boolean; maxPaths: number; logFile: string; verdict: boolean; failOnV1: boolean }) => {
      const { runReport } = await import('./commands/report.js');
      status = await runReport(files, opts, say);
    });

  program.command('read')
    .description('the call records of capture files (pcap, pcapng: tcpdump -w) taken here or elsewhere, as JSON lines')
    .argument('<files...>', 'capture files to read, in order (- : standard input, as tcpdump -r -)')
    .option('--include-v2', 'also record IMDSv2 calls', false)
    .option('--include-other', "also record other clouds' metadata probes (never counted as IMDSv1)", false)
    .option('--scrub-word <word>', 'also treat argument names containing this word as secrets (repeatable)', scrubWord)
    .option('--log-file <path>', 'also append the JSON lines to this file (default: stdout only)')
    .action(async (files: string[], opts: import('./commands/read.js').ReadOptions) => {
      const { runRead } = await import('./commands/read.js');
      status = await runRead(files, opts, say);
    });

  program.command('fleet')
    .description('per instance: IMDSv1 callers, verdict and SDK advice, from the records in CloudWatch Logs, checked against MetadataNoToken')
    .requiredOption('--log-group <name>', 'the CloudWatch Logs group the agents ship to')
    .option('--since <when>', 'start of the window: a duration before now (7d, 12h, 30m) or an ISO 8601 time', '7d')
    .option('--until <when>', 'end of the window (default: now)')
    .option('--region <region>', 'region of the log group (default: the SDK\'s: AWS_REGION, the profile)')
    .option('--logs-endpoint <url>', 'CloudWatch Logs endpoint override (VPC endpoint, tests)')
    .option('--cloudwatch-endpoint <url>', 'CloudWatch (metrics) endpoint override (VPC endpoint, tests)')
    .option('--no-metrics', 'skip the MetadataNoToken cross-check')
    .option('--json', 'print a JSON array, one object per instance', false)
    .option('--csv', 'print CSV, one row per instance and caller', false)
    .option('--fail-on-v1', 'exit 3 when any instance is not ready', false)
    .action(async (opts: import('./commands/fleet.js').FleetOptions) => {
      const { runFleet } = await import('./commands/fleet.js');
      status = await runFleet(opts, say);
    });

  program.command('demo')
    .description('build a throw-away lab (network namespaces, an IMDS stand-in), trace real clients, print what was found')
    .option('--keep-log <path>', 'where to leave the JSON lines of the demo run')
    .action(async (opts: { keepLog?: string }) => {
      const { runDemo } = await import('./commands/demo.js');
      status = await runDemo(opts, say);
    });

  program.command('doctor')
    .description('check that tracing can work here (privileges, libpcap, eBPF, log directory); exit 1 if not')
    .option('--log-file <path>', 'JSON lines file whose directory is checked', DEFAULTS.logFile)
    .option('--json', 'print the results as one JSON object', false)
    .option('--cloudwatch', 'also check CloudWatch Logs shipping: region, credentials, group, a test event (the service\'s options from /etc/default/imds-tracer unless given)')
    .option('--cloudwatch-log-group <name>', 'with --cloudwatch: the log group')
    .option('--cloudwatch-log-stream <name>', 'with --cloudwatch: the log stream (a "-doctor" stream next to it gets the test event)')
    .option('--cloudwatch-region <region>', 'with --cloudwatch: the region')
    .option('--cloudwatch-endpoint <url>', 'with --cloudwatch: the endpoint')
    .action(async (opts: { logFile: string; json: boolean; cloudwatch?: boolean; cloudwatchLogGroup?: string }) => {
      const { runDoctor } = await import('./commands/doctor.js');
      status = await runDoctor(opts);
    });

  try {
    await program.parseAsync(argv);
  } catch (err) {
    const code = (err as { code?: string }).code;
    if (code === 'commander.helpDisplayed' || code === 'commander.version') return EXIT.ok;
    if (code?.startsWith('commander.')) return EXIT.usage;
    say(`imds-tracer: ${(err as Error).message}`);
    return EXIT.failure;
  }
  return status;
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  process.exitCode = await main(process.argv);
}
