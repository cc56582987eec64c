/**
 * A fake of CloudWatch Logs Insights (StartQuery, GetQueryResults) and of CloudWatch's
 * GetMetricData, on 127.0.0.1, speaking the JSON protocols the real SDK uses (Logs:
 * `Logs_20140328.<Op>`, application/x-amz-json-1.1; CloudWatch: `GraniteServiceVersion20100801.<Op>`,
 * application/x-amz-json-1.0) and answering with responses of the services' recorded shapes
 * (a query is `Running` with partial statistics, then `Complete`; rows are [{field, value}] with a
 * `@ptr`; timestamps as Insights prints them). No AWS implementation runs here: the fake knows the
 * fleet command's four queries (agent/src/fleet/queries.ts) and computes their rows over the records
 * it holds in JavaScript, as Insights would — so the test proves the SDK calls, the polling, the
 * reading of results and the verdicts, not Insights' query language itself.
 */
import { once } from 'node:events';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { FLEET_QUERIES } from '../../agent/src/fleet/queries.js';

type Rec = Record<string, any>;
export interface StoredEvent { group: string; stream: string; timestamp: number; rec: Rec }
type Field = { field: string; value: string };

/** Insights prints @timestamp as `2026-11-28 10:00:00.000`. */
const insightsTime = (ms: number): string => new Date(ms).toISOString().replace('T', ' ').replace('Z', '');
const exeOf = (r: Rec): string => r.process?.exe ?? r.process?.comm ?? '(caller not identified)';

function groupBy(events: StoredEvent[], key: (e: StoredEvent) => string[]): Map<string, StoredEvent[]> {
  const m = new Map<string, StoredEvent[]>();
  for (const e of events) {
    const k = JSON.stringify(key(e));
    const l = m.get(k);
    if (l) l.push(e); else m.set(k, [e]);
  }
  return m;
}

function row(fields: Record<string, string | number | null | undefined>, ptr: number): Field[] {
  const out: Field[] = [];
  for (const [field, v] of Object.entries(fields)) if (v !== null && v !== undefined) out.push({ field, value: String(v) });
  out.push({ field: '@ptr', value: `CmAKJgoiMTIzNDU2Nzg5MDEyOmltZHMtdHJhY2VyEAEYACIKCgg${ptr}` });
  return out;
}

const latest = (l: StoredEvent[]): StoredEvent => l.reduce((a, b) => (b.timestamp >= a.timestamp ? b : a));

/** The four fleet queries, as Insights would compute them. */
const EVALUATORS: Record<string, (ev: StoredEvent[]) => Field[][]> = {
  [FLEET_QUERIES.callers]: (ev) => [...groupBy(ev.filter((e) => e.rec.event === 'imds_call' && e.rec.imds_version === 'v1'),
    (e) => [e.stream, exeOf(e.rec)]).values()].map((l, i) => {
    const last = latest(l).rec;
    return row({ instance: l[0].stream, executable: exeOf(l[0].rec), calls: l.length, last_seen: insightsTime(Math.max(...l.map((e) => e.timestamp))),
      sdk_name: last.sdk?.name, sdk_version: last.sdk?.version, advice: last.sdk?.advice, user_agent: last.request?.user_agent }, i);
  }).sort((a, b) => Number(b.find((f) => f.field === 'calls')!.value) - Number(a.find((f) => f.field === 'calls')!.value)),
  [FLEET_QUERIES.rejected]: (ev) => [...groupBy(ev.filter((e) => e.rec.event === 'imds_call' && e.rec.imds_version === 'v1' && e.rec.response?.status === 401),
    (e) => [e.stream, exeOf(e.rec)]).values()].map((l, i) => row({ instance: l[0].stream, executable: exeOf(l[0].rec), rejected: l.length }, i)),
  [FLEET_QUERIES.coverage]: (ev) => [...groupBy(ev, (e) => [e.stream]).values()].map((l, i) => row({
    instance: l[0].stream, first_record: insightsTime(Math.min(...l.map((e) => e.timestamp))),
    last_record: insightsTime(Math.max(...l.map((e) => e.timestamp))), records: l.length }, i)),
  [FLEET_QUERIES.unreadable]: (ev) => [...groupBy(ev.filter((e) => e.rec.event === 'imds_call' && e.rec.wire_reason !== undefined),
    (e) => [e.stream]).values()].map((l, i) => row({ instance: l[0].stream, unreadable: l.length }, i)),
};

interface Query { id: string; polls: number; rows: Field[][]; scanned: number; group: string }

export class FakeInsights {
  readonly events: StoredEvent[] = [];
  /** MetadataNoToken datapoints per instance: [epoch ms, value]. */
  readonly metadataNoToken = new Map<string, Array<[number, number]>>();
  readonly ops: string[] = [];
  readonly queries: Array<{ queryString: string; startTime: number; endTime: number; logGroupName: string }> = [];
  /** GetMetricData requests as received (for assertions on the window and dimensions). */
  readonly metricRequests: Rec[] = [];
  failMetrics = false;
  private readonly running = new Map<string, Query>();
  private server: Server | null = null;
  private n = 0;
  port = 0;

