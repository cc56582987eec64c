/**
 * Network-namespace lab for tests: an "instance" namespace and an "imds" namespace joined by a
 * veth pair, where the imds side owns 169.254.169.254 and fd00:ec2::254. Nothing is ever added
 * to the root namespace: the veth pair is created directly inside the two namespaces.
 *
 *   instance ns  imdst-i-<id>   vi-<id>  169.254.10.2/16   fd00:ec2::2/64
 *   imds ns      imdst-m-<id>   vm-<id>  169.254.169.254/16 fd00:ec2::254/64
 *   container ns imdst-c-<id>   (addContainer) eth0 169.254.20.2/24 → br0 169.254.20.1/24 in the
 *                instance ns, MASQUERADE to 169.254.169.254; more containers (index n ≥ 1):
 *                imdst-c<n>-<id>, 169.254.20.<2+n>, on the same bridge.
 *
 * <id> is "<owner pid base36>-<4 hex>", so cleanupStaleLabs() can tell labs of dead runs from
 * labs that another live test process is still using.
 */
import { spawn as spawnChild, spawnSync, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { randomBytes, randomInt } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import type { ImdsServerOptions } from './imds-server.js';

export const NS_PREFIX = 'imdst-';
export const IMDS_V4 = '169.254.169.254';
export const IMDS_V6 = 'fd00:ec2::254';
export const INSTANCE_V4 = '169.254.10.2';
export const INSTANCE_V6 = 'fd00:ec2::2';
export const BRIDGE_V4 = '169.254.20.1';
export const CONTAINER_V4 = '169.254.20.2';
export const CONTAINER_SUBNET = '169.254.20.0/24';

/** Hidden hook through which addContainer registers its namespace with the lab. */
const ADD_NS = Symbol('imdst.addNamespace');
/** Where addContainer remembers which iptables installed the lab's MASQUERADE rule. */
const NAT_BIN = Symbol('imdst.natBinary');

export interface ExecResult {
  pid: number;
  argv: string[];
  exitCode: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

export interface RunOptions {
  /** Kill the process (SIGKILL) after this long; default 30 s. */
  timeoutMs?: number;
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  /** Written to stdin, then stdin is closed. */
  input?: string;
}

/** The stand-in's own options (documented in imds-server.ts), passed to it as flags, and the lab's. */
export interface ImdsStartOptions
  extends Pick<ImdsServerOptions, 'tokensRequired' | 'putStatus' | 'throttlePerSecond' | 'canary' | 'hopLimit' | 'keepAliveMs'> {
  /** Listen on IPv6 too (default true). */
  ipv6?: boolean;
  /** The server prints one JSON line per request on stderr (see requests()). */
  logRequests?: boolean;
  /** Give up waiting for imds_ready after this long (default 15 s). */
  readyTimeoutMs?: number;
}

/**
 * The IP TTL / hop limit the lab gives the stand-in's token answers (`hopLimit`): the stand-in cannot
 * set it on its sockets, so an iptables mangle rule in the IMDS namespace does, for the answers that
 * echo X-aws-ec2-metadata-token-ttl-seconds (token PUTs answered 200), as HttpPutResponseHopLimit does.
 */
export function hopLimitRules(hopLimit: number): Array<{ bin: string; rule: string[] }> {
  const match = ['-p', 'tcp', '--sport', '80', '-m', 'string', '--algo', 'bm', '--icase',
    '--string', 'x-aws-ec2-metadata-token-ttl-seconds'];
  return [
    { bin: 'iptables', rule: ['-t', 'mangle', '-A', 'OUTPUT', ...match, '-j', 'TTL', '--ttl-set', String(hopLimit)] },
    { bin: 'ip6tables', rule: ['-t', 'mangle', '-A', 'OUTPUT', ...match, '-j', 'HL', '--hl-set', String(hopLimit)] },
  ];
}

export interface ImdsHandle {
  proc: ChildProcess;
  pid: number;
  /** The imds_ready line. */
  ready: { event: 'imds_ready'; listen: { address: string; port: number }[]; hopLimit: number | null };
  /** Request events logged so far (needs logRequests). */
  requests(): Record<string, unknown>[];
  /** Resolves once the server has logged at least `n` requests (needs logRequests). */
  waitForRequests(n: number, timeoutMs?: number): Promise<Record<string, unknown>[]>;
  stderr(): string;
  /** SIGTERM, then SIGKILL after 5 s; resolves once the process has exited. */
  stop(): Promise<void>;
}

export interface ContainerInfo {
  ns: string;
  /** Interface inside the container ns. */
  ifname: string;
  /** Bridge port in the instance ns. */
  hostIf: string;
  bridge: string;
  address: string;
  /** Which iptables binary installed the MASQUERADE rule. */
  iptables: string;
}

export interface Lab {
  id: string;
  instanceNs: string;
  imdsNs: string;
  instanceIf: string;
  imdsIf: string;
  repoRoot: string;
  /** Run a command inside a namespace and collect its output. Never rejects on exit status. */
  exec(ns: string, cmd: string, args: string[], opts?: RunOptions): Promise<ExecResult>;
  /** Spawn a command inside a namespace (`ip netns exec` execs it: the pid is the command's). */
  spawn(ns: string, cmd: string, args: string[], opts?: SpawnOptions): ChildProcess;
  startImds(opts?: ImdsStartOptions): Promise<ImdsHandle>;
  /** Kill every spawned process, delete every namespace of the lab. Idempotent. */
  destroy(): Promise<void>;
  /** Namespaces the lab created (container ones included). */
  namespaces(): string[];
}

export interface LabOptions {
  repoRoot?: string;
}

// ---------------------------------------------------------------------------------------------
// Process helpers

/** Run a program (no shell) and collect its output. Rejects only if it cannot be started. */
export function run(cmd: string, args: string[], opts: RunOptions = {}): Promise<ExecResult> {
  return new Promise((resolve, reject) => {
    const child = spawnChild(cmd, args, {
      env: opts.env ?? process.env,
      cwd: opts.cwd,
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout!.on('data', (b: Buffer) => out.push(b));
    child.stderr!.on('data', (b: Buffer) => err.push(b));
    child.stdin!.on('error', () => {}); // the program may exit without reading stdin
    child.stdin!.end(opts.input ?? '');
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 30_000);
    child.once('error', (e) => {
      clearTimeout(timer);
      reject(new Error(`cannot run ${cmd}: ${e.message}`));
    });
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      resolve({
        pid: child.pid ?? -1,
        argv: [cmd, ...args],
        exitCode: code,
        signal,
        stdout: Buffer.concat(out).toString('utf8'),
        stderr: Buffer.concat(err).toString('utf8'),
      });
    });
  });
}

/** Run `ip ARGS`; throw "ip <what> failed: <stderr>" on a non-zero exit. */
async function ip(args: string[], what = args.slice(0, 3).join(' ')): Promise<string> {
  const r = await run('ip', args, { timeoutMs: 15_000 });
  if (r.exitCode !== 0) throw new Error(`ip ${what} failed (exit ${r.exitCode}): ${r.stderr.trim()}`);
  return r.stdout;
}

async function nsExecChecked(ns: string, cmd: string, args: string[], what: string): Promise<string> {
  const r = await run('ip', ['netns', 'exec', ns, cmd, ...args], { timeoutMs: 15_000 });
  if (r.exitCode !== 0) throw new Error(`${what} failed in ${ns} (exit ${r.exitCode}): ${r.stderr.trim()}`);
  return r.stdout;
}

function waitForExit(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => child.once('exit', () => resolve()));
}

