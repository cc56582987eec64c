/**
 * Drivers for real IMDS clients, run inside a lab's instance namespace (or a container namespace)
 * against the stand-in. Each returns the client's pid, argv, exit code and output. stdout may hold
 * tokens and credentials: tests may assert on it but must never print it.
 *
 * `ip netns exec` execs the command, so the pid of the spawned child IS the client's pid.
 */
import type { ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { IMDS_V4, IMDS_V6, type ExecResult, type Lab } from '../../lab/netns.js';

export type ImdsVersion = 'v1' | 'v2';

export interface ClientRun {
  pid: number;
  argv: string[];
  exitCode: number | null;
  stdout: string;
  stderr: string;
}

/** A multi-process client (token PUT, then GET): the last process, plus every step. */
export interface SteppedRun extends ClientRun {
  steps: ClientRun[];
}

export interface ClientOptions {
  /** Path to GET (default /latest/meta-data/instance-id). */
  path?: string;
  /** Talk to fd00:ec2::254 instead of 169.254.169.254. */
  ipv6?: boolean;
  /** Namespace to run in (default lab.instanceNs; e.g. a container's ns). */
  ns?: string;
  /** Token TTL for v2 clients (default 21600). */
  ttl?: number;
  timeoutMs?: number;
  /** Extra environment. */
  env?: NodeJS.ProcessEnv;
}

export const DEFAULT_PATH = '/latest/meta-data/instance-id';
export const CREDENTIALS_ROLE_PATH = '/latest/meta-data/iam/security-credentials/';

/** http://169.254.169.254 or http://[fd00:ec2::254] (no trailing slash). */
export function imdsBase(ipv6 = false): string {
  return ipv6 ? `http://[${IMDS_V6}]` : `http://${IMDS_V4}`;
}

/** The environment clients run with: no proxies, no AWS settings from the host. */
export function clientEnv(extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (/^(https?_proxy|all_proxy|no_proxy|ftp_proxy|AWS_.*|NODE_OPTIONS|VITEST.*)$/i.test(k)) continue;
    env[k] = v;
  }
  return {
    ...env,
    NO_PROXY: '*',
    no_proxy: '*',
    AWS_CONFIG_FILE: '/dev/null',
    AWS_SHARED_CREDENTIALS_FILE: '/dev/null',
    AWS_SDK_JS_SUPPRESS_MAINTENANCE_MODE_MESSAGE: '1',
    AWS_SDK_LOAD_CONFIG: '0',
    ...extra,
  };
}

function toRun(r: ExecResult): ClientRun {
  return { pid: r.pid, argv: r.argv, exitCode: r.exitCode, stdout: r.stdout, stderr: r.stderr };
}

/** Run one client program in the lab. */
export async function runClient(lab: Lab, cmd: string, args: string[], opts: ClientOptions = {}): Promise<ClientRun> {
  const r = await lab.exec(opts.ns ?? lab.instanceNs, cmd, args, {
    env: clientEnv(opts.env),
    cwd: lab.repoRoot, // node scripts require() the SDKs from the repository's node_modules
    timeoutMs: opts.timeoutMs ?? 30_000,
  });
  return toRun(r);
}

// ---------------------------------------------------------------------------------------------
// curl

const CURL_COMMON = ['-sS', '--noproxy', '*', '--max-time', '10'];
const WRITE_OUT_MARK = '@@imdst@@';

/** curl GET without a token (IMDSv1). Non-2xx → exit 22. */
export function curlV1(lab: Lab, opts: ClientOptions = {}): Promise<ClientRun> {
  return runClient(lab, 'curl', [...CURL_COMMON, '--fail', `${imdsBase(opts.ipv6)}${opts.path ?? DEFAULT_PATH}`], opts);
}

