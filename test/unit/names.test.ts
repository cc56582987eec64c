/** Container names from files laid out as Docker and the kubelet lay them out, and a loopback fake of the ECS agent. */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ContainerNames, namesOptions } from '../../agent/src/names/resolver.js';
import { parseDockerConfig, parsePodDir } from '../../agent/src/names/parse.js';
import type { ProcessInfo } from '../../agent/src/record.js';
import {
  DOCKER_ID, dockerConfig, ECS_ID, ECS_TASK, ECS_TASK_RESPONSE, FAKE_ECS_AGENT_SCRIPT, K8S_ID, layOutContainerFiles, POD_UID,
} from '../helpers/container-files.js';

let root = '';
let fake: ChildProcess | undefined;
let port = 0;
const p = (container: ProcessInfo['container']): ProcessInfo => ({ attribution: 'proc', pid: 1, comm: 'x', container });

beforeAll(async () => {
  root = mkdtempSync(join(tmpdir(), 'names-'));
  layOutContainerFiles(root);
  fake = spawn(process.execPath, ['-e', FAKE_ECS_AGENT_SCRIPT, '0', JSON.stringify(ECS_TASK_RESPONSE), ECS_ID], { stdio: ['ignore', 'pipe', 'inherit'] });
  const [line] = await once(fake.stdout!, 'data');
  port = Number(/listening (\d+)/.exec(String(line))![1]);
});
afterAll(() => {
  fake?.kill();
  if (root) rmSync(root, { recursive: true, force: true });
});

const resolver = (over: Record<string, string> = {}) =>
  new ContainerNames(namesOptions({ IMDS_TRACER_NAMES_ROOT: root, IMDS_TRACER_ECS_AGENT_URL: `http://127.0.0.1:${port}`, ...over }));

