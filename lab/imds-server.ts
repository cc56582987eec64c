/**
 * A stand-in for the EC2 Instance Metadata Service (IMDS), for the test lab only.
 *
 * It answers like the real service as far as clients and SDKs can tell:
 *  - PUT /latest/api/token with X-aws-ec2-metadata-token-ttl-seconds (1..21600) → 200 + token,
 *    TTL echoed; missing/invalid TTL → 400; a PUT carrying X-Forwarded-For → 403.
 *  - GET/HEAD with X-aws-ec2-metadata-token: valid → answer, unknown/expired → 401.
 *    Without a token: 401 when tokens are required, else the answer (IMDSv1).
 *  - Other methods on known paths → 405, unknown paths → 404 (HTML error page, like the real one).
 *  - `Server: EC2ws`, `Content-Type: text/plain`, HTTP/1.1 keep-alive.
 *  - With `throttlePerSecond` N: past N requests in one clock second, 429 Too Many Requests (the
 *    real service throttles per network interface; the stand-in has one).
 *  - IMDSv1 and IMDSv2 callers receive different role credentials (AccessKeyId ...V1... / ...V2...),
 *    as the real service does, so a test can tell which path an SDK took.
 *
 * Every token and every secret credential contains the canary string, so tests can prove that
 * nothing the tracer writes ever contains one.
 *
 * Hop limit: the real service sends the PUT answer with IP TTL / hop limit N. Node cannot set
 * IP_TTL / IPV6_UNICAST_HOPS on a socket, so `hopLimit` is accepted and reported but NOT enforced
 * here; the lab's startImds({hopLimit}) enforces it with an iptables TTL / ip6tables HL rule.
 *
 * CLI: node dist/lab/imds-server.js --listen ADDR [--listen ADDR...] [--port 80] [--tokens-required]
 *      [--put-status 403|404|405] [--throttle-per-second N] [--canary STR] [--hop-limit N] [--keep-alive-ms N] [--log-requests]
 * prints one line {"event":"imds_ready","listen":[...]} on stdout once every listener is bound,
 * and (with --log-requests) one JSON line per request on stderr (never a token value).
 */
import { randomBytes } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';

export const DEFAULT_CANARY = 'CANARYTOKEN';
export const MAX_TOKEN_TTL_SECONDS = 21600;
export const TOKEN_PATH = '/latest/api/token';
export const TOKEN_HEADER = 'x-aws-ec2-metadata-token';
export const TTL_HEADER = 'x-aws-ec2-metadata-token-ttl-seconds';

/** Fixed facts of the pretend instance (tests assert against them). */
export const INSTANCE = {
  amiId: 'ami-0abcdef1234567890',
  instanceId: 'i-0123456789abcdef0',
  instanceType: 't3.micro',
  accountId: '123456789012',
  region: 'us-east-1',
  availabilityZone: 'us-east-1a',
  availabilityZoneId: 'use1-az4',
  localIpv4: '172.31.16.10',
  hostname: 'ip-172-31-16-10.ec2.internal',
  mac: '0e:12:34:56:78:9a',
  roleName: 'imds-tracer-lab-role',
  userData: '#!/bin/bash\necho "imds-tracer lab user-data"\n',
  /** AccessKeyIds handed out to IMDSv1 and IMDSv2 callers. */
  accessKeyIdV1: 'ASIAIMDSTRACERLABV1X',
  accessKeyIdV2: 'ASIAIMDSTRACERLABV2X',
} as const;

/** The version directories the real service lists at "/". */
export const VERSIONS = [
  '1.0', '2007-01-19', '2007-03-01', '2007-08-29', '2007-10-10', '2007-12-15', '2008-02-01',
  '2008-09-01', '2009-04-04', '2011-01-01', '2011-05-01', '2012-01-12', '2014-02-25', '2014-11-05',
  '2015-10-20', '2016-04-19', '2016-06-30', '2016-09-02', '2018-03-28', '2018-08-17', '2018-09-24',
  '2019-10-01', '2020-10-27', '2021-01-03', '2021-03-23', '2021-07-15', '2022-09-24', '2024-04-11',
  'latest',
] as const;

export type TokenState = 'none' | 'valid' | 'invalid' | 'expired';

