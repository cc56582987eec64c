/**
 * The IMDS stand-in behaves like the real service, proven through real clients inside the lab.
 * Needs root and `npm run build:ts` (the stand-in runs from dist/). Test output never prints
 * client stdout (it holds tokens).
 */
import { readlinkSync } from 'node:fs';
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { DEFAULT_CANARY, INSTANCE, VERSIONS } from '../../lab/imds-server.js';
import {
  cleanupStaleLabs,
  createLab,
  labSupported,
  type ImdsHandle,
  type ImdsStartOptions,
  type Lab,
} from '../../lab/netns.js';
import {
  botocoreCredentials,
  CLIENT_DRIVERS,
  curlRequests,
  curlV1,
  curlV2,
  awsSdkV3,
  DEFAULT_PATH,
  startLongLivedCaller,
  type CurlRequest,
  type CurlTransfer,
} from '../helpers/clients.js';

const support = labSupported();
const TIMEOUT = 60_000;
const TOKEN_PATH = '/latest/api/token';
const TTL = 'X-aws-ec2-metadata-token-ttl-seconds';
const TOKEN = 'X-aws-ec2-metadata-token';
const ROLE_PATH = `/latest/meta-data/iam/security-credentials/${INSTANCE.roleName}`;

type Req = Record<string, unknown>;

