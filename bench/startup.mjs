// 5. Start-up: process start to the `ready` record, per backend (the record's startup_ms, and spawn
// → ready line measured from outside), N runs (default 10), median; peers: tcpdump (spawn → "listening
// on"), bpftrace (spawn → first output of a BEGIN-only program: it cannot attach a probe here).
//   node bench/startup.mjs [--runs 10] [--quick] [--no-record]
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import * as B from './lib.mjs';

const f = B.flags(30);
const RUNS = Number(f.get('--runs') ?? (f.quick ? 3 : 10));

function timeToOutput(cmd, args, re, timeoutMs = 30_000) {
  return new Promise((resolve) => {
    const t0 = B.nowMs();
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = ''; let ms = NaN;
    const to = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    const on = (b) => {
      out += b.toString();
      if (Number.isNaN(ms) && re.test(out)) { ms = B.nowMs() - t0; child.kill('SIGINT'); }
    };
    child.stdout.on('data', on); child.stderr.on('data', on);
    child.once('close', () => { clearTimeout(to); resolve({ ms, out }); });
  });
}

B.main(async () => {
  const l = await B.lab();
  const rows = [];
  for (const backend of ['ebpf', 'proc']) {
    const internal = []; const external = []; const load = []; const attach = [];
    for (let i = 0; i < RUNS; i++) {
      const a = await B.startAgent(l, ['--no-log-file', '--stats-interval', '3600', '--backend', backend]);
      internal.push(a.ready.startup_ms); external.push(a.readyAtMs - a.spawnedAtMs);
      if (a.ready.ebpf) { load.push(a.ready.ebpf.load_ms); attach.push(a.ready.ebpf.attach_ms); }
      if (a.ready.backend !== backend) throw new Error(`asked for ${backend}, got ${a.ready.backend}`);
      await a.stop();
    }
    rows.push([`imds-tracer --backend ${backend}`, `**${B.median(internal).toFixed(0)}**`, `**${B.median(external).toFixed(0)}**`,
      `${Math.min(...external).toFixed(0)}–${Math.max(...external).toFixed(0)}`,
      load.length ? `${B.median(load).toFixed(1)} / ${B.median(attach).toFixed(2)}` : '—']);
    console.log(`${backend}: startup_ms ${internal.join(', ')}; external ${external.map((x) => x.toFixed(0)).join(', ')}`);
  }
  const td = [];
  for (let i = 0; i < RUNS; i++) {
    const t = await B.startTcpdump(l, l.instanceNs, '/dev/null');
    td.push(t.readyMs);
    await t.stop();
  }
  rows.push(['tcpdump -i any (same filter), spawn → "listening on"', '—', B.median(td).toFixed(0), `${Math.min(...td).toFixed(0)}–${Math.max(...td).toFixed(0)}`, '—']);
  const bt = [];
  let btAttach = '';
  for (let i = 0; i < RUNS; i++) {
    const r = await timeToOutput('bpftrace', ['-e', 'BEGIN { printf("up\\n"); exit(); }'], /^up$/m);
    bt.push(r.ms);
  }
  const tp = await timeToOutput('timeout', ['20', 'bpftrace', '-e', 'tracepoint:sock:inet_sock_set_state { @[comm] = count(); } interval:s:1 { exit(); }'], /not found|Attaching \d+ probe|FATAL/);
  btAttach = (tp.out.match(/ERROR: (?!Unknown error -1)[^\n]*/) ?? [/Attaching/.test(tp.out) ? 'attached' : tp.out.trim().split('\n').pop()])[0];
  const okBt = bt.filter((x) => !Number.isNaN(x));
  rows.push(['bpftrace, BEGIN-only program (no probe attached), spawn → first output', '—', okBt.length ? B.median(okBt).toFixed(0) : 'n/a',
    okBt.length ? `${Math.min(...okBt).toFixed(0)}–${Math.max(...okBt).toFixed(0)}` : 'n/a', '—']);
  const body = [
    `${RUNS} runs each, median. imds-tracer runs in the lab's instance namespace with \`--no-log-file\` (\`node dist/cli.js run\` through \`ip netns exec\`, as the tests do); "external" = from spawn() in the harness to the ready line read from its stdout (includes \`ip netns exec\` and Node's own start).`,
    '',
    B.table(['what', 'ready.startup_ms (median)', 'spawn → ready, external (median ms)', 'range (ms)', 'eBPF load / attach ms (median)'], rows),
    '',
    `bpftrace on the same tracepoint: \`${btAttach.replace(/`/g, "'")}\` — tracefs is not mounted on this machine (and was deliberately not mounted), so bpftrace 0.17 cannot attach to tracepoint:sock:inet_sock_set_state (nor rawtracepoint:, unsupported in 0.17, nor kprobe:, which needs kprobe_events in tracefs). The BEGIN-only row is bpftrace's start-up floor (parse, codegen, load), not a comparable attach. imds-tracer attaches a raw tracepoint through libbpf, which needs no tracefs.`,
  ].join('\n');
  B.record('Start-up', body);
}, 600);
