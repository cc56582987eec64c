/**
 * Files laid out as Docker, the kubelet and the ECS agent lay them out, under a temp root
 * (IMDS_TRACER_NAMES_ROOT), and a fake of the ECS agent's introspection API (GET /v1/tasks?dockerid=)
 * answering in the agent's own shape. Test-only; the fake listens on loopback.
 */
import { mkdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

export const DOCKER_ID = 'a1'.repeat(32);
export const K8S_ID = 'b2'.repeat(32);
export const ECS_ID = 'c3'.repeat(32);
export const POD_UID = '5f0c9e2a-7d1b-4c3e-9a8f-1b2c3d4e5f60';
export const ECS_TASK = '0123456789abcdef0123456789abcdef';

/** Docker's config.v2.json (the fields Docker writes that matter here, plus a few around them). */
export function dockerConfig(id: string, name: string, labels: Record<string, string> = {}): string {
  return JSON.stringify({
    StreamConfig: {}, State: { Running: true, Pid: 4242, StartedAt: '2026-11-28T10:00:00.000000000Z' },
    ID: id, Created: '2026-11-28T09:59:59.000000000Z', Path: 'python3', Args: ['/app/sync.py'],
    Config: { Hostname: id.slice(0, 12), Env: ['PATH=/usr/local/bin:/usr/bin'], Cmd: ['python3', '/app/sync.py'], Image: 'sync:1.4', Labels: labels },
    Image: 'sha256:'.padEnd(71, '0'), Name: `/${name}`, Driver: 'overlay2', RestartCount: 0,
  });
}

/** Lay out Docker's and the kubelet's files under root. */
export function layOutContainerFiles(root: string): void {
  const dc = join(root, 'var/lib/docker/containers');
  mkdirSync(join(dc, DOCKER_ID), { recursive: true });
  writeFileSync(join(dc, DOCKER_ID, 'config.v2.json'), dockerConfig(DOCKER_ID, 'nightly-sync'));
  // The kubelet: /var/log/pods/<ns>_<pod>_<uid>/<container>/0.log and its /var/log/containers link.
  const podDir = join(root, 'var/log/pods', `payments_api-7d4b9c-xk2lp_${POD_UID}`);
  for (const c of ['api', 'istio-proxy']) {
    mkdirSync(join(podDir, c), { recursive: true });
    writeFileSync(join(podDir, c, '0.log'), '');
  }
  mkdirSync(join(root, 'var/log/containers'), { recursive: true });
  symlinkSync(join(podDir, 'api', '0.log'), join(root, 'var/log/containers', `api-7d4b9c-xk2lp_payments_api-${K8S_ID}.log`));
  symlinkSync(join(podDir, 'istio-proxy', '0.log'), join(root, 'var/log/containers', `api-7d4b9c-xk2lp_payments_istio-proxy-${'d4'.repeat(32)}.log`));
}

/** The ECS agent's answer to GET /v1/tasks?dockerid=<ECS_ID>. */
export const ECS_TASK_RESPONSE = {
  Arn: `arn:aws:ecs:us-east-1:123456789012:task/prod/${ECS_TASK}`,
  DesiredStatus: 'RUNNING', KnownStatus: 'RUNNING', Family: 'billing-worker', Version: '7',
  Containers: [
    { DockerId: ECS_ID, DockerName: 'ecs-billing-worker-7-worker-e4e2b1c8d9f0a1b2c300', Name: 'worker', Volumes: [] },
    { DockerId: 'e5'.repeat(32), DockerName: 'ecs-billing-worker-7-log-router-aabb', Name: 'log-router' },
  ],
};

/** A node script: the ECS agent's introspection API on 127.0.0.1:<port> (0: any); prints "listening <port>" once bound. */
export const FAKE_ECS_AGENT_SCRIPT = `
const http = require('http');
const [port, body, id] = process.argv.slice(1);
const srv = http.createServer((req, res) => {
  const u = new URL(req.url, 'http://x');
  if (u.pathname === '/v1/tasks' && u.searchParams.get('dockerid') === id) {
    res.writeHead(200, { 'Content-Type': 'application/json' }); res.end(body); return;
  }
  res.writeHead(400, { 'Content-Type': 'application/json' }); res.end('{}');
});
srv.listen(Number(port), '127.0.0.1', () => process.stdout.write('listening ' + srv.address().port + '\\n'));
`;
