import { PassThrough } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { callerLabel, formatLive, LiveTable, resolveFormat, tableHeader } from '../../agent/src/format/live.js';

const call = {
  event: 'imds_call', time: '2026-11-28T15:12:44.456Z', imds_version: 'v1', provider: 'aws',
  request: { method: 'GET', path: '/latest/meta-data/iam/security-credentials/', user_agent: 'Botocore/1.12.0 Python/3.6' },
  response: { status: 200 },
  process: { attribution: 'ebpf', pid: 6002, comm: 'python3', exe: '/usr/bin/python3.11', systemd_unit: 'legacy-agent.service', container: null },
  sdk: { name: 'botocore', version: '1.12.0', imdsv2_min: '1.13.25', advice: 'upgrade botocore to ≥ 1.13.25' },
};

describe('live table', () => {
  it('auto: a table on a terminal only; json and table when asked', () => {
    expect(resolveFormat('auto', true)).toBe('table');
    expect(resolveFormat('auto', false)).toBe('json');
    expect(resolveFormat(undefined, undefined)).toBe('json');
    expect(resolveFormat('json', true)).toBe('json');
    expect(resolveFormat('table', false)).toBe('table');
  });

  it('one line per call: time, version, status, pid, caller, path, advice; aligned under the header', () => {
    const line = formatLive(call)!;
    expect(line).toMatch(/^15:12:44 v1   200    6002    python3\.11 \(legacy-agent\.service\)\s+\/latest\/meta-data\/iam\/security-credentials\/\s+botocore 1\.12\.0: upgrade botocore to ≥ 1\.13\.25$/);
    expect(line.indexOf('/latest')).toBe(tableHeader().indexOf('PATH'));
    expect(line.indexOf('botocore 1.12.0')).toBe(tableHeader().indexOf('ADVICE'));
    expect(formatLive({ event: 'stats' })).toBeNull();
    expect(formatLive({ event: 'error', component: 'log-file', message: 'ENOSPC' })).toBe('ERROR log-file: ENOSPC');
  });

  it('the caller: container name, else id, else unit; unattributed is ?', () => {
    expect(callerLabel({ attribution: 'proc', exe: '/usr/bin/curl', container: { runtime: 'docker', id: '0123456789abcdef0123', name: 'web' } })).toBe('curl (web)');
    expect(callerLabel({ attribution: 'proc', exe: '/usr/bin/curl', container: { runtime: 'docker', id: '0123456789abcdef0123' } })).toBe('curl (0123456789ab)');
    expect(callerLabel({ attribution: 'none', reason: 'x' })).toBe('?');
  });

  it('LiveTable turns the JSON lines written to it into table lines', async () => {
    const out = new PassThrough();
    let text = '';
    out.on('data', (b: Buffer) => { text += b.toString(); });
    const t = new LiveTable(out);
    t.write(`${JSON.stringify({ event: 'ready', interface: 'any', backend: 'ebpf', log_file: '/var/log/x.jsonl' })}\n${JSON.stringify(call).slice(0, 40)}`);
    t.write(`${JSON.stringify(call).slice(40)}\n`);
    await new Promise<void>((r) => t.end(r));
    const lines = text.trimEnd().split('\n');
    expect(lines[0]).toMatch(/^Tracing IMDS calls on any \(attribution: ebpf; JSON lines in \/var\/log\/x\.jsonl\)/);
    expect(lines[1]).toBe(tableHeader());
    expect(lines[2]).toMatch(/^15:12:44 v1/);
    expect(lines).toHaveLength(3);
  });
});
