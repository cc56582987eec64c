import { mkdtempSync } from 'node:fs';
import { join } from 'node:path';
const [dist] = process.argv.slice(2);
const { RecordWriter } = await import(`${dist}/output/writer.js`);
const { LogFile } = await import(`${dist}/output/log-file.js`);
const dir = mkdtempSync('/tmp/wb2-');
const lf = new LogFile({ path: join(dir, 'c.jsonl'), dirMode: 0o700, fileMode: 0o600, maxBytes: 10 << 20, files: 2, onError: () => {} });
lf.open();
const w = new RecordWriter({ stdout: process.stdout, stderr: process.stderr, logFile: lf });
const call = (i) => ({ event: 'imds_call', time: new Date().toISOString(), imds_version: 'v1', provider: 'aws',
  request: { method: 'GET', path: '/latest/meta-data/iam/security-credentials/role-' + i, http_version: '1.1', token_present: false,
    token_request: false, user_agent: 'python-urllib/3.11' }, response: { status: 200 },
  connection: { src: '169.254.10.2', sport: 40000 + (i % 20000), dst: '169.254.169.254', dport: 80, interface: 'eth0', family: 'ipv4' },
  process: { attribution: 'ebpf', pid: 6002, comm: 'python3', exe: '/usr/bin/python3.11', argv: ['python3', '/opt/legacy/agent.py', '--poll'], uid: 998, user: 'legacy', ppid: 1, ancestors: [{ pid: 1, comm: 'systemd', argv: ['/sbin/init'] }], cgroup: '/system.slice/legacy-agent.service', container: null, systemd_unit: 'legacy-agent.service' } });
let i = 0;
function burst() { for (let k = 0; k < 50 && i < 200000; k++) w.write(call(i++)); if (i < 200000) setImmediate(burst); else w.close(); }
burst();
