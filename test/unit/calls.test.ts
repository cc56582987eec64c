import { describe, it, expect } from 'vitest';
import { PendingCalls } from '../../agent/src/calls.js';
import { classify } from '../../agent/src/classify.js';
import { parseRequestHead } from '../../agent/src/wire/http-head.js';
import type { Conn } from '../../agent/src/wire/flows.js';
import type { CallRecord } from '../../agent/src/record.js';

const conn = { id: 7, client: '10.0.0.5', cport: 40000, server: '169.254.169.254', sport: 80 } as Conn;

function calls(out: CallRecord[]): PendingCalls {
  return new PendingCalls({
    responseWaitMs: 60_000, attributionWaitMs: 1000, maxPending: 10, redact: (s) => s,
    connection: () => ({ src: conn.client, sport: conn.cport, dst: conn.server, dport: conn.sport, interface: 'eth0', family: 'ipv4' }),
    attribution: async () => ({ attribution: 'none', reason: 'test' }),
    emit: (r) => out.push(r), isLocalAddress: () => true,
  });
}

describe('PendingCalls.amend: an ambiguity found after the head was read', () => {
  it('turns a waiting IMDSv2 call (not to be written) into a written IMDSv1 call that names the ambiguity', async () => {
    const out: CallRecord[] = [];
    const p = calls(out);
    const head = parseRequestHead('GET /latest/meta-data/ HTTP/1.1\r\nX-aws-ec2-metadata-token: AAAAAAAAAAAA', false, () => undefined)!;
    const cls = classify(head);
    expect(cls.imdsVersion).toBe('v2');
    p.add(conn, head, 1, cls, new Date(0), false);
    const change = p.amend(conn, 1, 'tcp_overlap_conflict', (v) => v === 'v1');
    expect(change).toMatchObject({ before: { imdsVersion: 'v2' }, after: { imdsVersion: 'v1', provider: 'aws' }, first: true });
    expect(p.amend(conn, 1, 'tcp_urgent', (v) => v === 'v1')!.first).toBe(false);
    p.response(conn, 1, 200);
    await p.flush();
    expect(out).toHaveLength(1);
    expect(out[0]).toMatchObject({ imds_version: 'v1', request: { token_present: true, ambiguity: 'tcp_overlap_conflict' }, response: { status: 200 } });
  });

  it('a call no longer waiting cannot be amended', async () => {
    const out: CallRecord[] = [];
    const p = calls(out);
    const head = parseRequestHead('GET /latest/ HTTP/1.1', false, () => undefined)!;
    p.add(conn, head, 1, classify(head), new Date(0), true);
    p.response(conn, 1, 200);
    expect(p.amend(conn, 1, 'tcp_urgent', () => true)).toBeNull();
    await p.flush();
    expect(out[0].request.ambiguity).toBeUndefined();
  });
});
