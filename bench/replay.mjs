// Replay: one capture file of IMDS traffic sent with `tcpreplay --topspeed` out of the lab's
// instance-side veth, while the agent captures on that veth (`run -i <veth>`): RSS of the agent's
// process tree (node + imds_connect + imds_capture) and CPU while it takes the burst in, and whether
// anything was lost (stats.pcap.dropped, which also counts what the capture helper's output queue
// dropped; records vs requests in the file). Builds / node flags / node binaries run in turn.
//   node bench/replay.mjs [--requests 40001] [--runs 2] [--before <dir with dist/>]
//        [--before-node-args '<flags>'] [--after-node-args 'A|B'] [--node <node binary>] [--no-record]
//        [--stats-interval <s>] (3600; 1 samples the agent's V8 heap every second: "heap MB max")
// The capture is synthesised by offline.mjs (--write-only): Ethernet frames between 169.254.10.2 and
// 169.254.169.254 with MAC addresses no lab interface has, so the imds namespace at the other end of
// the veth drops them (not its MAC: no reply, no RST). Network safety: the packets are sent out of the
// lab's own veth, inside its namespace; nothing is sent in the root namespace.
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import * as B from './lib.mjs';

const f = B.flags(20);
const REQUESTS = Number(f.get('--requests') ?? (f.quick ? 5000 : 40_001));
const RUNS = Number(f.get('--runs') ?? (f.quick ? 1 : 2));
const STATS_INTERVAL = String(f.get('--stats-interval') ?? 3600);
const before = f.get('--before');
const node = f.get('--node') ?? process.execPath;
const { DEFAULTS } = await import(join(B.DIST, 'defaults.js'));
const split = (s) => (s ?? '').split(' ').filter(Boolean);
const variants = [
  ...(before ? [{ name: 'before', dist: join(before, 'dist'), nodeArgs: split(f.get('--before-node-args') ?? DEFAULTS.agentNodeFlags.join(' ')) }] : []),
  ...(f.get('--after-node-args') ?? DEFAULTS.agentNodeFlags.join(' ')).split('|').map((a) => ({ name: 'after', dist: B.DIST, nodeArgs: split(a) })),
];
const nodeVersion = spawnSync(node, ['--version'], { encoding: 'utf8' }).stdout.trim();

if (spawnSync('tcpreplay', ['--version']).error) {
  console.error('bench: tcpreplay is missing (Debian package tcpreplay; scripts/setup-dev.sh installs it)');
  process.exit(2);
}