describe('container names', () => {
  it('Docker: the name from config.v2.json', async () => {
    const out = await resolver().enrich(p({ runtime: 'docker', id: DOCKER_ID }));
    expect(out.container).toEqual({ runtime: 'docker', id: DOCKER_ID, name: 'nightly-sync' });
  });

  it('Kubernetes: namespace and pod from /var/log/pods, the container from /var/log/containers', async () => {
    const out = await resolver().enrich(p({ runtime: 'kubernetes', id: K8S_ID, pod_uid: POD_UID }));
    expect(out.container?.k8s).toEqual({ namespace: 'payments', pod: 'api-7d4b9c-xk2lp', container: 'api' });
    // A pod known by its UID only: which of its two containers is not said.
    const podOnly = await resolver().enrich(p({ runtime: 'kubernetes', id: null, pod_uid: POD_UID }));
    expect(podOnly.container?.k8s).toEqual({ namespace: 'payments', pod: 'api-7d4b9c-xk2lp', container: null });
  });

  it('ECS: task and container from the agent\'s introspection API; cached', async () => {
    const r = resolver();
    const c = { runtime: 'ecs', id: ECS_ID, task_id: ECS_TASK };
    const out = await r.enrich(p(c));
    expect(out.container?.ecs).toEqual({ task_arn: ECS_TASK_RESPONSE.Arn, family: 'billing-worker', revision: '7', container: 'worker' });
    await r.enrich(p(c));
    expect(r.lookups).toBe(1);
  });

  it('nothing found: the record is unchanged, the miss cached for a while, the cache bounded', async () => {
    let now = 0;
    const o = { ...namesOptions({ IMDS_TRACER_NAMES_ROOT: root, IMDS_TRACER_ECS_AGENT_URL: 'off' }), cacheEntries: 2, now: () => now };
    const r = new ContainerNames(o);
    const unknown = { runtime: 'docker', id: 'f'.repeat(64) };
    expect((await r.enrich(p(unknown))).container).toEqual(unknown);
    await r.enrich(p(unknown));
    expect(r.lookups).toBe(1);
    now += o.missTtlMs;
    await r.enrich(p(unknown));
    expect(r.lookups).toBe(2);
    // The ECS agent switched off: an ECS container keeps what its cgroup said.
    expect((await r.enrich(p({ runtime: 'ecs', id: ECS_ID }))).container).toEqual({ runtime: 'ecs', id: ECS_ID });
    for (const id of ['1', '2', '3']) await r.enrich(p({ runtime: 'docker', id: id.repeat(64) }));
    expect((r as unknown as { cache: Map<string, unknown> }).cache.size).toBe(2);
  });

  it('parsers: Docker labels of dockershim and the ECS agent; pod directories', () => {
    const d = parseDockerConfig(dockerConfig(DOCKER_ID, 'k8s_api_api-1_payments_x_0', {
      'io.kubernetes.pod.namespace': 'payments', 'io.kubernetes.pod.name': 'api-1', 'io.kubernetes.container.name': 'api',
      'com.amazonaws.ecs.task-arn': 'arn:aws:ecs:us-east-1:1:task/c/t', 'com.amazonaws.ecs.container-name': 'w',
      'com.amazonaws.ecs.task-definition-family': 'f', 'com.amazonaws.ecs.task-definition-version': '2',
    }));
    expect(d).toEqual({ name: 'k8s_api_api-1_payments_x_0', k8s: { namespace: 'payments', pod: 'api-1', container: 'api' },
      ecs: { task_arn: 'arn:aws:ecs:us-east-1:1:task/c/t', family: 'f', revision: '2', container: 'w' } });
    expect(parseDockerConfig('{not json')).toBeNull();
    expect(parsePodDir(`kube-system_coredns-5d78c9869d-abcde_${POD_UID}`, POD_UID)).toEqual({ namespace: 'kube-system', pod: 'coredns-5d78c9869d-abcde' });
    expect(parsePodDir(`x_${POD_UID}`, POD_UID)).toBeNull();
  });

  it('a broken config.v2.json is a miss, never a throw', async () => {
    writeFileSync(join(root, 'var/lib/docker/containers', DOCKER_ID, 'config.v2.json'), '{"Name": "/half');
    const out = await resolver().enrich(p({ runtime: 'docker', id: DOCKER_ID }));
    expect(out.container).toEqual({ runtime: 'docker', id: DOCKER_ID });
    writeFileSync(join(root, 'var/lib/docker/containers', DOCKER_ID, 'config.v2.json'), dockerConfig(DOCKER_ID, 'nightly-sync'));
  });
});

describe('container names: the same object for the same caller', () => {
  it('enrich and enrichNow give one object per description while its names are the same; another description its own', async () => {
    const r = resolver();
    const a = p({ runtime: 'docker', id: DOCKER_ID });
    const first = await r.enrich(a);
    expect(first).not.toBe(a);
    expect(r.enrichNow(a)).toBe(first);
    expect(await r.enrich(a)).toBe(first);
    const b = p({ runtime: 'docker', id: DOCKER_ID });
    const other = r.enrichNow(b)!;
    expect(other).not.toBe(first);
    expect(other).toEqual(first);
  });

  it('names found later (a miss looked up again): the same description gets them, not the copy made before', async () => {
    let now = 0;
    const o = { ...namesOptions({ IMDS_TRACER_NAMES_ROOT: root, IMDS_TRACER_ECS_AGENT_URL: 'off' }), now: () => now };
    const r = new ContainerNames(o);
    const id = 'e'.repeat(64);
    const a = p({ runtime: 'docker', id });
    expect(await r.enrich(a)).toBe(a); // nothing found: the description as it is
    const dir = join(o.dockerRoot, 'containers', id);
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, 'config.v2.json'), dockerConfig(id, 'late-name'));
    now += o.missTtlMs;
    expect((await r.enrich(a)).container?.name).toBe('late-name');
    expect(r.enrichNow(a)?.container?.name).toBe('late-name');
  });
});
