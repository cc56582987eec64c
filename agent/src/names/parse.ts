/**
 * Names a person recognises for a container, from the files and answers of the tools that run it.
 * Pure parsers; the I/O is in resolver.ts.
 *  - Docker: /var/lib/docker/containers/<id>/config.v2.json: `Name` ("/web") and `Config.Labels`
 *    (Kubernetes' dockershim labels `io.kubernetes.*`, the ECS agent's `com.amazonaws.ecs.*`).
 *  - The kubelet: /var/log/pods/<namespace>_<pod>_<uid>/<container>/N.log, and the symlinks
 *    /var/log/containers/<pod>_<namespace>_<container>-<container id>.log.
 *  - The ECS agent's introspection API: GET /v1/tasks?dockerid=<id> →
 *    {Arn, Family, Version, Containers: [{DockerId, DockerName, Name}]}.
 */

export interface K8sNames {
  namespace: string;
  pod: string;
  /** null when the kubelet's files do not say which of the pod's containers it is. */
  container: string | null;
}

export interface EcsNames {
  task_arn: string;
  family: string | null;
  revision: string | null;
  container: string | null;
}

export interface DockerConfig {
  name: string | null;
  k8s: K8sNames | null;
  ecs: EcsNames | null;
}

type Json = Record<string, unknown>;
const str = (v: unknown): string | null => (typeof v === 'string' && v !== '' ? v : null);

export function parseDockerConfig(text: string): DockerConfig | null {
  let o: Json;
  try { o = JSON.parse(text) as Json; } catch { return null; }
  if (!o || typeof o !== 'object') return null;
  const name = str(o.Name)?.replace(/^\//, '') ?? null;
  const labels = ((o.Config as Json | undefined)?.Labels ?? {}) as Json;
  const ns = str(labels['io.kubernetes.pod.namespace']);
  const pod = str(labels['io.kubernetes.pod.name']);
  const arn = str(labels['com.amazonaws.ecs.task-arn']);
  return {
    name,
    k8s: ns && pod ? { namespace: ns, pod, container: str(labels['io.kubernetes.container.name']) } : null,
    ecs: arn ? {
      task_arn: arn, family: str(labels['com.amazonaws.ecs.task-definition-family']),
      revision: str(labels['com.amazonaws.ecs.task-definition-version']), container: str(labels['com.amazonaws.ecs.container-name']),
    } : null,
  };
}

/** `<namespace>_<pod>_<uid>` (a /var/log/pods entry) for this pod UID, split; null if not it. */
export function parsePodDir(entry: string, podUid: string): { namespace: string; pod: string } | null {
  if (!entry.endsWith(`_${podUid}`)) return null;
  const head = entry.slice(0, -podUid.length - 1);
  const i = head.indexOf('_');
  if (i <= 0 || i === head.length - 1) return null;
  return { namespace: head.slice(0, i), pod: head.slice(i + 1) };
}

/** `<pod>_<namespace>_<container>-<id>.log` (a /var/log/containers entry) for this container id. */
export function parseContainerLogName(entry: string, id: string, pod: string, namespace: string): string | null {
  const prefix = `${pod}_${namespace}_`;
  const suffix = `-${id}.log`;
  if (!entry.startsWith(prefix) || !entry.endsWith(suffix)) return null;
  return entry.slice(prefix.length, -suffix.length) || null;
}

/** The ECS agent's /v1/tasks?dockerid= answer. */
export function parseEcsTask(text: string, dockerId: string): EcsNames | null {
  let o: Json;
  try { o = JSON.parse(text) as Json; } catch { return null; }
  const arn = str(o?.Arn);
  if (!arn) return null;
  const containers = Array.isArray(o.Containers) ? (o.Containers as Json[]) : [];
  const c = containers.find((x) => str(x?.DockerId) === dockerId);
  return { task_arn: arn, family: str(o.Family), revision: str(o.Version), container: c ? str(c.Name) : null };
}