  add(group: string, stream: string, rec: Rec): void {
    this.events.push({ group, stream, timestamp: Date.parse(rec.time), rec });
  }

  async start(): Promise<void> {
    this.server = createServer((req, res) => void this.handle(req, res));
    this.server.listen(0, '127.0.0.1');
    await once(this.server, 'listening');
    this.port = (this.server.address() as AddressInfo).port;
  }

  get endpoint(): string { return `http://127.0.0.1:${this.port}`; }

  async stop(): Promise<void> {
    this.server?.closeAllConnections();
    await new Promise((r) => this.server?.close(r));
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const target = String(req.headers['x-amz-target'] ?? '');
    const ctype = String(req.headers['content-type'] ?? '');
    if (!String(req.headers.authorization ?? '').startsWith('AWS4-HMAC-SHA256')) {
      return this.answer(res, 400, '1.1', { __type: 'MissingAuthenticationTokenException', message: 'unsigned' });
    }
    const body = JSON.parse(Buffer.concat(chunks).toString('utf8') || '{}') as Rec;
    if (target.startsWith('Logs_20140328.') && ctype.startsWith('application/x-amz-json-1.1')) {
      const op = target.slice('Logs_20140328.'.length);
      this.ops.push(op);
      if (op === 'StartQuery') return this.startQuery(res, body);
      if (op === 'GetQueryResults') return this.getResults(res, body);
      return this.answer(res, 400, '1.1', { __type: 'UnknownOperationException' });
    }
    if (target.startsWith('GraniteServiceVersion20100801.') && ctype.startsWith('application/x-amz-json-1.0')) {
      const op = target.slice('GraniteServiceVersion20100801.'.length);
      this.ops.push(op);
      if (op === 'GetMetricData') return this.getMetricData(res, body);
      return this.answer(res, 400, '1.0', { __type: 'UnknownOperationException' });
    }
    return this.answer(res, 400, '1.1', { __type: 'SerializationException', message: `unexpected ${target} ${ctype}` });
  }

  private startQuery(res: ServerResponse, b: Rec): void {
    this.queries.push({ queryString: b.queryString, startTime: b.startTime, endTime: b.endTime, logGroupName: b.logGroupName });
    const evaluate = EVALUATORS[b.queryString];
    if (!evaluate) return this.answer(res, 400, '1.1', { __type: 'MalformedQueryException', message: 'the fake knows only the fleet queries' });
    if (!this.events.some((e) => e.group === b.logGroupName)) {
      return this.answer(res, 400, '1.1', { __type: 'ResourceNotFoundException', message: 'Log group does not exist' });
    }
    const inRange = this.events.filter((e) => e.group === b.logGroupName && e.timestamp >= b.startTime * 1000 && e.timestamp <= b.endTime * 1000);
    const id = `${(++this.n).toString(16).padStart(8, '0')}-1234-5678-9abc-def012345678`;
    this.running.set(id, { id, polls: 0, rows: evaluate(inRange), scanned: inRange.length, group: b.logGroupName });
    this.answer(res, 200, '1.1', { queryId: id });
  }

  private getResults(res: ServerResponse, b: Rec): void {
    const q = this.running.get(b.queryId);
    if (!q) return this.answer(res, 400, '1.1', { __type: 'ResourceNotFoundException', message: 'unknown query' });
    q.polls++;
    const done = q.polls >= 2;
    const stats = { recordsMatched: done ? q.rows.length : 0, recordsScanned: done ? q.scanned : Math.floor(q.scanned / 2), bytesScanned: q.scanned * 700 };
    this.answer(res, 200, '1.1', done
      ? { status: 'Complete', results: q.rows, statistics: stats, encryptionKey: undefined }
      : { status: 'Running', results: [], statistics: stats });
  }

  private getMetricData(res: ServerResponse, b: Rec): void {
    this.metricRequests.push(b);
    if (this.failMetrics) return this.answer(res, 400, '1.0', { __type: 'AccessDenied', message: 'User is not authorized to perform: cloudwatch:GetMetricData' });
    const start = Number(b.StartTime) * 1000;
    const end = Number(b.EndTime) * 1000;
    const results = (b.MetricDataQueries as Rec[]).map((q) => {
      const dim = q.MetricStat?.Metric?.Dimensions?.find((d: Rec) => d.Name === 'InstanceId')?.Value;
      const ok = q.MetricStat?.Metric?.Namespace === 'AWS/EC2' && q.MetricStat?.Metric?.MetricName === 'MetadataNoToken';
      const points = ok ? (this.metadataNoToken.get(dim) ?? []).filter(([t]) => t >= start && t < end) : [];
      return { Id: q.Id, Label: 'MetadataNoToken', Timestamps: points.map(([t]) => Math.floor(t / 1000)), Values: points.map(([, v]) => v), StatusCode: 'Complete' };
    });
    this.answer(res, 200, '1.0', { MetricDataResults: results, Messages: [] });
  }

  private answer(res: ServerResponse, status: number, json: '1.0' | '1.1', body: unknown): void {
    res.writeHead(status, { 'content-type': `application/x-amz-json-${json}`, 'x-amzn-requestid': 'fake-request-id' });
    res.end(JSON.stringify(body));
  }
}
