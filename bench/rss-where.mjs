// Where the agent's resident memory goes: node's RSS accounted by mapping (/proc/<pid>/smaps), its
// /proc/<pid>/status (RssAnon/RssFile/RssShmem, threads), what node and V8 say (process.memoryUsage(),
// v8 heap and space statistics, through bench/mem-dump.mjs loaded with --import and asked by SIGUSR2),
// and which parts of the node binary are resident (/proc/<pid>/pagemap against the binary's symbols).
// Taken once idle (--idle-wait seconds after `ready`) and once during keep-alive load (--rate req/s,
// two thirds into --seconds of load).
//   node bench/rss-where.mjs [--rate 5000] [--seconds 15] [--idle-wait 5] [--node <binary>]
//        [--node-args '<flags>'] [--env 'NAME=VALUE …'] [--json FILE] [--no-record]
// --node-args defaults to the shipped flags (DEFAULTS.agentNodeFlags); --env is added to the
// environment the build exports (DEFAULTS.agentEnv); NAME= (empty) removes NAME.
import { spawnSync } from 'node:child_process';
import { closeSync, openSync, readdirSync, readFileSync, readSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import * as B from './lib.mjs';

const f = B.flags(15);
const rate = Number(f.get('--rate') ?? 5000);
const idleWaitMs = Number(f.get('--idle-wait') ?? 5) * 1000;
const node = f.get('--node') ?? process.execPath;
const { DEFAULTS } = await import(join(B.DIST, 'defaults.js'));
const nodeArgs = (f.get('--node-args') ?? DEFAULTS.agentNodeFlags.join(' ')).split(' ').filter(Boolean);
const MB = 2 ** 20;

// ---- the node binary's symbols, to say what its resident pages hold

/** Component of a (demangled) symbol name: which part of node the code or data belongs to. */
function component(name) {
  if (/^icudt\d+_dat$/.test(name)) return 'ICU data (icudt*_dat)';
  if (name.startsWith('Builtins_') || name.startsWith('v8_Default_embedded_blob')) return 'V8 embedded builtins';
  if (/^v8::internal::(compiler|maglev|turboshaft)|^v8::internal::wasm|^v8::internal::baseline/.test(name)) return 'V8 compilers and wasm';
  if (/^(v8|cppgc|heap::base)::/.test(name)) return 'V8 other';
  if (/^icu_\d+::|^u_|^ucol_|^ucnv_|^ures_|^udata_|^ubrk_|^uloc_|_\d{2}$/.test(name)) return 'ICU code';
  if (/^(ossl_|OPENSSL_|SSL_|EVP_|BN_|EC_|RSA_|X509|ASN1|CRYPTO_|ERR_|PEM_|BIO_|aes|sha|bn_|ecp_|x25519|ChaCha|Poly1305|gcm_|ossl)/i.test(name)) return 'OpenSSL';
  if (/^node::/.test(name)) return 'node core';
  if (/^uv_|^uv__/.test(name)) return 'libuv';
  if (/^(nghttp|ngtcp|nghttp3|llhttp|ada::|simdutf|simdjson|brotli|Brotli|zlib|deflate|inflate|cares|ares_|sqlite3|uvwasi|histogram|hdr_|zstd|ZSTD)/i.test(name)) return 'bundled libraries (http, zlib, brotli, c-ares, sqlite, …)';
  if (/^(std::|__gnu|__cxx|operator )/.test(name)) return 'C++ runtime';
  return 'other symbols (C, no namespace)';
}

function binarySymbols(bin) {
  const r = spawnSync('nm', ['-S', '-C', '--defined-only', bin], { encoding: 'utf8', maxBuffer: 1 << 30 });
  const syms = [];
  for (const line of r.stdout.split('\n')) {
    const m = /^([0-9a-f]+) (?:([0-9a-f]+) )?([a-zA-Z]) (.*)$/.exec(line);
    if (!m) continue;
    syms.push({ addr: parseInt(m[1], 16), size: m[2] ? parseInt(m[2], 16) : 0, name: m[4] });
  }
  return syms.sort((a, b) => a.addr - b.addr);
}

function binarySections(bin) {
  const r = spawnSync('readelf', ['-SW', bin], { encoding: 'utf8' });
  const out = [];
  for (const line of r.stdout.split('\n')) {
    const m = /\]\s+(\S+)\s+\S+\s+([0-9a-f]+)\s+[0-9a-f]+\s+([0-9a-f]+)/.exec(line);
    if (m && parseInt(m[2], 16) > 0) out.push({ name: m[1], addr: parseInt(m[2], 16), size: parseInt(m[3], 16) });
  }
  return out;
}

