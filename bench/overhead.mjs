// 4. Overhead: agent CPU and RSS idle; throughput of unrelated traffic (iperf3 on port 5201 through
// the same veth) with and without the agent (and with tcpdump, the peer); connect() rate with and
// without the agent, to a port the filter does not match and to port 80 of the IMDS address.
// (CPU/RSS under load: bench/throughput.mjs.)
//   node bench/overhead.mjs [--seconds 60] [--quick] [--no-record]
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import * as B from './lib.mjs';

const f = B.flags(60);
const idleSecs = f.seconds;
const iperfSecs = f.quick ? 3 : 10;
const iperfReps = f.quick ? 1 : 3;
const connSecs = f.quick ? 2 : 5;
const connReps = f.quick ? 1 : 2;

B.main(async () => {
  const l = await B.lab();
  const dir = B.tmp();
  const cc = spawnSync('cc', ['-O2', '-o', join(dir, 'connect-loop'), join(B.BENCH_DIR, 'connect-loop.c')], { encoding: 'utf8' });
  if (cc.status !== 0) throw new Error(`cc connect-loop.c: ${cc.stderr}`);
  const agentArgs = (backend) => ['--log-file', join(dir, `calls-${backend}.jsonl`), '--stats-interval', '3600', '--backend', backend];
  const sections = [];

  // --- idle --------------------------------------------------------------------------------------
  {
    const imds = await l.startImds({});
    const a = await B.startAgent(l, agentArgs('ebpf'));
    await B.sleep(2000);
    const m = B.cpuMeter(a.pid, 1000);
    await B.sleep(idleSecs * 1000);
    const r = m.stop();
    const td = await B.startTcpdump(l, l.instanceNs, join(dir, 'idle.pcap'));
    await B.sleep(1000);
    const tm = B.cpuMeter(td.pid, 1000);
    await B.sleep(Math.min(idleSecs, 20) * 1000);
    const tr = tm.stop();
    await td.stop();
    await a.stop();
    await imds.stop();
    console.log(`idle: agent ${r.cpuPct.toFixed(3)} % CPU, RSS ${r.rssLastMB.toFixed(1)} MB (node ${r.rootRssMaxMB.toFixed(1)})`);
    sections.push(`**Idle** (eBPF backend, log file in a tmpdir, no IMDS traffic, ${idleSecs} s after 2 s of settling; sampled from /proc/<pid>/stat and the tree's RSS):\n\n`
      + B.table(['process', 'CPU % of one core', 'RSS MB max (node alone)', 'RSS MB at end (with loader)'], [
        ['imds-tracer', `**${r.cpuPct.toFixed(3)}**`, `${r.rssMaxMB.toFixed(1)} (${r.rootRssMaxMB.toFixed(1)})`, r.rssLastMB.toFixed(1)],
        [`tcpdump (peer, ${Math.min(idleSecs, 20)} s)`, tr.cpuPct.toFixed(3), tr.rssMaxMB.toFixed(1), tr.rssLastMB.toFixed(1)],
      ]));
  }

  // --- iperf3 ------------------------------------------------------------------------------------
  {
    const server = l.spawn(l.imdsNs, 'iperf3', ['-s', '-p', '5201', '-B', B.IMDS_V4], { stdio: ['ignore', 'ignore', 'pipe'] });
    B.onCleanup(() => B.stopChild(server, 2000));
    await B.sleep(500);
    const results = { none: [], agent: [], tcpdump: [] };
    const cpu = { agent: [], tcpdump: [] };
    for (let rep = 0; rep < iperfReps; rep++) {
      for (const cond of ['none', 'agent', 'tcpdump']) {
        let peer = null;
        if (cond === 'agent') peer = await B.startAgent(l, agentArgs('ebpf'));
        if (cond === 'tcpdump') peer = await B.startTcpdump(l, l.instanceNs, join(dir, 'iperf.pcap'));
        const m = peer ? B.cpuMeter(peer.pid) : null;
        const r = await l.exec(l.instanceNs, 'iperf3', ['-c', B.IMDS_V4, '-p', '5201', '-t', String(iperfSecs), '-J'], { timeoutMs: (iperfSecs + 30) * 1000 });
        if (m) cpu[cond].push(m.stop().cpuPct);
        if (peer) await peer.stop();
        if (r.exitCode !== 0) throw new Error(`iperf3 client failed: ${r.stdout.slice(-300)} ${r.stderr}`);
        const j = JSON.parse(r.stdout);
        results[cond].push(j.end.sum_received.bits_per_second / 1e9);
        console.log(`iperf3 ${cond} rep ${rep}: ${(j.end.sum_received.bits_per_second / 1e9).toFixed(2)} Gbit/s`);
      }
    }
    await B.stopChild(server, 2000);
    const base = B.median(results.none);
    const rows = Object.entries(results).map(([k, xs]) => [
      k === 'none' ? 'nothing tracing' : k === 'agent' ? 'imds-tracer (eBPF)' : 'tcpdump (same filter)',
      xs.map((x) => x.toFixed(2)).join(', '), `**${B.median(xs).toFixed(2)}**`,
      k === 'none' ? '—' : `${(((B.median(xs) - base) / base) * 100).toFixed(1)} %`,
      cpu[k] ? B.fmt(B.median(cpu[k]), 2) : '—',
    ]);
    sections.push(`**Unrelated traffic**: iperf3 (one TCP stream, ${iperfSecs} s, ${iperfReps} runs per condition, interleaved) from the instance namespace to ${B.IMDS_V4}:5201 in the imds namespace — the same veth the agent captures on; the capture filter does not match it:\n\n`
      + B.table(['while running', 'Gbit/s per run', 'median Gbit/s', 'vs nothing', 'tracer CPU % (median)'], rows));
  }

  // --- connect() rate ----------------------------------------------------------------------------
  {
    const bin = join(dir, 'connect-loop');
    const results = {};
    const stats = {};
    for (let rep = 0; rep < connReps; rep++) {
      for (const port of [8080, 80]) {
        for (const cond of ['none', 'ebpf', 'proc']) {
          const server = l.spawn(l.imdsNs, bin, ['server', B.IMDS_V4, String(port), String(connSecs + 3)], { stdio: ['ignore', 'pipe', 'pipe'] });
          B.onCleanup(() => B.stopChild(server, 1000));
          await new Promise((res, rej) => { server.stdout.once('data', res); server.once('exit', (c) => rej(new Error(`listener exited ${c}`))); });
          const a = cond === 'none' ? null : await B.startAgent(l, agentArgs(cond));
          const m = a ? B.cpuMeter(a.pid) : null;
          const r = await l.exec(l.instanceNs, bin, ['client', B.IMDS_V4, String(port), String(connSecs)], { timeoutMs: (connSecs + 20) * 1000 });
          const cpuA = m?.stop();
          if (a) { await B.sleep(cond === 'none' ? 0 : 1000); await a.stop(); }
          await B.stopChild(server, 5000);
          const j = JSON.parse(r.stdout.trim());
          const key = `${port}/${cond}`;
          (results[key] ??= []).push(j.connects / j.seconds);
          if (a) stats[key] = { cpu: cpuA.cpuPct, kernel: a.lastStats?.kernel, packets: a.lastStats?.packets, flows_evicted: a.lastStats?.flows_evicted };
          console.log(`connect ${key} rep ${rep}: ${(j.connects / j.seconds).toFixed(0)}/s, failures ${j.failures}${a ? `, agent CPU ${cpuA.cpuPct.toFixed(0)} %` : ''}`);
        }
      }
    }
    const rows = [];
    for (const port of [8080, 80]) {
      const base = B.median(results[`${port}/none`]);
      for (const cond of ['none', 'ebpf', 'proc']) {
        const xs = results[`${port}/${cond}`]; const s = stats[`${port}/${cond}`];
        rows.push([
          port === 80 ? `${B.IMDS_V4}:80 (the IMDS: matched by the eBPF program and the pcap filter)` : `${B.IMDS_V4}:8080 (not matched)`,
          cond === 'none' ? 'nothing' : cond === 'ebpf' ? 'imds-tracer, eBPF backend (program loaded)' : 'imds-tracer, /proc backend (no eBPF program)',
          xs.map((x) => x.toFixed(0)).join(', '), `**${B.median(xs).toFixed(0)}**`,
          cond === 'none' ? '—' : `${(((B.median(xs) - base) / base) * 100).toFixed(1)} %`,
          s ? B.fmt(s.cpu, 0) : '—',
          s?.kernel ? `${s.kernel.events} / ${s.kernel.events_lost}` : '—',
        ]);
      }
    }
    // Kernel event capacity: paced connect loops to the IMDS port with the eBPF backend.
    const paced = [];
    for (const rate of [200, 1000, 5000]) {
      const server = l.spawn(l.imdsNs, bin, ['server', B.IMDS_V4, '80', String(connSecs + 3)], { stdio: ['ignore', 'pipe', 'pipe'] });
      B.onCleanup(() => B.stopChild(server, 1000));
      await new Promise((res, rej) => { server.stdout.once('data', res); server.once('exit', (c) => rej(new Error(`listener exited ${c}`))); });
      const a = await B.startAgent(l, agentArgs('ebpf'));
      const m = B.cpuMeter(a.pid);
      const r = await l.exec(l.instanceNs, bin, ['client', B.IMDS_V4, '80', String(connSecs), String(rate)], { timeoutMs: (connSecs + 20) * 1000 });
      const c = m.stop();
      await B.sleep(1000);
      await a.stop();
      await B.stopChild(server, 5000);
      const j = JSON.parse(r.stdout.trim());
      const k = a.lastStats?.kernel ?? {};
      paced.push([rate, (j.connects / j.seconds).toFixed(0), j.connects, `${k.events ?? '?'} / ${k.events_lost ?? '?'}`, `${k.joined ?? '?'} / ${k.proc_fallbacks ?? '?'}`, `${B.fmt(c.cpuPct, 0)} (${c.split})`]);
      console.log(`paced ${rate}/s: ${JSON.stringify(k)} cpu ${c.split}`);
    }
    sections.push(`**connect() rate**: a C loop (bench/connect-loop.c: socket, connect, close with SO_LINGER 0) in the instance namespace against a C accept loop in the imds namespace, ${connSecs} s per run, ${connReps} runs per condition (interleaved); for port 80 the IMDS stand-in is stopped and the accept loop listens on ${B.IMDS_V4}:80 instead:\n\n`
      + B.table(['destination', 'while running', 'connects/s per run', 'median', 'vs nothing', 'agent CPU %', 'kernel events / lost (last run)'], rows)
      + `\n\nKernel events at a paced connect() rate to ${B.IMDS_V4}:80 (eBPF backend, ${connSecs} s; connections carry no HTTP request, so they make no records):\n\n`
      + B.table(['target connects/s', 'achieved', 'connects', 'kernel events / lost', 'joined / proc fallbacks', 'agent CPU % (per process)'], paced));
  }

  B.record('Overhead', sections.join('\n\n'));
}, 900);