describe.skipIf(!support.ok)(
  `IMDS stand-in${support.ok ? '' : ` — SKIPPED: ${support.reason}`}`,
  { timeout: TIMEOUT },
  () => {
    let lab: Lab;

    beforeAll(async () => {
      await cleanupStaleLabs();
      lab = await createLab();
    }, TIMEOUT);

    afterAll(async () => {
      await lab?.destroy();
    }, TIMEOUT);

    /** Start a stand-in for the tests of one describe block (stopped in its afterAll). */
    function withImds(opts: ImdsStartOptions = {}): () => ImdsHandle {
      let imds: ImdsHandle | undefined;
      beforeAll(async () => {
        imds = await lab.startImds({ logRequests: true, ...opts });
      }, TIMEOUT);
      afterAll(async () => {
        await imds?.stop();
      }, TIMEOUT);
      return () => {
        if (!imds) throw new Error('stand-in not started');
        return imds;
      };
    }

    async function one(req: CurlRequest, ipv6 = false): Promise<CurlTransfer> {
      const r = await curlRequests(lab, [req], { ipv6 });
      expect(r.exitCode, r.stderr).toBe(0);
      expect(r.transfers).toHaveLength(1);
      return r.transfers[0];
    }

    async function token(ttl = 21600): Promise<string> {
      const t = await one({ method: 'PUT', path: TOKEN_PATH, headers: { [TTL]: String(ttl) } });
      expect(t.status).toBe(200);
      return t.body;
    }

    /** Requests the stand-in logged while `fn` ran (waits for `expected` of them). */
    let marks = 0;
    async function logged(imds: ImdsHandle, expected: number, fn: () => Promise<unknown>): Promise<Req[]> {
      // The stand-in's log comes through a pipe and may still hold an earlier test's last request:
      // a marker request, once logged, says every earlier one is in.
      const mark = `/imdst-log-mark-${++marks}`;
      await curlRequests(lab, [{ path: mark }]);
      while (!imds.requests().some((e) => e.path === mark)) await imds.waitForRequests(imds.requests().length + 1);
      const before = imds.requests().findIndex((e) => e.path === mark) + 1;
      await fn();
      const all = await imds.waitForRequests(before + expected);
      return all.slice(before);
    }

    describe('default (tokens optional)', () => {
      const imds = withImds();

      it('reports ready on both endpoints', () => {
        expect(imds().ready.listen).toEqual([
          { address: '169.254.169.254', port: 80 },
          { address: 'fd00:ec2::254', port: 80 },
        ]);
      });

      it('lists the versions at / with the headers of the real service', async () => {
        const t = await one({ path: '/' });
        expect(t.status).toBe(200);
        const versions = t.body.split('\n');
        expect(versions).toEqual([...VERSIONS]);
        expect(versions).toContain('1.0');
        expect(versions).toContain('2021-07-15');
        expect(versions.at(-1)).toBe('latest');
        expect(t.headers['server']).toBe('EC2ws');
        expect(t.headers['content-type']).toBe('text/plain');
        expect(Number(t.headers['content-length'])).toBe(Buffer.byteLength(t.body));
      });

      it('answers the meta-data tree', async () => {
        const listing = (await one({ path: '/latest/meta-data/' })).body.split('\n');
        for (const e of ['ami-id', 'instance-id', 'instance-type', 'local-ipv4', 'hostname', 'mac', 'placement/', 'iam/']) {
          expect(listing).toContain(e);
        }
        const expected: Record<string, string> = {
          '/latest/meta-data/ami-id': INSTANCE.amiId,
          '/latest/meta-data/instance-id': 'i-0123456789abcdef0',
          '/latest/meta-data/instance-type': INSTANCE.instanceType,
          '/latest/meta-data/local-ipv4': INSTANCE.localIpv4,
          '/latest/meta-data/hostname': INSTANCE.hostname,
          '/latest/meta-data/mac': INSTANCE.mac,
          '/latest/meta-data/placement/region': INSTANCE.region,
          '/latest/meta-data/placement/availability-zone': INSTANCE.availabilityZone,
          '/latest/meta-data/iam/security-credentials/': INSTANCE.roleName,
          '/latest/user-data': INSTANCE.userData,
          '/latest/': 'dynamic\nmeta-data\nuser-data',
        };
        const r = await curlRequests(lab, Object.keys(expected).map((path) => ({ path })));
        expect(r.exitCode, r.stderr).toBe(0);
        expect(r.transfers.map((t) => t.body)).toEqual(Object.values(expected));
        expect(r.transfers.every((t) => t.status === 200)).toBe(true);
      });

      it('answers iam/info and the instance identity document as JSON', async () => {
        const info = JSON.parse((await one({ path: '/latest/meta-data/iam/info' })).body);
        expect(info.Code).toBe('Success');
        expect(info.InstanceProfileArn).toContain(INSTANCE.roleName);
        const doc = JSON.parse((await one({ path: '/latest/dynamic/instance-identity/document' })).body);
        expect(doc).toMatchObject({
          region: INSTANCE.region,
          instanceId: INSTANCE.instanceId,
          availabilityZone: INSTANCE.availabilityZone,
          accountId: INSTANCE.accountId,
        });
      });

      it('answers the role credentials with the canary in the secrets; v1 and v2 get different keys', async () => {
        const v1 = JSON.parse((await one({ path: ROLE_PATH })).body);
        expect(Object.keys(v1)).toEqual(expect.arrayContaining(['AccessKeyId', 'SecretAccessKey', 'Token', 'Expiration']));
        expect(v1.Code).toBe('Success');
        expect(v1.AccessKeyId).toBe(INSTANCE.accessKeyIdV1);
        expect(v1.SecretAccessKey).toContain(DEFAULT_CANARY);
        expect(v1.Token).toContain(DEFAULT_CANARY);
        expect(Date.parse(v1.Expiration)).toBeGreaterThan(Date.now());
        const v2 = JSON.parse((await one({ path: ROLE_PATH, headers: { [TOKEN]: await token() } })).body);
        expect(v2.AccessKeyId).toBe(INSTANCE.accessKeyIdV2);
        expect(v2.SecretAccessKey).toContain(DEFAULT_CANARY);
      });

      it('answers dated versions and 1.0 with the same tree', async () => {
        const latest = (await one({ path: '/latest/meta-data/' })).body;
        for (const v of ['1.0', '2021-07-15', '2009-04-04']) {
          expect((await one({ path: `/${v}/meta-data/` })).body).toBe(latest);
          expect((await one({ path: `/${v}/meta-data/instance-id` })).body).toBe(INSTANCE.instanceId);
        }
      });

      it('answers 404 to unknown paths, with an HTML error page', async () => {
        for (const path of ['/latest/meta-data/nope', '/2099-01-01/meta-data/', '/latest/meta-data/instance-id/', '/nope']) {
          const t = await one({ path });
          expect(t.status, path).toBe(404);
          expect(t.headers['server']).toBe('EC2ws');
          expect(t.body).toContain('404 - Not Found');
        }
      });

      it('tolerates repeated slashes (the v3 SDK sends //latest/...)', async () => {
        expect((await one({ path: '//latest//meta-data/instance-id' })).body).toBe(INSTANCE.instanceId);
      });

      it('answers the token PUT: TTL 1..21600 → 200 with TTL echoed and a canary token', async () => {
        const r = await curlRequests(lab, [1, 300, 21600].map((ttl) => ({ method: 'PUT', path: TOKEN_PATH, headers: { [TTL]: String(ttl) } })));
        expect(r.exitCode, r.stderr).toBe(0);
        expect(r.transfers.map((t) => t.status)).toEqual([200, 200, 200]);
        expect(r.transfers.map((t) => t.headers['x-aws-ec2-metadata-token-ttl-seconds'])).toEqual(['1', '300', '21600']);
        const tokens = r.transfers.map((t) => t.body);
        for (const t of tokens) {
          expect(t).toContain(DEFAULT_CANARY);
          expect(t).toMatch(/^[A-Za-z0-9]+$/);
        }
        expect(new Set(tokens).size).toBe(3);
      });

      it('answers 400 to a token PUT with a missing or invalid TTL', async () => {
        const cases: (Record<string, string> | undefined)[] = [
          undefined,
          { [TTL]: '0' },
          { [TTL]: '21601' },
          { [TTL]: 'abc' },
          { [TTL]: '-5' },
          { [TTL]: '1.5' },
        ];
        const r = await curlRequests(lab, cases.map((headers) => ({ method: 'PUT', path: TOKEN_PATH, headers })));
        expect(r.exitCode, r.stderr).toBe(0);
        expect(r.transfers.map((t) => t.status)).toEqual(cases.map(() => 400));
      });

      it('answers 403 to a token PUT carrying X-Forwarded-For', async () => {
        const t = await one({ method: 'PUT', path: TOKEN_PATH, headers: { [TTL]: '60', 'X-Forwarded-For': '203.0.113.9' } });
        expect(t.status).toBe(403);
        expect(t.body).not.toContain(DEFAULT_CANARY);
      });

      it('answers 401 to an unknown token, 200 to a valid one (header name in any case)', async () => {
        expect((await one({ path: DEFAULT_PATH, headers: { [TOKEN]: `AQAEbogus${DEFAULT_CANARY}` } })).status).toBe(401);
        const tok = await token();
        const ok = await one({ path: DEFAULT_PATH, headers: { 'x-AWS-EC2-metadata-TOKEN': tok } });
        expect(ok.status).toBe(200);
        expect(ok.body).toBe(INSTANCE.instanceId);
      });

      it('answers 401 once a token has expired', async () => {
        const tok = await token(1);
        const issued = Date.now();
        expect((await one({ path: DEFAULT_PATH, headers: { [TOKEN]: tok } })).status).toBe(200);
        let status = 200;
        while (status === 200 && Date.now() - issued < 5_000) {
          status = (await one({ path: DEFAULT_PATH, headers: { [TOKEN]: tok } })).status;
        }
        expect(status).toBe(401);
        expect(Date.now() - issued).toBeGreaterThanOrEqual(900);
      });

      it('answers 405 to other methods on data paths and to GET on the token path', async () => {
        const reqs: CurlRequest[] = [
          { method: 'POST', path: DEFAULT_PATH },
          { method: 'DELETE', path: DEFAULT_PATH },
          { method: 'PUT', path: DEFAULT_PATH, headers: { [TTL]: '60' } },
          { method: 'GET', path: TOKEN_PATH },
        ];
        const r = await curlRequests(lab, reqs);
        expect(r.transfers.map((t) => t.status)).toEqual([405, 405, 405, 405]);
      });

      it('answers HEAD with the headers and no body', async () => {
        const t = await one({ method: 'HEAD', path: DEFAULT_PATH });
        expect(t.status).toBe(200);
        expect(t.headers['content-length']).toBe(String(INSTANCE.instanceId.length));
        expect(t.body).toBe('');
      });

      it('listens on IPv6', async () => {
        const reqs = await logged(imds(), 1, async () => {
          const r = await curlV1(lab, { ipv6: true });
          expect(r.exitCode, r.stderr).toBe(0);
          expect(r.stdout).toBe(INSTANCE.instanceId);
        });
        expect(reqs[0]).toMatchObject({ remoteAddress: 'fd00:ec2::2', localAddress: 'fd00:ec2::254', token: 'none' });
      });

      it('keeps connections alive: PUT, token-less GET and tokened GET on one connection', async () => {
        let transfers: CurlTransfer[] = [];
        const reqs = await logged(imds(), 3, async () => {
          const r = await curlRequests(lab, [
            { method: 'PUT', path: TOKEN_PATH, headers: { [TTL]: '60' } },
            { path: DEFAULT_PATH },
            { path: '/latest/meta-data/ami-id' },
          ]);
          expect(r.exitCode, r.stderr).toBe(0);
          transfers = r.transfers;
        });
        expect(transfers.map((t) => t.status)).toEqual([200, 200, 200]);
        expect(transfers.map((t) => t.numConnects)).toEqual([1, 0, 0]);
        expect(new Set(transfers.map((t) => t.localPort)).size).toBe(1);
        expect(new Set(reqs.map((e) => e.remotePort))).toEqual(new Set([transfers[0].localPort]));
        expect(transfers[0].headers['connection']).toBe('keep-alive');
      });

      it('never logs a token value', () => {
        expect(imds().requests().length).toBeGreaterThan(10);
        expect(imds().stderr()).not.toContain(DEFAULT_CANARY);
      });

      describe('client drivers', () => {
        for (const driver of CLIENT_DRIVERS) {
          for (const ipv6 of driver.ipv6 ? [false, true] : [false]) {
            it(`${driver.name} ${driver.version}${ipv6 ? ' (IPv6)' : ''}`, async () => {
              let run = { exitCode: -1 as number | null, stdout: '', stderr: '', pid: 0 };
              const n = driver.version === 'v2' ? 2 : 1;
              const reqs = await logged(imds(), n, async () => {
                run = await driver.run(lab, { ipv6 });
              });
              expect(run.exitCode, run.stderr).toBe(0);
              expect(run.stdout).toBe(INSTANCE.instanceId);
              expect(run.pid).toBeGreaterThan(0);
              const get = reqs.at(-1)!;
              expect(get).toMatchObject({
                method: 'GET',
                path: DEFAULT_PATH,
                status: 200,
                token: driver.version === 'v2' ? 'valid' : 'none',
                remoteAddress: ipv6 ? 'fd00:ec2::2' : '169.254.10.2',
              });
              if (driver.version === 'v2') expect(reqs.at(-2)).toMatchObject({ method: 'PUT', path: TOKEN_PATH, status: 200 });
            });
          }
        }

        it('curl v2 runs two processes (PUT, then GET)', async () => {
          const r = await curlV2(lab);
          expect(r.steps).toHaveLength(2);
          expect(r.steps[0].argv).toContain('PUT');
          expect(r.steps[1].argv.join(' ')).toContain(TOKEN);
          expect(r.steps[0].pid).not.toBe(r.steps[1].pid);
        });

        it('botocore fetches IMDSv2 credentials', async () => {
          const reqs = await logged(imds(), 3, async () => {
            const r = await botocoreCredentials(lab);
            expect(r.exitCode, r.stderr).toBe(0);
            const c = JSON.parse(r.stdout);
            expect(c.role_name).toBe(INSTANCE.roleName);
            expect(c.access_key).toBe(INSTANCE.accessKeyIdV2);
            expect(c.secret_key).toContain(DEFAULT_CANARY);
          });
          expect(reqs[0]).toMatchObject({ method: 'PUT', status: 200 });
          expect(reqs.slice(1).every((e) => e.token === 'valid')).toBe(true);
        });

        it('botocore over IPv6', async () => {
          const r = await botocoreCredentials(lab, { ipv6: true });
          expect(r.exitCode, r.stderr).toBe(0);
          expect(JSON.parse(r.stdout).access_key).toBe(INSTANCE.accessKeyIdV2);
        });

        for (const runtime of ['node', 'python'] as const) {
          for (const version of ['v1', 'v2'] as const) {
            it(`long-lived ${runtime} caller (${version}) stays alive with its connection open, pid = client pid`, async () => {
              const caller = startLongLivedCaller(lab, { runtime, version });
              try {
                const report = await caller.called;
                expect(report.status).toBe(200);
                expect(report.body).toBe(INSTANCE.instanceId);
                expect(report.pid).toBe(caller.pid); // ip netns exec execs: no wrapper process
                expect(readlinkSync(`/proc/${caller.pid}/exe`)).toMatch(runtime === 'node' ? /node$/ : /python3/);
                const ss = await lab.exec(lab.instanceNs, 'ss', ['-tnpH', 'state', 'established', `sport = :${report.localPort}`]);
                expect(ss.exitCode, ss.stderr).toBe(0);
                expect(ss.stdout).toContain('169.254.169.254:80');
                expect(ss.stdout).toContain(`pid=${caller.pid},`);
              } finally {
                expect(await caller.stop()).toBe(0);
              }
            });
          }
        }

        it('long-lived node caller over IPv6', async () => {
          const caller = startLongLivedCaller(lab, { runtime: 'node', version: 'v1', ipv6: true });
          try {
            const report = await caller.called;
            expect(report.status).toBe(200);
            expect(report.pid).toBe(caller.pid);
          } finally {
            await caller.stop();
          }
        });
      });
    });

    describe('--tokens-required', () => {
      const imds = withImds({ tokensRequired: true });

      it('answers 401 to token-less GETs, 200 with a token', async () => {
        const r = await curlRequests(lab, [{ path: DEFAULT_PATH }, { path: '/' }]);
        expect(r.transfers.map((t) => t.status)).toEqual([401, 401]);
        expect(r.transfers[0].body).toContain('401 - Unauthorized');
        const v1 = await curlV1(lab);
        expect(v1.exitCode).toBe(22);
        const v2 = await curlV2(lab);
        expect(v2.exitCode, v2.stderr).toBe(0);
        expect(v2.stdout).toBe(INSTANCE.instanceId);
      });

      it('SDKs: v3 with tokens works, v3 with disableFetchToken fails; botocore works', async () => {
        expect((await awsSdkV3(lab, 'v2')).exitCode).toBe(0);
        const v1 = await awsSdkV3(lab, 'v1');
        expect(v1.exitCode).toBe(22);
        expect(v1.stderr).toContain('401');
        const b = await botocoreCredentials(lab);
        expect(b.exitCode, b.stderr).toBe(0);
        expect(JSON.parse(b.stdout).access_key).toBe(INSTANCE.accessKeyIdV2);
        expect(imds().requests().some((e) => e.status === 401)).toBe(true);
      });
    });

    for (const putStatus of [403, 404, 405]) {
      describe(`--put-status ${putStatus}`, () => {
        const imds = withImds({ putStatus });

        it(`answers every token PUT with ${putStatus}, GETs still work`, async () => {
          const r = await curlRequests(lab, [
            { method: 'PUT', path: TOKEN_PATH, headers: { [TTL]: '60' } },
            { method: 'PUT', path: TOKEN_PATH },
            { path: DEFAULT_PATH },
          ]);
          expect(r.transfers.map((t) => t.status)).toEqual([putStatus, putStatus, 200]);
        });

        it('botocore falls back to IMDSv1', async () => {
          const reqs = await logged(imds(), 3, async () => {
            const r = await botocoreCredentials(lab);
            expect(r.exitCode, r.stderr).toBe(0);
            expect(JSON.parse(r.stdout).access_key).toBe(INSTANCE.accessKeyIdV1);
          });
          expect(reqs[0]).toMatchObject({ method: 'PUT', status: putStatus });
          expect(reqs.slice(1).map((e) => e.token)).toEqual(['none', 'none']);
        });

        it('@aws-sdk/ec2-metadata-service falls back to IMDSv1', async () => {
          const reqs = await logged(imds(), 2, async () => {
            const r = await awsSdkV3(lab, 'v2');
            expect(r.exitCode, r.stderr).toBe(0);
            expect(r.stdout).toBe(INSTANCE.instanceId);
          });
          expect(reqs.map((e) => [e.method, e.status, e.token])).toEqual([
            ['PUT', putStatus, 'none'],
            ['GET', 200, 'none'],
          ]);
        });
      });
    }

    describe('--canary and --hop-limit', () => {
      const imds = withImds({ canary: 'LABCANARY42', hopLimit: 1 });

      it('puts the chosen canary in tokens and secrets; reports the hop limit (the lab enforces it with a TTL rule)', async () => {
        expect(imds().ready.hopLimit).toBe(1);
        const tok = await token();
        expect(tok).toContain('LABCANARY42');
        expect(tok).not.toContain(DEFAULT_CANARY);
        const creds = JSON.parse((await one({ path: ROLE_PATH, headers: { [TOKEN]: tok } })).body);
        expect(creds.Token).toContain('LABCANARY42');
      });
    });
  },
);