// ---- /proc readers

function parseSmaps(pid) {
  const maps = [];
  let cur = null;
  for (const line of readFileSync(`/proc/${pid}/smaps`, 'utf8').split('\n')) {
    const h = /^([0-9a-f]+)-([0-9a-f]+) (\S+) \S+ \S+ \d+\s*(.*)$/.exec(line);
    if (h) {
      cur = { start: parseInt(h[1], 16), end: parseInt(h[2], 16), perms: h[3], path: h[4], kb: {} };
      maps.push(cur);
      continue;
    }
    const k = /^(\w+):\s+(\d+) kB/.exec(line);
    if (k && cur) cur.kb[k[1]] = Number(k[2]);
  }
  return maps;
}

/**
 * Kinds of mapping. Anonymous ones carry no name, so: a thread stack is a read-write mapping right
 * after a 4 KiB guard (---p); a glibc malloc arena other than the main one (which is [heap]) is a
 * heap of up to 64 MiB aligned on 64 MiB (HEAP_MAX_SIZE), its unused part reserved ---p; the rest is
 * V8's heap (pages of 256 KiB), V8's code space, and large mallocs (mmap'd chunks).
 */
function classify(maps, nodePath) {
  const HEAP_MAX = 64 * MB;
  return maps.map((m, i) => {
    const prev = maps[i - 1];
    let kind;
    if (m.path === nodePath || m.path.endsWith('/node')) kind = m.perms.includes('x') ? 'node binary: code (r-x)' : m.perms.startsWith('rw') ? 'node binary: data (rw)' : 'node binary: read-only data';
    else if (m.path === '[heap]') kind = 'malloc: main arena ([heap])';
    else if (m.path === '[stack]') kind = 'main thread stack';
    else if (m.path.startsWith('[')) kind = `kernel ${m.path}`;
    else if (m.path.startsWith('/')) kind = m.path.includes('.so') ? 'shared libraries' : `file ${m.path}`;
    else if (m.perms === '---p') kind = 'reserved (---p)';
    else if (m.perms.startsWith('rw') && m.start % HEAP_MAX === 0 && m.end - m.start <= HEAP_MAX) kind = 'malloc: thread arenas';
    else if (m.perms.startsWith('rw') && prev && prev.perms === '---p' && prev.end === m.start && prev.end - prev.start === 4096 && !prev.path) kind = 'thread stacks';
    else if (m.perms.includes('x')) kind = 'anonymous executable (V8 code)';
    else kind = 'other anonymous (V8 heap, large mallocs, …)';
    return { ...m, kind };
  });
}

function statusFields(pid) {
  const s = readFileSync(`/proc/${pid}/status`, 'utf8');
  const get = (k) => Number(new RegExp(`^${k}:\\s+(\\d+)`, 'm').exec(s)?.[1] ?? NaN);
  return { VmRSS: get('VmRSS'), RssAnon: get('RssAnon'), RssFile: get('RssFile'), RssShmem: get('RssShmem'), VmSize: get('VmSize'), Threads: get('Threads') };
}

function threadNames(pid) {
  const names = {};
  for (const t of readdirSync(`/proc/${pid}/task`)) {
    try { const n = readFileSync(`/proc/${pid}/task/${t}/comm`, 'utf8').trim(); names[n] = (names[n] ?? 0) + 1; } catch { /* gone */ }
  }
  return names;
}

