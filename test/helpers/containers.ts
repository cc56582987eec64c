/**
 * "Containers" for lab tests, as Docker makes them: a process in a network namespace behind the
 * lab's bridge (netns.ts addContainer) that also sits in a Docker-named cgroup scope
 * (`…/docker-<64 hex>.scope`). The scopes live under one cgroup the test creates and removes.
 */
import { mkdirSync, readFileSync, rmdirSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { cgroup2Mount } from '../../agent/src/attribution/ebpf/cgroup-paths.js';
import type { Lab } from '../../lab/netns.js';
import { clientEnv, type ClientRun } from './clients.js';

export interface DockerScope {
  /** The 64-hex container id the scope is named after. */
  id: string;
  dir: string;
}

export interface DockerScopes {
  scopes: DockerScope[];
  /** Remove the scopes and their parent (they must be empty: their processes exited). */
  remove(): void;
}

/** n Docker-named scopes under a fresh cgroup `imdst-<lab id>` at the cgroup2 root. */
export function makeDockerScopes(lab: Lab, n: number): DockerScopes {
  const mount = cgroup2Mount(readFileSync('/proc/self/mountinfo', 'utf8'));
  if (!mount) throw new Error('no cgroup2 mount: container cgroups cannot be made');
  const parent = join(mount, `imdst-${lab.id}`);
  const scopes = Array.from({ length: n }, () => {
    const id = randomBytes(32).toString('hex');
    const dir = join(parent, `docker-${id}.scope`);
    mkdirSync(dir, { recursive: true });
    return { id, dir };
  });
  return {
    scopes,
    remove: () => {
      for (const d of [...scopes.map((s) => s.dir), parent]) {
        try { rmdirSync(d); } catch { /* already gone */ }
      }
    },
  };
}

/**
 * Run a command in a namespace and a cgroup scope, as a container runtime does: the process joins the
 * scope, then execs the program (so its pid and argv are the program's). `ip netns exec` remounts
 * /sys, so cgroup.procs is written from here.
 */
export function runInScope(lab: Lab, ns: string, scope: DockerScope, cmd: string, args: string[],
  timeoutMs = 30_000): Promise<ClientRun> {
  return new Promise((resolve, reject) => {
    const child = lab.spawn(ns, 'sh', ['-c', 'read go && exec "$@"', 'sh', cmd, ...args],
      { stdio: ['pipe', 'pipe', 'pipe'], env: clientEnv(), cwd: lab.repoRoot });
    let stdout = '';
    let stderr = '';
    child.stdout!.on('data', (b: Buffer) => { stdout += b.toString(); });
    child.stderr!.on('data', (b: Buffer) => { stderr += b.toString(); });
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.once('error', (e) => { clearTimeout(timer); reject(e); });
    child.once('close', (code) => {
      clearTimeout(timer);
      resolve({ pid: child.pid as number, argv: [cmd, ...args], exitCode: code, stdout, stderr });
    });
    try {
      writeFileSync(join(scope.dir, 'cgroup.procs'), String(child.pid));
    } catch (e) {
      child.kill('SIGKILL');
      reject(e);
      return;
    }
    child.stdin!.end('go\n');
  });
}
