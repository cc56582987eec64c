// 2. Latency: wire time of each IMDS request (the pcap timestamp of its packet, from a tcpdump
// capturing the same traffic) to the moment its record reaches a reader of the tracer's stdout;
// also client send time → record, and wire → the record's own `time` field (ms resolution).
//   node bench/latency.mjs [--seconds 30] [--rate 500] [--quick] [--no-record]
import { join } from 'node:path';
import * as B from './lib.mjs';

const f = B.flags(30);
const rate = Number(f.get('--rate') ?? 500);
const backend = f.get('--backend') ?? 'auto';

B.main(async () => {
  const l = await B.lab();
  const dir = B.tmp();
  const imds = await l.startImds({});
  const arrival = new Map(); const recTime = new Map();
  const agent = await B.startAgent(l, [...(f.has('--no-log-file') ? ['--no-log-file'] : ['--log-file', join(dir, 'calls.jsonl')]), '--stats-interval', '3600', '--backend', backend], {
    onRecord: (rec, at) => {
      // Kernel-only records (a connection the wire did not carry) have request: null.
      if (rec.event !== 'imds_call' || !rec.request) return;
      const m = /[?&]lat=(\d+)$/.exec(rec.request.path);
      if (m) { arrival.set(Number(m[1]), at); recTime.set(Number(m[1]), Date.parse(rec.time)); }
    },
  });
  const pcap = join(dir, 'wire.pcap');
  const td = await B.startTcpdump(l, l.instanceNs, pcap, l.instanceIf);
  const r = await l.exec(l.instanceNs, process.execPath, [join(B.BENCH_DIR, 'latclient.mjs'), JSON.stringify({ rate, seconds: f.seconds, sockets: Number(f.get('--sockets') ?? 4) })],
    { timeoutMs: (f.seconds + 60) * 1000 });
  if (r.exitCode !== 0) throw new Error(`latclient failed: ${r.stderr}`);
  const { sent, errors } = JSON.parse(r.stdout.trim().split('\n').pop());
  await B.sleep(4000);
  await td.stop();
  await agent.stop();
  await imds.stop();

  // Frames of the veth (Ethernet, IPv4): request packets carry ?lat=N; the response is the next
  // "HTTP/" packet from port 80 to the same client port (keep-alive: one request at a time per socket).
  const wire = new Map(); const wireResp = new Map();
  const outstanding = new Map(); // client port -> [N…]
  for (const fr of B.readPcap(pcap)) {
    const b = fr.data;
    if (b.length < 54 || b.readUInt16BE(12) !== 0x0800) continue;
    const ihl = (b[14] & 0x0f) * 4; const tcp = 14 + ihl;
    const sport = b.readUInt16BE(tcp); const dport = b.readUInt16BE(tcp + 2);
    const payload = b.subarray(tcp + (b[tcp + 12] >> 4) * 4);
    if (!payload.length) continue;
    if (dport === 80) {
      const m = /^[A-Z]+ \S*\?lat=(\d+) /.exec(payload.subarray(0, 80).toString('latin1'));
      if (m && !wire.has(Number(m[1]))) {
        wire.set(Number(m[1]), fr.tsMs);
        if (!outstanding.has(sport)) outstanding.set(sport, []);
        outstanding.get(sport).push(Number(m[1]));
      }
    } else if (sport === 80 && payload.subarray(0, 5).toString('latin1') === 'HTTP/') {
      const q = outstanding.get(dport);
      const n = q?.shift();
      if (n !== undefined) wireResp.set(n, fr.tsMs);
    }
  }
  const d = { wireRec: [], sendRec: [], wireTime: [], sendWire: [], respRec: [], reqResp: [] };
  for (let i = 0; i < sent.length; i++) {
    const a = arrival.get(i); const w = wire.get(i); const wr = wireResp.get(i);
    if (a !== undefined && w !== undefined) { d.wireRec.push(a - w); d.wireTime.push(recTime.get(i) - w); }
    if (a !== undefined && wr !== undefined) d.respRec.push(a - wr);
    if (w !== undefined && wr !== undefined) d.reqResp.push(wr - w);
    if (a !== undefined) d.sendRec.push(a - sent[i]);
    if (w !== undefined) d.sendWire.push(w - sent[i]);
  }
  const hist = {};
  for (const x of d.wireRec) { const k = x < 1 ? '<1' : x < 2 ? '1-2' : x < 5 ? '2-5' : x < 10 ? '5-10' : x < 20 ? '10-20' : x < 50 ? '20-50' : '>=50'; hist[k] = (hist[k] ?? 0) + 1; }
  console.log(`wire→record histogram (ms): ${JSON.stringify(hist)}; backend ${agent.ready.backend}`);
  const row = (name, xs) => {
    const s = [...xs].sort((x, y) => x - y);
    return [name, s.length, B.fmt(B.percentile(s, 50), 2), B.fmt(B.percentile(s, 99), 2), B.fmt(s.at(-1), 2)];
  };
  const body = [
    `IMDSv1 GETs at ${rate} req/s for ${f.seconds} s on 4 keep-alive connections (a Node client in the instance namespace, ${sent.length} requests, ${errors} client errors; ${arrival.size} records with their marker, ${wire.size} requests found in the pcap). `
    + 'Wire time = the pcap timestamp of the request\'s packet from `tcpdump -i <veth>` (kernel timestamp, µs) in the same namespace, the peer capturing the same traffic; arrival = when the harness read the record from the tracer\'s stdout pipe (same clock, epoch ms with µs resolution). '
    + 'A record is written once the response is seen (or after 1.5 s without one), so wire → record includes the stand-in\'s answer; "wire response → record read" is the agent\'s own share. '
    + `The record's \`time\` field is the agent's own capture timestamp when it captures through its native helper (capture: \`${agent.ready.capture ?? 'n/a'}\`), else the time the request was parsed; it has ms resolution, so ≤ 0 means "the same millisecond as tcpdump's timestamp".`,
    '',
    B.table(['interval (ms)', 'n', 'p50', 'p99', 'max'], [
      row('**wire → record read from stdout**', d.wireRec),
      row('client send → record read', d.sendRec),
      row('wire request → wire response (the stand-in)', d.reqResp),
      row('wire response → record read (the agent alone)', d.respRec),
      row('wire → record `time` field (ms resolution: ≤ 0 means within the same ms)', d.wireTime),
      row('client send → wire', d.sendWire),
    ]),
  ].join('\n');
  B.record(`Latency (${rate} req/s, ${agent.ready.backend} backend)`, body + `\n\nwire → record read, histogram (ms → requests): \`${JSON.stringify(hist)}\``);
}, 600);