/** curl PUT for a token, then a second curl GET with it (IMDSv2). */
export async function curlV2(lab: Lab, opts: ClientOptions = {}): Promise<SteppedRun> {
  const base = imdsBase(opts.ipv6);
  const put = await runClient(
    lab,
    'curl',
    [...CURL_COMMON, '--fail', '-X', 'PUT', '-H', `X-aws-ec2-metadata-token-ttl-seconds: ${opts.ttl ?? 21600}`, `${base}/latest/api/token`],
    opts,
  );
  if (put.exitCode !== 0) return { ...put, steps: [put] };
  const get = await runClient(
    lab,
    'curl',
    [...CURL_COMMON, '--fail', '-H', `X-aws-ec2-metadata-token: ${put.stdout}`, `${base}${opts.path ?? DEFAULT_PATH}`],
    opts,
  );
  return { ...get, steps: [put, get] };
}

export interface CurlRequest {
  method?: 'GET' | 'HEAD' | 'PUT' | 'POST' | 'DELETE' | 'PATCH' | 'OPTIONS';
  path: string;
  headers?: Record<string, string>;
}

export interface CurlTransfer {
  status: number;
  /** New connections this transfer opened (0 = reused a kept-alive one). */
  numConnects: number;
  localPort: number;
  body: string;
  /** Response headers (lower-case names), from curl -i. */
  headers: Record<string, string>;
}

/**
 * Several requests in ONE curl invocation (`--next` between them): curl reuses the connection
 * (keep-alive). No --fail: every transfer reports its status.
 */
export async function curlRequests(
  lab: Lab,
  requests: CurlRequest[],
  opts: Omit<ClientOptions, 'path'> = {},
): Promise<ClientRun & { transfers: CurlTransfer[] }> {
  const args: string[] = [];
  requests.forEach((req, i) => {
    if (i > 0) args.push('--next');
    args.push(...CURL_COMMON, '-i', '-w', `\n${WRITE_OUT_MARK} %{http_code} %{num_connects} %{local_port}\n`);
    const method = req.method ?? 'GET';
    if (method === 'HEAD') args.push('--head');
    else if (method !== 'GET') args.push('-X', method);
    for (const [k, v] of Object.entries(req.headers ?? {})) args.push('-H', `${k}: ${v}`);
    args.push(`${imdsBase(opts.ipv6)}${req.path}`);
  });
  const run = await runClient(lab, 'curl', args, opts);
  return { ...run, transfers: parseTransfers(run.stdout) };
}

