/**
 * A flood of connects to the IMDS address from other network namespaces must not starve the
 * attribution of genuine callers in the traced one. Two flooders, bounded in count and time, each
 * connecting to 169.254.169.254:80 held on its own namespace's loopback (refused at once, so the
 * flood stays inside that namespace):
 *  - in a namespace linked to nothing: the agent judges it unreachable and the kernel filters it;
 *  - in the "container" (a veth peer of the instance: kept): its source goes over its budget.
 * Meanwhile 40 IMDSv1 calls from the instance namespace must all be named by eBPF.
 */
import { statSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  addContainer, addIsolated, createLab, labSupported, IMDS_V4, type ContainerInfo, type Lab,
} from '../../lab/netns.js';
import { startTracer, type TracerProcess } from '../../lab/traced.js';
import { validate } from '../../agent/src/schema.js';

const support = labSupported();
type Rec = Record<string, any>;

// connect() to addr:80 until `count` tries or `seconds` have passed; prints "go" after the first.
const FLOODER = `
import socket, sys, time
addr, count, end = sys.argv[1], int(sys.argv[2]), time.monotonic() + float(sys.argv[3])
n = 0
while n < count and time.monotonic() < end:
    s = socket.socket()
    try:
        s.connect((addr, 80))
    except OSError:
        pass
    s.close()
    n += 1
    if n == 1:
        print("go", flush=True)
print(n, flush=True)
`;

describe.skipIf(!support.ok)(`eBPF attribution under a flood from other namespaces${support.ok ? '' : ` (skipped: ${support.reason})`}`, () => {
  let lab: Lab;
  let container: ContainerInfo;
  let isolated = '';
  let tracer: TracerProcess;

  beforeAll(async () => {
    lab = await createLab();
    await lab.startImds({});
    container = await addContainer(lab);
    isolated = await addIsolated(lab, [`${IMDS_V4}/32`]);
    // The container's own flood is refused on its loopback too (its genuine route goes to the instance).
    await lab.exec(container.ns, 'ip', ['addr', 'add', `${IMDS_V4}/32`, 'dev', 'lo']);
    tracer = await startTracer(lab, ['--no-log-file', '--backend', 'ebpf', '--stats-interval', '3600']);
    // The first pass over the host's namespaces is done: the isolated one is judged by now.
    await tracer.next((r) => r.event === 'notice' && /network namespaces judged/.test(r.message), 30_000, 'namespaces judged');
  });

  afterAll(async () => {
    await tracer?.stop();
    await lab?.destroy();
  });

  const flood = (ns: string) => {
    const child = lab.spawn(ns, 'python3', ['-c', FLOODER, IMDS_V4, '60000', '4'], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout!.setEncoding('utf8').on('data', (d: string) => { out += d; });
    const started = new Promise<void>((resolve) => child.stdout!.on('data', () => { if (out.includes('go')) resolve(); }));
    const done = new Promise<number>((resolve) => child.once('exit', () => resolve(Number(out.split('\n').filter(Boolean).at(-1)))));
    return { started, done };
  };

  it('names all 40 genuine callers while two namespaces flood; counts what it filtered and what was over budget', async () => {
    const far = flood(isolated);
    const near = flood(container.ns);
    await Promise.all([far.started, near.started]);
    const runs: Array<{ pid: number; tag: string }> = [];
    for (let batch = 0; batch < 4; batch++) {
      const results = await Promise.all(Array.from({ length: 10 }, (_, j) => {
        const tag = `genuine=${batch * 10 + j}`;
        return lab.exec(lab.instanceNs, 'curl', ['-s', '-o', '/dev/null', '--max-time', '10',
          `http://${IMDS_V4}/latest/meta-data/instance-id?${tag}`]).then((r) => ({ ...r, tag }));
      }));
      for (const r of results) {
        expect(r.exitCode, r.stderr).toBe(0);
        runs.push({ pid: r.pid, tag: r.tag });
      }
    }
    const [farCount, nearCount] = await Promise.all([far.done, near.done]);
    console.log(`flood: ${farCount} connects from the isolated namespace, ${nearCount} from the container`);

    const isGenuine = (r: Rec): boolean => r.event === 'imds_call' && /[?&]genuine=\d+$/.test(r.request.path);
    const recs = await tracer.count(isGenuine, 40, 30_000, 'genuine calls');
    for (const run of runs) {
      const mine = recs.filter((r) => r.request.path.endsWith(`?${run.tag}`));
      expect(mine).toHaveLength(1);
      expect(mine[0].process).toMatchObject({ attribution: 'ebpf', pid: run.pid, comm: 'curl' });
    }

    await tracer.stop();
    const stats = tracer.records.filter((r) => r.event === 'stats').at(-1) as Rec;
    expect(validate(stats)).toEqual([]);
    console.log(`stats.kernel: ${JSON.stringify(stats.kernel)}`);
    expect(stats.kernel.events_filtered).toBeGreaterThan(0);
    expect(stats.kernel.netns_filtered).toBeGreaterThanOrEqual(1);
    expect(stats.kernel.events_over_budget).toBeGreaterThan(0);
    const containerIno = statSync(`/run/netns/${container.ns}`).ino;
    expect(stats.kernel.sources_over_budget[0]).toMatchObject({ netns_ino: containerIno });
    expect(stats.kernel.sources_over_budget[0].dropped).toBeGreaterThan(0);
    // On a quiet machine nothing is lost; on a loaded one the ring buffer can fill while the loader is
    // off the CPU: then what is lost is charged to the sources it came from.
    const chargedLost = stats.kernel.sources_over_budget.reduce((n: number, x: Rec) => n + x.lost, 0);
    expect(chargedLost).toBeLessThanOrEqual(stats.kernel.events_lost);
    if (stats.kernel.events_lost > 0) expect(chargedLost).toBeGreaterThan(0);
    else expect(stats.kernel.sources_over_budget[0].lost).toBe(0); // nothing lost: nothing charged
    // Every target connection of the flood is accounted for: traced, filtered, over budget or lost.
    expect(stats.kernel.events_filtered + stats.kernel.events_over_budget + stats.kernel.events + stats.kernel.events_lost)
      .toBeGreaterThanOrEqual(farCount + nearCount);
  });
});
