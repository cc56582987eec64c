/**
 * Turning requests into call records: a request waits for its response status (or the end of its
 * connection, or a bounded time) and for its caller's attribution (bounded), then its record is made.
 * Bounded: beyond maxPending the oldest request is finalised at once.
 */
import { classify, type Classification } from '../classify.js';
import type { Ambiguity, RequestHead } from '../wire/http-head.js';
import type { Conn } from '../wire/flows.js';
import { redactProcess } from '../redact.js';
import { fitCallRecord } from '../fit.js';
import { DEFAULTS } from '../defaults.js';
import { identifySdkFor } from '../advice/sdk.js';
import { buildCallRecord, type CallRecord, type ConnectionInfo, type ProcessInfo, type V1Reason } from '../record.js';
import { answerDropped } from '../hop-limit.js';
import { shiftKeep } from '../shift-keep.js';

const V1_REASON_WINDOW_MS = 60_000;

export interface PendingCallsOptions {
  responseWaitMs: number;
  attributionWaitMs: number;
  maxPending: number;
  /**
   * Records waiting for their caller at most (default DEFAULTS.maxAttributingCalls): past it, a
   * record is written at once with attribution `none` (counted in `unattributedOverload`).
   */
  maxAttributing?: number;
  redact(s: string): string;
  /** argv scrubbing (default: the default scrub words, then redact). */
  redactArgv?(args: string[]): string[];
  /**
   * The caller's description with every argv scrubbed (default: redactProcess with redactArgv, a copy
   * per record). A frozen answer is one remembered for many records (Redactor.process): the records
   * share it (nothing can change it; its JSON is made once, output/record-json.ts), and the SDK answer
   * is remembered by it.
   */
  redactProcess?(p: ProcessInfo): ProcessInfo;
  /**
   * A record larger than this is shrunk to fit here (default: not here; the writer's guard, fit.ts
   * callLine, fits every call record to a CloudWatch Logs event where its line is made).
   */
  maxRecordBytes?: number;
  connection(conn: Conn): ConnectionInfo;
  /** connection(conn).src alone (default: from connection). */
  source?(conn: Conn): string;
  /** Whether src (as the caller sent it) is one of the host's own addresses: its answers are not forwarded. */
  isLocalAddress(src: string): boolean;
  attribution(conn: Conn): Promise<ProcessInfo>;
  /**
   * The caller when it is known already (a kept-alive connection's): the record is then made at once,
   * with no wait and no promise. Undefined: ask attribution() and wait (bounded).
   */
  attributionNow?(conn: Conn): ProcessInfo | undefined;
  emit(rec: CallRecord): void;
  /** The clock a request's wait for its answer runs on (default: the wall clock; a capture file's time offline). */
  responseTimers?: ResponseTimers;
}

/** setTimeout/clearTimeout on some clock. */
export interface ResponseTimers {
  set(fn: () => void, ms: number): unknown;
  clear(handle: unknown): void;
}

interface Pending {
  /** Only tracked (token requests are, to explain a later IMDSv1 fallback), not written. */
  write: boolean;
  conn: Conn;
  /** The request's first sequence number: what its answer is matched by. */
  seq: number;
  head: RequestHead;
  cls: Classification;
  at: Date;
  status: number | null;
  /** IP TTL / hop limit of the answer as the host saw it first. */
  ttl: number | null;
  /** Its wait for the answer: a handle of responseTimers, else a Wait of the shared queue. */
  timer: unknown;
  done: boolean;
  /** Its neighbours in the list of calls waiting (PendingCalls.oldest/newest). */
  older: Pending | null;
  newer: Pending | null;
}

export class PendingCalls {
  /**
   * Every call waiting for its answer, as a list from the oldest (the first to go when too many wait)
   * to the newest; each connection's are also on the connection (Conn.waiting, oldest first). No map
   * or set: a call comes and goes without a hash table growing, shrinking or being made for it.
   */
  private oldest: Pending | null = null;
  private newest: Pending | null = null;
  private waitingCount = 0;
  private readonly inFlight = new Set<Promise<void>>();
  /** Token requests whose caller is still being looked up (for v1_reason): records wait behind them. */
  private tokenPutsAttributing = 0;
  /** The latest token request of each caller (pid), to explain its IMDSv1 calls. */
  private readonly tokenPuts = new Map<number, Pending>();
  forced = 0;
  /** Records written without waiting for their caller: too many were waiting already. */
  unattributedOverload = 0;
  /** Every record's wait for its caller, on one timer (not one timer per record). */
  private readonly attributionWaits: Waits;
  /** Every call's wait for its answer on one timer, when no other clock is given (responseTimers). */
  private readonly responseWaits: Waits<Pending>;