function parseTransfers(stdout: string): CurlTransfer[] {
  const out: CurlTransfer[] = [];
  const re = new RegExp(`\\n${WRITE_OUT_MARK} (\\d+) (\\d+) (\\d+)\\n`, 'g');
  let start = 0;
  for (let m = re.exec(stdout); m; m = re.exec(stdout)) {
    const chunk = stdout.slice(start, m.index);
    start = m.index + m[0].length;
    const sep = chunk.indexOf('\r\n\r\n');
    const head = sep === -1 ? chunk : chunk.slice(0, sep);
    const body = sep === -1 ? '' : chunk.slice(sep + 4);
    const headers: Record<string, string> = {};
    for (const line of head.split('\r\n').slice(1)) {
      const c = line.indexOf(':');
      if (c > 0) headers[line.slice(0, c).trim().toLowerCase()] = line.slice(c + 1).trim();
    }
    out.push({ status: Number(m[1]), numConnects: Number(m[2]), localPort: Number(m[3]), body, headers });
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// wget

/** wget GET without a token (IMDSv1). Non-2xx → exit 8. */
export function wgetV1(lab: Lab, opts: ClientOptions = {}): Promise<ClientRun> {
  return runClient(
    lab,
    'wget',
    ['-q', '-O', '-', '--tries=1', '--timeout=10', '--no-proxy', `${imdsBase(opts.ipv6)}${opts.path ?? DEFAULT_PATH}`],
    opts,
  );
}

// ---------------------------------------------------------------------------------------------
// Python

const PY_URLLIB = `
import sys, urllib.request, urllib.error
base, path, version, ttl = sys.argv[1:5]
headers = {}
try:
    if version == 'v2':
        req = urllib.request.Request(base + '/latest/api/token', method='PUT',
                                     headers={'X-aws-ec2-metadata-token-ttl-seconds': ttl})
        with urllib.request.urlopen(req, timeout=10) as r:
            headers['X-aws-ec2-metadata-token'] = r.read().decode()
    with urllib.request.urlopen(urllib.request.Request(base + path, headers=headers), timeout=10) as r:
        sys.stdout.write(r.read().decode())
except urllib.error.HTTPError as e:
    sys.stderr.write('HTTP %d\\n' % e.code)
    sys.exit(22)
`;

/** python3 (pyenv's, on PATH) urllib: v1 GET, or v2 PUT + GET. */
export function pythonUrllib(lab: Lab, version: ImdsVersion, opts: ClientOptions = {}): Promise<ClientRun> {
  return runClient(
    lab,
    'python3',
    ['-c', PY_URLLIB, imdsBase(opts.ipv6), opts.path ?? DEFAULT_PATH, version, String(opts.ttl ?? 21600)],
    opts,
  );
}

const PY_BOTOCORE = `
import json, sys
from botocore.utils import InstanceMetadataFetcher
f = InstanceMetadataFetcher(timeout=5, num_attempts=1, base_url=sys.argv[1] + '/')
c = f.retrieve_iam_role_credentials()
if not c:
    sys.stderr.write('no credentials\\n')
    sys.exit(1)
print(json.dumps(c))
`;

/**
 * botocore (Debian's /usr/bin/python3) InstanceMetadataFetcher.retrieve_iam_role_credentials():
 * IMDSv2 by default, IMDSv1 fallback when the token PUT is answered 403/404/405.
 * stdout: JSON {role_name, access_key, secret_key, token, expiry_time}.
 */
export function botocoreCredentials(lab: Lab, opts: ClientOptions = {}): Promise<ClientRun> {
  return runClient(lab, '/usr/bin/python3', ['-c', PY_BOTOCORE, imdsBase(opts.ipv6)], opts);
}

// ---------------------------------------------------------------------------------------------
// Node

const NODE_FETCH = `
const [base, path, version, ttl] = process.argv.slice(1);
(async () => {
  const headers = {};
  if (version === 'v2') {
    const t = await fetch(base + '/latest/api/token', { method: 'PUT', headers: { 'X-aws-ec2-metadata-token-ttl-seconds': ttl } });
    if (t.status !== 200) { console.error('token HTTP ' + t.status); process.exit(22); }
    headers['X-aws-ec2-metadata-token'] = await t.text();
  }
  const r = await fetch(base + path, { headers });
  const body = await r.text();
  if (r.status !== 200) { console.error('HTTP ' + r.status); process.exit(22); }
  process.stdout.write(body);
  process.exit(0);
})().catch((e) => { console.error(String(e && e.cause || e)); process.exit(1); });
`;

/** node global fetch (undici): v1 GET, or v2 PUT + GET. */
export function nodeFetch(lab: Lab, version: ImdsVersion, opts: ClientOptions = {}): Promise<ClientRun> {
  return runClient(
    lab,
    process.execPath,
    ['-e', NODE_FETCH, imdsBase(opts.ipv6), opts.path ?? DEFAULT_PATH, version, String(opts.ttl ?? 21600)],
    opts,
  );
}

const NODE_AWS_SDK_V2 = `
const [base, path, version] = process.argv.slice(1);
const AWS = require('aws-sdk');
const svc = new AWS.MetadataService({ endpoint: base, httpOptions: { timeout: 5000 }, maxRetries: 0 });
const done = (err, data) => {
  if (err) { console.error(String(err.statusCode || '') + ' ' + err.message); process.exit(22); }
  process.stdout.write(data);
};
if (version === 'v2') {
  svc.fetchMetadataToken((err, token) => {
    if (err) return done(err);
    svc.request(path, { headers: { 'x-aws-ec2-metadata-token': token } }, done);
  });
} else {
  svc.request(path, done);
}
`;

/** npm aws-sdk v2 AWS.MetadataService.request(): v1, or v2 via fetchMetadataToken() first. */
export function awsSdkV2(lab: Lab, version: ImdsVersion, opts: ClientOptions = {}): Promise<ClientRun> {
  return runClient(
    lab,
    process.execPath,
    ['-e', NODE_AWS_SDK_V2, imdsBase(opts.ipv6), opts.path ?? DEFAULT_PATH, version],
    opts,
  );
}

const NODE_AWS_SDK_V3 = `
const [base, path, version] = process.argv.slice(1);
const { MetadataService } = require('@aws-sdk/ec2-metadata-service');
const svc = new MetadataService({
  endpoint: base, httpOptions: { timeout: 5000 }, retries: 0, disableFetchToken: version === 'v1',
});
svc.request(path, {}).then(
  (body) => { process.stdout.write(body); },
  (err) => { console.error(String(err && err.message)); process.exit(22); },
);
`;

/** @aws-sdk/ec2-metadata-service MetadataService.request(): v2 by default, v1 with disableFetchToken. */
export function awsSdkV3(lab: Lab, version: ImdsVersion, opts: ClientOptions = {}): Promise<ClientRun> {
  return runClient(
    lab,
    process.execPath,
    ['-e', NODE_AWS_SDK_V3, imdsBase(opts.ipv6), opts.path ?? DEFAULT_PATH, version],
    opts,
  );
}

// ---------------------------------------------------------------------------------------------
// Catalogue (for tests that want "every client")

export interface ClientDriver {
  name: string;
  version: ImdsVersion;
  /** Whether the driver can use the IPv6 endpoint. */
  ipv6: boolean;
  run(lab: Lab, opts?: ClientOptions): Promise<ClientRun>;
}

export const CLIENT_DRIVERS: ClientDriver[] = [
  { name: 'curl', version: 'v1', ipv6: true, run: curlV1 },
  { name: 'curl', version: 'v2', ipv6: true, run: curlV2 },
  { name: 'wget', version: 'v1', ipv6: true, run: wgetV1 },
  { name: 'python-urllib', version: 'v1', ipv6: true, run: (l, o) => pythonUrllib(l, 'v1', o) },
  { name: 'python-urllib', version: 'v2', ipv6: true, run: (l, o) => pythonUrllib(l, 'v2', o) },
  { name: 'node-fetch', version: 'v1', ipv6: true, run: (l, o) => nodeFetch(l, 'v1', o) },
  { name: 'node-fetch', version: 'v2', ipv6: true, run: (l, o) => nodeFetch(l, 'v2', o) },
  { name: 'aws-sdk-v2', version: 'v1', ipv6: true, run: (l, o) => awsSdkV2(l, 'v1', o) },
  { name: 'aws-sdk-v2', version: 'v2', ipv6: true, run: (l, o) => awsSdkV2(l, 'v2', o) },
  { name: 'aws-sdk-v3', version: 'v1', ipv6: true, run: (l, o) => awsSdkV3(l, 'v1', o) },
  { name: 'aws-sdk-v3', version: 'v2', ipv6: true, run: (l, o) => awsSdkV3(l, 'v2', o) },
];

// ---------------------------------------------------------------------------------------------
// Long-lived callers

const NODE_LONG_LIVED = `
const http = require('http');
const [host, path, version, ttl] = process.argv.slice(1);
const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
const call = (method, p, headers) => new Promise((resolve, reject) => {
  const req = http.request({ host, port: 80, method, path: p, headers, agent }, (res) => {
    let body = '';
    const localPort = res.socket.localPort; // the socket leaves the response once it is back in the pool
    res.setEncoding('utf8');
    res.on('data', (c) => { body += c; });
    res.on('end', () => resolve({ status: res.statusCode, body, localPort }));
  });
  req.on('error', reject);
  req.end();
});
(async () => {
  const headers = {};
  if (version === 'v2') {
    const t = await call('PUT', '/latest/api/token', { 'X-aws-ec2-metadata-token-ttl-seconds': ttl });
    headers['X-aws-ec2-metadata-token'] = t.body;
  }
  const r = await call('GET', path, headers);
  process.stdout.write(JSON.stringify({ event: 'called', pid: process.pid, status: r.status, body: r.body, localPort: r.localPort }) + '\\n');
  process.stdin.resume();
  process.stdin.on('end', () => process.exit(0));
})().catch((e) => { console.error(String(e)); process.exit(1); });
`;

const PY_LONG_LIVED = `
import http.client, json, os, sys
host, path, version, ttl = sys.argv[1:5]
conn = http.client.HTTPConnection(host, 80, timeout=10)
headers = {}
if version == 'v2':
    conn.request('PUT', '/latest/api/token', headers={'X-aws-ec2-metadata-token-ttl-seconds': ttl})
    headers['X-aws-ec2-metadata-token'] = conn.getresponse().read().decode()
conn.request('GET', path, headers=headers)
r = conn.getresponse()
body = r.read().decode()
sys.stdout.write(json.dumps({'event': 'called', 'pid': os.getpid(), 'status': r.status, 'body': body,
                             'localPort': conn.sock.getsockname()[1]}) + '\\n')
sys.stdout.flush()
sys.stdin.read()  # keep the process (and its connection) alive until stdin closes
`;

export interface CallReport {
  event: 'called';
  /** The pid the caller reports for itself. */
  pid: number;
  status: number;
  body: string;
  /** Local port of the connection the caller keeps open. */
  localPort: number;
}

export interface LongLivedCaller {
  pid: number;
  argv: string[];
  proc: ChildProcess;
  /** Resolves once the request is done (the process then stays alive, its connection open). */
  called: Promise<CallReport>;
  /** Close stdin and wait for the process to exit; returns its exit code. */
  stop(): Promise<number | null>;
}

export interface LongLivedOptions extends ClientOptions {
  runtime: 'node' | 'python';
  version: ImdsVersion;
}

/**
 * A caller that makes its request over a keep-alive connection and then stays alive (waiting on
 * stdin) with the connection open, so /proc attribution can find it.
 */
export function startLongLivedCaller(lab: Lab, opts: LongLivedOptions): LongLivedCaller {
  const host = opts.ipv6 ? IMDS_V6 : IMDS_V4;
  const [cmd, script] = opts.runtime === 'node' ? [process.execPath, NODE_LONG_LIVED] : ['python3', PY_LONG_LIVED];
  const args = [...(opts.runtime === 'node' ? ['-e'] : ['-c']), script, host, opts.path ?? DEFAULT_PATH, opts.version, String(opts.ttl ?? 21600)];
  const proc = lab.spawn(opts.ns ?? lab.instanceNs, cmd, args, {
    env: clientEnv(opts.env),
    cwd: lab.repoRoot,
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  let stderr = '';
  proc.stderr!.on('data', (b: Buffer) => {
    stderr += b.toString('utf8');
  });
  const exited = new Promise<number | null>((resolve) => {
    if (proc.exitCode !== null) resolve(proc.exitCode);
    else proc.once('exit', (code) => resolve(code));
  });
  const called = new Promise<CallReport>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`long-lived ${opts.runtime} caller: no report after 20 s: ${stderr}`)), 20_000);
    createInterface({ input: proc.stdout! }).once('line', (line) => {
      clearTimeout(timer);
      try {
        resolve(JSON.parse(line) as CallReport);
      } catch {
        reject(new Error(`long-lived caller: bad report line: ${line.slice(0, 200)}`));
      }
    });
    void exited.then((code) => {
      clearTimeout(timer);
      reject(new Error(`long-lived ${opts.runtime} caller exited (${code}) before reporting: ${stderr}`));
    });
  });
  called.catch(() => {}); // the caller may never await it
  return {
    pid: proc.pid!,
    argv: [cmd, ...args],
    proc,
    called,
    stop: async () => {
      proc.stdin!.end();
      const timer = setTimeout(() => proc.kill('SIGKILL'), 5_000);
      const code = await exited;
      clearTimeout(timer);
      return code;
    },
  };
}
