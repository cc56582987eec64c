// 3. Short-lived callers: N one-shot curl processes (default 500) fired in parallel batches of 20;
// share named with the right pid and full argv, per backend (eBPF and /proc tracing side by side).
//   node bench/shortlived.mjs [--n 500] [--quick] [--no-record]
import { IMDS_V4 } from './lib.mjs';
import * as B from './lib.mjs';

const f = B.flags(30);
const N = Number(f.get('--n') ?? (f.quick ? 100 : 500));
const BATCH = 20;

B.main(async () => {
  const l = await B.lab();
  await l.startImds({});
  const common = ['--no-log-file', '--include-v2', '--stats-interval', '3600'];
  const tracers = {
    ebpf: await B.startAgent(l, [...common, '--backend', 'ebpf'], { keep: true }),
    proc: await B.startAgent(l, [...common, '--backend', 'proc'], { keep: true }),
  };
  const runs = [];
  const t0 = Date.now();
  for (let b = 0; b * BATCH < N; b++) {
    const batch = await Promise.all(Array.from({ length: Math.min(BATCH, N - b * BATCH) }, (_, j) => {
      const tag = `short=${b * BATCH + j}`;
      return l.exec(l.instanceNs, 'curl', ['-s', '-o', '/dev/null', '--max-time', '10', `http://${IMDS_V4}/latest/meta-data/instance-id?${tag}`, '-A', `imdst-${tag}`])
        .then((r) => ({ ...r, tag }));
    }));
    runs.push(...batch);
  }
  const firedMs = Date.now() - t0;
  await B.sleep(5000); // attribution wait (3 s) + response wait
  const rows = [];
  for (const [name, t] of Object.entries(tracers)) {
    await t.stop();
    const byTag = new Map();
    for (const r of t.records) {
      if (r.event !== 'imds_call') continue;
      const m = /[?&](short=\d+)$/.exec(r.request.path);
      if (m) byTag.set(m[1], [...(byTag.get(m[1]) ?? []), r]);
    }
    let recorded = 0; let named = 0; let wrong = 0; let none = 0; let dup = 0;
    for (const run of runs) {
      const recs = byTag.get(run.tag) ?? [];
      if (!recs.length) continue;
      recorded++;
      if (recs.length > 1) dup++;
      const p = recs[0].process;
      if (p.attribution === 'none') none++;
      else if (p.pid === run.pid && JSON.stringify(p.argv) === JSON.stringify(run.argv)) named++;
      else wrong++;
    }
    const st = t.lastStats ?? {};
    rows.push([name, `${recorded} / ${runs.length}`, `**${named} / ${runs.length}** (${((100 * named) / runs.length).toFixed(1)} %)`, none, wrong, dup,
      st.kernel ? `${st.kernel.events} / ${st.kernel.events_lost} / ${st.kernel.joined} / ${st.kernel.proc_fallbacks}` : '—']);
  }
  const failed = runs.filter((r) => r.exitCode !== 0).length;
  const body = [
    `${runs.length} one-shot \`curl\` processes (IMDSv1 GET, ${BATCH} in parallel per batch, ${failed} curl failures, fired in ${(firedMs / 1000).toFixed(1)} s) in the instance namespace; two tracers (\`--backend ebpf\`, \`--backend proc\`) trace the same traffic side by side. `
    + '"named" = the record carries the curl\'s own pid and its exact argv.',
    '',
    B.table(['backend', 'recorded', 'named (pid + full argv)', 'attribution none', 'wrong process', 'duplicates', 'kernel events / lost / joined / proc fallbacks'], rows),
    '',
    'bpftrace peer: could not attach on this machine — `tracepoint:sock:inet_sock_set_state` fails with "tracepoint not found" (tracefs is not mounted), `rawtracepoint:` is "Invalid probe type" in bpftrace 0.17 (Debian 12), and `kprobe:` needs /sys/kernel/tracing/kprobe_events. Its attribution cost could not be measured here (tracefs deliberately not mounted).',
  ].join('\n');
  B.record(`Short-lived callers (${runs.length} curls)`, body);
}, 600);
