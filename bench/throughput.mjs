// 1. Throughput and loss (and 4b: agent CPU/RSS under load, tcpdump peer's CPU under the same load).
// Keep-alive IMDS clients (autocannon, half IMDSv1, half IMDSv2) at fixed rates for --seconds
// (default 30), and as fast as the lab goes; requests answered vs imds_call records written.
//   node bench/throughput.mjs [--seconds 30] [--quick] [--rates 500,2000,5000,max] [--no-record]
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import * as B from './lib.mjs';

const f = B.flags(30);
const rates = (f.get('--rates') ?? '500,2000,5000,max').split(',').map((r) => (r === 'max' ? 0 : Number(r)));
const LOGGED_MAX = 2000; // the stand-in logs each request (its own count) up to this rate: cheap enough there

async function load(l, rate, seconds, connections = 8) {
  const r = await l.exec(l.instanceNs, process.execPath,
    [join(B.BENCH_DIR, 'load.mjs'), JSON.stringify({ rate, seconds, connections })], { timeoutMs: (seconds + 60) * 1000 });
  const line = r.stdout.trim().split('\n').pop();
  if (r.exitCode !== 0 || !line) throw new Error(`load.mjs failed (${r.exitCode}): ${r.stderr.slice(-500)}`);
  return JSON.parse(line);
}

