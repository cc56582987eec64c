/**
 * Faults: the capture interface is removed and created again. With a named interface the
 * capture worker dies with it and is restarted until the interface is back; with `any` capture
 * simply goes on. Either way calls made after the interface is back are reported.
 */
import { execFileSync } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLab, labSupported, IMDS_V4, INSTANCE_V4, type Lab } from '../../lab/netns.js';
import { startTracer, type TracerProcess } from '../../lab/traced.js';

const support = labSupported();
const ip = (...args: string[]): string => execFileSync('ip', args, { encoding: 'utf8' });

/** Delete the lab's veth pair and make it again exactly as createLab did. */
function recreateLink(lab: Lab): void {
  ip('-n', lab.instanceNs, 'link', 'del', lab.instanceIf);
  ip('link', 'add', lab.instanceIf, 'netns', lab.instanceNs, 'type', 'veth', 'peer', 'name', lab.imdsIf, 'netns', lab.imdsNs);
  ip('-n', lab.instanceNs, 'addr', 'add', `${INSTANCE_V4}/16`, 'dev', lab.instanceIf);
  ip('-n', lab.imdsNs, 'addr', 'add', `${IMDS_V4}/16`, 'dev', lab.imdsIf);
  ip('-n', lab.instanceNs, 'link', 'set', lab.instanceIf, 'up');
  ip('-n', lab.imdsNs, 'link', 'set', lab.imdsIf, 'up');
}

describe.skipIf(!support.ok)(`capture survives its interface being re-created${support.ok ? '' : ` (skipped: ${support.reason})`}`, () => {
  let lab: Lab;
  let named: TracerProcess;
  let any: TracerProcess;

  beforeAll(async () => {
    lab = await createLab();
    await lab.startImds();
    const common = ['--no-log-file', '--stats-interval', '3600', '--backend', 'proc'];
    named = await startTracer(lab, [...common, '-i', lab.instanceIf]);
    any = await startTracer(lab, common);
  });

  afterAll(async () => {
    await named?.stop();
    await any?.stop();
    await lab?.destroy();
  });

  const curl = async (tag: string): Promise<void> => {
    // The link may still be coming up: curl retries connection refusals/timeouts by itself.
    const r = await lab.exec(lab.instanceNs, 'curl', ['-s', '-o', '/dev/null', '--retry', '20', '--retry-connrefused',
      '--retry-delay', '0', '--max-time', '20', '--retry-all-errors', `http://${IMDS_V4}/latest/meta-data/${tag}`]);
    expect(r.exitCode, r.stderr).toBe(0);
  };
  const seen = (t: TracerProcess, tag: string) => t.count((x) => x.event === 'imds_call' && x.request.path.endsWith(`/${tag}`), 1, 20_000, tag);

  it('reports calls before and after the interface is deleted and made again', async () => {
    await curl('before');
    await seen(named, 'before');
    await seen(any, 'before');
    recreateLink(lab);
    await named.next((x) => x.event === 'error' && x.component === 'capture' && /stopped/.test(x.message), 10_000, 'capture stopped error');
    await named.next((x) => x.event === 'notice' && x.component === 'capture' && /resumed/.test(x.message), 30_000, 'capture resumed notice');
    await curl('after');
    const [a] = await seen(named, 'after');
    expect(a).toMatchObject({ imds_version: 'v1', connection: { interface: lab.instanceIf } });
    await seen(any, 'after');
    expect(named.proc.exitCode).toBeNull();
    expect(any.proc.exitCode).toBeNull();
    expect(any.records.filter((x) => x.event === 'error')).toEqual([]);
  });

  it('a named interface that does not exist is one clear sentence and exit 1', async () => {
    const r = await lab.exec(lab.instanceNs, process.execPath, [`${lab.repoRoot}/dist/cli.js`, 'run', '--no-log-file', '-i', 'nosuchif0', '--backend', 'proc']);
    expect(r.exitCode).toBe(1);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toMatch(/^imds-tracer: cannot capture on nosuchif0: /);
  });

  it('without the native helper, the cap binding captures (in process for any, in a worker for a named interface)', async () => {
    const env = { ...process.env, IMDS_TRACER_CAPTURE_HELPER: '/nonexistent/imds_capture' };
    const common = ['--no-log-file', '--stats-interval', '3600', '--backend', 'proc'];
    const inProcess = await startTracer(lab, common, 20_000, env);
    const worker = await startTracer(lab, [...common, '-i', lab.instanceIf], 20_000, env);
    try {
      expect(inProcess.records[0]).toMatchObject({ capture: 'cap', link_type: 'LINKTYPE_LINUX_SLL' });
      expect(worker.records[0]).toMatchObject({ capture: 'cap-worker', link_type: 'ETHERNET' });
      await curl('via-cap');
      await seen(inProcess, 'via-cap');
      const [w] = await seen(worker, 'via-cap');
      expect(w.connection.interface).toBe(lab.instanceIf);
    } finally {
      await inProcess.stop();
      await worker.stop();
    }
  });
});