async function killAndWait(child: ChildProcess, graceMs = 5_000): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = waitForExit(child);
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
  await exited;
  clearTimeout(timer);
}

// ---------------------------------------------------------------------------------------------
// Repository root, support check

/** The directory holding package.json of imds-tracer, from this module's location (src or dist). */
export function findRepoRoot(from = dirname(fileURLToPath(import.meta.url))): string {
  let dir = from;
  for (;;) {
    const pkg = join(dir, 'package.json');
    if (existsSync(pkg)) {
      try {
        if ((JSON.parse(readFileSync(pkg, 'utf8')) as { name?: string }).name === 'imds-tracer') return dir;
      } catch {
        /* keep looking */
      }
    }
    const up = dirname(dir);
    if (up === dir) throw new Error(`cannot find the imds-tracer repository root above ${from}`);
    dir = up;
  }
}

/** The compiled stand-in (tests need `npm run build:ts` first). */
export function imdsServerScript(repoRoot = findRepoRoot()): string {
  return join(repoRoot, 'dist', 'lab', 'imds-server.js');
}

let supportCache: { ok: boolean; reason?: string } | undefined;

/** Root and a working `ip netns`? Cached; synchronous so it can drive describe.skipIf. */
export function labSupported(): { ok: boolean; reason?: string } {
  if (supportCache) return supportCache;
  supportCache = probeSupport();
  return supportCache;
}