  /** The caller's description for a record (see PendingCallsOptions.redactProcess). */
  private readonly processOf: (p: ProcessInfo) => ProcessInfo;

  constructor(private readonly o: PendingCallsOptions) {
    const argv = o.redactArgv ? (a: string[]): string[] => o.redactArgv!(a) : undefined;
    this.processOf = o.redactProcess ? (p) => o.redactProcess!(p) : (p) => redactProcess(p, o.redact, argv);
    this.attributionWaits = new Waits(o.attributionWaitMs);
    this.responseWaits = new Waits<Pending>(o.responseWaitMs, undefined, true, (p) => this.finalise(p));
  }

  add(conn: Conn, head: RequestHead, seq: number, cls: Classification, at: Date, write = true): void {
    if (this.waitingCount >= this.o.maxPending) {
      const oldest = this.oldest!;
      if (oldest.write) this.forced++;
      this.finalise(oldest);
    }
    const p: Pending = { write, seq, conn, head, cls, at, status: null, ttl: null, timer: null, done: false, older: this.newest, newer: null };
    if (cls.tokenRequest) this.attributeTokenPut(p);
    if (this.newest) this.newest.newer = p; else this.oldest = p;
    this.newest = p;
    this.waitingCount++;
    (conn.waiting ??= []).push(p);
    p.timer = this.o.responseTimers
      ? this.o.responseTimers.set(() => this.finalise(p), this.o.responseWaitMs)
      : this.responseWaits.add(p);
  }

  /** A token request's caller, remembered to explain its later IMDSv1 calls (v1Reason). */
  private attributeTokenPut(p: Pending): void {
    const known = this.o.attributionNow?.(p.conn);
    if (known) {
      this.noteTokenPut(known, p);
      return;
    }
    this.tokenPutsAttributing++;
    void this.o.attribution(p.conn).then((proc) => this.noteTokenPut(proc, p))
      .finally(() => { this.tokenPutsAttributing--; });
  }

  /** The call of conn with that sequence number still waiting (answers come in order: mostly the first). */
  private find(conn: Conn, seq: number): Pending | undefined {
    const waiting = conn.waiting as Pending[] | undefined;
    if (!waiting) return undefined;
    for (let i = 0; i < waiting.length; i++) if (waiting[i].seq === seq) return waiting[i];
    return undefined;
  }

  response(conn: Conn, seq: number | null, status: number, ttl: number | null = null): void {
    if (seq === null) return;
    const p = this.find(conn, seq);
    if (!p || p.done) return;
    p.status = status;
    p.ttl = ttl;
    this.finalise(p);
  }

  /**
   * A request still waiting turned out ambiguous (found below HTTP after its head was read): it is
   * classified again, and written if its new version is wanted. Null when it is no longer waiting.
   */
  amend(conn: Conn, seq: number, why: Ambiguity, wanted: (v: Classification['imdsVersion']) => boolean)
    : { before: Classification; after: Classification; first: boolean } | null {
    const p = this.find(conn, seq);
    if (!p || p.done) return null;
    const before = p.cls;
    const first = !p.head.ambiguity;
    if (first) p.head = { ...p.head, ambiguity: why };
    p.cls = classify(p.head);
    if (wanted(p.cls.imdsVersion)) p.write = true;
    return { before, after: p.cls, first };
  }

  /** The answer was seen but cannot reach the caller (hop limit): why, else null. */
  private dropped(p: Pending, src?: string): 'hop_limit' | null {
    if (p.status === null) return null;
    return answerDropped(p.ttl, this.o.isLocalAddress(src ?? (this.o.source ? this.o.source(p.conn) : this.o.connection(p.conn).src)));
  }

  private noteTokenPut(proc: ProcessInfo, p: Pending): void {
    if (proc.pid === undefined) return;
    this.tokenPuts.delete(proc.pid);
    this.tokenPuts.set(proc.pid, p);
    if (this.tokenPuts.size > this.o.maxPending) this.tokenPuts.delete(this.tokenPuts.keys().next().value as number);
  }

