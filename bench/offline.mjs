// Offline mode: one capture file of many IMDS requests, synthesised as frames (Ethernet, IPv4, TCP,
// HTTP; half the requests on kept-alive connections of 10, half each on a new connection; 1 in 5
// IMDSv2, with its token PUT), read side by side by `imds-tracer read`, `tshark -r FILE -Y
// http.request` (Debian's tshark) and `tcpdump -r FILE` (the libpcap floor). CPU seconds (user +
// sys, /usr/bin/time) of each, median of --runs runs, in turn A B C A B C …, with the ratios.
//   node bench/offline.mjs [--requests 40000] [--runs 5] [--quick] [--no-record] [--write-only FILE]
// No lab and no root: the file is made here, nothing is sent.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { machineLine, record, REPO, table } from './lib.mjs';

const args = process.argv.slice(2);
const opt = (n, d) => { const i = args.indexOf(n); return i >= 0 ? Number(args[i + 1]) : d; };
const quick = args.includes('--quick');
const REQUESTS = opt('--requests', quick ? 5000 : 40_000);
const RUNS = opt('--runs', quick ? 3 : 5);

// ------------------------------------------------------------------------------------------------
// Frames

const MAC = Buffer.from([0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2, 0x08, 0x00]);
const CLIENT = [169, 254, 10, 2];
const SERVER = [169, 254, 169, 254];

function frame(fromClient, cport, seq, ack, flags, payload = Buffer.alloc(0)) {
  const ip = Buffer.alloc(20);
  ip[0] = 0x45; ip.writeUInt16BE(20 + 20 + payload.length, 2); ip[6] = 0x40; ip[8] = fromClient ? 64 : 255; ip[9] = 6;
  Buffer.from(fromClient ? CLIENT : SERVER).copy(ip, 12);
  Buffer.from(fromClient ? SERVER : CLIENT).copy(ip, 16);
  let sum = 0;
  for (let i = 0; i < 20; i += 2) sum += ip.readUInt16BE(i);
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >> 16);
  ip.writeUInt16BE(~sum & 0xffff, 10);
  const tcp = Buffer.alloc(20);
  tcp.writeUInt16BE(fromClient ? cport : 80, 0); tcp.writeUInt16BE(fromClient ? 80 : cport, 2);
  tcp.writeUInt32BE(seq >>> 0, 4); tcp.writeUInt32BE(ack >>> 0, 8);
  tcp[12] = 5 << 4; tcp[13] = flags; tcp.writeUInt16BE(64240, 14);
  return Buffer.concat([MAC, ip, tcp, payload]);
}
const F = { fin: 1, syn: 2, psh: 8, ack: 16 };

const PATHS = ['/latest/meta-data/instance-id', '/latest/meta-data/iam/security-credentials/', '/latest/meta-data/placement/region',
  '/latest/meta-data/local-ipv4', '/latest/dynamic/instance-identity/document', '/latest/meta-data/ami-id'];

function request(i, v2) {
  const h = [`${v2 && i % 2 === 0 ? 'PUT /latest/api/token' : `GET ${PATHS[i % PATHS.length]}`} HTTP/1.1`, 'Host: 169.254.169.254',
    'User-Agent: Boto3/1.34.0 md/Botocore#1.34.0', 'Accept: */*'];
  if (v2 && i % 2 === 0) h.push('X-aws-ec2-metadata-token-ttl-seconds: 21600');
  else if (v2) h.push('X-aws-ec2-metadata-token: AQAEAFakeTokenFakeTokenFakeTokenFakeTokenFakeToken==');
  return Buffer.from(`${h.join('\r\n')}\r\n\r\n`);
}
const RESPONSE = Buffer.from('HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 19\r\nServer: EC2ws\r\n\r\ni-0123456789abcdef0');

/** The pcap file (little-endian, µs) and the requests in it by version. */
function synthesise(n) {
  const recs = [];
  let t = 1_764_000_000_000_000; // µs
  const add = (data) => {
    t += 37;
    const h = Buffer.alloc(16);
    h.writeUInt32LE(Math.floor(t / 1e6), 0); h.writeUInt32LE(t % 1e6, 4); h.writeUInt32LE(data.length, 8); h.writeUInt32LE(data.length, 12);
    recs.push(h, data);
  };
  let made = 0; let v1 = 0; let v2 = 0; let cport = 10_000;
  while (made < n) {
    // Blocks of 10 requests: one kept-alive connection, then 10 connections of one request each.
    const perConn = Math.floor(made / 10) % 2 === 0 ? Math.min(10, n - made) : 1;
    cport = cport >= 60_000 ? 10_000 : cport + 1;
    let c = (cport * 7919) >>> 0; let s = (cport * 104729) >>> 0;
    add(frame(true, cport, c, 0, F.syn)); add(frame(false, cport, s, c + 1, F.syn | F.ack)); c++; s++;
    add(frame(true, cport, c, s, F.ack));
    for (let k = 0; k < perConn; k++, made++) {
      const isV2 = made % 5 === 4 || made % 5 === 3; // pairs: token PUT, then a GET with it
      const q = request(made, isV2);
      if (isV2) v2++; else v1++;
      add(frame(true, cport, c, s, F.psh | F.ack, q)); c += q.length;
      add(frame(false, cport, s, c, F.psh | F.ack, RESPONSE)); s += RESPONSE.length;
      add(frame(true, cport, c, s, F.ack));
    }
    add(frame(true, cport, c, s, F.fin | F.ack)); add(frame(false, cport, s, c + 1, F.fin | F.ack)); add(frame(true, cport, c + 1, s + 1, F.ack));
  }
  const head = Buffer.alloc(24);
  head.writeUInt32LE(0xa1b2c3d4, 0); head.writeUInt16LE(2, 4); head.writeUInt16LE(4, 6); head.writeUInt32LE(262144, 16); head.writeUInt32LE(1, 20);
  return { file: Buffer.concat([head, ...recs]), packets: recs.length / 2, v1, v2 };
}

