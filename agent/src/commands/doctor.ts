/**
 * `imds-tracer doctor`: can tracing work on this machine? Runs each probe (doctor/probes.ts), turns
 * the facts into PASS/WARN/FAIL verdicts (doctor/checks.ts) and prints them (doctor/format.ts).
 * Exit status 1 when a check FAILs (tracing cannot work), else 0. It never calls the IMDS.
 */
import { dirname } from 'node:path';
import { DEFAULTS } from '../defaults.js';
import { nativeHelper } from '../capture/supervised.js';
import {
  capEffFromStatus, evaluateBtf, evaluateDisk, evaluateEbpf, evaluateInterfaces, evaluateLogDir,
  evaluateCaptureHelper, evaluateNode, evaluatePcap, evaluatePrivileges, evaluateProc, parseCapMask, type CheckResult,
} from '../doctor/checks.js';
import { exitStatus, formatJson, formatText, summarize } from '../doctor/format.js';
import {
  probeBtf, probeCaptureHelper, probeDisk, probeEbpf, probeInterfaces, probeLogDir, probePcap, probeProc, probeStatus,
} from '../doctor/probes.js';

export interface DoctorOptions {
  /** Log file whose directory is checked (default /var/log/imds-tracer/calls.jsonl). */
  logFile?: string;
  json?: boolean;
  /** Also check CloudWatch Logs shipping (doctor/cloudwatch.ts). */
  cloudwatch?: boolean;
  cloudwatchLogGroup?: string;
  cloudwatchLogStream?: string;
  cloudwatchRegion?: string;
  cloudwatchEndpoint?: string;
}

export async function collectChecks(o: DoctorOptions): Promise<CheckResult[]> {
  const logDir = dirname(o.logFile ?? DEFAULTS.logFile);
  const capEff = capEffFromStatus(await probeStatus());
  const mayCapture = capEff !== null && parseCapMask(capEff).has('CAP_NET_RAW');
  const helper = nativeHelper();
  const cloudwatch = o.cloudwatch || o.cloudwatchLogGroup
    ? await (await import('../doctor/cloudwatch.js')).cloudwatchChecks({
      logGroup: o.cloudwatchLogGroup, logStream: o.cloudwatchLogStream, region: o.cloudwatchRegion, endpoint: o.cloudwatchEndpoint,
    })
    : [];
  return [
    evaluateNode(process.version),
    evaluatePrivileges(process.getuid?.() ?? 0, capEff),
    // The capture path the agent will use: the helper when installed, else the `cap` binding.
    helper ? evaluateCaptureHelper(await probeCaptureHelper(helper, mayCapture)) : evaluatePcap(probePcap(mayCapture)),
    evaluateInterfaces(await probeInterfaces()),
    evaluateBtf(await probeBtf()),
    evaluateEbpf(await probeEbpf()),
    evaluateProc(await probeProc()),
    evaluateLogDir(await probeLogDir(logDir)),
    evaluateDisk(await probeDisk(logDir)),
    ...cloudwatch,
  ];
}

export async function runDoctor(o: DoctorOptions, write = (l: string) => process.stdout.write(`${l}\n`)): Promise<number> {
  const report = summarize(await collectChecks(o));
  if (o.json) write(formatJson(report));
  else for (const line of formatText(report)) write(line);
  return exitStatus(report);
}
