/**
 * The whole way of a frame to a record, without root and without capture: hand-made frames pushed
 * into the pipeline, a fake attributor naming the caller, a fake clock, and a sink that collects the
 * records. Decode, flow table, HTTP, classification, redaction, attribution, the agent's own calls,
 * the v1 reason and the counters are the real ones.
 */
import { describe, expect, it } from 'vitest';
import { Pipeline, type RecordSink } from '../../agent/src/pipeline/pipeline.js';
import { buildStats } from '../../agent/src/pipeline/stats.js';
import type { Attributor, Tuple } from '../../agent/src/attribution/attributor.js';
import type { CallRecord, ProcessInfo } from '../../agent/src/record.js';
import { validate } from '../../agent/src/schema.js';
import { Conversation, IMDS4, IMDS6, req, res, segmentFrame, type Link } from './frames.js';

const SELF = 4242;

/** The caller of each client port, as a fake backend: no /proc, no kernel. */
class FakeAttributor implements Attributor {
  readonly asked: Tuple[] = [];
  constructor(private readonly byPort: Record<number, ProcessInfo>) {}
  async lookup(t: Tuple): Promise<ProcessInfo> {
    this.asked.push(t);
    return this.byPort[t.cport] ?? { attribution: 'none', reason: 'not found' };
  }
}

function collect(): RecordSink & { records: CallRecord[]; errors: string[] } {
  const records: CallRecord[] = [];
  const errors: string[] = [];
  return { records, errors, write: (r) => { records.push(r); }, error: (c, m) => { errors.push(`${c}: ${m}`); } };
}

function proc(pid: number, comm: string, argv: string[] = [comm]): ProcessInfo {
  return { attribution: 'proc', pid, comm, exe: `/usr/bin/${comm}`, argv, uid: 0, user: 'root', ppid: 1 };
}

function setup(callers: Record<number, ProcessInfo>, o: { includeV2?: boolean; link?: Link; device?: string; ownPorts?: number[] } = {}) {
  const sink = collect();
  let now = 1_700_000_000_000;
  const attributor = new FakeAttributor(callers);
  const pipeline = new Pipeline({
    device: o.device ?? 'eth0', includeV2: o.includeV2 ?? false, includeOther: false,
    attributor, sink, clock: () => now, interfaces: () => ({}),
    ifname: () => 'lo', selfPid: SELF,
    ownConnection: o.ownPorts ? (t) => o.ownPorts!.includes(t.cport) : undefined,
  });
  const link = o.link ?? 'ETHERNET';
  /** One request/response exchange on a new connection, every segment pushed as a frame. */
  const exchange = (cport: number, request: string, response: string, server = IMDS4, client = '10.0.0.5'): void => {
    const c = new Conversation(client, cport, server, 80, 1000 + cport, 5000 + cport);
    for (const seg of [c.syn(), c.synAck(), c.clientAck(), c.send(request), c.reply(response), c.clientFin(), c.serverFin()]) {
      now += 1;
      pipeline.push(segmentFrame(link, seg), link);
    }
  };
  return { pipeline, sink, exchange, attributor };
}

