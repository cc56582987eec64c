// Kernel events at a paced rate of new connections to the IMDS port (eBPF backend): how many the
// kernel program saw, how many were lost (ring buffer or loader queue full), over budget, joined.
// The connect loop (connect-loop.c) runs in one network namespace and one cgroup: ONE source, so the
// per-source budget applies to all of it. Runs with the default budget and with the budget off.
//   node bench/connect-rate.mjs [--seconds 5] [--rates 1000,5000] [--budgets default,0] [--no-record]
//        [--before <checkout with dist/ and bpf/.output/>] [--runs N]
//        [--before-node-args '<flags>'] [--after-node-args '<flags>'] [--warmup S]
// With --before, each (budget, rate) runs with both agent builds in turn, --runs times (A B A B …), so
// the comparison holds while the shared machine's load drifts. "node CPU ms / connect" is the agent's
// node process's CPU time (user + sys) from the first connect until 3 s after the last (its backlog
// processed), divided by the connects. --warmup S first runs the same load for S seconds (not
// measured), so the figure is the steady state's, not the JIT compiling the agent's code at start. --after-node-args '--cpu-prof --cpu-prof-dir=DIR' profiles it.
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import * as B from './lib.mjs';

const f = B.flags(5);
const rates = (f.get('--rates') ?? '200,1000,5000').split(',').map(Number);
const budgets = (f.get('--budgets') ?? 'default,0').split(',');
const loadavg = () => readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ');
const before = f.get('--before');
const runs = Number(f.get('--runs') ?? 1);
const warmup = Number(f.get('--warmup') ?? 0);
if (!(warmup >= 0 && warmup <= 60)) throw new Error('--warmup must be 0..60 seconds');
if (!(Number.isInteger(runs) && runs >= 1 && runs <= 20)) throw new Error('--runs must be 1..20');
const split = (s) => (s === undefined ? null : s.split(' ').filter(Boolean));
const variants = [
  ...(before ? [{ name: 'before', dist: join(before, 'dist'), nodeArgs: split(f.get('--before-node-args')) }] : []),
  { name: before ? 'after' : 'this', dist: B.DIST, nodeArgs: split(f.get('--after-node-args')) },
];
const CLK_TCK = Number(spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).stdout.trim()) || 100;
/** CPU seconds of one process so far: user and sys. */
const cpuTimes = (pid) => {
  const s = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const x = s.slice(s.lastIndexOf(')') + 2).split(' ');
  return { user: Number(x[11]) / CLK_TCK, sys: Number(x[12]) / CLK_TCK };
};