B.main(async () => {
  const l = await B.lab();
  const dir = B.tmp();
  // The stand-in alone (not logging): how fast can the lab go without the tracer?
  let imds = await l.startImds({ logRequests: false });
  const baseSecs = Math.min(10, f.seconds);
  const sm = B.cpuMeter(imds.pid);
  const base = await load(l, 0, baseSecs);
  const smr = sm.stop();
  const baseRate = (base.v1.responses + base.v2.responses) / base.v1.duration;
  console.log(`stand-in alone: ${baseRate.toFixed(0)} req/s, stand-in CPU ${smr.cpuPct.toFixed(0)} %`);
  await imds.stop();
  imds = await l.startImds({ logRequests: true });

  const rows = [];
  const details = [];
  for (const rate of rates) {
    if (rate > LOGGED_MAX && imds.requests !== undefined && imds.logging !== false) {
      await imds.stop();
      imds = await l.startImds({ logRequests: false });
      imds.logging = false;
    }
    const serverBefore = imds.logging === false ? null : imds.requests().length;
    const logFile = join(dir, `calls-${rate}.jsonl`);
    const agent = await B.startAgent(l, ['--include-v2', '--log-file', logFile, '--stats-interval', '3600']);
    const td = await B.startTcpdump(l, l.instanceNs, join(dir, `peer-${rate}.pcap`));
    const am = B.cpuMeter(agent.pid); const tm = B.cpuMeter(td.pid); const im = B.cpuMeter(imds.pid);
    const res = await load(l, rate, f.seconds);
    const cpuA = am.stop(); const cpuT = tm.stop(); const cpuI = im.stop();
    await B.sleep(3500); // > response wait (1.5 s) and attribution wait (3 s)
    const code = await agent.stop();
    await td.stop();
    const tdStats = /(\d+) packets captured[\s\S]*?(\d+) packets received by filter[\s\S]*?(\d+) packets dropped by kernel/.exec(td.stderr());
    const serverCount = serverBefore === null ? null : imds.requests().length - serverBefore;
    const answered = res.v1.responses + res.v2.responses;
    const sentV1 = res.v1.responses; const sentV2 = res.v2.responses + 1; // + the token PUT
    const achieved = answered / res.v1.duration;
    const missV1 = sentV1 - agent.counts.v1; const missV2 = sentV2 - agent.counts.v2;
    let fileLines = 0;
    for (const fn of readdirSync(dir).filter((x) => x.startsWith(`calls-${rate}.jsonl`))) {
      fileLines += readFileSync(join(dir, fn), 'utf8').split('\n').filter((x) => x.includes('"event":"imds_call"')).length;
    }
    const st = agent.lastStats ?? {};
    rows.push([
      rate === 0 ? 'max' : rate, achieved.toFixed(0),
      `${sentV1} / ${sentV2}`, serverCount ?? 'not logged',
      `${agent.counts.v1} / ${agent.counts.v2}`,
      `${Math.max(0, missV1)} / ${Math.max(0, missV2)}`,
      `${fileLines} (${st.log_rotations ?? '?'})`,
      `${B.fmt(cpuA.cpuPct)} (${cpuA.split})`, `${B.fmt(cpuA.rootRssMaxMB, 0)} / ${B.fmt(cpuA.rssMaxMB, 0)}`, B.fmt(cpuT.cpuPct), B.fmt(cpuI.cpuPct),
      tdStats ? tdStats[3] : '?',
    ]);
    details.push({ rate, code, load: res, agentCounts: agent.counts, stats: st, errors: agent.errors.slice(0, 5), tcpdump: tdStats?.[0] });
    console.log(`rate ${rate || 'max'}: achieved ${achieved.toFixed(0)}/s, answered v1 ${sentV1} v2 ${sentV2}, records v1 ${agent.counts.v1} v2 ${agent.counts.v2}, agent CPU ${cpuA.cpuPct.toFixed(1)} %, tcpdump ${cpuT.cpuPct.toFixed(1)} %, exit ${code}`);
    console.log(`  stats: ${JSON.stringify(st)}`);
    if (agent.errors.length) console.log(`  errors/notices: ${agent.errors.slice(0, 5).join(' | ')}`);
  }
  await imds.stop();

  const body = [
    `Mixed keep-alive load for ${f.seconds} s per rate (autocannon in the instance namespace: two instances of 8 connections, one IMDSv1, one IMDSv2 with the token header; rate split evenly), tracer \`--include-v2 --log-file <tmp>\` (eBPF backend) and \`tcpdump -i any -w <tmp>\` with the same filter capturing the same traffic at the same time. `
    + `"answered" = responses autocannon received (v1 / v2; v2 includes the one token PUT); autocannon stops with one request in flight per connection (8 per kind), so the stand-in's own count (logged up to ${LOGGED_MAX} req/s only: logging costs it CPU) and the records are 8 + 8 higher than "answered". "missing" = answered − records (a request answered but never recorded). `
    + `"records" = imds_call records on the tracer's stdout; "in log files" = the same records counted in its log file and the rotated siblings the default rotation keeps (10 MB × 5 + current: at the highest rate the oldest are rotated away by design). `
    + `The stand-in alone (no tracer, not logging) answers **${baseRate.toFixed(0)} req/s** (autocannon on the other vCPU, stand-in at ${smr.cpuPct.toFixed(0)} % of a core) — it and the load generator share 2 vCPUs with the tracer, so "max" is what the lab sustains with the tracer running.`,
    '',
    B.table(['target req/s', 'achieved req/s', 'answered v1 / v2', 'stand-in count', 'records v1 / v2', 'missing v1 / v2', 'in log files (rotations)', 'agent CPU % (per process)', 'agent RSS MB max (node / with loader)', 'tcpdump CPU %', 'stand-in CPU %', 'tcpdump drops'], rows),
    '',
    'CPU % is of one core (100 % = one vCPU), summed over the agent\'s process tree: node, the eBPF loader (imds_connect) and the capture helper (imds_capture, when built); RSS likewise (node alone / whole tree).',
    '',
    '<details><summary>final stats records</summary>',
    '',
    ...details.map((d) => `- ${d.rate || 'max'}: exit ${d.code}; \`${JSON.stringify(d.stats)}\`${d.errors.length ? `; errors: ${d.errors.join(' | ')}` : ''}`),
    '',
    '</details>',
  ].join('\n');
  B.record('Throughput and loss', body);
}, 1200);