// ------------------------------------------------------------------------------------------------
// Timing

/** user, sys, wall seconds and peak RSS (KB) of one run, its stdout thrown away (counted in lines). */
function timed(cmd, argv) {
  const r = spawnSync('/usr/bin/time', ['-f', '@@time %U %S %e %M', cmd, ...argv], { encoding: 'utf8', maxBuffer: 1 << 30 });
  const m = /@@time (\S+) (\S+) (\S+) (\S+)/.exec(r.stderr);
  if (!m) throw new Error(`${cmd} ${argv.join(' ')}: no timing (exit ${r.status}): ${r.stderr.slice(-500)}`);
  return { user: Number(m[1]), sys: Number(m[2]), cpu: Number(m[1]) + Number(m[2]), wall: Number(m[3]), rssKb: Number(m[4]),
    status: r.status, lines: r.stdout.split('\n').filter(Boolean), stderr: r.stderr.replace(/@@time.*\n?/, '') };
}

const median = (xs) => { const s = [...xs].sort((a, b) => a - b); return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2; };
const which = (c) => spawnSync('sh', ['-c', `command -v ${c}`]).status === 0;

const dir = mkdtempSync(join(tmpdir(), 'imdst-offline-'));
process.on('exit', () => rmSync(dir, { recursive: true, force: true }));
const syn = synthesise(REQUESTS);
const pcap = join(dir, 'imds.pcap');
writeFileSync(pcap, syn.file);
console.log(`offline: ${REQUESTS} requests (${syn.v1} v1, ${syn.v2} v2), ${syn.packets} packets, ${(statSync(pcap).size / 1048576).toFixed(1)} MiB`);

const keep = args.indexOf('--write-only');
if (keep >= 0) { writeFileSync(args[keep + 1], syn.file); process.exit(0); } // the file only, for a look at it
const cli = join(REPO, 'bin', 'imds-tracer.js');
if (!existsSync(join(REPO, 'dist', 'cli.js'))) { console.error('bench/offline: run npm run build first'); process.exit(2); }
const tools = [
  { name: 'imds-tracer read --include-v2', cmd: process.execPath, argv: [...nodeFlags(), cli, 'read', '--include-v2', pcap],
    check: (r) => r.lines.filter((l) => l.includes('"event":"imds_call"')).length },
  ...(which('tshark') ? [{ name: 'tshark -r FILE -Y http.request', cmd: 'tshark', argv: ['-n', '-r', pcap, '-Y', 'http.request'], check: (r) => r.lines.length }] : []),
  ...(which('tcpdump') ? [{ name: 'tcpdump -n -r FILE', cmd: 'tcpdump', argv: ['-n', '-r', pcap], check: (r) => r.lines.length }] : []),
];
function nodeFlags() { return ['--max-semi-space-size=2', '--max-old-space-size=128']; } // bin/imds-tracer.js's shebang flags

const results = tools.map(() => []);
for (let run = -1; run < RUNS; run++) { // run -1: warm-up, not counted
  tools.forEach((t, i) => {
    const r = timed(t.cmd, t.argv);
    if (r.status !== 0) throw new Error(`${t.name} exited ${r.status}: ${r.stderr.slice(-500)}`);
    t.count = t.check(r);
    if (run >= 0) results[i].push(r);
  });
}
const floor = median(results[results.length - 1].map((r) => r.cpu));
const ours = median(results[0].map((r) => r.cpu));
const rows = tools.map((t, i) => {
  const cpu = results[i].map((r) => r.cpu);
  const m = median(cpu);
  return [t.name, String(t.count), `${m.toFixed(2)} (${Math.min(...cpu).toFixed(2)}–${Math.max(...cpu).toFixed(2)})`,
    median(results[i].map((r) => r.wall)).toFixed(2), `${Math.round(median(results[i].map((r) => r.rssKb)) / 1024)}`,
    `${(m / floor).toFixed(1)}×`, `${(m / ours).toFixed(2)}×`, `${Math.round(REQUESTS / m).toLocaleString('en-US')}`];
});
if (tools[0].count !== REQUESTS) throw new Error(`imds-tracer read wrote ${tools[0].count} call records, ${REQUESTS} requests were in the file`);
const body = [
  `${REQUESTS.toLocaleString('en-US')} IMDS requests (${syn.v1} IMDSv1, ${syn.v2} IMDSv2; half on kept-alive connections of 10, half one per connection), `
  + `${syn.packets.toLocaleString('en-US')} packets, ${(statSync(pcap).size / 1048576).toFixed(1)} MiB pcap, synthesised; each tool run ${RUNS} times after a warm-up, in turn, output to a pipe.`,
  '',
  table(['tool', 'lines out', 'CPU s, median (min–max)', 'wall s', 'peak RSS MB', '× tcpdump', '× imds-tracer', 'requests per CPU s'], rows),
  '',
  `imds-tracer read wrote ${tools[0].count} call records of ${REQUESTS} requests (checked). ${machineLine()}`,
].join('\n');
console.log(body);
record('Offline mode: reading a capture file', body);
