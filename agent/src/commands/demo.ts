/**
 * `imds-tracer demo`: on any Linux box with root, build a throw-away lab (two network namespaces, an
 * IMDS stand-in on 169.254.169.254 and fd00:ec2::254 inside one of them), trace a few real IMDSv1 and
 * IMDSv2 clients from the other, print what was found, remove the lab. Nothing leaves the lab.
 */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadLab, type DemoLab, type TracedRecord } from './lab.js';
import { renderTable, shellJoin } from '../format/table.js';

const V4 = 'http://169.254.169.254';
const V6 = 'http://[fd00:ec2::254]';

interface DemoClient {
  what: string;
  cmd: string;
  args: string[];
  v1: number;
  v2: number;
  /** Stays alive (stdin open) after its call, like a daemon: /proc attribution can name it. */
  lingers?: boolean;
}

const CLIENTS: DemoClient[] = [
  { what: 'curl, IMDSv1', cmd: 'curl', args: ['-s', `${V4}/latest/meta-data/instance-id`], v1: 1, v2: 0 },
  { what: 'wget, IMDSv1', cmd: 'wget', args: ['-q', '-O', '-', `${V4}/latest/meta-data/local-ipv4`], v1: 1, v2: 0 },
  {
    what: 'curl, IMDSv2 (token, then call)', cmd: 'sh', v1: 0, v2: 2,
    args: ['-c', `T=$(curl -s -X PUT -H 'X-aws-ec2-metadata-token-ttl-seconds: 60' ${V4}/latest/api/token); `
      + `curl -s -H "X-aws-ec2-metadata-token: $T" ${V4}/latest/meta-data/ami-id`],
  },
  {
    what: 'python3 urllib over IPv6, IMDSv1', cmd: 'python3', v1: 1, v2: 0,
    args: ['-c', `import urllib.request; urllib.request.urlopen("${V6}/latest/meta-data/placement/region").read()`],
  },
  {
    what: 'a long-lived python3 daemon, IMDSv1', cmd: 'python3', v1: 1, v2: 0, lingers: true,
    args: ['-c', 'import http.client, sys\nc = http.client.HTTPConnection("169.254.169.254")\n'
      + 'c.request("GET", "/latest/meta-data/iam/security-credentials/")\nc.getresponse().read()\nsys.stdin.read()',
    'my-legacy-daemon'],
  },
];

export async function runDemo(o: { keepLog?: string }, say: (l: string) => void): Promise<number> {
  const { labSupported, createLab, startTracer } = await loadLab(); // the lab is loaded by the demo only
  const support = labSupported();
  if (!support.ok) {
    say(`imds-tracer demo: ${support.reason}`);
    return 2;
  }
  const log = o.keepLog ?? join(mkdtempSync(join(tmpdir(), 'imds-tracer-demo-')), 'calls.jsonl');
  const out = (s = ''): boolean => process.stdout.write(`${s}\n`);
  let lab: DemoLab | null = null;
  try {
    lab = await createLab();
    await lab.startImds();
    out(`Lab ${lab.id}: namespace ${lab.instanceNs} (the "instance") and ${lab.imdsNs} (an IMDS stand-in on 169.254.169.254 and fd00:ec2::254).`);
    const tracer = await startTracer(lab, ['--log-file', log, '--include-v2']);
    const ready = tracer.records.find((r) => r.event === 'ready') ?? {};
    out(`Tracer ready (backend ${ready.backend}); running ${CLIENTS.length} clients in the instance namespace…`);
    const lingering = [];
    for (const c of CLIENTS) {
      if (c.lingers) {
        lingering.push(lab.spawn(lab.instanceNs, c.cmd, c.args, { stdio: ['pipe', 'ignore', 'ignore'] }));
      } else {
        const r = await lab.exec(lab.instanceNs, c.cmd, c.args);
        if (r.exitCode !== 0) out(`  (${c.what} exited ${r.exitCode})`);
      }
    }
    const v1 = CLIENTS.reduce((n, c) => n + c.v1, 0);
    const v2 = CLIENTS.reduce((n, c) => n + c.v2, 0);
    const calls = await tracer.count((r) => r.event === 'imds_call' && r.request !== null, v1 + v2, 20_000, 'demo call records');
    for (const p of lingering) p.stdin?.end();
    await tracer.stop();
    out();
    out(renderTable(['VERSION', 'STATUS', 'REQUEST', 'CALLER', 'FOUND BY', 'COMMAND LINE'], [...calls].sort((a, b) => a.time.localeCompare(b.time)).map(row)));
    out();
    const found = calls.filter((r) => r.imds_version === 'v1').length;
    out(`${found} IMDSv1 calls found (${v1} made), ${calls.length - found} IMDSv2 calls shown because of --include-v2.`);
    if (ready.backend !== 'ebpf') {
      out(`Short-lived callers show "none" with the /proc backend: they were gone before /proc could be read (${ready.backend_reason ?? ''}).`);
    }
    out(`JSON lines: ${log}`);
    return found === v1 ? 0 : 1;
  } catch (err) {
    say(`imds-tracer demo: ${(err as Error).message}`);
    return 1;
  } finally {
    await lab?.destroy();
  }
}

function row(r: TracedRecord): string[] {
  const p = r.process ?? {};
  const caller = p.attribution === 'none' ? '(not found)' : `${p.comm} [${p.pid}]`;
  const command = p.attribution === 'none' ? '' : shellJoin(p.argv ?? []).replace(/\n/g, '\\n');
  return [r.imds_version ?? r.provider, String(r.response?.status ?? '-'),
    `${r.request.method} ${r.request.path}`, caller, p.attribution, command];
}
