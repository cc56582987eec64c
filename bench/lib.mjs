// Shared helpers of the benchmarks: the lab (with cleanup on exit, error and signals), the tracer
// and peers as child processes, CPU/RSS sampling from /proc, tables, and RESULTS.md.
//
// Network safety: every packet goes between the lab's two namespaces (createLab() from
// dist/lab/netns.js). Nothing here opens a socket in the root namespace.
import { spawn, spawnSync } from 'node:child_process';
import { appendFileSync, closeSync, existsSync, mkdtempSync, openSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { cpus, tmpdir, totalmem } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createInterface } from 'node:readline';

export const BENCH_DIR = dirname(fileURLToPath(import.meta.url));
export const REPO = dirname(BENCH_DIR);
export const DIST = join(REPO, 'dist');
/** The agent build run by startAgent (default: this checkout's); memory.mjs compares two. */
export let AGENT_DIST = process.env.BENCH_AGENT_DIST ?? DIST; // BENCH_AGENT_DIST: another build for scripts without --before
export let AGENT_NODE_ARGS = null; // null: the flags the agent ships with (DEFAULTS.agentNodeFlags)
/** The node binary the agent runs on (--node <path>, e.g. the runtime a release bundles); the harness keeps its own. */
export let AGENT_NODE = process.execPath;
/** Environment added to the one the build exports (DEFAULTS.agentEnv); a name set to '' is removed. */
export let AGENT_ENV = {};
export function useAgent(dist, nodeArgs = [], node = AGENT_NODE, env = {}) { AGENT_DIST = dist; AGENT_NODE_ARGS = nodeArgs; AGENT_NODE = node; AGENT_ENV = env; }
export function useAgentNode(node) { AGENT_NODE = node; }
export const RESULTS = join(BENCH_DIR, 'RESULTS.md');
export const FILTER = 'tcp port 80 and (host 169.254.169.254 or host fd00:ec2::254)';
const CLK_TCK = Number(spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).stdout.trim()) || 100;
const PAGE = Number(spawnSync('getconf', ['PAGESIZE'], { encoding: 'utf8' }).stdout.trim()) || 4096;

if (!existsSync(join(DIST, 'lab', 'netns.js'))) {
  console.error('bench: dist/ is missing: run `npm run build` first (or bash bench/run.sh)');
  process.exit(2);
}
const netns = await import(join(DIST, 'lab', 'netns.js'));
const shippedFlags = [...((await import(join(DIST, 'defaults.js'))).DEFAULTS.agentNodeFlags ?? [])];
export const { IMDS_V4, IMDS_V6, INSTANCE_V4 } = netns;

// ------------------------------------------------------------------------------------------------
// Flags

/** --seconds N (default def), --quick (divides by 6, at least 5 s). */
export function flags(def = 30) {
  const a = process.argv.slice(2);
  const get = (n) => { const i = a.indexOf(n); return i >= 0 ? a[i + 1] : undefined; };
  const quick = a.includes('--quick');
  let seconds = get('--seconds') !== undefined ? Number(get('--seconds')) : (quick ? Math.max(5, Math.round(def / 6)) : def);
  if (!(seconds > 0 && seconds <= 600)) throw new Error('--seconds must be 1..600');
  return { seconds, quick, get, has: (n) => a.includes(n), noRecord: a.includes('--no-record') };
}

// ------------------------------------------------------------------------------------------------
// Cleanup: everything registered here is undone on exit, error, SIGINT and SIGTERM.

const cleanups = [];
export function onCleanup(fn) { cleanups.push(fn); }
let cleaning = null;
export function cleanup() {
  if (!cleaning) {
    cleaning = (async () => {
      for (const fn of cleanups.splice(0).reverse()) {
        try { await fn(); } catch (e) { console.error(`bench cleanup: ${e.message}`); }
      }
    })();
  }
  return cleaning;
}
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
  process.on(sig, () => { console.error(`bench: ${sig}, cleaning up`); cleanup().finally(() => process.exit(130)); });
}
process.on('uncaughtException', (e) => { console.error(e); cleanup().finally(() => process.exit(1)); });
process.on('unhandledRejection', (e) => { console.error(e); cleanup().finally(() => process.exit(1)); });

