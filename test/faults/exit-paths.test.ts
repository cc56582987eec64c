/**
 * How the agent ends. SIGTERM during a burst writes every request already seen; users,
 * flags and privileges that are wrong get one clear sentence and a documented exit status.
 */
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLab, labSupported, IMDS_V4, type ImdsHandle, type Lab } from '../../lab/netns.js';
import { startTracer } from '../../lab/traced.js';
import { ROOT } from '../../agent/src/paths.js';
import { stageBuild } from '../helpers/staged.js';
import { CLI } from '../helpers/repo.js';

const support = labSupported();

describe('exit statuses and messages', () => {
  const run = (args: string[]) => spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', timeout: 20_000 });

  it.each([
    [['run', '--duration', 'soon'], /--duration must be a positive whole number/],
    [['run', '--backend', 'magic'], /Allowed choices are auto, ebpf, proc/],
    [['run', '--no-such-flag'], /unknown option '--no-such-flag'/],
    [['run', '--scrub-word', 'a|b'], /--scrub-word takes a word of letters, digits/],
    [['fly'], /unknown command 'fly'|too many arguments/],
  ])('bad usage %j: exit 2, one clear message', (args, message) => {
    const r = run(args as string[]);
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(message);
    expect(r.stdout).toBe('');
  });

  it.skipIf(process.getuid?.() !== 0)('not root and no CAP_NET_RAW: exit 2, one sentence', () => {
    // nobody may not be able to enter the checkout (a clone under /root): it runs a readable copy.
    const staged = stageBuild(ROOT);
    try {
      const r = spawnSync('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', process.execPath, staged.cli, 'run', '--no-log-file'],
        { encoding: 'utf8', timeout: 20_000 });
      expect(r.stderr.trim()).toBe('imds-tracer: capturing packets needs root or CAP_NET_RAW; run it with sudo.');
      expect(r.status).toBe(2);
    } finally {
      staged.remove();
    }
  });

  it.skipIf(process.getuid?.() !== 0)('a log file that cannot be opened: exit 1, one sentence', () => {
    const r = run(['run', '--log-file', '/proc/version/calls.jsonl', '--backend', 'proc']);
    expect(r.status).toBe(1);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toMatch(/^imds-tracer: cannot open log file \/proc\/version\/calls\.jsonl: /);
  });

  it('--version and --help exit 0', () => {
    expect(run(['--version']).status).toBe(0);
    const help = run(['run', '--help']);
    expect(help.status).toBe(0);
    expect(help.stdout).toMatch(/--include-v2/);
  });
});

