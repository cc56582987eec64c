/**
 * The fake CloudWatch Logs endpoint (test/cloudwatch/fake-logs.ts) reachable from inside a lab's
 * instance namespace: the fake listens on a Unix socket (the file system is shared across network
 * namespaces) and a small relay inside the namespace forwards 127.0.0.1:<port> there. Nothing is
 * opened in the host's network namespace.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import type { Lab } from '../../lab/netns.js';
import { FakeLogs } from '../cloudwatch/fake-logs.js';

const RELAY = `
const net = require('net');
const path = process.argv[1];
const srv = net.createServer((c) => {
  const u = net.connect(path);
  c.pipe(u); u.pipe(c);
  c.on('error', () => u.destroy()); u.on('error', () => c.destroy());
});
srv.listen(0, '127.0.0.1', () => console.log(srv.address().port));
process.stdin.resume(); process.stdin.on('end', () => process.exit(0));
`;

export interface LabFakeLogs {
  fake: FakeLogs;
  /** The endpoint as seen from inside the lab's instance namespace. */
  endpoint: string;
  stop(): Promise<void>;
}

export async function startLabFakeLogs(lab: Lab): Promise<LabFakeLogs> {
  const dir = mkdtempSync(join(tmpdir(), 'imdst-cwl-'));
  const sock = join(dir, 'logs.sock');
  const fake = new FakeLogs();
  await fake.start(sock);
  const relay = lab.spawn(lab.instanceNs, process.execPath, ['-e', RELAY, sock], { stdio: ['pipe', 'pipe', 'inherit'] });
  const port = await new Promise<number>((resolve, reject) => {
    relay.once('exit', (c) => reject(new Error(`relay exited (${c})`)));
    createInterface({ input: relay.stdout! }).once('line', (l) => resolve(Number(l)));
  });
  return {
    fake, endpoint: `http://127.0.0.1:${port}`,
    stop: async () => {
      relay.stdin?.end();
      relay.kill('SIGTERM');
      await fake.stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
