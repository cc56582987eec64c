/**
 * The command line in process: `main(argv, say)` parses, dispatches and returns the exit status,
 * with no child process. The records a `report` reads here are made by the real pipeline from
 * hand-made frames (no capture, no root).
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, describe, expect, it, vi } from 'vitest';
import { main } from '../../agent/src/cli.js';
import { Pipeline } from '../../agent/src/pipeline/pipeline.js';
import type { CallRecord } from '../../agent/src/record.js';
import { Conversation, IMDS4, req, res, segmentFrame } from './frames.js';

const dir = mkdtempSync(join(tmpdir(), 'imds-main-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
afterEach(() => { vi.restoreAllMocks(); });

async function cli(...args: string[]): Promise<{ status: number; said: string[]; out: string }> {
  const said: string[] = [];
  let out = '';
  vi.spyOn(process.stdout, 'write').mockImplementation((s: string | Uint8Array) => { out += String(s); return true; });
  const status = await main(['node', 'imds-tracer', ...args], (l) => said.push(l));
  vi.restoreAllMocks();
  return { status, said, out };
}

/** JSON lines as the agent writes them, from frames pushed through the pipeline. */
async function tracedLog(): Promise<string> {
  const records: CallRecord[] = [];
  const p = new Pipeline({
    device: 'eth0', includeV2: false, includeOther: false, clock: () => 1_700_000_000_000, interfaces: () => ({}),
    attributor: { lookup: async () => ({ attribution: 'proc', pid: 91, comm: 'legacy-agent', exe: '/opt/legacy-agent', argv: ['legacy-agent'], uid: 0, user: 'root', ppid: 1 }) },
    sink: { write: (r) => { records.push(r); }, error: () => undefined },
  });
  const c = new Conversation('10.0.0.9', 41000, IMDS4, 80, 7, 9);
  for (const s of [c.syn(), c.synAck(), c.send(req('GET', '/latest/meta-data/ami-id')), c.reply(res(200, 'ami-1')), c.clientFin()]) {
    p.push(segmentFrame('ETHERNET', s), 'ETHERNET');
  }
  await p.endOfCapture();
  const file = join(dir, 'calls.jsonl');
  writeFileSync(file, records.map((r) => `${JSON.stringify(r)}\n`).join(''));
  return file;
}

describe('main(argv) in process', () => {
  it('--version prints the version and returns 0', async () => {
    const r = await cli('--version');
    expect(r.status).toBe(0);
    expect(r.out).toMatch(/^\d+\.\d+\.\d+/);
  });

  it('a bad option value is a usage error (2) with the reason, before anything starts', async () => {
    const r = await cli('run', '--duration', '0');
    expect(r.status).toBe(2);
    expect(r.said.join('\n')).toContain('--duration must be a positive whole number');
    expect((await cli('--no-such-flag')).status).toBe(2);
  });

  it('report lists the caller of the records the pipeline made', async () => {
    const file = await tracedLog();
    const r = await cli('report', file);
    expect(r.status).toBe(0);
    expect(r.out).toContain('legacy-agent');
    expect(r.out).toContain('1 IMDSv1 call from 1 distinct caller in 1 file');
    const json = await cli('report', '--json', file);
    expect(JSON.parse(json.out)).toHaveLength(1);
  });

  it('report on a file that does not exist fails (1) and names it', async () => {
    const missing = join(dir, 'nope.jsonl');
    const r = await cli('report', missing);
    expect(r.status).toBe(1);
    expect(r.said.join('\n')).toContain(`cannot read ${missing}`);
  });
});
