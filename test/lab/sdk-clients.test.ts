/**
 * The IMDS clients people really run, from Debian's packages — botocore, the legacy boto,
 * aws-sdk-go v1 and v2, aws-sdk-ruby, amazon-ec2-utils' ec2-metadata, cloud-init's EC2 datasource —
 * against the stand-in with the token PUT answered, refused (403, 405) and unanswered (hop limit 1,
 * the caller in a container), traced by the built agent (eBPF attribution, --include-v2).
 *
 * What each client really does (the table in README's tests section) is pinned here, and the
 * tracer must be right about all of it: v2 when the token was served; the fallback calls v1 with
 * the right v1_reason; a client that never asks for a token v1 without a reason; a client that
 * gives up sends no v1 call at all. The stand-in's request log is the ledger: every request it saw
 * is one record. Every record carries the client's User-Agent.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  addContainer, createLab, IMDS_V4, labSupported, type ContainerInfo, type ImdsHandle, type ImdsStartOptions, type Lab,
} from '../../lab/netns.js';
import { INSTANCE } from '../../lab/imds-server.js';
import { startTracer, type TracedRecord, type TracerProcess } from '../../lab/traced.js';
import { validate } from '../../agent/src/schema.js';
import {
  buildGoClients, goClients, goSdkSupport, SDK_CLIENTS, sdkOutput, type GoBuild, type SdkClient,
} from '../helpers/sdk-clients.js';

const support = labSupported();
const goSupport = goSdkSupport();
if (support.ok && !goSupport.ok) console.warn(`Go SDK clients skipped: ${goSupport.reason}`);

type Scenario = 'answered' | 'refused403' | 'refused405' | 'unanswered';

/**
 * What a client does:
 *  v2        — token served: PUT, then every call with the token;
 *  fallback  — PUT refused or unanswered, then the same calls without a token (IMDSv1);
 *  v1-only   — never asks for a token (no PUT at all);
 *  gives-up  — PUT refused or unanswered, then no call at all (fails, or waits until killed).
 */
type Outcome = 'v2' | 'fallback' | 'v1-only' | 'gives-up';

const SDK_LIKE: Record<Scenario, Outcome> = { answered: 'v2', refused403: 'fallback', refused405: 'fallback', unanswered: 'fallback' };
const EXPECTED: Record<string, Record<Scenario, Outcome>> = {
  botocore: SDK_LIKE,
  'boto (legacy)': { answered: 'v1-only', refused403: 'v1-only', refused405: 'v1-only', unanswered: 'v1-only' },
  'aws-sdk-ruby': SDK_LIKE,
  'aws-sdk-go': SDK_LIKE,
  'aws-sdk-go-v2': SDK_LIKE,
  'ec2-metadata': { answered: 'v2', refused403: 'gives-up', refused405: 'gives-up', unanswered: 'gives-up' },
  'cloud-init': { answered: 'v2', refused403: 'gives-up', refused405: 'gives-up', unanswered: 'gives-up' },
};
const GO_NAMES = ['aws-sdk-go', 'aws-sdk-go-v2'];
const CLIENT_NAMES = [...SDK_CLIENTS.map((c) => c.name), ...GO_NAMES];

interface ScenarioSpec {
  id: Scenario;
  title: string;
  imds: ImdsStartOptions;
  /** Status the token PUT gets (null: its answer never arrives). */
  put: number | null;
  reason?: 'token_put_refused' | 'token_put_unanswered';
  inContainer: boolean;
}
const SCENARIOS: ScenarioSpec[] = [
  { id: 'answered', title: 'token PUT answered', imds: {}, put: 200, inContainer: false },
  { id: 'refused403', title: 'token PUT refused with 403', imds: { putStatus: 403 }, put: 403, reason: 'token_put_refused', inContainer: false },
  { id: 'refused405', title: 'token PUT refused with 405', imds: { putStatus: 405 }, put: 405, reason: 'token_put_refused', inContainer: false },
  {
    id: 'unanswered', title: 'token PUT unanswered (hop limit 1, the caller in a container)', imds: { hopLimit: 1 }, put: null,
    reason: 'token_put_unanswered', inContainer: true,
  },
];

