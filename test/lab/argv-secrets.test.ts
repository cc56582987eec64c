/**
 * Command lines in the lab, end to end through the built agent:
 *  - secrets: a real IMDSv1 caller (python3, started by an `sh -c` parent) carries distinct canary
 *    secrets in its own argv and in its parent's, in every shape the scrubber knows; the call is
 *    recorded, and no canary reaches stdout, the log file, stderr or CloudWatch (the fake endpoint);
 *  - bounds: a caller and its parent with 300 KB of argv each; the call is recorded with argv cut at
 *    1024 bytes (`argv_truncated`) and reaches CloudWatch (before, the record was too large to ship).
 * Two tracers side by side: /proc attribution (log file, CloudWatch) and the default (eBPF when it
 * loads; stdout).
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEFAULTS } from '../../agent/src/defaults.js';
import { createLab, labSupported, IMDS_V4, type Lab } from '../../lab/netns.js';
import { startTracer, type TracedRecord, type TracerProcess } from '../../lab/traced.js';
import { validate } from '../../agent/src/schema.js';
import { clientEnv } from '../helpers/clients.js';
import { startLabFakeLogs, type LabFakeLogs } from '../helpers/lab-fake-logs.js';

const support = labSupported();
const IMDS_CANARY = 'CANARYTOKEN';
const rnd = (): string => randomBytes(6).toString('hex');
/** Distinct canaries: C_* in the caller's argv (and, passed through, its parent's), P_* only in the parent's script. */
const C = {
  pw: `cnry-c-pw-${rnd()}`, dbpw: `cnry-c-dbpw-${rnd()}`, apikey: `cnry-c-apikey-${rnd()}`, sak: `cnry-c-sak-${rnd()}`,
  sess: `cnry-c-sess-${rnd()}`, json: `cnry-c-json-${rnd()}`, ps: `cnry-c-ps-${rnd()}`, custom: `cnry-c-custom-${rnd()}`,
  shape: `AQAE${randomBytes(30).toString('base64url').replace(/[-_]/g, 'x')}Cnryshape${rnd()}`,
};
const P = { token: `cnry-p-token-${rnd()}`, mysql: `cnry-p-mysql-${rnd()}`, dict: `cnry-p-dict-${rnd()}`, pw: `cnry-p-pw-${rnd()}` };
const CANARIES = [...Object.values(C), ...Object.values(P), IMDS_CANARY];

/** An IMDSv1 GET on a kept-alive connection; reports its pid and port; lives until stdin closes. */
const PY = `import http.client,json,os,sys
c=http.client.HTTPConnection(sys.argv[1],80)
c.request('GET','/latest/meta-data/instance-id')
c.getresponse().read()
print(json.dumps({'pid':os.getpid(),'port':c.sock.getsockname()[1]}),flush=True)
sys.stdin.read()`;

interface Caller { pid: number; port: number; parentPid: number; stop(): Promise<void> }

/** sh -c '<script with its own secrets>; python3 -c "$PY" "$@"; …' sh <args>: python3 gets args. */
async function startCaller(lab: Lab, parentScript: string, args: string[]): Promise<Caller> {
  const script = `${parentScript}; python3 -c "$PY" ${IMDS_V4} "$@"; echo done >/dev/null`;
  const sh = lab.spawn(lab.instanceNs, 'sh', ['-c', script, 'sh', ...args],
    { env: clientEnv({ PY }), stdio: ['pipe', 'pipe', 'pipe'] });
  let err = '';
  sh.stderr!.on('data', (b: Buffer) => { err += b.toString(); });
  const report = await new Promise<{ pid: number; port: number }>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`caller: no report: ${err}`)), 20_000);
    sh.once('exit', (c) => { clearTimeout(timer); reject(new Error(`caller exited (${c}): ${err}`)); });
    createInterface({ input: sh.stdout! }).once('line', (l) => { clearTimeout(timer); resolve(JSON.parse(l)); });
  });
  return {
    ...report, parentPid: sh.pid!,
    stop: async () => {
      sh.stdin!.end();
      if (sh.exitCode === null) await new Promise((r) => sh.once('exit', r));
    },
  };
}