export interface ImdsRequestEvent {
  event: 'imds_request';
  method: string;
  path: string;
  status: number;
  /** 'token' for the token endpoint, 'data' otherwise. */
  kind: 'token' | 'data';
  /** State of the X-aws-ec2-metadata-token header of the request (never its value). */
  token: TokenState;
  remoteAddress: string;
  remotePort: number;
  localAddress: string;
  localPort: number;
}

export interface ImdsServerOptions {
  /** Addresses to listen on (default ['127.0.0.1']). */
  listen?: string[];
  /** Port (default 80; 0 = any free port, see addresses()). */
  port?: number;
  /** Answer 401 to token-less GETs (HttpTokens=required). */
  tokensRequired?: boolean;
  /** Force the status of every token PUT (403/404/405: SDKs then fall back to IMDSv1). */
  putStatus?: number;
  /** Past this many requests in one clock second, answer 429 (the IMDS's per-interface throttle). */
  throttlePerSecond?: number;
  canary?: string;
  /** Stored and reported only: Node cannot set the IP TTL of a socket. */
  hopLimit?: number;
  /** Idle keep-alive connections are closed after this long (default 30 s). */
  keepAliveMs?: number;
  onRequest?: (e: ImdsRequestEvent) => void;
  /** Clock in ms (for unit tests). */
  now?: () => number;
}

export interface ImdsServer {
  /** Bound addresses, in the order of `listen`. */
  addresses(): AddressInfo[];
  readonly hopLimit: number | undefined;
  readonly canary: string;
  /** Number of tokens currently valid. */
  liveTokens(): number;
  close(): Promise<void>;
}

// ---------------------------------------------------------------------------------------------
// The metadata tree

type Leaf = string | (() => string);
interface Dir {
  [name: string]: Leaf | Dir;
}

function isDir(n: Leaf | Dir): n is Dir {
  return typeof n === 'object';
}

function listing(dir: Dir): string {
  return Object.entries(dir)
    .map(([name, node]) => (isDir(node) ? `${name}/` : name))
    .join('\n');
}

function iso(ms: number): string {
  return new Date(ms).toISOString().replace(/\.\d{3}Z$/, 'Z');
}