/** Run main() with cleanup; exit with its status. A hard stop after maxSeconds bounds every script. */
export function main(fn, maxSeconds = 900) {
  const guard = setTimeout(() => {
    console.error(`bench: still running after ${maxSeconds} s, giving up`);
    cleanup().finally(() => process.exit(1));
  }, maxSeconds * 1000);
  guard.unref();
  fn().then(
    () => cleanup().then(() => process.exit(0)),
    (e) => { console.error(e?.stack ?? e); cleanup().then(() => process.exit(1)); },
  );
}

export async function lab() {
  await netns.cleanupStaleLabs().catch(() => []);
  const l = await netns.createLab({ repoRoot: REPO });
  onCleanup(() => l.destroy());
  return l;
}

export function tmp(prefix = 'imdst-bench-') {
  const d = mkdtempSync(join(tmpdir(), prefix));
  onCleanup(() => rmSync(d, { recursive: true, force: true }));
  return d;
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
/** Wall clock with sub-millisecond resolution (epoch ms). */
export const nowMs = () => performance.timeOrigin + performance.now();

// ------------------------------------------------------------------------------------------------
// Processes

/** Wait for a child to exit (SIGTERM, then SIGKILL after graceMs). */
export function stopChild(child, graceMs = 10_000, sig = 'SIGTERM') {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve(child.exitCode);
  return new Promise((resolve) => {
    const t = setTimeout(() => child.kill('SIGKILL'), graceMs);
    child.once('exit', (code) => { clearTimeout(t); resolve(code); });
    child.kill(sig);
  });
}

let lastReady = null;

/**
 * The tracer (dist/cli.js run …) spawned in the instance namespace with the build's environment and
 * flags, its stdout going to `stdout` ('pipe' or a descriptor), its stderr kept (the last ~10 KB).
 */
async function spawnAgent(l, args, stdout) {
  // The environment the installed command exports (DEFAULTS.agentEnv of the build being run; none for builds before it).
  const agentEnv = (await import(join(AGENT_DIST, 'defaults.js'))).DEFAULTS.agentEnv ?? {};
  const env = { ...process.env, ...agentEnv, ...AGENT_ENV };
  for (const [k, v] of Object.entries(env)) if (v === '') delete env[k];
  const t0 = nowMs();
  const child = l.spawn(l.instanceNs, AGENT_NODE, [...(AGENT_NODE_ARGS ?? shippedFlags), join(AGENT_DIST, 'cli.js'), 'run', ...args],
    { stdio: ['ignore', stdout, 'pipe'], env, ...(process.env.BENCH_AGENT_CWD ? { cwd: process.env.BENCH_AGENT_CWD } : {}) });
  onCleanup(() => stopChild(child, 3000));
  const a = {
    child, pid: child.pid, records: [], ready: null, readyAtMs: 0, spawnedAtMs: t0, stderr: '',
    counts: { imds_call: 0, v1: 0, v2: 0, other: 0, error: 0, notice: 0, stats: 0 },
    lastStats: null, errors: [],
  };
  child.stderr.on('data', (b) => { a.stderr += b.toString(); if (a.stderr.length > 20_000) a.stderr = a.stderr.slice(-10_000); });
  return a;
}

/**
 * The tracer (dist/cli.js run …) in the instance namespace. Records are counted as they arrive;
 * onRecord(rec, arrivalMs) sees every one. Resolves once the ready record is in. stdoutNull: as the
 * systemd unit runs it (startAgentStdoutNull).
 */
export async function startAgent(l, args, { onRecord, keep = false, readyTimeoutMs = 20_000, stdoutNull = false } = {}) {
  if (stdoutNull) return startAgentStdoutNull(l, args, readyTimeoutMs);
  const a = await spawnAgent(l, args, 'pipe');
  const { child } = a;
  let readyResolve;
  const readyP = new Promise((res, rej) => {
    readyResolve = res;
    child.once('exit', (code) => rej(new Error(`tracer exited (${code}) before ready: ${a.stderr.slice(-800)}`)));
    setTimeout(() => rej(new Error(`tracer not ready after ${readyTimeoutMs} ms: ${a.stderr.slice(-800)}`)), readyTimeoutMs).unref();
  });
  readyP.catch(() => {});
  let buf = '';
  child.stdout.on('data', (b) => {
    const at = nowMs();
    buf += b.toString();
    let nl;
    while ((nl = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, nl);
      buf = buf.slice(nl + 1);
      if (!line) continue;
      // Call records are counted from their text unless the caller wants them: a harness that parses
      // every line falls behind the agent on a loaded machine, and stdout's bound then drops lines.
      if (!keep && !onRecord && line.startsWith('{"event":"imds_call",')) {
        a.counts.imds_call++;
        if (line.includes('"imds_version":"v1"')) a.counts.v1++;
        else if (line.includes('"imds_version":"v2"')) a.counts.v2++;
        else a.counts.other++;
        continue;
      }
      let rec;
      try { rec = JSON.parse(line); } catch { a.errors.push(`unparsable: ${line.slice(0, 200)}`); continue; }
      const ev = rec.event;
      if (ev === 'imds_call') {
        a.counts.imds_call++;
        if (rec.imds_version === 'v1') a.counts.v1++;
        else if (rec.imds_version === 'v2') a.counts.v2++;
        else a.counts.other++;
      } else if (ev === 'ready') { a.ready = rec; a.readyAtMs = at; lastReady = rec; readyResolve(rec); }
      else if (ev === 'stats') { a.counts.stats++; a.lastStats = rec; }
      else if (ev === 'error') { a.counts.error++; a.errors.push(line.slice(0, 400)); }
      else if (ev === 'notice') { a.counts.notice++; a.errors.push(line.slice(0, 400)); }
      if (keep) a.records.push(rec);
      onRecord?.(rec, at);
    }
  });
  a.exited = new Promise((res) => child.once('exit', (code) => res(code)));
  a.stop = () => stopChild(child, 15_000);
  await readyP;
  return a;
}

/**
 * The tracer as the systemd unit runs it: stdout is /dev/null (`StandardOutput=null`: the agent does
 * not write it at all) and records go to the log file only. `ready` is awaited in the log file; the
 * counts come from the final stats record (the log file's last line after stop()), since rotation
 * drops old files during a long run.
 */
async function startAgentStdoutNull(l, args, readyTimeoutMs) {
  const at = args.indexOf('--log-file');
  if (at < 0) throw new Error('startAgent: stdoutNull needs --log-file');
  const logFile = args[at + 1];
  if (existsSync(logFile)) throw new Error(`startAgent: ${logFile} exists: stdoutNull needs a fresh log file`);
  const devNull = openSync('/dev/null', 'w');
  const a = await spawnAgent(l, args, devNull);
  closeSync(devNull);
  const { child, spawnedAtMs: t0 } = a;
  let exited = false;
  a.exited = new Promise((res) => child.once('exit', (code) => { exited = true; res(code); }));
  const firstLine = () => { try { return readFileSync(logFile, 'utf8').split('\n')[0]; } catch { return ''; } };
  const deadline = t0 + readyTimeoutMs;
  // The log file has no event to await from here: it is polled until its first line (`ready`) is in.
  while (!firstLine().startsWith('{"event":"ready"')) {
    if (exited) throw new Error(`tracer exited before ready: ${a.stderr.slice(-800)}`);
    if (nowMs() > deadline) throw new Error(`tracer not ready after ${readyTimeoutMs} ms: ${a.stderr.slice(-800)}`);
    await sleep(20);
  }
  a.readyAtMs = nowMs();
  a.ready = JSON.parse(firstLine());
  lastReady = a.ready;
  a.stop = async () => {
    const code = await stopChild(child, 15_000);
    const lines = readFileSync(logFile, 'utf8').trimEnd().split('\n');
    const st = JSON.parse(lines[lines.length - 1]);
    if (st.event === 'stats') {
      a.lastStats = st;
      a.counts.v1 = st.calls.v1;
      a.counts.v2 = st.calls.v2;
      a.counts.other = st.calls.other;
      a.counts.imds_call = st.calls.v1 + st.calls.v2 + st.calls.other;
    }
    return code;
  };
  return a;
}

/** Every live process in the tree rooted at pid (pid included). */
export function processTree(pid) {
  const kids = new Map();
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const s = readFileSync(`/proc/${d}/stat`, 'utf8');
      const ppid = Number(s.slice(s.lastIndexOf(')') + 2).split(' ')[1]);
      if (!kids.has(ppid)) kids.set(ppid, []);
      kids.get(ppid).push(Number(d));
    } catch { /* gone */ }
  }
  const out = [];
  const walk = (p) => { out.push(p); for (const k of kids.get(p) ?? []) walk(k); };
  walk(pid);
  return out;
}

