/**
 * Names a person recognises, end to end: real callers in cgroups named as Docker, the kubelet
 * (containerd) and the ECS agent name them, the files Docker and the kubelet write laid out under a
 * temp root (IMDS_TRACER_NAMES_ROOT), a fake of the ECS agent's introspection API on the lab
 * namespace's loopback. The agent (eBPF backend) adds the names to process.container, and the live
 * table shows them.
 */
import { spawnSync, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdirSync, mkdtempSync, readFileSync, rmdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLab, labSupported, IMDS_V4, type Lab } from '../../lab/netns.js';
import { attachTracer, type TracerProcess } from '../../lab/traced.js';
import { cgroup2Mount } from '../../agent/src/attribution/ebpf/cgroup-paths.js';
import { validate } from '../../agent/src/schema.js';
import { formatLive } from '../../agent/src/format/live.js';
import {
  DOCKER_ID, ECS_ID, ECS_TASK, ECS_TASK_RESPONSE, FAKE_ECS_AGENT_SCRIPT, K8S_ID, layOutContainerFiles, POD_UID,
} from '../helpers/container-files.js';

const support = labSupported();
type Rec = Record<string, any>;

describe.skipIf(!support.ok)(`container names${support.ok ? '' : ` (skipped: ${support.reason})`}`, () => {
  let lab: Lab;
  let tracer: TracerProcess | undefined;
  let fake: ChildProcess | undefined;
  let root = '';
  let cgParent = '';
  const made: string[] = [];
  const cg: Record<string, string> = {};

  beforeAll(async () => {
    lab = await createLab();
    await lab.startImds({});
    root = mkdtempSync(join(tmpdir(), 'names-lab-'));
    layOutContainerFiles(root);
    const mount = cgroup2Mount(readFileSync('/proc/self/mountinfo', 'utf8'));
    if (!mount) throw new Error('no cgroup2 mount');
    cgParent = join(mount, `imdst-${lab.id}`);
    const rel: Record<string, string> = {
      docker: `system.slice/docker-${DOCKER_ID}.scope`,
      k8s: `kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod${POD_UID.replace(/-/g, '_')}.slice/cri-containerd-${K8S_ID}.scope`,
      ecs: `ecs/${ECS_TASK}/${ECS_ID}`,
    };
    for (const [k, r] of Object.entries(rel)) {
      cg[k] = join(cgParent, r);
      mkdirSync(cg[k], { recursive: true });
      // Remember every directory made, deepest first, to remove them all.
      const parts = r.split('/');
      for (let i = parts.length; i > 0; i--) made.push(join(cgParent, ...parts.slice(0, i)));
    }
    made.push(cgParent);
    fake = lab.spawn(lab.instanceNs, process.execPath, ['-e', FAKE_ECS_AGENT_SCRIPT, '0', JSON.stringify(ECS_TASK_RESPONSE), ECS_ID],
      { stdio: ['ignore', 'pipe', 'inherit'] });
    const [line] = await once(fake.stdout!, 'data');
    const port = Number(/listening (\d+)/.exec(String(line))![1]);
    const cli = join(lab.repoRoot, 'dist', 'cli.js');
    tracer = await attachTracer(lab.spawn(lab.instanceNs, 'sh', ['-c',
      'mount -t cgroup2 cgroup2 /sys/fs/cgroup && exec "$0" "$@"', process.execPath, cli, 'run',
      '--no-log-file', '--backend', 'ebpf', '--stats-interval', '3600'],
    { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, IMDS_TRACER_NAMES_ROOT: root, IMDS_TRACER_ECS_AGENT_URL: `http://127.0.0.1:${port}` } }));
  });

  afterAll(async () => {
    await tracer?.stop();
    fake?.kill();
    await lab?.destroy();
    for (const d of [...new Set(made)].sort((a, b) => b.length - a.length)) { try { rmdirSync(d); } catch { /* gone or busy */ } }
    if (root) rmSync(root, { recursive: true, force: true });
  });

  /** A curl in the cgroup, like a container's process: joins it, then execs. */
  async function curlIn(cgroup: string): Promise<number> {
    const child = lab.spawn(lab.instanceNs, 'sh', ['-c', `read go && exec curl -s -o /dev/null --max-time 10 http://${IMDS_V4}/latest/meta-data/instance-id`],
      { stdio: ['pipe', 'ignore', 'inherit'] });
    writeFileSync(join(cgroup, 'cgroup.procs'), String(child.pid));
    const exited = new Promise<number | null>((resolve) => child.once('exit', resolve));
    child.stdin!.end('go\n');
    expect(await exited).toBe(0);
    return child.pid!;
  }

  it('Docker name, Kubernetes namespace/pod/container, ECS task and container', async () => {
    const pids = { docker: await curlIn(cg.docker), k8s: await curlIn(cg.k8s), ecs: await curlIn(cg.ecs) };
    const rec = async (pid: number): Promise<Rec> => tracer!.next((r) => r.event === 'imds_call' && r.process?.pid === pid, 15_000, `call of ${pid}`);
    const d = await rec(pids.docker);
    expect(d.process.container).toEqual({ runtime: 'docker', id: DOCKER_ID, name: 'nightly-sync' });
    const k = await rec(pids.k8s);
    expect(k.process.container).toEqual({ runtime: 'containerd', id: K8S_ID, pod_uid: POD_UID,
      k8s: { namespace: 'payments', pod: 'api-7d4b9c-xk2lp', container: 'api' } });
    const e = await rec(pids.ecs);
    expect(e.process.container).toEqual({ runtime: 'ecs', id: ECS_ID, task_id: ECS_TASK,
      ecs: { task_arn: ECS_TASK_RESPONSE.Arn, family: 'billing-worker', revision: '7', container: 'worker' } });
    for (const r of [d, k, e]) expect(validate(r)).toEqual([]);
    expect(formatLive(d)).toContain('curl (nightly-sync)');
    expect(formatLive(k)).toContain('curl (payments/api-7d4b9c-xk2lp/api)');
    expect(formatLive(e)).toContain('curl (billing-worker/worker)');
    void spawnSync;
  });
});