/** Resident pages of the node binary's mappings, by component (pagemap: bit 63 = present). */
function residentBinary(pid, maps, syms, sections) {
  const fd = openSync(`/proc/${pid}/pagemap`, 'r');
  const byComp = {}; const bySection = {};
  let si = 0;
  try {
    for (const m of maps.filter((x) => x.kind.startsWith('node binary'))) {
      const pages = (m.end - m.start) / 4096;
      const buf = Buffer.alloc(pages * 8);
      readSync(fd, buf, 0, buf.length, (m.start / 4096) * 8);
      for (let p = 0; p < pages; p++) {
        if (!(buf.readBigUInt64LE(p * 8) >> 63n)) continue;
        const a = m.start + p * 4096;
        const sec = sections.find((s) => a + 4096 > s.addr && a < s.addr + s.size)?.name ?? '(between sections)';
        bySection[sec] = (bySection[sec] ?? 0) + 4;
        // The symbol holding most of the page: the last one starting at or before its middle.
        const mid = a + 2048;
        while (si + 1 < syms.length && syms[si + 1].addr <= mid) si++;
        while (si > 0 && syms[si].addr > mid) si--;
        const s = syms[si];
        const comp = s && s.addr <= mid && (s.size === 0 || mid < s.addr + s.size + 4096) ? component(s.name) : `(no symbol: ${sec})`;
        byComp[comp] = (byComp[comp] ?? 0) + 4;
      }
    }
  } finally { closeSync(fd); }
  return { byComp, bySection };
}

function snapshot(pid, label, dumpDir, bin) {
  const maps = classify(parseSmaps(pid), bin.path);
  const byKind = {};
  for (const m of maps) {
    const k = (byKind[m.kind] ??= { n: 0, rssKB: 0, anonKB: 0, sizeKB: 0 });
    k.n++; k.rssKB += m.kb.Rss ?? 0; k.anonKB += m.kb.Anonymous ?? 0; k.sizeKB += (m.end - m.start) / 1024;
  }
  const arenas = maps.filter((m) => m.kind === 'malloc: thread arenas').length;
  const stacks = maps.filter((m) => m.kind === 'thread stacks').map((m) => m.kb.Rss ?? 0);
  const resident = residentBinary(pid, maps, bin.syms, bin.sections);
  spawnSync('kill', ['-USR2', String(pid)]);
  return { label, status: statusFields(pid), threads: threadNames(pid), byKind, arenas, stackRssKB: stacks, resident, dumpDir };
}

async function readDump(dumpDir, pid, n) {
  const file = join(dumpDir, `mem-${pid}-${n}.json`);
  for (let i = 0; i < 50; i++) {
    try { return JSON.parse(readFileSync(file, 'utf8')); } catch { await B.sleep(100); }
  }
  return null;
}

async function load(l, seconds) {
  const r = await l.exec(l.instanceNs, process.execPath,
    [join(B.BENCH_DIR, 'load.mjs'), JSON.stringify({ rate, seconds, connections: 8 })], { timeoutMs: (seconds + 60) * 1000 });
  const line = r.stdout.trim().split('\n').pop();
  if (r.exitCode !== 0 || !line) throw new Error(`load.mjs failed (${r.exitCode}): ${r.stderr.slice(-500)}`);
  return JSON.parse(line);
}

const kb = (x) => (x / 1024).toFixed(1);