/** CPU ticks (utime+stime, children reaped included) and RSS bytes of one process. */
export function procSample(pid) {
  try {
    const s = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = s.slice(s.lastIndexOf(')') + 2).split(' ');
    // fields after ")": state(0) ppid(1) … utime(11) stime(12) cutime(13) cstime(14) … rss(21)
    const ticks = Number(f[11]) + Number(f[12]) + Number(f[13]) + Number(f[14]);
    // RssAnon: the process's own memory (RSS also holds file pages: the node binary, shared and reclaimable)
    let anon = 0;
    try { anon = Number(/RssAnon:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? 0) * 1024; } catch { /* gone */ }
    return { ticks, rss: Number(f[21]) * PAGE, anon };
  } catch { return { ticks: 0, rss: 0, anon: 0 }; }
}

/** Sum over the process tree (the agent has a child: the eBPF loader). */
export function treeSample(pid) {
  let ticks = 0; let rss = 0; let anon = 0; const per = {};
  for (const p of processTree(pid)) {
    const s = procSample(p);
    ticks += s.ticks; rss += s.rss; anon += s.anon;
    let comm = '?';
    try { comm = readFileSync(`/proc/${p}/comm`, 'utf8').trim(); } catch { /* gone */ }
    per[p] = { ...s, comm };
  }
  return { ticks, rss, anon, t: nowMs(), per };
}