describe.skipIf(!support.ok)(`command lines: secrets scrubbed, argv bounded${support.ok ? '' : ` (skipped: ${support.reason})`}`, () => {
  let lab: Lab;
  let cw: LabFakeLogs;
  let proc: TracerProcess; // --backend proc, log file, CloudWatch
  let auto: TracerProcess; // default backend (eBPF when it loads), stdout
  const logFile = join(mkdtempSync(join(tmpdir(), 'imdst-argv-')), 'calls.jsonl');
  const callers: Caller[] = [];

  beforeAll(async () => {
    lab = await createLab();
    await lab.startImds({ canary: IMDS_CANARY });
    cw = await startLabFakeLogs(lab);
    const cwEnv = { ...process.env, AWS_ACCESS_KEY_ID: 'AKIAFAKEFAKEFAKEFAKE', AWS_SECRET_ACCESS_KEY: 'fake-secret-for-tests',
      AWS_REGION: 'eu-west-1', AWS_EC2_METADATA_DISABLED: 'true' };
    proc = await startTracer(lab, ['--log-file', logFile, '--backend', 'proc', '--stats-interval', '3600',
      '--scrub-word', 'licence', '--cloudwatch-log-group', 'g', '--cloudwatch-log-stream', 's',
      '--cloudwatch-endpoint', cw.endpoint], 20_000, cwEnv);
    auto = await startTracer(lab, ['--no-log-file', '--stats-interval', '3600', '--scrub-word', 'licence']);
  });

  afterAll(async () => {
    for (const c of callers) await c.stop().catch(() => undefined);
    await proc?.stop();
    await auto?.stop();
    await cw?.stop();
    await lab?.destroy();
  });

  const callOf = (t: TracerProcess, port: number): Promise<TracedRecord> =>
    t.next((r) => r.event === 'imds_call' && r.connection.sport === port, 20_000, `the record of port ${port}`);

  /** Resolves with the shipped record of port once CloudWatch (the fake) has it. */
  async function shipped(port: number): Promise<TracedRecord> {
    for (;;) {
      const hit = cw.fake.events().map((e) => JSON.parse(e.message) as TracedRecord)
        .find((r) => r.event === 'imds_call' && r.connection.sport === port);
      if (hit) return hit;
      await cw.fake.waitForEvents(cw.fake.events().length + 1, 20_000);
    }
  }

  it('secrets in the caller\'s and its parent\'s argv never reach any output; the call is recorded', async () => {
    const parentScript = `TOKEN=${P.token}; export MYSQL_PWD=${P.mysql}; ` +
      `echo "{'X-aws-ec2-metadata-token': '${P.dict}'}" >/dev/null; true --password ${P.pw}`;
    const args = ['--password', C.pw, `--db-password=${C.dbpw}`, '--api-key', C.apikey, `AWS_SECRET_ACCESS_KEY=${C.sak}`,
      `AWS_SESSION_TOKEN=${C.sess}`, `{"X-aws-ec2-metadata-token": "${C.json}"}`,
      `@{"X-aws-ec2-metadata-token" = '${C.ps}'}`, `T=${C.shape}`, '--licence-key', C.custom];
    const caller = await startCaller(lab, parentScript, args);
    callers.push(caller);

    for (const t of [proc, auto]) {
      const rec = await callOf(t, caller.port);
      expect(rec.imds_version).toBe('v1');
      expect(rec.process.pid).toBe(caller.pid);
      expect(rec.process.argv[0]).toMatch(/python3/);
      expect(rec.process.argv[1]).toBe('-c');
      expect(rec.process.argv).toContain('[REDACTED]');
      expect(rec.process.argv).toContain('--api-key'); // names stay, values go
      const parent = rec.process.ancestors.find((a: TracedRecord) => a.pid === caller.parentPid);
      expect(parent?.argv?.[0]).toBe('sh');
      expect(parent.argv[2]).toContain('TOKEN=[REDACTED]');
      expect(validate(rec)).toEqual([]);
    }
    const sent = await shipped(caller.port);
    expect(sent.process.pid).toBe(caller.pid);

    await caller.stop();
    await proc.stop();
    await auto.stop();
    const everything = [JSON.stringify(proc.records), JSON.stringify(auto.records), proc.stderr(), auto.stderr(),
      readFileSync(logFile, 'utf8'), JSON.stringify(cw.fake.batches)].join('\n');
    for (const c of CANARIES) expect(everything, `canary ${c}`).not.toContain(c);
  });
});

