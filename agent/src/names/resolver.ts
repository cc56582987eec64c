/**
 * Container names for a caller (Docker name, Kubernetes namespace/pod/container, ECS task and
 * container), looked up from the files Docker and the kubelet write and from the ECS agent's
 * introspection API (127.0.0.1:51678; a short time-out). Every lookup is cached per container id,
 * misses for a while too, in a bounded map (oldest out first). Never throws: what cannot be found
 * is left out.
 */
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { ContainerInfo, ProcessInfo } from '../record.js';
import { DEFAULTS } from '../defaults.js';
import { parseContainerLogName, parseDockerConfig, parseEcsTask, parsePodDir, type EcsNames, type K8sNames } from './parse.js';

export interface NamesOptions {
  dockerRoot: string;
  podsLogRoot: string;
  containersLogRoot: string;
  /** The ECS agent's introspection endpoint, or null to never ask. */
  ecsAgentUrl: string | null;
  ecsTimeoutMs: number;
  cacheEntries: number;
  missTtlMs: number;
  now?: () => number;
}

/** The defaults, with the test/packaging overrides: IMDS_TRACER_NAMES_ROOT (a prefix for the file
 * roots) and IMDS_TRACER_ECS_AGENT_URL (`off` never asks). */
export function namesOptions(env: NodeJS.ProcessEnv = process.env): NamesOptions {
  const root = env.IMDS_TRACER_NAMES_ROOT ?? '';
  const d = DEFAULTS.names;
  const url = env.IMDS_TRACER_ECS_AGENT_URL ?? d.ecsAgentUrl;
  return {
    dockerRoot: join(root || '/', d.dockerRoot), podsLogRoot: join(root || '/', d.podsLogRoot),
    containersLogRoot: join(root || '/', d.containersLogRoot),
    ecsAgentUrl: url === 'off' ? null : url, ecsTimeoutMs: d.ecsTimeoutMs, cacheEntries: d.cacheEntries, missTtlMs: d.missTtlMs,
  };
}

type Names = Pick<ContainerInfo, 'name' | 'k8s' | 'ecs'>;

const namesKey = (c: ContainerInfo): string => `${c.id ?? ''}|${c.pod_uid ?? ''}`;

function withNames(p: ProcessInfo, c: ContainerInfo, names: Names): ProcessInfo {
  if (!names.name && !names.k8s && !names.ecs) return p;
  return { ...p, container: { ...c, ...names } };
}

export class ContainerNames {
  private readonly cache = new Map<string, { at: number; names: Names; complete: boolean }>();
  private readonly inflight = new Map<string, Promise<Names>>();
  /**
   * Each description with its names, by description and names: a caller's calls get the same object
   * again (as they get the same description from attribution), which the record path remembers its
   * redacted copy and its SDK answer by.
   */
  private readonly named = new WeakMap<ProcessInfo, { names: Names; out: ProcessInfo }>();
  lookups = 0;

  constructor(private readonly o: NamesOptions) {}

  /** The caller with its container's names added (a copy; the input is not changed). */
  async enrich(p: ProcessInfo): Promise<ProcessInfo> {
    const c = p.container;
    if (!c) return p;
    return this.withNamesOnce(p, c, await this.lookup(namesKey(c), c));
  }

  /** What enrich(p) would give when it needs no look-up (no container, or its names cached); else undefined. */
  enrichNow(p: ProcessInfo): ProcessInfo | undefined {
    const c = p.container;
    if (!c) return p;
    const hit = this.fresh(namesKey(c));
    return hit ? this.withNamesOnce(p, c, hit) : undefined;
  }

  /** withNames(p, c, names), the same object as last time for the same p and names. */
  private withNamesOnce(p: ProcessInfo, c: ContainerInfo, names: Names): ProcessInfo {
    const last = this.named.get(p);
    if (last !== undefined && last.names === names) return last.out;
    const out = withNames(p, c, names);
    this.named.set(p, { names, out });
    return out;
  }

  /** Cached names still good: complete ones, or a miss younger than missTtlMs. */
  private fresh(key: string): Names | undefined {
    const hit = this.cache.get(key);
    if (hit && (hit.complete || (this.o.now ?? Date.now)() - hit.at < this.o.missTtlMs)) return hit.names;
    return undefined;
  }

  private async lookup(key: string, c: ContainerInfo): Promise<Names> {
    const now = (this.o.now ?? Date.now)();
    const hit = this.fresh(key);
    if (hit) return hit;
    const running = this.inflight.get(key);
    if (running) return running;
    const job = this.find(c).then(({ names, complete }) => {
      this.cache.delete(key);
      this.cache.set(key, { at: now, names, complete });
      while (this.cache.size > this.o.cacheEntries) this.cache.delete(this.cache.keys().next().value as string);
      return names;
    }).finally(() => this.inflight.delete(key));
    this.inflight.set(key, job);
    return job;
  }

  /** complete: every source that could answer did (a miss is retried after missTtlMs). */
  private async find(c: ContainerInfo): Promise<{ names: Names; complete: boolean }> {
    this.lookups++;
    const names: Names = {};
    let complete = true;
    const id = c.id && /^[0-9a-f]{64}$/.test(c.id) ? c.id : null;
    if (id) {
      const text = await readFile(join(this.o.dockerRoot, 'containers', id, 'config.v2.json'), 'utf8').catch(() => null);
      const d = text ? parseDockerConfig(text) : null;
      if (d?.name) names.name = d.name;
      if (d?.k8s) names.k8s = d.k8s;
      if (d?.ecs) names.ecs = d.ecs;
    }
    if (!names.k8s && c.pod_uid) {
      const k = await this.kubelet(c.pod_uid, id);
      if (k) names.k8s = k; else complete = false;
    }
    if (!names.ecs && id && c.runtime === 'ecs' && this.o.ecsAgentUrl) {
      const e = await this.ecs(id);
      if (e) names.ecs = e; else complete = false;
    }
    if (id && !names.name && !names.k8s && !names.ecs) complete = false;
    return { names, complete };
  }

  private async kubelet(podUid: string, id: string | null): Promise<K8sNames | null> {
    const entries = await readdir(this.o.podsLogRoot).catch(() => [] as string[]);
    for (const e of entries) {
      const pod = parsePodDir(e, podUid);
      if (!pod) continue;
      let container: string | null = null;
      if (id) {
        const logs = await readdir(this.o.containersLogRoot).catch(() => [] as string[]);
        for (const l of logs) container ??= parseContainerLogName(l, id, pod.pod, pod.namespace);
      }
      if (!container) {
        const dirs = await readdir(join(this.o.podsLogRoot, e), { withFileTypes: true }).catch(() => []);
        const names = dirs.filter((x) => x.isDirectory()).map((x) => x.name);
        if (names.length === 1) container = names[0];
      }
      return { ...pod, container };
    }
    return null;
  }

  private async ecs(id: string): Promise<EcsNames | null> {
    try {
      const res = await fetch(`${this.o.ecsAgentUrl}/v1/tasks?dockerid=${id}`, { signal: AbortSignal.timeout(this.o.ecsTimeoutMs) });
      if (!res.ok) return null;
      return parseEcsTask(await res.text(), id);
    } catch {
      return null;
    }
  }
}