/**
 * Sample a process tree every intervalMs; stop() gives CPU % of one core over the window and RSS
 * (max and last, whole tree and the root process alone).
 */
export function cpuMeter(pid, intervalMs = 500) {
  const first = treeSample(pid);
  let last = first; let maxRss = first.rss; let maxRootRss = procSample(pid).rss; let maxAnon = first.anon;
  const maxAnonBy = {};
  const maxRssBy = {};
  const timer = setInterval(() => {
    const s = treeSample(pid);
    if (s.rss > 0) {
      last = s; maxRss = Math.max(maxRss, s.rss); maxRootRss = Math.max(maxRootRss, procSample(pid).rss); maxAnon = Math.max(maxAnon, s.anon);
      for (const v of Object.values(s.per)) {
        maxAnonBy[v.comm] = Math.max(maxAnonBy[v.comm] ?? 0, v.anon);
        maxRssBy[v.comm] = Math.max(maxRssBy[v.comm] ?? 0, v.rss);
      }
    }
  }, intervalMs);
  return {
    stop() {
      clearInterval(timer);
      const s = treeSample(pid);
      if (s.rss > 0) last = s;
      const secs = (last.t - first.t) / 1000;
      const byComm = {};
      for (const [p, v] of Object.entries(last.per)) {
        const d = (v.ticks - (first.per[p]?.ticks ?? 0)) / CLK_TCK / secs * 100;
        byComm[v.comm] = (byComm[v.comm] ?? 0) + d;
      }
      return {
        byComm, split: Object.entries(byComm).map(([k, v]) => `${k} ${v.toFixed(1)}`).join(', '),
        cpuPct: secs > 0 ? ((last.ticks - first.ticks) / CLK_TCK / secs) * 100 : NaN,
        seconds: secs, rssMaxMB: maxRss / 2 ** 20, rssLastMB: last.rss / 2 ** 20, rootRssMaxMB: maxRootRss / 2 ** 20,
        anonMaxMB: maxAnon / 2 ** 20,
        anonSplit: Object.entries(maxAnonBy).map(([k, v]) => `${k} ${(v / 2 ** 20).toFixed(0)}`).join(', '),
        /** RSS max of each process (file pages too: node's code, the helper's mmap'd capture ring). */
        rssSplit: Object.entries(maxRssBy).map(([k, v]) => `${k} ${(v / 2 ** 20).toFixed(0)}`).join(', '),
      };
    },
  };
}