B.main(async () => {
  const dir = B.tmp('imdst-replay-');
  const pcap = join(dir, 'imds.pcap');
  const w = spawnSync(process.execPath, [join(B.BENCH_DIR, 'offline.mjs'), '--requests', String(REQUESTS), '--write-only', pcap], { encoding: 'utf8' });
  if (w.status !== 0) throw new Error(`offline.mjs --write-only failed: ${w.stderr}`);
  const packets = (readFileSync(pcap).length > 0) ? Number(spawnSync('tcpdump', ['-r', pcap, '-n', '-q'], { encoding: 'utf8', maxBuffer: 1 << 28 }).stdout.split('\n').filter(Boolean).length) : 0;
  const l = await B.lab();
  // The imds namespace drops every packet that arrives (raw table, before conntrack and routing):
  // the replayed connections get no answer from a real TCP stack there.
  for (const bin of ['iptables', 'ip6tables']) {
    const d = await l.exec(l.imdsNs, bin, ['-t', 'raw', '-A', 'PREROUTING', '-i', l.imdsIf, '-j', 'DROP']);
    if (d.exitCode !== 0) throw new Error(`${bin} in the imds namespace failed: ${d.stderr}`);
  }
  const rows = [];
  const details = [];
  for (let run = 0; run < RUNS; run++) {
    for (const v of variants) {
      B.useAgent(v.dist, v.nodeArgs, node);
      const logFile = join(dir, `calls-${v.name}-${run}.jsonl`);
      const agent = await B.startAgent(l, ['-i', l.instanceIf, '--include-v2', '--log-file', logFile, '--stats-interval', STATS_INTERVAL]);
      await B.sleep(1000);
      const idle = B.treeSample(agent.pid);
      const m = B.cpuMeter(agent.pid, 100);
      const t0 = B.nowMs();
      const r = await l.exec(l.instanceNs, 'tcpreplay', ['-i', l.instanceIf, '--topspeed', '-q', pcap], { timeoutMs: 120_000 });
      if (r.exitCode !== 0) throw new Error(`tcpreplay failed (${r.exitCode}): ${r.stderr.slice(-500)}`);
      const sentMs = B.nowMs() - t0;
      // Every request becomes a record once its answer is in (all are answered in the file): wait
      // for them all, or for the count to stop moving.
      let lastCount = -1; let still = 0;
      while (agent.counts.imds_call < REQUESTS && still < 20) {
        await B.sleep(250);
        still = agent.counts.imds_call === lastCount ? still + 1 : 0;
        lastCount = agent.counts.imds_call;
      }
      const doneMs = B.nowMs() - t0;
      const res = m.stop();
      const code = await agent.stop();
      if (code !== 0) console.error(`agent exit ${code}; stderr: ${agent.stderr.slice(-1500)}; errors: ${agent.errors.slice(-5).join(' | ')}`);
      const st = agent.lastStats ?? {};
      const lost = st.pcap ? st.pcap.dropped + st.pcap.if_dropped : 'n/a';
      // The log file holds every record (stdout may drop when the harness reads too slowly: counted).
      let logged = 0;
      // The largest V8 heap a stats record in the log file showed (with --stats-interval 1: sampled every second, when the agent's loop gets to it).
      let heapMax = 0; let statsRecords = 0;
      for (const file of [logFile, ...Array.from({ length: DEFAULTS.logFiles }, (_, i) => `${logFile}.${i + 1}`)]) {
        if (!existsSync(file)) continue; // rotated siblings: calls.jsonl.1 … .N
        for (const line of readFileSync(file, 'utf8').split('\n')) {
          if (/"event":"imds_call","time":"[^"]*","imds_version":"v[12]"/.test(line)) logged++;
          else if (line.startsWith('{"event":"stats"')) { statsRecords++; heapMax = Math.max(heapMax, JSON.parse(line).heap_used_bytes ?? 0); }
        }
      }
      rows.push([v.name, v.nodeArgs.join(' ') || '(none)', nodeVersion, `${(sentMs / 1000).toFixed(2)} / ${(doneMs / 1000).toFixed(1)}`,
        B.fmt(idle.rss / 2 ** 20, 0), B.fmt(res.rssMaxMB, 0), res.rssSplit, `${B.fmt(res.anonMaxMB, 0)} (${res.anonSplit})`,
        B.fmt(heapMax / 2 ** 20, 0), B.fmt(res.cpuPct), `${logged} / ${REQUESTS}`, st.records_dropped?.stdout ?? 'n/a', st.pcap ? `${st.pcap.received} / ${packets}` : 'n/a', lost]);
      details.push({ run, variant: v.name, nodeArgs: v.nodeArgs.join(' '), code, stats: st });
      console.log(`replay ${run} ${v.name} [${v.nodeArgs.join(' ')}] ${nodeVersion}: sent in ${(sentMs / 1000).toFixed(2)} s, records after ${(doneMs / 1000).toFixed(1)} s; tree RSS idle ${(idle.rss / 2 ** 20).toFixed(0)} max ${res.rssMaxMB.toFixed(0)} MB (${res.rssSplit}), anon ${res.anonMaxMB.toFixed(0)} (${res.anonSplit}), heap max ${(heapMax / 2 ** 20).toFixed(0)} MB (${statsRecords} stats records), CPU ${res.cpuPct.toFixed(1)} % (${res.split}), records in the log file ${logged}/${REQUESTS} (stdout ${agent.counts.imds_call}, stdout dropped ${st.records_dropped?.stdout}), pcap received ${st.pcap?.received}/${packets} dropped ${lost}, exit ${code}`);
    }
  }
  const body = [
    `One capture file, synthesised by offline.mjs (${REQUESTS} requests, IMDSv1 and IMDSv2, half on kept-alive connections of 10, half one per connection; ${packets} packets), sent with \`tcpreplay --topspeed\` out of the lab's instance-side veth while the agent (\`run -i <veth> --include-v2 --log-file <tmp>\`, eBPF backend, node ${nodeVersion}) captures on it; ${RUNS} run(s) per variant, in turn. RSS of the agent's process tree sampled every 100 ms from /proc, from the start of the replay until every request is a record (or the count stops moving for 5 s); stats records every ${STATS_INTERVAL} s ("V8 heap used MB max": the largest heap_used_bytes they showed, the final one included); per-process RSS max (file pages too: node's code, the capture helper's mmap'd ring) and anonymous (RssAnon). "seconds" = tcpreplay's run / until the last record. "lost" = stats.pcap.dropped + if_dropped (kernel ring full, or the helper's output queue full). Records are counted in the agent's log file; "stdout dropped" = stats.records_dropped.stdout (the harness reading stdout too slowly on the shared machine: the bound at work, the log file still has them). Other work on the shared machine (other labs) connects to the IMDS address in its own namespaces: the eBPF program sees those too (stats.calls_unseen).`,
    '',
    B.table(['build', 'node flags', 'node', 'seconds (sent / recorded)', 'RSS MB idle (tree)', 'RSS MB max (tree)', 'RSS MB max per process', 'anonymous RSS MB max (tree; per process)', 'V8 heap used MB max (stats records)', 'CPU %', 'IMDSv1/v2 records in the log file / requests', 'stdout dropped', 'pcap received / packets', 'lost'], rows),
    '',
    '<details><summary>final stats records</summary>',
    '',
    ...details.map((d) => `- run ${d.run} ${d.variant} [${d.nodeArgs}]: exit ${d.code}; \`${JSON.stringify(d.stats)}\``),
    '',
    '</details>',
  ].join('\n');
  B.record('Replay: a capture at top speed (tcpreplay)', body);
}, 1800);