  /**
   * Why a caller used IMDSv1: its token request shortly before went unanswered (a PUT response hop
   * limit too low for a container) or was refused (403/404/405), and SDKs then fall back to IMDSv1.
   */
  private v1Reason(p: Pending, proc: ProcessInfo): V1Reason | undefined {
    if (p.cls.imdsVersion !== 'v1' || proc.pid === undefined) return undefined;
    const put = this.tokenPuts.get(proc.pid);
    if (!put || put.at > p.at || p.at.getTime() - put.at.getTime() > V1_REASON_WINDOW_MS) return undefined;
    if (put.status === null || this.dropped(put) !== null) return 'token_put_unanswered';
    if (put.status === 403 || put.status === 404 || put.status === 405) return 'token_put_refused';
    return undefined;
  }

  /** The connection ended: its requests will get no response. */
  closed(conn: Conn): void {
    const waiting = conn.waiting as Pending[] | undefined;
    if (!waiting) return;
    while (waiting.length > 0) this.finalise(waiting[0]); // each leaves the list
    // The connection may be kept a while yet (its first sequence number, for NAT): not its list.
    conn.waiting = undefined;
  }

  private finalise(p: Pending): void {
    if (p.done) return;
    p.done = true;
    if (p.timer) {
      if (this.o.responseTimers) this.o.responseTimers.clear(p.timer);
      else this.responseWaits.answered(p.timer as Wait<Pending>);
    }
    this.unlink(p);
    if (!p.write) return;
    // The caller known already, and no record ahead of this one still waiting (records keep the order
    // their calls were decided in; a token request still being attributed may yet explain this call).
    const known = this.inFlight.size === 0 && this.tokenPutsAttributing === 0 ? this.o.attributionNow?.(p.conn) : undefined;
    if (known) {
      this.emitRecord(p, known);
      return;
    }
    const job = this.attribute(p).then((proc) => this.emitRecord(p, proc));
    this.inFlight.add(job);
    void job.finally(() => this.inFlight.delete(job));
  }

  /** p no longer waits: off the list and off its connection's. */
  private unlink(p: Pending): void {
    if (p.older) p.older.newer = p.newer; else this.oldest = p.newer;
    if (p.newer) p.newer.older = p.older; else this.newest = p.older;
    p.older = p.newer = null;
    this.waitingCount--;
    const waiting = p.conn.waiting;
    if (!waiting) return;
    const i = waiting[0] === p ? 0 : waiting.indexOf(p);
    if (i === 0) shiftKeep(waiting); else if (i > 0) waiting.splice(i, 1);
  }

  private emitRecord(p: Pending, proc: ProcessInfo): void {
    const h = p.head;
    const connection = this.o.connection(p.conn);
    const dropped = this.dropped(p, connection.src);
    const redacted = this.processOf(proc);
    const rec = buildCallRecord({
      at: p.at, classification: p.cls, method: h.method, target: h.target, httpVersion: h.version,
      tokenPresent: h.tokenPresent, tokenTtlSeconds: h.tokenTtlSeconds, userAgent: h.userAgent,
      headersTruncated: h.headersTruncated, ambiguity: h.ambiguity, status: dropped ? null : p.status, connection,
      process: redacted,
    }, this.o.redact);
    if (p.cls.tokenRequest) rec.response.ttl = p.ttl;
    if (dropped) rec.response.dropped = dropped;
    const why = this.v1Reason(p, proc);
    if (why) rec.v1_reason = why;
    if (rec.provider === 'aws') {
      rec.sdk = identifySdkFor(redacted, rec.imds_version, rec.request?.user_agent ?? null, why);
    }
    this.o.emit(this.o.maxRecordBytes === undefined ? rec : fitCallRecord(rec, this.o.maxRecordBytes)); // the CloudWatch bound: where the line is made (fit.ts callLine)
  }

  /**
   * The caller, or `none` when attribution has not answered within attributionWaitMs — or at once
   * when too many records wait for theirs already (a burst faster than attribution: each waiting
   * record holds memory, so the wait is bounded in number too, not only in time).
   */
  private attribute(p: Pending): Promise<ProcessInfo> {
    if (this.inFlight.size >= (this.o.maxAttributing ?? DEFAULTS.maxAttributingCalls)) {
      this.unattributedOverload++;
      return Promise.resolve({ attribution: 'none', reason: 'too many calls waiting for their caller (overload)' });
    }
    const found = this.o.attribution(p.conn);
    return new Promise<ProcessInfo>((resolve, reject) => {
      const wait = this.attributionWaits.add(() => resolve({ attribution: 'none', reason: 'attribution timed out' }));
      found.then((proc) => { this.attributionWaits.answered(wait); resolve(proc); },
        (err: unknown) => { this.attributionWaits.answered(wait); reject(err); });
    });
  }

