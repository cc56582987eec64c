/**
 * A recorded-response fake of CloudWatch Logs (answers written from the service's documented
 * responses, not the service itself) on 127.0.0.1 (random port) speaking the JSON protocol the real SDK uses
 * (`X-Amz-Target: Logs_20140328.<Op>`, `application/x-amz-json-1.1`). It records every accepted
 * PutLogEvents batch, checks each against the service's limits, and answers a request with a fault
 * when the test says so.
 */
import { once, EventEmitter } from 'node:events';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

export interface LogEvent { timestamp: number; message: string }
export interface Batch { group: string; stream: string; events: LogEvent[] }
export type Fault = 'throttle' | '500' | 'not-found' | 'invalid' | 'hang' | null;

export class FakeLogs extends EventEmitter {
  readonly batches: Batch[] = [];
  readonly streams = new Set<string>();
  readonly groups = new Set<string>(['g']);
  /** Problems found in accepted batches (limits, order); must stay empty. */
  readonly violations: string[] = [];
  readonly ops: string[] = [];
  /** Retention (days) set per group by PutRetentionPolicy. */
  readonly retention = new Map<string, number>();
  /** Operations answered with AccessDeniedException (a role without that action). */
  readonly denied = new Set<string>();
  /** CreateLogGroup finds the group made meanwhile by someone else (ResourceAlreadyExists) and it exists from then on. */
  groupAppearsOnCreate = false;
  putCount = 0;
  /** Fault for the n-th PutLogEvents (1-based). */
  putFault: (n: number) => Fault = () => null;
  private server: Server | null = null;
  port = 0;

  /** Listen on 127.0.0.1 (random port), or on a Unix socket path (reached from a lab namespace through a relay). */
  async start(socketPath?: string): Promise<void> {
    this.server = createServer((req, res) => void this.handle(req, res));
    if (socketPath) this.server.listen(socketPath);
    else this.server.listen(0, '127.0.0.1');
    await once(this.server, 'listening');
    if (!socketPath) this.port = (this.server.address() as AddressInfo).port;
  }

  get endpoint(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  async stop(): Promise<void> {
    this.server?.closeAllConnections();
    await new Promise((r) => this.server?.close(r));
  }

  events(stream?: string): LogEvent[] {
    return this.batches.filter((b) => stream === undefined || b.stream === stream).flatMap((b) => b.events);
  }

  /** Resolves once at least n events were accepted. */
  async waitForEvents(n: number, timeoutMs = 20_000): Promise<void> {
    const deadline = setTimeout(() => this.emit('timeout'), timeoutMs);
    try {
      while (this.events().length < n) {
        const [what] = await Promise.race([once(this, 'batch'), once(this, 'timeout')]);
        if (what === 'timeout') throw new Error(`timed out: ${this.events().length} of ${n} events arrived`);
      }
    } finally {
      clearTimeout(deadline);
    }
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const target = String(req.headers['x-amz-target'] ?? '');
    const op = target.replace(/^Logs_20140328\./, '');
    this.ops.push(op);
    if (!String(req.headers['content-type']).startsWith('application/x-amz-json-1.1') || !target.startsWith('Logs_20140328.')) {
      return this.answer(res, 400, { __type: 'SerializationException', message: 'not the JSON protocol' });
    }
    if (!String(req.headers.authorization ?? '').startsWith('AWS4-HMAC-SHA256')) {
      return this.answer(res, 400, { __type: 'MissingAuthenticationTokenException', message: 'unsigned' });
    }
    const body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as Record<string, any>;
    if (this.denied.has(op)) {
      return this.answer(res, 400, { __type: 'AccessDeniedException', message: `User: arn:aws:sts::123456789012:assumed-role/fake/i-0 is not authorized to perform: logs:${op}` });
    }
    if (op === 'CreateLogGroup') {
      if (this.groupAppearsOnCreate) this.groups.add(body.logGroupName);
      if (this.groups.has(body.logGroupName)) return this.answer(res, 400, { __type: 'ResourceAlreadyExistsException', message: 'The specified log group already exists' });
      this.groups.add(body.logGroupName);
      return this.answer(res, 200, {});
    }
    if (op === 'PutRetentionPolicy') {
      if (!this.groups.has(body.logGroupName)) return this.answer(res, 400, { __type: 'ResourceNotFoundException', message: 'The specified log group does not exist.' });
      this.retention.set(body.logGroupName, body.retentionInDays);
      return this.answer(res, 200, {});
    }
    if (op === 'CreateLogStream') {
      if (!this.groups.has(body.logGroupName)) return this.answer(res, 400, { __type: 'ResourceNotFoundException', message: 'The specified log group does not exist.' });
      const key = `${body.logGroupName}/${body.logStreamName}`;
      if (this.streams.has(key)) return this.answer(res, 400, { __type: 'ResourceAlreadyExistsException', message: 'The specified log stream already exists' });
      this.streams.add(key);
      return this.answer(res, 200, {});
    }
    if (op === 'PutLogEvents') {
      const n = ++this.putCount;
      const fault = this.putFault(n);
      if (fault === 'hang') return; // never answered
      if (fault === 'throttle') return this.answer(res, 400, { __type: 'ThrottlingException', message: 'Rate exceeded' });
      if (fault === '500') return this.answer(res, 500, { __type: 'InternalFailure', message: 'internal error' });
      if (fault === 'invalid') return this.answer(res, 400, { __type: 'InvalidParameterException', message: 'bad batch' });
      const key = `${body.logGroupName}/${body.logStreamName}`;
      if (fault === 'not-found' || !this.streams.has(key)) return this.answer(res, 400, { __type: 'ResourceNotFoundException', message: 'The specified log stream does not exist.' });
      this.check(body.logEvents as LogEvent[]);
      this.batches.push({ group: body.logGroupName, stream: body.logStreamName, events: body.logEvents });
      this.answer(res, 200, { nextSequenceToken: String(n) });
      this.emit('batch');
      return;
    }
    this.answer(res, 400, { __type: 'UnknownOperationException' });
  }

  private check(events: LogEvent[]): void {
    const i = this.batches.length;
    if (events.length === 0 || events.length > 10_000) this.violations.push(`batch ${i}: ${events.length} events`);
    const bytes = events.reduce((s, e) => s + Buffer.byteLength(e.message) + 26, 0);
    if (bytes > 1_048_576) this.violations.push(`batch ${i}: ${bytes} bytes`);
    for (let k = 1; k < events.length; k++) {
      if (events[k].timestamp < events[k - 1].timestamp) this.violations.push(`batch ${i}: not chronological at ${k}`);
    }
    if (events.length && events[events.length - 1].timestamp - events[0].timestamp > 24 * 3600 * 1000) this.violations.push(`batch ${i}: spans more than 24 h`);
  }

  private answer(res: ServerResponse, status: number, body: unknown): void {
    res.writeHead(status, { 'content-type': 'application/x-amz-json-1.1', 'x-amzn-requestid': 'fake' });
    res.end(JSON.stringify(body));
  }
}