function json(o: unknown): string {
  // The real service pretty-prints with " : " separators.
  return JSON.stringify(o, null, 2).replace(/": /g, '" : ');
}

function randomAlnum(n: number): string {
  return randomBytes(n * 2).toString('base64').replace(/[^A-Za-z0-9]/g, '').slice(0, n).padEnd(n, 'A');
}

interface TreeContext {
  canary: string;
  now: () => number;
}

function credentials(ctx: TreeContext, version: 'v1' | 'v2'): string {
  const now = ctx.now();
  return json({
    Code: 'Success',
    LastUpdated: iso(now - 60_000),
    Type: 'AWS-HMAC',
    AccessKeyId: version === 'v1' ? INSTANCE.accessKeyIdV1 : INSTANCE.accessKeyIdV2,
    SecretAccessKey: `${randomAlnum(12)}${ctx.canary}${randomAlnum(12)}`,
    Token: `IQoJb3JpZ2luX2VjE${randomAlnum(40)}${ctx.canary}${randomAlnum(40)}`,
    Expiration: iso(now + 6 * 3600_000),
  });
}

function metaDataTree(ctx: TreeContext, version: () => 'v1' | 'v2'): Dir {
  const macDir: Dir = {
    'device-number': '0',
    'interface-id': 'eni-0123456789abcdef0',
    'local-hostname': INSTANCE.hostname,
    'local-ipv4s': INSTANCE.localIpv4,
    mac: INSTANCE.mac,
    'owner-id': INSTANCE.accountId,
    'security-group-ids': 'sg-0123456789abcdef0',
    'security-groups': 'default',
    'subnet-id': 'subnet-0123456789abcdef0',
    'vpc-id': 'vpc-0123456789abcdef0',
  };
  return {
    'ami-id': INSTANCE.amiId,
    'ami-launch-index': '0',
    'ami-manifest-path': '(unknown)',
    'block-device-mapping': { ami: '/dev/xvda', root: '/dev/xvda' },
    events: { maintenance: { history: '[]', scheduled: '[]' } },
    hostname: INSTANCE.hostname,
    iam: {
      info: () =>
        json({
          Code: 'Success',
          LastUpdated: iso(ctx.now() - 60_000),
          InstanceProfileArn: `arn:aws:iam::${INSTANCE.accountId}:instance-profile/${INSTANCE.roleName}`,
          InstanceProfileId: 'AIPAIMDSTRACERLAB0001',
        }),
      'security-credentials': {
        [INSTANCE.roleName]: () => credentials(ctx, version()),
      },
    },
    'instance-action': 'none',
    'instance-id': INSTANCE.instanceId,
    'instance-life-cycle': 'on-demand',
    'instance-type': INSTANCE.instanceType,
    'local-hostname': INSTANCE.hostname,
    'local-ipv4': INSTANCE.localIpv4,
    mac: INSTANCE.mac,
    network: { interfaces: { macs: { [INSTANCE.mac]: macDir } } },
    placement: {
      'availability-zone': INSTANCE.availabilityZone,
      'availability-zone-id': INSTANCE.availabilityZoneId,
      region: INSTANCE.region,
    },
    profile: 'default-hvm',
    'reservation-id': 'r-0123456789abcdef0',
    'security-groups': 'default',
    services: { domain: 'amazonaws.com', partition: 'aws' },
  };
}

function dynamicTree(ctx: TreeContext): Dir {
  return {
    'instance-identity': {
      document: () =>
        json({
          accountId: INSTANCE.accountId,
          architecture: 'x86_64',
          availabilityZone: INSTANCE.availabilityZone,
          billingProducts: null,
          devpayProductCodes: null,
          marketplaceProductCodes: null,
          imageId: INSTANCE.amiId,
          instanceId: INSTANCE.instanceId,
          instanceType: INSTANCE.instanceType,
          kernelId: null,
          pendingTime: iso(ctx.now() - 3600_000),
          privateIp: INSTANCE.localIpv4,
          ramdiskId: null,
          region: INSTANCE.region,
          version: '2017-09-30',
        }),
      pkcs7: 'MIAGCSqGSIb3DQEHAqCAMIACAQExDzANBglghkgBZQMEAgEFADCABgkqhkiG9w0BBwGggCSABIIB',
      signature: 'bGFiIHNpZ25hdHVyZSwgbm90IGEgcmVhbCBvbmUK',
    },
  };
}

/** Result of looking a path up: a body, or a known path that has no body (token endpoint). */
type Lookup = { kind: 'body'; body: string } | { kind: 'token' } | { kind: 'missing' };

function lookup(path: string, ctx: TreeContext, version: () => 'v1' | 'v2'): Lookup {
  if (path === TOKEN_PATH) return { kind: 'token' };
  if (path === '/') return { kind: 'body', body: VERSIONS.join('\n') };
  const parts = path.split('/').slice(1); // leading "/"
  const trailingSlash = parts.length > 1 && parts[parts.length - 1] === '';
  if (trailingSlash) parts.pop();
  const [ver, ...rest] = parts;
  if (!(VERSIONS as readonly string[]).includes(ver)) return { kind: 'missing' };
  const root: Dir = {
    dynamic: dynamicTree(ctx),
    'meta-data': metaDataTree(ctx, version),
    'user-data': INSTANCE.userData,
  };
  let node: Leaf | Dir = root;
  for (const name of rest) {
    if (!isDir(node) || !Object.hasOwn(node, name)) return { kind: 'missing' };
    node = node[name];
  }
  // The real service lists a version's top level without trailing slashes ("dynamic\nmeta-data").
  if (node === root) return { kind: 'body', body: Object.keys(root).join('\n') };
  if (isDir(node)) return { kind: 'body', body: listing(node) };
  if (trailingSlash) return { kind: 'missing' };
  return { kind: 'body', body: typeof node === 'function' ? node() : node };
}

/** Collapse repeated slashes and drop the query string (the real service tolerates both). */
export function normalisePath(rawUrl: string): string {
  const q = rawUrl.search(/[?#]/);
  const p = q === -1 ? rawUrl : rawUrl.slice(0, q);
  const collapsed = p.replace(/\/{2,}/g, '/');
  return collapsed.startsWith('/') ? collapsed : `/${collapsed}`;
}

// ---------------------------------------------------------------------------------------------
// Tokens

const STATUS_TITLE: Record<number, string> = {
  400: 'Bad Request',
  401: 'Unauthorized',
  403: 'Forbidden',
  404: 'Not Found',
  405: 'Method Not Allowed',
  429: 'Too Many Requests',
};

function errorPage(status: number): string {
  const title = `${status} - ${STATUS_TITLE[status] ?? http.STATUS_CODES[status] ?? 'Error'}`;
  return (
    '<?xml version="1.0" encoding="iso-8859-1"?>\n' +
    '<!DOCTYPE html PUBLIC "-//W3C//DTD XHTML 1.0 Transitional//EN"\n' +
    '\t"http://www.w3.org/TR/xhtml1/DTD/xhtml1-transitional.dtd">\n' +
    '<html xmlns="http://www.w3.org/1999/xhtml" xml:lang="en" lang="en">\n' +
    ` <head>\n  <title>${title}</title>\n </head>\n <body>\n  <h1>${title}</h1>\n </body>\n</html>\n`
  );
}

/** Strictly "1".."21600", digits only. */
export function parseTtl(value: string | string[] | undefined): number | undefined {
  if (typeof value !== 'string' || !/^\d{1,6}$/.test(value.trim())) return undefined;
  const n = Number(value.trim());
  return n >= 1 && n <= MAX_TOKEN_TTL_SECONDS ? n : undefined;
}

class TokenStore {
  private readonly expiries = new Map<string, number>();
  constructor(
    private readonly canary: string,
    private readonly now: () => number,
  ) {}

  issue(ttlSeconds: number): string {
    this.prune();
    // Real tokens are ~56 base64 characters starting with "AQAE".
    const token = `AQAE${randomAlnum(20)}${this.canary}${randomAlnum(20)}`;
    this.expiries.set(token, this.now() + ttlSeconds * 1000);
    return token;
  }

  check(token: string): TokenState {
    const exp = this.expiries.get(token.trim());
    if (exp === undefined) return 'invalid';
    return this.now() < exp ? 'valid' : 'expired';
  }

  live(): number {
    this.prune();
    return this.expiries.size;
  }

  private prune(): void {
    const now = this.now();
    for (const [t, exp] of this.expiries) if (exp <= now) this.expiries.delete(t);
  }
}

// ---------------------------------------------------------------------------------------------
// Server

export async function createImdsServer(opts: ImdsServerOptions = {}): Promise<ImdsServer> {
  const listen = opts.listen?.length ? opts.listen : ['127.0.0.1'];
  const port = opts.port ?? 80;
  const canary = opts.canary ?? DEFAULT_CANARY;
  const now = opts.now ?? Date.now;
  if (!/^[\x21-\x7e]+$/.test(canary)) throw new Error('canary must be printable ASCII without spaces');
  if (opts.putStatus !== undefined && !(opts.putStatus >= 100 && opts.putStatus <= 599)) {
    throw new Error(`invalid putStatus ${opts.putStatus}`);
  }
  const tokens = new TokenStore(canary, now);
  const ctx: TreeContext = { canary, now };
  let throttleSecond = -1;
  let throttleCount = 0;
  const throttled = (): boolean => {
    if (opts.throttlePerSecond === undefined) return false;
    const sec = Math.floor(now() / 1000);
    if (sec !== throttleSecond) { throttleSecond = sec; throttleCount = 0; }
    return ++throttleCount > opts.throttlePerSecond;
  };

  const handler = (req: http.IncomingMessage, res: http.ServerResponse): void => {
    const method = req.method ?? 'GET';
    const path = normalisePath(req.url ?? '/');
    const tokenHeader = req.headers[TOKEN_HEADER]; // Node lower-cases header names
    const tokenValue = Array.isArray(tokenHeader) ? tokenHeader[0] : tokenHeader;
    const tokenState: TokenState = tokenValue === undefined ? 'none' : tokens.check(tokenValue);
    const found = lookup(path, ctx, () => (tokenState === 'valid' ? 'v2' : 'v1'));

    const send = (status: number, body: string, extra: Record<string, string> = {}): void => {
      const ok = status === 200;
      res.writeHead(status, {
        'Content-Type': ok ? 'text/plain' : 'text/html',
        'Content-Length': Buffer.byteLength(body),
        Server: 'EC2ws',
        'Accept-Ranges': 'none',
        'Last-Modified': new Date(now()).toUTCString(),
        ...extra,
      });
      res.end(body);
      opts.onRequest?.({
        event: 'imds_request',
        method,
        path,
        status,
        kind: found.kind === 'token' ? 'token' : 'data',
        token: tokenState,
        remoteAddress: req.socket.remoteAddress ?? '',
        remotePort: req.socket.remotePort ?? 0,
        localAddress: req.socket.localAddress ?? '',
        localPort: req.socket.localPort ?? 0,
      });
    };
    const fail = (status: number): void => send(status, errorPage(status));

    // Drain any request body, then answer.
    req.resume();
    req.on('end', () => {
      if (throttled()) return fail(429);
      if (found.kind === 'missing') return fail(404);
      if (found.kind === 'token') {
        if (method !== 'PUT') return fail(405);
        if (opts.putStatus !== undefined && opts.putStatus !== 200) return fail(opts.putStatus);
        if (req.headers['x-forwarded-for'] !== undefined) return fail(403);
        const ttl = parseTtl(req.headers[TTL_HEADER]);
        if (ttl === undefined) return fail(400);
        return send(200, tokens.issue(ttl), { 'X-aws-ec2-metadata-token-ttl-seconds': String(ttl) });
      }
      if (method !== 'GET' && method !== 'HEAD') return fail(405);
      if (tokenState === 'invalid' || tokenState === 'expired') return fail(401);
      if (tokenState === 'none' && opts.tokensRequired) return fail(401);
      return send(200, found.body);
    });
  };

  const servers: http.Server[] = [];
  try {
    for (const address of listen) {
      const server = http.createServer({ keepAlive: true }, handler);
      server.keepAliveTimeout = opts.keepAliveMs ?? 30_000;
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen({ host: address, port, exclusive: true }, () => {
          server.off('error', reject);
          resolve();
        });
      });
      servers.push(server);
    }
  } catch (err) {
    await Promise.all(servers.map(closeServer));
    throw new Error(`imds-server: listen failed: ${(err as Error).message}`);
  }

  return {
    addresses: () => servers.map((s) => s.address() as AddressInfo),
    hopLimit: opts.hopLimit,
    canary,
    liveTokens: () => tokens.live(),
    close: async () => {
      await Promise.all(servers.map(closeServer));
    },
  };
}

function closeServer(server: http.Server): Promise<void> {
  return new Promise((resolve) => {
    server.close(() => resolve());
    server.closeAllConnections();
  });
}

// ---------------------------------------------------------------------------------------------
// CLI

function parseIntFlag(name: string, v: string | undefined, min: number, max: number): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isInteger(n) || n < min || n > max) throw new Error(`--${name} must be an integer ${min}..${max}`);
  return n;
}