function probeSupport(): { ok: boolean; reason?: string } {
  if (process.platform !== 'linux') return { ok: false, reason: 'the lab needs Linux network namespaces' };
  if (typeof process.getuid === 'function' && process.getuid() !== 0) {
    return { ok: false, reason: 'the lab needs root (ip netns add)' };
  }
  // Synchronous probe: a throw-away namespace.
  const name = `${NS_PREFIX}probe-${process.pid.toString(36)}-${randomBytes(2).toString('hex')}`;
  const add = spawnSync('ip', ['netns', 'add', name], { encoding: 'utf8' });
  if (add.error) return { ok: false, reason: `iproute2 "ip" not runnable: ${add.error.message}` };
  if (add.status !== 0) return { ok: false, reason: `ip netns add failed: ${String(add.stderr).trim()}` };
  const probe = spawnSync('ip', ['netns', 'exec', name, 'ip', 'link', 'set', 'lo', 'up'], { encoding: 'utf8' });
  spawnSync('ip', ['netns', 'del', name], { encoding: 'utf8' });
  if (probe.status !== 0) return { ok: false, reason: `ip netns exec failed: ${String(probe.stderr).trim()}` };
  if (!existsSync(imdsServerScript())) {
    return { ok: false, reason: `${imdsServerScript()} missing: run npm run build:ts first` };
  }
  return { ok: true };
}

// ---------------------------------------------------------------------------------------------
// Namespace helpers

/** Names of existing namespaces. */
export async function listNamespaces(): Promise<string[]> {
  const out = await ip(['netns', 'list'], 'netns list');
  return out
    .split('\n')
    .map((l) => l.trim().split(/\s+/)[0])
    .filter((n): n is string => !!n);
}

async function killNamespaceProcesses(ns: string): Promise<void> {
  const r = await run('ip', ['netns', 'pids', ns], { timeoutMs: 10_000 });
  if (r.exitCode !== 0) return;
  for (const p of r.stdout.split(/\s+/).filter(Boolean)) {
    try {
      process.kill(Number(p), 'SIGKILL');
    } catch {
      /* already gone */
    }
  }
}

async function deleteNamespace(ns: string): Promise<void> {
  await killNamespaceProcesses(ns);
  const r = await run('ip', ['netns', 'del', ns], { timeoutMs: 15_000 });
  if (r.exitCode !== 0 && !/No such file|not found|does not exist/i.test(r.stderr)) {
    throw new Error(`ip netns del ${ns} failed: ${r.stderr.trim()}`);
  }
}

