// Memory side by side: RSS of the agent's process tree (node + eBPF loader + capture helper) at every
// live rate, for two agent builds run in turn on the same lab (A, B, A, B, … per rate), so the
// comparison holds while the shared machine's load drifts.
//   node bench/memory.mjs [--seconds 20] [--rates 500,2000,5000,max] [--before <dir with dist/>]
//        [--before-node-args '<flags>'] [--after-node-args '<flags>|…'] [--after-env 'NAME=VALUE …|…']
//        [--idle-wait S] [--warmup S] [--node <node binary>] [--stdout null] [--no-record]
// --warmup S loads S seconds more before a second CPU meter starts: "steady" CPU, past the first
// seconds of traffic, when V8 compiles the hot path (a long-running agent's state nearly always).
// --stdout null runs the agent as the systemd unit does: stdout is /dev/null (not written), records
// go to the log file only; the counts then come from its final stats record.
// --before defaults to none (only this checkout, with and without --after-node-args). The stdout of
// the agent is read by the harness as in throughput.mjs.
import { join } from 'node:path';
import * as B from './lib.mjs';

const f = B.flags(20);
const rates = (f.get('--rates') ?? '500,2000,5000,max').split(',').map((r) => (r === 'max' ? 0 : Number(r)));
const before = f.get('--before');
/** The flags the installed command and the systemd unit start node with (DEFAULTS.agentNodeFlags). */
const { DEFAULTS } = await import(join(B.DIST, 'defaults.js'));
const DEFAULT_FLAGS = DEFAULTS.agentNodeFlags.join(' ');
/** The node binary the agent runs on (e.g. a release's bundled runtime); the harness and load stay on this one. */
const node = f.get('--node') ?? process.execPath;
const { spawnSync } = await import('node:child_process');
const nodeVersion = spawnSync(node, ['--version'], { encoding: 'utf8' }).stdout.trim();
const split = (s) => (s ?? '').split(' ').filter(Boolean);
/** 'NAME=VALUE NAME2=' → { NAME: 'VALUE', NAME2: '' } ('' removes the name from the agent's environment). */
const envOf = (s) => Object.fromEntries(split(s).map((kv) => [kv.slice(0, kv.indexOf('=')), kv.slice(kv.indexOf('=') + 1)]));
// '|' separates several flag sets (--after-node-args) and environments (--after-env), paired in order
// (a single one goes with every set of the other): one "after" run each.
const afterArgs = (f.get('--after-node-args') ?? DEFAULT_FLAGS).split('|');
const afterEnvs = (f.get('--after-env') ?? '').split('|');
if (afterArgs.length > 1 && afterEnvs.length > 1 && afterArgs.length !== afterEnvs.length) {
  throw new Error(`--after-node-args has ${afterArgs.length} sets, --after-env ${afterEnvs.length}: give as many of each, or one`);
}
const variants = [
  // The "before" build runs with the shipped flags too unless told otherwise (as in replay.mjs).
  ...(before ? [{ name: 'before', dist: join(before, 'dist'), nodeArgs: split(f.get('--before-node-args') ?? DEFAULT_FLAGS), env: {} }] : []),
  ...Array.from({ length: Math.max(afterArgs.length, afterEnvs.length) }, (_, i) => ({
    name: 'after', dist: B.DIST, nodeArgs: split(afterArgs.length === 1 ? afterArgs[0] : afterArgs[i]), env: envOf(afterEnvs.length === 1 ? afterEnvs[0] : afterEnvs[i]),
  })),
];
/** How a variant's environment reads in the output: what it adds to the build's DEFAULTS.agentEnv. */
const envText = (v) => Object.entries(v.env).map(([k, x]) => (x === '' ? `-${k}` : `${k}=${x}`)).join(' ');
/** Seconds between `ready` and the idle sample (0: at once, start-up garbage still on the heap). */
const idleWaitMs = Number(f.get('--idle-wait') ?? 0) * 1000;
const warmupS = Number(f.get('--warmup') ?? 0);
const stdoutMode = f.get('--stdout') ?? 'pipe';
if (stdoutMode !== 'pipe' && stdoutMode !== 'null') throw new Error(`--stdout ${stdoutMode}: say pipe or null`);
const stdoutNull = stdoutMode === 'null';

async function load(l, rate, seconds, connections = 8) {
  const r = await l.exec(l.instanceNs, process.execPath,
    [join(B.BENCH_DIR, 'load.mjs'), JSON.stringify({ rate, seconds, connections })], { timeoutMs: (seconds + 60) * 1000 });
  const line = r.stdout.trim().split('\n').pop();
  if (r.exitCode !== 0 || !line) throw new Error(`load.mjs failed (${r.exitCode}): ${r.stderr.slice(-500)}`);
  return JSON.parse(line);
}

import { readFileSync } from 'node:fs';
const loadavg = () => readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ');