/** tcpdump with the agent's filter in a namespace; resolves once it listens. */
export async function startTcpdump(l, ns, file, iface = 'any') {
  const t0 = nowMs();
  const child = l.spawn(ns, 'tcpdump', ['-i', iface, '-n', '-Z', 'root', '-w', file, FILTER], { stdio: ['ignore', 'ignore', 'pipe'] });
  onCleanup(() => stopChild(child, 3000));
  let err = '';
  await new Promise((res, rej) => {
    const to = setTimeout(() => rej(new Error(`tcpdump did not start: ${err}`)), 10_000);
    child.stderr.on('data', (b) => {
      err += b.toString();
      if (/listening on/.test(err)) { clearTimeout(to); res(); }
    });
    child.once('exit', (c) => { clearTimeout(to); rej(new Error(`tcpdump exited ${c}: ${err}`)); });
  });
  return { child, pid: child.pid, readyMs: nowMs() - t0, stderr: () => err, stop: () => stopChild(child, 5000, 'SIGINT') };
}

/**
 * Frames of a classic pcap file (micro- or nanosecond): [{tsMs, data}] (data = the captured bytes).
 */
export function readPcap(file) {
  const b = readFileSync(file);
  if (b.length < 24) return [];
  const magic = b.readUInt32LE(0);
  const le = magic === 0xa1b2c3d4 || magic === 0xa1b23c4d;
  const nano = magic === 0xa1b23c4d || magic === 0x4d3cb2a1;
  const u32 = (o) => (le ? b.readUInt32LE(o) : b.readUInt32BE(o));
  const out = [];
  let o = 24;
  while (o + 16 <= b.length) {
    const sec = u32(o); const frac = u32(o + 4); const incl = u32(o + 8);
    const data = b.subarray(o + 16, o + 16 + incl);
    out.push({ tsMs: sec * 1000 + (nano ? frac / 1e6 : frac / 1e3), data });
    o += 16 + incl;
  }
  return out;
}

// ------------------------------------------------------------------------------------------------
// Numbers and tables

export function percentile(sorted, p) {
  if (!sorted.length) return NaN;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[i];
}
export const median = (xs) => percentile([...xs].sort((x, y) => x - y), 50);
export const fmt = (x, d = 1) => (x === null || x === undefined || Number.isNaN(x) ? 'n/a' : Number(x).toFixed(d));

export function table(headers, rows) {
  const lines = [`| ${headers.join(' | ')} |`, `| ${headers.map(() => '---').join(' | ')} |`];
  for (const r of rows) lines.push(`| ${r.map((c) => String(c)).join(' | ')} |`);
  return lines.join('\n');
}

export function machine() {
  const git = (args) => spawnSync('git', ['-C', REPO, ...args], { encoding: 'utf8' }).stdout?.trim() ?? '';
  const commit = git(['rev-parse', '--short', 'HEAD']) || 'unknown';
  const dirty = git(['status', '--porcelain', '--untracked-files=no']) ? ' (working tree has uncommitted changes)' : '';
  const kernel = readFileSync('/proc/sys/kernel/osrelease', 'utf8').trim();
  return {
    date: new Date().toISOString().replace(/\.\d+Z$/, 'Z'),
    nproc: cpus().length,
    memGiB: (totalmem() / 2 ** 30).toFixed(1),
    kernel,
    cpu: cpus()[0]?.model ?? 'unknown',
    node: process.version,
    commit: commit + dirty,
  };
}

export function machineLine(m = machine()) {
  return `${m.date} · ${m.nproc} vCPU · ${m.memGiB} GiB · kernel ${m.kernel} · ${m.cpu} · Node ${m.node} · commit ${m.commit}`;
}

/** Print a section and append it to bench/RESULTS.md (unless --no-record). */
export function record(title, body, opts = {}) {
  const agent = lastReady ? ` · agent: capture \`${lastReady.capture ?? 'n/a'}\`, link ${lastReady.link_type}` : '';
  const text = `\n### ${title}\n\n_${machineLine()}${agent}_\n\n${body.trim()}\n`;
  console.log(text);
  if (!opts.noRecord && !process.argv.includes('--no-record')) appendFileSync(RESULTS, text);
}