B.main(async () => {
  const l = await B.lab();
  const dir = B.tmp();
  const bin = join(dir, 'connect-loop');
  const cc = spawnSync('cc', ['-O2', '-o', bin, join(B.BENCH_DIR, 'connect-loop.c')], { encoding: 'utf8' });
  if (cc.status !== 0) throw new Error(`cc connect-loop.c: ${cc.stderr}`);
  const rows = [];
  for (const budget of budgets) {
    for (const rate of rates) for (let run = 0; run < runs; run++) for (const v of variants) {
      B.useAgent(v.dist, v.nodeArgs); // null: the shipped flags
      if (budget === 'default') delete process.env.IMDS_TRACER_EBPF_BUDGET;
      else process.env.IMDS_TRACER_EBPF_BUDGET = budget; // inherited by the agent
      const server = l.spawn(l.imdsNs, bin, ['server', B.IMDS_V4, '80', String(f.seconds + (warmup > 0 ? warmup + 8 : 3))], { stdio: ['ignore', 'pipe', 'pipe'] });
      B.onCleanup(() => B.stopChild(server, 1000));
      await new Promise((res, rej) => { server.stdout.once('data', res); server.once('exit', (c) => rej(new Error(`listener exited ${c}`))); });
      const a = await B.startAgent(l, ['--log-file', join(dir, `calls-${budget}-${rate}.jsonl`), '--stats-interval', '3600', '--backend', 'ebpf']);
      let warm = 0;
      if (warmup > 0) {
        const w = await l.exec(l.instanceNs, bin, ['client', B.IMDS_V4, '80', String(warmup), String(rate)], { timeoutMs: (warmup + 20) * 1000 });
        warm = JSON.parse(w.stdout.trim()).connects;
        await B.sleep(3000);
      }
      const m = B.cpuMeter(a.pid, 250);
      const la = loadavg();
      const node0 = cpuTimes(a.pid);
      const r = await l.exec(l.instanceNs, bin, ['client', B.IMDS_V4, '80', String(f.seconds), String(rate)], { timeoutMs: (f.seconds + 20) * 1000 });
      const c = m.stop();
      await B.sleep(3000);
      const node1 = cpuTimes(a.pid);
      const nodeUser = node1.user - node0.user;
      const nodeSys = node1.sys - node0.sys;
      const nodeCpu = nodeUser + nodeSys;
      await a.stop();
      await B.stopChild(server, 5000);
      const j = JSON.parse(r.stdout.trim());
      const k = a.lastStats?.kernel ?? {};
      const budgetText = budget === 'default' ? 'default' : budget === '0' ? 'off' : `${budget} (rate/burst)`;
      const perConnect = j.connects ? (nodeCpu * 1000) / j.connects : NaN;
      rows.push([...(before ? [v.name] : []), rate, budgetText, (j.connects / j.seconds).toFixed(0), warm ? `${j.connects} (+${warm} warm-up)` : j.connects, k.events ?? '?', `**${k.events_lost ?? '?'}**`,
        k.events_over_budget ?? '?', `${k.joined ?? '?'} / ${k.proc_fallbacks ?? '?'}`,
        `${B.fmt(c.cpuPct, 0)} (${c.split})`, B.fmt(perConnect, 3), `${B.fmt(c.rssMaxMB, 0)} / ${B.fmt(c.anonMaxMB, 0)} (${c.anonSplit})`, la]);
      console.log(`${v.name} rate ${rate}/s budget ${budget}: ${j.connects} connects (+${warm} warm-up), node ${nodeCpu.toFixed(2)} s CPU (user ${nodeUser.toFixed(2)}, sys ${nodeSys.toFixed(2)}) = ${perConnect.toFixed(3)} ms/connect, kernel ${JSON.stringify(k)}, cpu ${c.split}, RSS max ${c.rssMaxMB.toFixed(0)} MB anon ${c.anonMaxMB.toFixed(0)} (${c.anonSplit}), load ${la}`);
    }
  }
  delete process.env.IMDS_TRACER_EBPF_BUDGET;
  B.record('Kernel events at a paced connect rate', [
    `A C loop (bench/connect-loop.c: socket, connect, close with SO_LINGER 0) in the instance namespace connects to ${B.IMDS_V4}:80 (a C accept loop in the imds namespace) at the target rate for ${f.seconds} s; the agent traces with the eBPF backend. All connections come from one network namespace and one cgroup: one source for the kernel budget. "budget" is the agent's default, or IMDS_TRACER_EBPF_BUDGET (0: off). Connections carry no HTTP request, so they make no records; each is one kernel event. "lost" = stats.kernel.events_lost (the kernel ring buffer was full: the loader's queue toward the agent never drops, it stops draining the ring when full), "over budget" = stats.kernel.events_over_budget. Load average at the start of each run: other work shared the 2 vCPUs.`,
    '',
    B.table([...(before ? ['build'] : []), 'target connects/s', 'budget', 'achieved', 'connects', 'kernel events', 'lost', 'over budget', 'joined / proc fallbacks', 'agent CPU % (per process)', 'node CPU ms / connect', 'RSS MB max tree / anonymous (per process)', 'load avg'], rows),
  ].join('\n'));
}, 1200);