  /** Finalise everything now and wait until every record is emitted. */
  async flush(): Promise<void> {
    while (this.oldest) this.finalise(this.oldest);
    while (this.inFlight.size > 0) await Promise.all([...this.inFlight]);
  }

  get size(): number {
    return this.waitingCount;
  }
}

/** The default of Waits' fire: the item is the function to call. */
const call = (f: unknown): void => (f as () => void)();

interface Wait<T> {
  at: number;
  /** What fire() is given; undefined once answered (what it would have resolved is not kept until its time). */
  item: T | undefined;
  /** Answered or fired: it will not fire (again). */
  done: boolean;
}

/** A queue longer than this is let go of when it empties (after a burst), not kept for reuse. */
const KEPT_QUEUE_SLOTS = 1024;

/**
 * Waits that all last the same time, on one timer: they end in the order they began, so they queue,
 * and the timer is set for the oldest one only. What a setTimeout per wait (cleared when answered) did,
 * without a timer per record: the timer holds the process up only while a wait is still unanswered.
 * Each wait holds an item, given to the one fire function when its time comes (a default of calling
 * it): a caller with one action for every wait makes no function per wait. The queue's slots are
 * reused once it empties (no array made when, as mostly, every wait is answered before the next begins).
 */
export class Waits<T = () => void> {
  /** queue[head..tail) are queued; slots from tail on are free (undefined). */
  private queue: Array<Wait<T> | undefined> = [];
  private head = 0;
  private tail = 0;
  private timer: NodeJS.Timeout | null = null;
  /** Waits neither answered nor fired. */
  private open = 0;
  /** The deadline the timer is set for. */
  private armedFor = 0;

  /**
   * hold: whether an unanswered wait keeps the process up (as a setTimeout does; not as an unref'd one).
   * fire: what is done with a wait's item when its time comes.
   */
  constructor(private readonly ms: number, private readonly now: () => number = () => Date.now(), private readonly hold = true,
    private readonly fire: (item: T) => void = call) {}

  /** fire(item) is called ms from now unless answered() before. */
  add(item: T): Wait<T> {
    const w: Wait<T> = { at: this.now() + this.ms, item, done: false };
    this.queue[this.tail++] = w;
    if (++this.open === 1 && this.timer && this.hold) this.timer.ref();
    if (!this.timer) this.arm();
    return w;
  }

  /** The wait is over before its time: it will not fire. */
  answered(w: Wait<T>): void {
    if (w.done) return;
    w.done = true;
    w.item = undefined;
    if (--this.open > 0) return;
    // Nothing left to fire: the queue is emptied; the timer, if set, fires for nothing and stops.
    this.empty();
    this.timer?.unref();
  }

  /** Waits neither answered nor fired. */
  get size(): number {
    return this.open;
  }

  /** Every slot freed (the queue kept for reuse unless a burst made it long). */
  private empty(): void {
    if (this.queue.length > KEPT_QUEUE_SLOTS) this.queue = [];
    else for (let i = this.head; i < this.tail; i++) this.queue[i] = undefined;
    this.head = 0;
    this.tail = 0;
  }

  private arm(): void {
    const first = this.queue[this.head]!;
    this.armedFor = first.at;
    this.timer = setTimeout(() => this.expire(), Math.max(1, first.at - this.now()));
    if (this.open === 0 || !this.hold) this.timer.unref();
  }

  private expire(): void {
    this.timer = null;
    if (this.head === this.tail) return;
    // The deadline the timer was set for has come, whatever the clock read says (a timer may run a
    // millisecond before Date.now() shows it).
    const now = Math.max(this.now(), this.armedFor);
    while (this.head < this.tail && this.queue[this.head]!.at <= now) {
      const w = this.queue[this.head]!;
      this.queue[this.head++] = undefined;
      if (!w.done) {
        const item = w.item as T;
        w.done = true;
        w.item = undefined;
        this.open--;
        this.fire(item);
      }
    }
    if (this.head === this.tail) { this.empty(); return; }
    if (this.head > KEPT_QUEUE_SLOTS && this.head * 2 > this.tail) {
      this.queue = this.queue.slice(this.head, this.tail);
      this.tail -= this.head;
      this.head = 0;
    }
    this.arm();
  }
}