function ownerPid(ns: string): number | undefined {
  const m = /^imdst-(?:[imx]|c\d*|probe)-([0-9a-z]+)-[0-9a-f]{4}$/.exec(ns);
  return m ? parseInt(m[1], 36) : undefined;
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * Delete leftover lab namespaces of crashed runs: those whose owner process is gone (or every
 * imdst-* namespace with `all`, which would break labs of other live test processes).
 * Returns the deleted names.
 */
export async function cleanupStaleLabs(opts: { all?: boolean } = {}): Promise<string[]> {
  const stale = (await listNamespaces()).filter((ns) => {
    if (!ns.startsWith(NS_PREFIX)) return false;
    if (opts.all) return true;
    const pid = ownerPid(ns);
    return pid !== undefined && !pidAlive(pid);
  });
  for (const ns of stale) await deleteNamespace(ns);
  return stale;
}

/** Wait (bounded, polling) until a link reports operstate UP: its qdisc is then active. */
async function waitOperUp(ns: string, ifname: string, timeoutMs = 5_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const out = await ip(['-n', ns, '-j', 'link', 'show', 'dev', ifname], `link show ${ifname}`);
    const state = (JSON.parse(out) as { operstate?: string }[])[0]?.operstate;
    if (state === 'UP') return;
    if (Date.now() > deadline) throw new Error(`${ns}/${ifname} did not come up (operstate ${state})`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

// ---------------------------------------------------------------------------------------------
// The lab

export async function createLab(opts: LabOptions = {}): Promise<Lab> {
  const repoRoot = opts.repoRoot ?? findRepoRoot();
  const id = `${process.pid.toString(36)}-${randomBytes(2).toString('hex')}`;
  const instanceNs = `${NS_PREFIX}i-${id}`;
  const imdsNs = `${NS_PREFIX}m-${id}`;
  const instanceIf = `vi-${id}`;
  const imdsIf = `vm-${id}`;
  if (instanceIf.length > 15) throw new Error(`interface name too long: ${instanceIf}`);

  const created: string[] = [];
  const children = new Set<ChildProcess>();
  let destroyed = false;

  const destroy = async (): Promise<void> => {
    if (destroyed) return;
    destroyed = true;
    await Promise.all([...children].map((c) => killAndWait(c, 2_000)));
    const errors: string[] = [];
    for (const ns of [...created].reverse()) {
      try {
        await deleteNamespace(ns);
      } catch (e) {
        errors.push((e as Error).message);
      }
    }
    if (errors.length) throw new Error(`lab ${id} cleanup: ${errors.join('; ')}`);
  };

  const nsSpawn = (ns: string, cmd: string, args: string[], sopts: SpawnOptions = {}): ChildProcess => {
    if (!created.includes(ns)) throw new Error(`namespace ${ns} is not part of lab ${id}`);
    const child = spawnChild('ip', ['netns', 'exec', ns, cmd, ...args], { stdio: 'pipe', ...sopts });
    children.add(child);
    child.once('exit', () => children.delete(child));
    child.once('error', () => children.delete(child));
    return child;
  };

  const nsExec = (ns: string, cmd: string, args: string[], ropts: RunOptions = {}): Promise<ExecResult> => {
    if (!created.includes(ns)) return Promise.reject(new Error(`namespace ${ns} is not part of lab ${id}`));
    return run('ip', ['netns', 'exec', ns, cmd, ...args], ropts).then((r) => ({ ...r, argv: [cmd, ...args] }));
  };

  try {
    for (const ns of [instanceNs, imdsNs]) {
      await ip(['netns', 'add', ns], `netns add ${ns}`);
      created.push(ns);
      await ip(['-n', ns, 'link', 'set', 'lo', 'up'], `link set lo up (${ns})`);
    }
    // The pair is born inside the two namespaces: it never exists in the root namespace.
    const [a, b] = vethIndexes();
    await ip(
      ['link', 'add', 'name', instanceIf, 'index', a, 'netns', instanceNs, 'type', 'veth', 'peer', 'name', imdsIf, 'index', b, 'netns', imdsNs],
      'link add veth',
    );
    await ip(['-n', instanceNs, 'addr', 'add', `${INSTANCE_V4}/16`, 'dev', instanceIf], 'addr add (instance v4)');
    await ip(['-n', instanceNs, 'addr', 'add', `${INSTANCE_V6}/64`, 'dev', instanceIf, 'nodad'], 'addr add (instance v6)');
    await ip(['-n', imdsNs, 'addr', 'add', `${IMDS_V4}/16`, 'dev', imdsIf], 'addr add (imds v4)');
    await ip(['-n', imdsNs, 'addr', 'add', `${IMDS_V6}/64`, 'dev', imdsIf, 'nodad'], 'addr add (imds v6)');
    await ip(['-n', instanceNs, 'link', 'set', instanceIf, 'up'], 'link set up (instance)');
    await ip(['-n', imdsNs, 'link', 'set', imdsIf, 'up'], 'link set up (imds)');
    await waitOperUp(instanceNs, instanceIf);
    await waitOperUp(imdsNs, imdsIf);
  } catch (e) {
    await destroy().catch(() => {});
    throw e;
  }

  const startImds = async (sopts: ImdsStartOptions = {}): Promise<ImdsHandle> => {
    const script = imdsServerScript(repoRoot);
    if (!existsSync(script)) throw new Error(`${script} missing: run npm run build:ts first`);
    const args = [script, '--listen', IMDS_V4, '--port', '80'];
    if (sopts.ipv6 !== false) args.push('--listen', IMDS_V6);
    if (sopts.tokensRequired) args.push('--tokens-required');
    if (sopts.putStatus !== undefined) args.push('--put-status', String(sopts.putStatus));
    if (sopts.throttlePerSecond !== undefined) args.push('--throttle-per-second', String(sopts.throttlePerSecond));
    if (sopts.canary !== undefined) args.push('--canary', sopts.canary);
    if (sopts.hopLimit !== undefined) args.push('--hop-limit', String(sopts.hopLimit));
    const hopRules = sopts.hopLimit === undefined ? [] : hopLimitRules(sopts.hopLimit);
    for (const { bin, rule } of hopRules) {
      if (bin === 'ip6tables' && sopts.ipv6 === false) continue;
      await nsExecChecked(imdsNs, bin, ['-w', ...rule], `${bin} hop limit rule`);
    }
    const dropHopRules = async (): Promise<void> => {
      for (const { bin, rule } of hopRules) {
        await run('ip', ['netns', 'exec', imdsNs, bin, '-w', ...rule.map((a) => (a === '-A' ? '-D' : a))], { timeoutMs: 15_000 });
      }
    };
    if (sopts.keepAliveMs !== undefined) args.push('--keep-alive-ms', String(sopts.keepAliveMs));
    if (sopts.logRequests) args.push('--log-requests');
    const proc = nsSpawn(imdsNs, process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'] });

    let stderr = '';
    const requests: Record<string, unknown>[] = [];
    const waiters: { n: number; resolve: () => void }[] = [];
    createInterface({ input: proc.stderr! }).on('line', (line) => {
      stderr += `${line}\n`;
      if (!line.startsWith('{')) return;
      try {
        const e = JSON.parse(line) as Record<string, unknown>;
        if (e.event !== 'imds_request') return;
        requests.push(e);
        for (const w of [...waiters]) if (requests.length >= w.n) w.resolve();
      } catch {
        /* not ours */
      }
    });

    const ready = await new Promise<ImdsHandle['ready']>((resolve, reject) => {
      const timer = setTimeout(() => {
        proc.kill('SIGKILL');
        reject(new Error(`imds-server not ready after ${sopts.readyTimeoutMs ?? 15_000} ms: ${stderr.trim()}`));
      }, sopts.readyTimeoutMs ?? 15_000);
      const onExit = (code: number | null, sig: string | null): void => {
        clearTimeout(timer);
        reject(new Error(`imds-server exited before ready (code ${code}, signal ${sig}): ${stderr.trim()}`));
      };
      proc.once('exit', onExit);
      proc.once('error', (e) => {
        clearTimeout(timer);
        reject(new Error(`cannot start imds-server: ${e.message}`));
      });
      createInterface({ input: proc.stdout! }).on('line', (line) => {
        try {
          const msg = JSON.parse(line) as ImdsHandle['ready'];
          if (msg.event !== 'imds_ready') return;
          clearTimeout(timer);
          proc.off('exit', onExit);
          resolve(msg);
        } catch {
          /* ignore non-JSON output */
        }
      });
    });

    return {
      proc,
      pid: proc.pid!,
      ready,
      requests: () => [...requests],
      stderr: () => stderr,
      waitForRequests: (n, timeoutMs = 10_000) =>
        new Promise((resolve, reject) => {
          if (requests.length >= n) return resolve([...requests]);
          const timer = setTimeout(() => {
            reject(new Error(`imds-server logged ${requests.length} requests, expected ${n}`));
          }, timeoutMs);
          waiters.push({
            n,
            resolve: () => {
              clearTimeout(timer);
              resolve([...requests]);
            },
          });
        }),
      stop: async () => {
        await killAndWait(proc);
        await dropHopRules();
      },
    };
  };

  return {
    id,
    instanceNs,
    imdsNs,
    instanceIf,
    imdsIf,
    repoRoot,
    exec: nsExec,
    spawn: nsSpawn,
    startImds,
    destroy,
    namespaces: () => [...created],
    // Internal hook for addContainer.
    [ADD_NS]: (ns: string) => created.push(ns),
  } as Lab;
}

// ---------------------------------------------------------------------------------------------
// A namespace linked to nothing

/**
 * A bare namespace of the lab (loopback up, `addresses` on it), linked to no other: nothing it sends
 * reaches the instance's wire. Removed by lab.destroy().
 */
export async function addIsolated(lab: Lab, addresses: string[] = []): Promise<string> {
  const ns = `${NS_PREFIX}x-${lab.id}`;
  const register = (lab as unknown as Record<symbol, (ns: string) => void>)[ADD_NS];
  if (typeof register !== 'function') throw new Error('addIsolated needs a lab made by createLab');
  if (lab.namespaces().includes(ns)) throw new Error(`lab ${lab.id} already has an isolated namespace`);
  await ip(['netns', 'add', ns], `netns add ${ns}`);
  register(ns);
  await ip(['-n', ns, 'link', 'set', 'lo', 'up'], `link set lo up (${ns})`);
  for (const a of addresses) await ip(['-n', ns, 'addr', 'add', a, 'dev', 'lo'], `addr add ${a} (${ns})`);
  return ns;
}

/**
 * Interface indexes for a veth pair, drawn at random. Labs are built alike: with the kernel's own
 * numbering, another lab's container veth could have the very indexes of one of this lab's pairs,
 * and the agent (which links namespaces by those indexes, netns-reach.ts) would take that lab's
 * namespace for one of its own and report its connections as calls the wire did not show.
 */
function vethIndexes(): [string, string] {
  const n = 2 * randomInt(5_000, 50_000_000);
  return [String(n), String(n + 1)];
}

// ---------------------------------------------------------------------------------------------
// Container case

/** iptables binaries to try, in order (the first one that can install the rule wins). */
const IPTABLES_CANDIDATES = ['/usr/sbin/iptables', '/usr/sbin/iptables-nft', '/usr/sbin/iptables-legacy'];

/**
 * A "container" namespace behind a bridge in the instance namespace, whose traffic to the IMDS is
 * masqueraded by the instance (as Docker's default bridge does). Removed by lab.destroy().
 * `index` 0 (the default) is the first container; more containers (1, 2, …) join the same bridge.
 */
export async function addContainer(lab: Lab, opts: { index?: number } = {}): Promise<ContainerInfo> {
  const index = opts.index ?? 0;
  if (!Number.isInteger(index) || index < 0 || index > 200) throw new Error(`container index ${index} out of range 0..200`);
  const tag = index === 0 ? 'c' : `c${index}`;
  const ns = `${NS_PREFIX}${tag}-${lab.id}`;
  const hostIf = `v${tag}-${lab.id}`;
  const address = index === 0 ? CONTAINER_V4 : `169.254.20.${2 + index}`;
  const ifname = 'eth0';
  const bridge = 'br0';
  const register = (lab as unknown as Record<symbol, (ns: string) => void>)[ADD_NS];
  if (typeof register !== 'function') throw new Error('addContainer needs a lab made by createLab');
  if (lab.namespaces().includes(ns)) throw new Error(`lab ${lab.id} already has container ${index}`);
  if (hostIf.length > 15) throw new Error(`interface name too long: ${hostIf}`);
  const first = !lab.namespaces().some((n) => n.startsWith(`${NS_PREFIX}c`));

  await ip(['netns', 'add', ns], `netns add ${ns}`);
  register(ns);
  const inst = lab.instanceNs;
  await ip(['-n', ns, 'link', 'set', 'lo', 'up'], `link set lo up (${ns})`);
  if (first) {
    await ip(['-n', inst, 'link', 'add', bridge, 'type', 'bridge'], 'link add bridge');
    await ip(['-n', inst, 'addr', 'add', `${BRIDGE_V4}/24`, 'dev', bridge], 'addr add (bridge)');
    await ip(['-n', inst, 'link', 'set', bridge, 'up'], 'link set bridge up');
  }
  const [a, b] = vethIndexes();
  await ip(
    ['link', 'add', 'name', hostIf, 'index', a, 'netns', inst, 'type', 'veth', 'peer', 'name', ifname, 'index', b, 'netns', ns],
    'link add container veth',
  );
  await ip(['-n', inst, 'link', 'set', hostIf, 'master', bridge], 'link set master bridge');
  await ip(['-n', inst, 'link', 'set', hostIf, 'up'], 'link set up (bridge port)');
  await ip(['-n', ns, 'addr', 'add', `${address}/24`, 'dev', ifname], 'addr add (container)');
  await ip(['-n', ns, 'link', 'set', ifname, 'up'], 'link set up (container)');
  await ip(['-n', ns, 'route', 'add', 'default', 'via', BRIDGE_V4], 'route add default (container)');
  await nsExecChecked(inst, 'sysctl', ['-q', '-w', 'net.ipv4.ip_forward=1'], 'sysctl ip_forward');

  const errors: string[] = [];
  let iptables = first ? '' : (lab as unknown as { [NAT_BIN]?: string })[NAT_BIN] ?? '';
  for (const bin of first ? IPTABLES_CANDIDATES : []) {
    if (!existsSync(bin)) continue;
    const rule = ['-t', 'nat', '-A', 'POSTROUTING', '-s', CONTAINER_SUBNET, '-d', `${IMDS_V4}/32`, '-j', 'MASQUERADE'];
    const r = await run('ip', ['netns', 'exec', inst, bin, '-w', ...rule], { timeoutMs: 15_000 });
    if (r.exitCode === 0) {
      iptables = bin;
      break;
    }
    errors.push(`${bin}: ${r.stderr.trim()}`);
  }
  if (!iptables) throw new Error(`iptables MASQUERADE failed in ${inst}: ${errors.join('; ')}`);
  (lab as unknown as { [NAT_BIN]?: string })[NAT_BIN] = iptables;

  await waitOperUp(ns, ifname);
  await waitOperUp(inst, hostIf);
  await waitOperUp(inst, bridge);
  return { ns, ifname, hostIf, bridge, address, iptables };
}