async function main(argv: string[]): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    options: {
      listen: { type: 'string', multiple: true },
      port: { type: 'string' },
      'tokens-required': { type: 'boolean' },
      'put-status': { type: 'string' },
      'throttle-per-second': { type: 'string' },
      canary: { type: 'string' },
      'hop-limit': { type: 'string' },
      'keep-alive-ms': { type: 'string' },
      'log-requests': { type: 'boolean' },
    },
    strict: true,
  });
  const log = values['log-requests']
    ? (e: ImdsRequestEvent) => process.stderr.write(`${JSON.stringify(e)}\n`)
    : undefined;
  const server = await createImdsServer({
    listen: values.listen,
    port: parseIntFlag('port', values.port, 0, 65535),
    tokensRequired: values['tokens-required'] ?? false,
    putStatus: parseIntFlag('put-status', values['put-status'], 100, 599),
    throttlePerSecond: parseIntFlag('throttle-per-second', values['throttle-per-second'], 1, 1_000_000),
    canary: values.canary,
    hopLimit: parseIntFlag('hop-limit', values['hop-limit'], 1, 255),
    keepAliveMs: parseIntFlag('keep-alive-ms', values['keep-alive-ms'], 1, 3600_000),
    onRequest: log,
  });
  const listenOut = server.addresses().map((a) => ({ address: a.address, port: a.port }));
  process.stdout.write(`${JSON.stringify({ event: 'imds_ready', listen: listenOut, hopLimit: server.hopLimit ?? null })}\n`);

  let closing = false;
  const shutdown = (): void => {
    if (closing) return;
    closing = true;
    server.close().then(
      () => process.exit(0),
      () => process.exit(1),
    );
  };
  process.on('SIGTERM', shutdown);
  process.on('SIGINT', shutdown);
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main(process.argv.slice(2)).catch((err: unknown) => {
    process.stderr.write(`imds-server: ${(err as Error).message}\n`);
    process.exit(2);
  });
}