B.main(async () => {
  const l = await B.lab();
  const dir = B.tmp();
  const imds = await l.startImds({ logRequests: false });
  const rows = [];
  const details = [];
  let runs = 0;
  for (const rate of rates) {
    for (const v of variants) {
      B.useAgent(v.dist, v.nodeArgs, node, v.env);
      const logFile = join(dir, `calls-${v.name}-${rate}-${++runs}.jsonl`); // its own file: --stdout null reads it
      const agent = await B.startAgent(l, ['--include-v2', '--log-file', logFile, '--stats-interval', '3600'], { stdoutNull });
      if (idleWaitMs) await B.sleep(idleWaitMs);
      const idle = B.treeSample(agent.pid).rss / 2 ** 20;
      const m = B.cpuMeter(agent.pid, 250);
      const la = loadavg();
      const loaded = load(l, rate, f.seconds + warmupS);
      let steady = null;
      if (warmupS > 0) {
        await B.sleep(warmupS * 1000);
        steady = B.cpuMeter(agent.pid, 250);
      }
      const res = await loaded;
      const r = m.stop();
      const rs = steady?.stop();
      await B.sleep(3500);
      const code = await agent.stop();
      const st = agent.lastStats ?? {};
      const answered = res.v1.responses + res.v2.responses;
      const recorded = agent.counts.v1 + agent.counts.v2;
      const dropped = st.records_dropped ? st.records_dropped.stdout : 'n/a';
      rows.push([rate === 0 ? 'max' : rate, v.name, `${v.nodeArgs.join(' ') || '(none)'}${envText(v) ? ` env ${envText(v)}` : ''} (node ${nodeVersion})`, (answered / res.v1.duration).toFixed(0),
        B.fmt(idle, 0), B.fmt(r.rssMaxMB, 0), B.fmt(r.rootRssMaxMB, 0), `${B.fmt(r.anonMaxMB, 0)} (${r.anonSplit})`, B.fmt(r.cpuPct), rs ? B.fmt(rs.cpuPct) : 'n/a', rs ? B.fmt((rs.cpuPct * 1e4) / (answered / res.v1.duration)) : 'n/a', `${recorded} / ${answered + 1}`, dropped,
        st.heap_used_bytes !== undefined ? B.fmt(st.heap_used_bytes / 2 ** 20, 0) : 'n/a', la, st.pcap ? st.pcap.dropped : 'n/a']);
      details.push({ rate, variant: `${v.name} [${v.nodeArgs.join(' ')}]${envText(v) ? ` {${envText(v)}}` : ''} ${nodeVersion}`, code, stats: st });
      console.log(`rate ${rate || 'max'} ${v.name} [${v.nodeArgs.join(' ')}]${envText(v) ? ` {${envText(v)}}` : ''} ${nodeVersion}: ${(answered / res.v1.duration).toFixed(0)} req/s, tree RSS idle ${idle.toFixed(0)} max ${r.rssMaxMB.toFixed(0)} MB (${r.rssSplit}), anon ${r.anonMaxMB.toFixed(0)} (${r.anonSplit}), CPU ${r.cpuPct.toFixed(1)} %${rs ? `, steady ${rs.cpuPct.toFixed(2)} % (${rs.split}) = ${((rs.cpuPct * 1e4) / (answered / res.v1.duration)).toFixed(1)} µs/call` : ''}, records ${recorded}/${answered + 1}, stdout dropped ${dropped}, pcap dropped ${st.pcap?.dropped}, load ${la}, exit ${code}`);
    }
  }
  await imds.stop();
  const body = [
    `Keep-alive load as in the throughput section (load.mjs: 2 × 8 connections, half IMDSv1, half IMDSv2) for ${f.seconds + warmupS} s per rate and per agent build, the builds run in turn at each rate${warmupS ? ` ("CPU %" over the whole load; "steady" over its last ${f.seconds} s, after ${warmupS} s of warm-up, as µs of the process tree's CPU per answered request)` : ''}; tracer \`--include-v2 --log-file <tmp>\` (eBPF backend), ${stdoutNull ? 'its stdout /dev/null as under the systemd unit (StandardOutput=null: the agent does not write it; records go to the log file only, and the counts come from the final stats record)' : 'its stdout read by the harness'}. RSS of the agent's process tree (node + imds_connect + imds_capture) sampled every 250 ms from /proc; "anonymous" is RssAnon (/proc/<pid>/status), the processes' own memory — RSS also counts file pages, mostly the node binary's code (~42 MB, shared with every node process and reclaimable). "records" = imds_call records read from stdout / requests answered (+ the token PUT); "stdout dropped" = stats.records_dropped.stdout (records the harness did not read fast enough: the bound at work). Load average (1, 5, 15 min) at the start of each run: other work shared the 2 vCPUs.`,
    '',
    B.table(['target req/s', 'build', 'node flags', 'achieved req/s', 'RSS MB idle (tree)', 'RSS MB max (tree)', 'RSS MB max (node)', 'anonymous RSS MB max (tree; per process)', 'CPU %', `CPU % steady (after ${warmupS} s)`, 'µs per call steady (tree)', 'records / answered', 'stdout dropped', 'heap used MB at exit', 'load avg', 'pcap dropped'], rows),
    '',
    '<details><summary>final stats records</summary>',
    '',
    ...details.map((d) => `- ${d.rate || 'max'} ${d.variant}: exit ${d.code}; \`${JSON.stringify(d.stats)}\``),
    '',
    '</details>',
  ].join('\n');
  B.record('Memory under load (side by side)', body);
}, 1800);