describe.skipIf(!support.ok)(`argv bounded at 1024 bytes${support.ok ? '' : ` (skipped: ${support.reason})`}`, () => {
  let lab: Lab;
  let cw: LabFakeLogs;
  let proc: TracerProcess;
  let auto: TracerProcess;
  let caller: Caller | null = null;
  const logFile = join(mkdtempSync(join(tmpdir(), 'imdst-argv-')), 'calls.jsonl');

  beforeAll(async () => {
    lab = await createLab();
    await lab.startImds({});
    cw = await startLabFakeLogs(lab);
    const cwEnv = { ...process.env, AWS_ACCESS_KEY_ID: 'AKIAFAKEFAKEFAKEFAKE', AWS_SECRET_ACCESS_KEY: 'fake-secret-for-tests',
      AWS_REGION: 'eu-west-1', AWS_EC2_METADATA_DISABLED: 'true' };
    proc = await startTracer(lab, ['--log-file', logFile, '--backend', 'proc', '--stats-interval', '3600',
      '--cloudwatch-log-group', 'g', '--cloudwatch-log-stream', 's', '--cloudwatch-endpoint', cw.endpoint], 20_000, cwEnv);
    auto = await startTracer(lab, ['--no-log-file', '--stats-interval', '3600']);
  });

  afterAll(async () => {
    await caller?.stop().catch(() => undefined);
    await proc?.stop();
    await auto?.stop();
    await cw?.stop();
    await lab?.destroy();
  });

  it('a caller and its parent with 300 KB of argv each: argv cut and marked, the call shipped to CloudWatch', async () => {
    // A class path as java gets it, in three arguments (one argument may not exceed 128 KiB).
    const cp = (n: number): string => Array.from({ length: 5000 }, (_, i) => `/opt/app/lib/dep-${n}-${i}.jar`).join(':').slice(0, 100_000);
    const big = ['-cp', cp(1), '-Dextra.path', cp(2), '-Dmore.path', cp(3)];
    caller = await startCaller(lab, `X=${'y'.repeat(100)}`, big);
    const argvBytes = (a: string[]): number => Buffer.byteLength(`${a.join('\0')}\0`);
    for (const t of [proc, auto]) {
      const rec = await t.next((r) => r.event === 'imds_call' && r.connection.sport === caller!.port, 20_000, 'the call');
      expect(rec.process.pid).toBe(caller.pid);
      expect(rec.process.argv_truncated).toBe(true);
      expect(argvBytes(rec.process.argv)).toBeLessThanOrEqual(DEFAULTS.argvMaxBytes + 1);
      expect(rec.process.argv[0]).toMatch(/python3/);
      expect(rec.process.argv[1]).toBe('-c');
      const parent = rec.process.ancestors.find((a: TracedRecord) => a.pid === caller!.parentPid);
      expect(parent).toMatchObject({ comm: 'sh', argv_truncated: true });
      expect(argvBytes(parent.argv)).toBeLessThanOrEqual(DEFAULTS.argvMaxBytes + 1);
      expect(Buffer.byteLength(JSON.stringify(rec))).toBeLessThan(DEFAULTS.cloudwatch.maxEventBytes);
      expect(validate(rec)).toEqual([]);
    }
    for (;;) {
      const hit = cw.fake.events().map((e) => JSON.parse(e.message) as TracedRecord)
        .find((r) => r.event === 'imds_call' && r.connection.sport === caller!.port);
      if (hit) { expect(hit.process.argv_truncated).toBe(true); break; }
      await cw.fake.waitForEvents(cw.fake.events().length + 1, 20_000);
    }
    expect(proc.records.filter((r) => r.event === 'error')).toEqual([]);
  });
});
