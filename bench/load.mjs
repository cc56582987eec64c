// Load generator, run INSIDE the lab's instance namespace (ip netns exec … node bench/load.mjs '<json>'):
// two autocannon instances side by side, one IMDSv1 (no token), one IMDSv2 (token header), on
// keep-alive connections. Bounded: autocannon's duration, plus a hard exit.
// Config: {"host":"169.254.169.254","rate":5000,"seconds":30,"connections":8}; rate 0 = as fast as it goes.
// Prints one JSON line: per kind responses counted, autocannon's own figures.
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import http from 'node:http';

const require = createRequire(join(dirname(dirname(fileURLToPath(import.meta.url))), 'package.json'));
const autocannon = require('autocannon');
const cfg = JSON.parse(process.argv[2] ?? '{}');
const host = cfg.host ?? '169.254.169.254';
if (!['169.254.169.254', 'fd00:ec2::254'].includes(host)) throw new Error('load.mjs only talks to the lab IMDS address');
const seconds = Math.min(Number(cfg.seconds ?? 10), 600);
const rate = Number(cfg.rate ?? 0);
const conns = Number(cfg.connections ?? 8);
const hard = setTimeout(() => { console.error('load.mjs: hard timeout'); process.exit(3); }, (seconds + 30) * 1000);
hard.unref();
const hostUrl = host.includes(':') ? `[${host}]` : host;

function token() {
  return new Promise((resolve, reject) => {
    const req = http.request({ host, port: 80, method: 'PUT', path: '/latest/api/token', timeout: 5000,
      headers: { 'X-aws-ec2-metadata-token-ttl-seconds': '21600' } }, (res) => {
      let body = '';
      res.on('data', (d) => { body += d; });
      res.on('end', () => (res.statusCode === 200 ? resolve(body) : reject(new Error(`token PUT ${res.statusCode}`))));
    });
    req.on('error', reject);
    req.on('timeout', () => req.destroy(new Error('token PUT timed out')));
    req.end();
  });
}

function one(kind, tok) {
  const counts = { responses: 0, ok: 0, requests: 0 };
  const opts = {
    url: `http://${hostUrl}/latest/meta-data/instance-id`,
    connections: conns,
    duration: seconds,
    timeout: 10,
    headers: kind === 'v2' ? { 'X-aws-ec2-metadata-token': tok } : {},
  };
  if (rate > 0) opts.overallRate = Math.max(1, Math.round(rate / 2));
  return new Promise((resolve, reject) => {
    const inst = autocannon(opts, (err, res) => {
      if (err) return reject(err);
      resolve({
        kind, responses: counts.responses, ok: counts.ok, requestEvents: counts.requests,
        sent: res.requests.sent, total: res.requests.total, non2xx: res.non2xx, errors: res.errors, timeouts: res.timeouts,
        latencyP50: res.latency.p50, latencyP99: res.latency.p99, duration: res.duration,
      });
    });
    inst.on('response', (_c, status) => { counts.responses++; if (status === 200) counts.ok++; });
    inst.on('reqError', () => {});
  });
}

const tok = await token();
const t0 = Date.now();
const [v1, v2] = await Promise.all([one('v1', tok), one('v2', tok)]);
process.stdout.write(`${JSON.stringify({ v1, v2, tokenPuts: 1, elapsedMs: Date.now() - t0 })}\n`, () => process.exit(0));