describe('pipeline: frames in, records out', () => {
  it('an IMDSv1 GET becomes one record naming its caller, the connection and the answer', async () => {
    const { pipeline, sink, exchange } = setup({ 40001: proc(77, 'curl') });
    exchange(40001, req('GET', '/latest/meta-data/iam/security-credentials/'), res(200, 'role'));
    await pipeline.endOfCapture();
    expect(sink.records).toHaveLength(1);
    const r = sink.records[0];
    expect(validate(r)).toEqual([]);
    expect(r).toMatchObject({
      event: 'imds_call', imds_version: 'v1', provider: 'aws',
      request: { method: 'GET', path: '/latest/meta-data/iam/security-credentials/', token_present: false },
      response: { status: 200 },
      connection: { src: '10.0.0.5', sport: 40001, dst: IMDS4, dport: 80, interface: 'eth0', family: 'ipv4' },
      process: { attribution: 'proc', pid: 77, comm: 'curl' },
    });
    expect(pipeline.counters).toMatchObject({ packets: 7, undecodable: 0, v1: 1, v2: 0, unattributed: 0 });
  });

  it('IMDSv2 is counted, written only with includeV2; IPv6 and cooked captures take the same path', async () => {
    const v2 = req('GET', '/latest/meta-data/', { 'X-aws-ec2-metadata-token': 'AQAEAtoken' });
    const quiet = setup({ 40002: proc(78, 'python3') });
    quiet.exchange(40002, v2, res(200));
    await quiet.pipeline.endOfCapture();
    expect(quiet.sink.records).toHaveLength(0);
    expect(quiet.pipeline.counters).toMatchObject({ v1: 0, v2: 1 });

    const loud = setup({ 40003: proc(79, 'python3') }, { includeV2: true, link: 'LINUX_SLL2', device: 'any' });
    loud.exchange(40003, v2, res(200), IMDS6, 'fd00::5');
    await loud.pipeline.endOfCapture();
    expect(loud.sink.records.map((r) => [r.imds_version, r.connection.family, r.connection.interface]))
      .toEqual([['v2', 'ipv6', 'lo']]);
    expect(JSON.stringify(loud.sink.records)).not.toContain('AQAEAtoken');
  });

  it('secrets on the caller\'s command line are scrubbed before the sink sees them', async () => {
    const { pipeline, sink, exchange } = setup({ 40004: proc(80, 'tool', ['tool', '--password', 'hunter2', '--region', 'x']) });
    exchange(40004, req('GET', '/latest/meta-data/'), res(200));
    await pipeline.endOfCapture();
    expect(sink.records[0].process.argv).toContain('--region');
    expect(JSON.stringify(sink.records[0])).not.toContain('hunter2');
  });

  it('the agent\'s own calls are counted, never written', async () => {
    const { pipeline, sink, exchange } = setup({ 40005: proc(SELF, 'node') });
    exchange(40005, req('GET', '/latest/meta-data/instance-id'), res(200));
    await pipeline.endOfCapture();
    expect(sink.records).toHaveLength(0);
    expect(pipeline.counters.self).toBe(1);
    expect(pipeline.counters.selfCalls.v1).toBe(1);
    expect(sink.errors.join()).toMatch(/^self: the agent itself made an IMDSv1 call/);
  });

  it('the agent\'s own connections, known by their 4-tuple, are filtered before attribution', async () => {
    const { pipeline, sink, exchange, attributor } = setup({}, { ownPorts: [40020, 40021, 40022] });
    exchange(40020, req('GET', '/latest/meta-data/instance-id'), res(200));
    exchange(40021, req('PUT', '/latest/api/token', { 'X-aws-ec2-metadata-token-ttl-seconds': '21600' }), res(200, 'tok'));
    exchange(40022, req('GET', '/latest/meta-data/instance-id', { 'X-aws-ec2-metadata-token': 'tok' }), res(200));
    await pipeline.endOfCapture();
    expect(attributor.asked).toEqual([]); // no lookup, no enrichment
    expect(sink.records).toHaveLength(0);
    expect(pipeline.counters.self).toBe(1); // the IMDSv1 call (the IMDSv2 ones are not written: no --include-v2)
    expect(pipeline.counters.selfCalls.v1).toBe(1);
    expect(pipeline.counters.selfCalls.v2).toBe(2);
    expect(sink.errors.join()).toMatch(/^self: the agent itself made an IMDSv1 call \(GET \/latest\/meta-data\/instance-id\)/);
  });

  it('an interim answer (100 Continue) is not the call\'s status: the final one is', async () => {
    const { pipeline, sink, exchange } = setup({ 40008: proc(82, 'sdk'), 40010: proc(82, 'sdk') });
    exchange(40008, req('PUT', '/latest/api/token', { 'X-aws-ec2-metadata-token-ttl-seconds': '60' }),
      `HTTP/1.1 100 Continue\r\n\r\n${res(403)}`);
    exchange(40010, req('GET', '/latest/meta-data/placement/region'), res(200));
    await pipeline.endOfCapture();
    expect(sink.records.map((r) => r.v1_reason)).toEqual(['token_put_refused']); // the refusal, not the 100
    const { pipeline: p2, sink: s2, exchange: x2 } = setup({ 40009: proc(83, 'curl') });
    x2(40009, req('GET', '/latest/meta-data/'), `HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 102 Processing\r\n\r\n${res(404)}`);
    await p2.endOfCapture();
    expect(s2.records.map((r) => r.response.status)).toEqual([404]);
  });

  it('a caller whose token request was refused gets the v1 reason on its IMDSv1 call', async () => {
    const { pipeline, sink, exchange } = setup({ 40006: proc(81, 'sdk'), 40007: proc(81, 'sdk') });
    exchange(40006, req('PUT', '/latest/api/token', { 'X-aws-ec2-metadata-token-ttl-seconds': '21600' }), res(405));
    exchange(40007, req('GET', '/latest/meta-data/placement/region'), res(200));
    await pipeline.endOfCapture();
    expect(sink.records.map((r) => [r.request?.path, r.v1_reason])).toEqual([['/latest/meta-data/placement/region', 'token_put_refused']]);
  });

  it('a caller not found is written with attribution none and counted; a frame that is not TCP/IP is counted', async () => {
    const { pipeline, sink, exchange } = setup({});
    exchange(40008, req('GET', '/latest/user-data'), res(404));
    pipeline.push(Buffer.from('not a frame'), 'ETHERNET');
    await pipeline.endOfCapture();
    expect(sink.records.map((r) => r.process.attribution)).toEqual(['none']);
    const st = buildStats({ pipeline, nowMs: 1_700_000_060_000, startedAt: 1_700_000_000_000,
      writer: { written: 1, writeErrors: 0 }, pcap: null, ebpf: null });
    expect(validate(st)).toEqual([]);
    expect(st).toMatchObject({ packets: 8, packets_undecodable: 1, calls: { v1: 1, v2: 0, other: 0 },
      calls_unattributed: 1, uptime_s: 60, flows_open: 0 });
  });

  it('the calls of a kept-alive connection share its connection info, made again when the NAT view or the host\'s interfaces change', async () => {
    const sink = collect();
    let now = 1_700_000_000_000;
    let table: Record<string, unknown> = {};
    const pipeline = new Pipeline({
      device: 'eth0', includeV2: false, includeOther: false, attributor: new FakeAttributor({ 40100: proc(90, 'curl') }),
      sink, clock: () => now, interfaces: () => table as never, ifname: () => 'eth0', selfPid: SELF,
    });
    const push = (s: Parameters<typeof segmentFrame>[1]): void => { now += 1; pipeline.push(segmentFrame('ETHERNET', s), 'ETHERNET'); };
    const pre = new Conversation('172.17.0.2', 40100, IMDS4, 80, 0x5eed, 7000); // a container's connection
    // Each call's record is made once its caller's look-up (a resolved promise here) has answered.
    const call = async (path: string): Promise<void> => {
      push(pre.send(req('GET', `/latest/meta-data${path}`)));
      push(pre.reply(res(200, 'x')));
      await new Promise((r) => setImmediate(r));
    };
    push(pre.syn()); push(pre.synAck()); push(pre.clientAck());
    await call('/a');
    await call('/b');
    const post = new Conversation('10.0.0.5', 61000, IMDS4, 80, 0x5eed, 7000); // the same, after NAT
    push(post.syn());
    await call('/c');
    table = { docker0: [{ address: '172.17.0.1', netmask: '255.255.0.0', family: 'IPv4', mac: '', internal: false, cidr: '172.17.0.1/16' }] };
    await call('/d');
    await call('/e');
    await call('/f');
    await pipeline.endOfCapture();
    const c = sink.records.map((r) => r.connection);
    expect(sink.records.map((r) => r.request?.path.slice(17))).toEqual(['/a', '/b', '/c', '/d', '/e', '/f']);
    expect(c[0]).toEqual({ src: '172.17.0.2', sport: 40100, dst: IMDS4, dport: 80, interface: 'eth0', family: 'ipv4' });
    expect(c[1]).toEqual(c[0]); // from the second call on, one shared copy (its JSON made once)
    expect(Object.isFrozen(c[1])).toBe(true);
    expect(c[2]).toEqual({ ...c[0], nat: { src: '10.0.0.5', sport: 61000, interface: 'eth0' } });
    expect(c[3]).toEqual({ ...c[2], interface: 'docker0' });
    expect(c[4]).toEqual(c[3]);
    expect(c[5]).toBe(c[4]);
    for (const r of sink.records) expect(validate(r)).toEqual([]);
  });
});