/** Whether every Debian package a client comes from is installed. */
function installed(packages: string[]): boolean {
  return packages.every((p) => /install ok installed/.test(spawnSync('dpkg-query', ['-W', '-f=${Status}', p], { encoding: 'utf8' }).stdout ?? ''));
}
const PACKAGES: Record<string, string[]> = Object.fromEntries([
  ...SDK_CLIENTS.map((c) => [c.name, c.packages]),
  ['aws-sdk-go', ['golang-go', 'golang-github-aws-aws-sdk-go-dev']],
  ['aws-sdk-go-v2', ['golang-go', 'golang-github-aws-aws-sdk-go-v2-dev']],
]);
const missing = (name: string): string | null => {
  if (GO_NAMES.includes(name) && !goSupport.ok) return goSupport.reason ?? 'go';
  return installed(PACKAGES[name]) ? null : `${PACKAGES[name].join(', ')} not installed (scripts/setup-dev.sh, run by npm test as root, installs them)`;
};

describe.skipIf(!support.ok)(`real SDKs and tools, token PUT answered / refused / unanswered${support.ok ? '' : ` (skipped: ${support.reason})`}`, () => {
  let lab: Lab;
  let container: ContainerInfo;
  let tracer: TracerProcess;
  let imds: ImdsHandle | undefined;
  let go: GoBuild | undefined;
  let home = '';
  const clients = new Map<string, SdkClient>();

  beforeAll(async () => {
    home = mkdtempSync(join(tmpdir(), 'imdst-sdk-home-'));
    for (const c of SDK_CLIENTS) clients.set(c.name, c);
    if (goSupport.ok) {
      go = buildGoClients(); // once per run, against Debian's packaged SDK sources
      for (const c of goClients(go)) clients.set(c.name, c);
    }
    lab = await createLab();
    container = await addContainer(lab);
    // Anything a client sends anywhere but the metadata address (DNS, STS, other credential
    // endpoints, IPv6) is dropped and counted, in the instance and in the container.
    for (const ns of [lab.instanceNs, container.ns]) {
      for (const [bin, allowed] of [['iptables', IMDS_V4], ['ip6tables', null]] as const) {
        for (const proto of ['tcp', 'udp']) {
          const r = await lab.exec(ns, bin, ['-w', '-A', 'OUTPUT', '!', '-o', 'lo', ...(allowed ? ['!', '-d', allowed] : []), '-p', proto, '-j', 'DROP']);
          expect(r.exitCode, `${bin} in ${ns}: ${r.stderr}`).toBe(0);
        }
      }
    }
    tracer = await startTracer(lab, ['--no-log-file', '--include-v2', '--stats-interval', '3600']);
  }, 300_000);

  afterAll(async () => {
    await imds?.stop();
    await tracer?.stop();
    await lab?.destroy();
    go?.remove();
    if (home) rmSync(home, { recursive: true, force: true });
  });

  /**
   * A marker request (curl, from the instance), and its index in the stand-in's log once logged.
   * The log comes through a pipe of its own: once the marker is in, every earlier request is.
   */
  let marks = 0;
  const mark = async (): Promise<number> => {
    const path = `/imdst-ledger-mark-${++marks}`;
    await lab.exec(lab.instanceNs, 'curl', ['-s', '-o', '/dev/null', '--noproxy', '*', '--max-time', '10', `http://${IMDS_V4}${path}`]);
    const find = (): number => imds!.requests().findIndex((e) => e.path === path);
    while (find() === -1) await imds!.waitForRequests(imds!.requests().length + 1);
    return find();
  };

  /** The records of a client's calls: its own process, or a child of it (ec2-metadata runs curl). */
  const callsOf = (pid: number) => (r: TracedRecord): boolean => r.event === 'imds_call'
    && (r.process.pid === pid || (r.process.ancestors ?? []).some((a: { pid: number }) => a.pid === pid));

  for (const sc of SCENARIOS) {
    describe(sc.title, () => {
      beforeAll(async () => {
        await imds?.stop();
        imds = await lab.startImds({ ...sc.imds, ipv6: false, logRequests: true });
      }, 60_000);

      for (const name of CLIENT_NAMES) {
        const outcome = EXPECTED[name][sc.id];
        const why = missing(name);
        it.skipIf(why !== null)(`${name}: ${outcome}${why ? ` (skipped: ${why})` : ''}`, async () => {
          const client = clients.get(name)!;
          const start = await mark();
          const run = await client.run(lab, sc.inContainer ? container.ns : lab.instanceNs, home, 60_000);
          const end = await mark();
          const seen = imds!.requests().slice(start + 1, end); // the ledger: every request of this client
          const recs = await tracer.count(callsOf(run.pid), seen.length, 20_000, `${name}'s calls`);
          expect(recs).toHaveLength(seen.length); // each request the stand-in saw is one record, no more
          for (const r of recs) expect(validate(r)).toEqual([]);
          for (const r of recs) expect(r.request.user_agent, `${r.request.method} ${r.request.path}`).toMatch(client.userAgent);

          const puts = recs.filter((r) => r.request.token_request);
          const gets = recs.filter((r) => !r.request.token_request);
          const out = sdkOutput(run);
          for (const p of puts) expect(p).toMatchObject({ imds_version: 'v2', request: { method: 'PUT', path: '/latest/api/token' } });

          switch (outcome) {
            case 'v2':
              expect(run.exitCode, run.stderr).toBe(0);
              expect(puts.length).toBeGreaterThan(0);
              for (const p of puts) expect(p.response.status).toBe(200);
              expect(gets.length).toBeGreaterThan(0);
              for (const g of gets) {
                expect(g).toMatchObject({ imds_version: 'v2', request: { token_present: true } });
                expect(g.v1_reason).toBeUndefined();
              }
              if (out.accessKeyId !== undefined) expect(out.accessKeyId).toBe(INSTANCE.accessKeyIdV2);
              break;
            case 'fallback':
              expect(run.exitCode, run.stderr).toBe(0);
              expect(puts.length).toBeGreaterThan(0);
              for (const p of puts) expect(p.response.status).toBe(sc.put);
              expect(gets.length).toBeGreaterThan(0);
              for (const g of gets) {
                expect(g).toMatchObject({ imds_version: 'v1', v1_reason: sc.reason, request: { token_present: false } });
                expect(g.response.status).toBe(200);
              }
              expect(out.accessKeyId).toBe(INSTANCE.accessKeyIdV1); // it took the IMDSv1 path
              break;
            case 'v1-only':
              expect(run.exitCode, run.stderr).toBe(0);
              expect(puts).toEqual([]);
              for (const g of gets) {
                expect(g).toMatchObject({ imds_version: 'v1', request: { token_present: false } });
                expect(g.v1_reason).toBeUndefined(); // it never asked for a token: no fallback to explain
              }
              expect(out.accessKeyId).toBe(INSTANCE.accessKeyIdV1);
              break;
            case 'gives-up':
              expect(run.exitCode).not.toBe(0);
              expect(gets).toEqual([]); // no IMDSv1 call: nothing to report as v1
              expect(puts.length).toBeGreaterThan(0);
              for (const p of puts) expect(p.response.status).toBe(sc.put);
              expect(out).toEqual({});
              break;
          }
        }, 120_000);
      }
    });
  }

  it('no client sent anything anywhere but the metadata address (no DNS, no other endpoint)', async () => {
    for (const ns of [lab.instanceNs, container.ns]) {
      for (const bin of ['iptables', 'ip6tables']) {
        const r = await lab.exec(ns, bin, ['-w', '-n', '-v', '-x', '-L', 'OUTPUT']);
        expect(r.exitCode, r.stderr).toBe(0);
        const dropped = r.stdout.split('\n').filter((l) => /\bDROP\b/.test(l)).map((l) => l.trim().split(/\s+/));
        expect(dropped.length).toBe(2); // the rules are there (tcp, udp)
        expect(dropped.map((f) => Number(f[0])), `${bin} in ${ns}:\n${r.stdout}`).toEqual([0, 0]); // packets dropped
      }
    }
  });
});