describe.skipIf(!support.ok)(`SIGTERM during a burst${support.ok ? '' : ` (skipped: ${support.reason})`}`, () => {
  let lab: Lab;
  let imds: ImdsHandle;
  beforeAll(async () => {
    lab = await createLab();
    imds = await lab.startImds({ logRequests: true });
  });
  afterAll(async () => { await lab?.destroy(); });

  it('writes every request already seen to the log file before exiting 0', async () => {
    const log = join(mkdtempSync(join(tmpdir(), 'imdst-term-')), 'calls.jsonl');
    const tracer = await startTracer(lab, ['--log-file', log, '--stats-interval', '3600']);
    const script = `
import socket, sys
conns = []
for i in range(200):
    c = socket.create_connection((sys.argv[1], 80))
    c.sendall(b"GET /latest/meta-data/burst-%d HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n" % i)
    conns.append(c)
for c in conns: c.recv(65536)
print("answered", flush=True)
sys.stdin.read()`;
    const client = lab.spawn(lab.instanceNs, 'python3', ['-c', script, IMDS_V4], { stdio: ['pipe', 'pipe', 'inherit'] });
    await new Promise((resolve) => client.stdout!.once('data', resolve));
    await imds.waitForRequests(200, 10_000);
    const code = await tracer.stop(); // at once: records may still be waiting for attribution or in the pipe
    client.stdin!.end();
    expect(code).toBe(0);
    const recs = readFileSync(log, 'utf8').trim().split('\n').map((l) => JSON.parse(l));
    const paths = new Set(recs.filter((r) => r.event === 'imds_call' && r.request !== null).map((r) => r.request.path));
    expect(paths.size).toBe(200);
    expect(recs.at(-1).event).toBe('stats');
  });

  it('SIGTERM while tracing starts: the agent starts, then stops at once, exit 0 with its final stats', async () => {
    // The capture helper is started through a script that waits on a FIFO: the agent is surely in
    // the middle of starting (attribution up, capture not yet) when the signal comes.
    const dir = mkdtempSync(join(tmpdir(), 'imdst-early-'));
    const gate = join(dir, 'capture-gate.sh');
    const fifo = `${gate}.gate`;
    writeFileSync(gate, `#!/bin/sh\nread _ < '${fifo}'\nexec '${join(lab.repoRoot, 'native', '.output', 'imds_capture')}' "$@"\n`);
    chmodSync(gate, 0o755);
    execFileSync('mkfifo', [fifo]);
    const proc = lab.spawn(lab.instanceNs, process.execPath, [join(lab.repoRoot, 'dist', 'cli.js'), 'run', '--no-log-file', '--stats-interval', '3600'],
      { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, IMDS_TRACER_CAPTURE_HELPER: gate } });
    let out = '';
    proc.stdout!.on('data', (b: Buffer) => { out += b.toString(); });
    const exited = new Promise<[number | null, NodeJS.Signals | null]>((r) => proc.once('exit', (c, sig) => r([c, sig])));
    const fh = await open(fifo, 'w'); // opens once the script waits on it
    expect(out).toBe(''); // not ready yet
    proc.kill('SIGTERM');
    await fh.write('go\n');
    await fh.close();
    expect(await exited).toEqual([0, null]);
    const recs = out.trim().split('\n').map((l) => JSON.parse(l));
    expect(recs[0].event).toBe('ready');
    expect(recs.at(-1).event).toBe('stats');
    rmSync(dir, { recursive: true, force: true });
  });

  it('stopped while stdout\'s reader is a few KiB behind: exit 0 (not 13, "unsettled top-level await") and every byte delivered', async () => {
    // stdout is a pipe whose reader reads nothing until told: the pipe takes 64 KiB, the rest waits
    // in the agent (less than a stream's 16 KiB highWaterMark: no 'drain' will come).
    const dir = mkdtempSync(join(tmpdir(), 'imdst-behind-'));
    const log = join(dir, 'calls.jsonl');
    const reader = 'import os,sys,time\nwhile not os.path.exists(sys.argv[1]): time.sleep(0.01)\nopen(sys.argv[2],"wb").write(sys.stdin.buffer.read())\n';
    const script = `{ "$NODE" "$CLI" run --log-file "$D/calls.jsonl" --stats-interval 3600 --backend proc & echo $! > "$D/pid"; wait $!; echo $? > "$D/code"; } | python3 -c "$READER" "$D/go" "$D/out"`;
    const sh = lab.spawn(lab.instanceNs, 'bash', ['-c', script], { stdio: ['ignore', 'ignore', 'pipe'],
      env: { ...process.env, NODE: process.execPath, CLI: join(lab.repoRoot, 'dist', 'cli.js'), D: dir, READER: reader } });
    let err = '';
    sh.stderr!.on('data', (b: Buffer) => { err += b.toString(); });
    const done = new Promise((r) => sh.once('exit', r));
    const logText = (): string => { try { return readFileSync(log, 'utf8'); } catch { return ''; } };
    const until = async (what: string, ok: () => boolean): Promise<void> => {
      for (let i = 0; i < 1000 && !ok(); i++) await new Promise((r) => setTimeout(r, 20));
      if (!ok()) throw new Error(`${what} did not happen: ${err}`);
    };
    await until('ready', () => logText().includes('"event":"ready"'));
    // One request at a time until what the agent wrote is a few KiB past the pipe's 64 KiB.
    const client = lab.spawn(lab.instanceNs, 'python3', ['-c',
      'import http.client,sys\nc=http.client.HTTPConnection(sys.argv[1],80)\nfor i,_ in enumerate(sys.stdin):\n  c.request("GET","/latest/meta-data/behind-%d"%i); c.getresponse().read(); print(i,flush=True)\n', IMDS_V4],
      { stdio: ['pipe', 'pipe', 'inherit'] });
    let sent = 0;
    while (Buffer.byteLength(logText()) < 64 * 1024 + 4096) {
      const answered = new Promise((r) => client.stdout!.once('data', r));
      client.stdin!.write('\n');
      await answered;
      sent++;
      await until(`record ${sent}`, () => (logText().match(/"event":"imds_call"/g) ?? []).length >= sent);
    }
    client.stdin!.end();
    process.kill(Number(readFileSync(join(dir, 'pid'), 'utf8')), 'SIGTERM');
    // The final stats reach the log file inside RecordWriter.close(), just before it waits for stdout.
    await until('final stats', () => logText().includes('"event":"stats"'));
    writeFileSync(join(dir, 'go'), '');
    await done;
    expect(readFileSync(join(dir, 'code'), 'utf8').trim(), err).toBe('0');
    const out = readFileSync(join(dir, 'out'), 'utf8');
    expect(out).toBe(logText()); // stdout got every record the log file got, the final stats included
    expect(out.trim().split('\n').at(-1)).toMatch(/^\{"event":"stats"/);
    rmSync(dir, { recursive: true, force: true });
  });

  it('stopped while stdout\'s reader takes nothing at all: exit 0 once the exit flush gives up, the log file has every record', async () => {
    // The reader reads nothing until the agent has exited: the write in flight to the full pipe would
    // hold an agent that only set its exit status forever.
    const dir = mkdtempSync(join(tmpdir(), 'imdst-stuck-'));
    const reader = 'import os,sys,time\nwhile not os.path.exists(sys.argv[1]): time.sleep(0.01)\nopen(sys.argv[2],"wb").write(sys.stdin.buffer.read())\n';
    const script = `{ "$NODE" "$CLI" run --log-file "$D/calls.jsonl" --stats-interval 3600 --backend proc 2> "$D/err" & echo $! > "$D/pid"; wait $!; echo $? > "$D/code"; } | python3 -c "$READER" "$D/go" "$D/out"`;
    const sh = lab.spawn(lab.instanceNs, 'bash', ['-c', script], { stdio: ['ignore', 'ignore', 'pipe'],
      env: { ...process.env, NODE: process.execPath, CLI: join(lab.repoRoot, 'dist', 'cli.js'), D: dir, READER: reader } });
    const done = new Promise((r) => sh.once('exit', r));
    const text = (f: string): string => { try { return readFileSync(join(dir, f), 'utf8'); } catch { return ''; } };
    const until = async (what: string, ok: () => boolean, ms: number): Promise<void> => {
      for (let i = 0; i < ms / 20 && !ok(); i++) await new Promise((r) => setTimeout(r, 20));
      if (!ok()) throw new Error(`${what} did not happen: ${text('err')}`);
    };
    try {
      await stuckReaderStop();
    } finally { // the agent killed if it is still there, the reader let go
      try { process.kill(Number(text('pid')), 'SIGKILL'); } catch { /* exited */ }
      writeFileSync(join(dir, 'go'), '');
      await done;
      rmSync(dir, { recursive: true, force: true });
    }
    async function stuckReaderStop(): Promise<void> {
      await until('ready', () => text('calls.jsonl').includes('"event":"ready"'), 20_000);
      // Records until the pipe (64 KiB) is full and more wait in the agent.
      const client = lab.spawn(lab.instanceNs, 'python3', ['-c',
        'import http.client,sys\nc=http.client.HTTPConnection(sys.argv[1],80)\nfor i in range(int(sys.argv[2])):\n  c.request("GET","/latest/meta-data/stuck-%d-%s"%(i,"x"*200)); c.getresponse().read()\n', IMDS_V4, '300'],
        { stdio: ['ignore', 'ignore', 'inherit'] });
      await new Promise((r) => client.once('exit', r));
      await until('300 records in the log file', () => (text('calls.jsonl').match(/"event":"imds_call"/g) ?? []).length >= 300, 20_000);
      process.kill(Number(text('pid')), 'SIGTERM');
      await until('the agent\'s exit', () => text('code') !== '', 30_000); // the flush waits 5 s, then gives up
      expect(text('code').trim()).toBe('0');
      expect(text('calls.jsonl').trim().split('\n').at(-1)).toMatch(/^\{"event":"stats"/);
      expect(text('err')).toMatch(/stdout's reader did not take every record in 5000 ms at exit: \d+ bytes of records were not delivered to stdout/);
    }
  }, 90_000);
});

/**
 * How the agent is stopped for real: systemd's default KillMode sends SIGTERM to every process of
 * the unit at once (the agent and its helpers), and Ctrl-C on a terminal sends SIGINT to the whole
 * foreground process group. Either way the agent stops cleanly: exit 0, final stats, no helper left.
 */
describe.skipIf(!support.ok)(`stopped together with its helpers${support.ok ? '' : ` (skipped: ${support.reason})`}`, () => {
  let lab: Lab;
  beforeAll(async () => {
    lab = await createLab();
    await lab.startImds();
  });
  afterAll(async () => { await lab?.destroy(); });

  /** The capture helper and the eBPF loader (not a short-lived `ip` the agent may be running). */
  const helpers = (pid: number): number[] => {
    const r = spawnSync('pgrep', ['-P', String(pid), '-x', 'imds_capture|imds_connect'], { encoding: 'utf8' });
    return r.stdout.split('\n').filter(Boolean).map(Number);
  };

  it.each([
    ['SIGTERM to the agent and its helpers at once (systemd stop)', 'SIGTERM'],
    ['SIGINT to the agent and its helpers at once (Ctrl-C)', 'SIGINT'],
  ] as const)('%s: exit 0 with a final stats record', async (_name, signal) => {
    const tracer = await startTracer(lab, ['--no-log-file', '--stats-interval', '3600']);
    const agent = (await tracer.next((r) => r.event === 'ready')).pid as number;
    const children = helpers(agent);
    expect(children).toHaveLength(2);
    for (const pid of [agent, ...children]) process.kill(pid, signal);
    const code = await Promise.race([tracer.exited, new Promise((r) => setTimeout(() => r('still running after 15 s'), 15_000))]);
    if (code === 'still running after 15 s') await tracer.stop().catch(() => undefined);
    expect(code).toBe(0);
    expect(tracer.records.at(-1)?.event).toBe('stats');
    for (const pid of children) expect(() => process.kill(pid, 0)).toThrow();
  });
});

/**
 * The exit status when stdout's reader is behind at exit. The agent's entry point awaits main() at
 * the top level, and RecordWriter.close() waits for stdout's reader. A few KiB waiting (less than
 * the stream's highWaterMark) bring no 'drain' event: a wait on 'drain' (with an unref'd timer) was
 * left unsettled once the reader took them, and Node ended with exit status 13 ("unsettled
 * top-level await") instead of 0 (seen on Node 20 and 24 when a benchmark stopped a busy agent).
 * A real child: RecordWriter on its real stdout, a pipe this test stops reading until close() runs.
 */
describe('stdout read slowly at exit', () => {
  const WRITER = join(ROOT, 'dist', 'output', 'writer.js');
  const child = `
import { RecordWriter } from ${JSON.stringify(WRITER)};
const w = new RecordWriter({ stdout: process.stdout, stderr: null, logFile: null });
let n = 0;
// Until the pipe (64 KiB) is full and a line waits in the stream: less than 16 KiB waits. A line a
// turn: the writer hands a turn's lines to the stream at the turn's end.
while (process.stdout.writableLength === 0) {
  w.write({ event: 'notice', time: new Date().toISOString(), component: 'test', message: 'line ' + n++ + ' ' + 'x'.repeat(600) });
  await new Promise((resolve) => setImmediate(resolve));
}
process.stderr.write(JSON.stringify({ closing: n, waiting: process.stdout.writableLength, needDrain: process.stdout.writableNeedDrain }) + '\\n');
await w.close(30_000);
process.stderr.write(JSON.stringify({ closed: true }) + '\\n');
process.exitCode = 0;
`;

  it.skipIf(!existsSync(WRITER))('the reader catches up while the agent waits for it: exit 0, every line delivered', async () => {
    const p = spawn(process.execPath, ['--input-type=module', '-e', child], { stdio: ['ignore', 'pipe', 'pipe'] });
    p.stdout.pause();
    let out = '';
    let err = '';
    const exited = new Promise<number | null>((r) => p.once('close', (code) => r(code)));
    const closing = new Promise<Record<string, unknown>>((resolve) => {
      p.stderr.on('data', (b: Buffer) => {
        err += b.toString();
        const line = err.split('\n').find((l) => l.startsWith('{"closing"'));
        if (line) resolve(JSON.parse(line));
      });
    });
    const state = await Promise.race([closing, exited.then((): Record<string, unknown> => ({}))]);
    expect(state, err).toMatchObject({ needDrain: false });
    expect(state.waiting as number).toBeGreaterThan(0);
    expect(state.waiting as number).toBeLessThan(16 * 1024);
    p.stdout.on('data', (b: Buffer) => { out += b.toString(); });
    p.stdout.resume(); // the reader catches up while close() waits for it
    expect(await exited, err).toBe(0);
    expect(err).toContain('{"closed":true}');
    const lines = out.trim().split('\n').map((l) => JSON.parse(l));
    expect(lines).toHaveLength(state.closing as number);
    expect(lines.at(-1).message).toMatch(new RegExp(`^line ${(state.closing as number) - 1} `));
  }, 60_000);
});