function render(s, dump) {
  const lines = [`#### ${s.label}`, '', `status: VmRSS ${kb(s.status.VmRSS)} MB = RssAnon ${kb(s.status.RssAnon)} + RssFile ${kb(s.status.RssFile)} + RssShmem ${kb(s.status.RssShmem)}; threads ${s.status.Threads} (${Object.entries(s.threads).map(([k, v]) => `${k}×${v}`).join(', ')}); thread arenas ${s.arenas}; thread stacks resident ${s.stackRssKB.map((x) => `${x}`).join('/')} kB`, ''];
  lines.push(B.table(['mapping kind', 'mappings', 'RSS MB', 'of which anonymous MB', 'mapped MB'],
    Object.entries(s.byKind).sort((a, b) => b[1].rssKB - a[1].rssKB).map(([k, v]) => [k, v.n, kb(v.rssKB), kb(v.anonKB), kb(v.sizeKB)])));
  lines.push('', 'resident pages of the node binary, by what they hold:', '');
  lines.push(B.table(['part', 'resident MB'], Object.entries(s.resident.byComp).sort((a, b) => b[1] - a[1]).map(([k, v]) => [k, kb(v)])));
  lines.push('', B.table(['ELF section', 'resident MB'], Object.entries(s.resident.bySection).sort((a, b) => b[1] - a[1]).map(([k, v]) => [k, kb(v)])));
  if (dump) {
    const mu = dump.memoryUsage; const h = dump.heap;
    lines.push('', `process.memoryUsage(): rss ${(mu.rss / MB).toFixed(1)}, heapTotal ${(mu.heapTotal / MB).toFixed(1)}, heapUsed ${(mu.heapUsed / MB).toFixed(1)}, external ${(mu.external / MB).toFixed(1)}, arrayBuffers ${(mu.arrayBuffers / MB).toFixed(1)} MB; V8: total_physical_size ${(h.total_physical_size / MB).toFixed(1)}, malloced_memory ${(h.malloced_memory / MB).toFixed(1)} (peak ${(h.peak_malloced_memory / MB).toFixed(1)}), external_memory ${(h.external_memory / MB).toFixed(1)}, heap_size_limit ${(h.heap_size_limit / MB).toFixed(0)} MB`, '');
    lines.push(B.table(['V8 space', 'size MB', 'used MB', 'physical MB'], dump.spaces.map((sp) => [sp.space_name, (sp.space_size / MB).toFixed(2), (sp.space_used_size / MB).toFixed(2), (sp.physical_space_size / MB).toFixed(2)])));
  }
  return lines.join('\n');
}

B.main(async () => {
  const bin = { path: node };
  bin.syms = binarySymbols(node);
  bin.sections = binarySections(node);
  const l = await B.lab();
  const dir = B.tmp();
  const env = { MEM_DUMP_DIR: dir };
  for (const kv of (f.get('--env') ?? '').split(' ').filter(Boolean)) { const i = kv.indexOf('='); env[kv.slice(0, i)] = kv.slice(i + 1); }
  B.useAgent(B.DIST, [...nodeArgs, `--import=${join(B.BENCH_DIR, 'mem-dump.mjs')}`], node, env);
  const imds = await l.startImds({ logRequests: false });
  const agent = await B.startAgent(l, ['--include-v2', '--log-file', join(dir, 'calls.jsonl'), '--stats-interval', '3600']);
  await B.sleep(idleWaitMs);
  const idle = snapshot(agent.pid, `idle, ${idleWaitMs / 1000} s after ready`, dir, bin);
  const idleDump = await readDump(dir, agent.pid, 0);
  const m = B.cpuMeter(agent.pid, 250);
  const loading = load(l, f.seconds);
  await B.sleep(f.seconds * 1000 * 2 / 3);
  const busy = snapshot(agent.pid, `${rate} req/s keep-alive, ${Math.round(f.seconds * 2 / 3)} s into the load`, dir, bin);
  const busyDump = await readDump(dir, agent.pid, 1);
  const res = await loading;
  const r = m.stop();
  await agent.stop();
  await imds.stop();
  const achieved = (res.v1.responses + res.v2.responses) / res.v1.duration;
  if (f.get('--json')) writeFileSync(f.get('--json'), JSON.stringify({ idle, idleDump, busy, busyDump, cpu: r, achieved }, null, 1));
  const body = [
    `node ${spawnSync(node, ['--version'], { encoding: 'utf8' }).stdout.trim()} \`${nodeArgs.join(' ')}\`, env ${JSON.stringify({ ...DEFAULTS.agentEnv, ...env, MEM_DUMP_DIR: undefined })}; load ${achieved.toFixed(0)} req/s, tree CPU ${r.cpuPct.toFixed(1)} %, tree RSS max ${r.rssMaxMB.toFixed(0)} MB (${r.rssSplit}).`,
    '', render(idle, idleDump), '', render(busy, busyDump),
  ].join('\n');
  B.record('Where node\'s RSS goes (smaps, status, V8)', body);
}, 600);
