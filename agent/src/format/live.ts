/**
 * `run --format table`: one readable line per call for a person at a terminal, like the bcc tools
 * (time, version, status, pid, caller, path, advice), while the JSON lines still go to the log file.
 * The formatting is pure; LiveTable is a Writable that takes the JSON lines the writer would have
 * put on stdout and writes table lines to the real stdout instead.
 */
import { Writable } from 'node:stream';
import { basename } from 'node:path';

export type OutputFormat = 'auto' | 'json' | 'table';

/** `auto` is a table on a terminal and JSON lines otherwise (the contract for pipes and files). */
export function resolveFormat(f: OutputFormat | undefined, isTTY: boolean | undefined): 'json' | 'table' {
  if (f === 'json' || f === 'table') return f;
  return isTTY ? 'table' : 'json';
}

type Json = Record<string, any>;

const COLS: Array<[string, number]> = [['TIME', 8], ['VER', 4], ['STATUS', 6], ['PID', 7], ['CALLER', 40], ['PATH', 44]];

function cell(s: string, w: number): string {
  return s.length > w ? `${s.slice(0, w - 1)}…` : s.padEnd(w);
}

export function tableHeader(): string {
  return `${COLS.map(([h, w]) => cell(h, w)).join(' ')} ADVICE`;
}

/** The caller in a few words: executable name, then container (name or id) or systemd unit. */
export function callerLabel(p: Json | undefined): string {
  if (!p || p.attribution === 'none') return '?';
  const exe = typeof p.exe === 'string' ? basename(p.exe) : (p.comm ?? '?');
  const c = p.container;
  const k8s = c?.k8s ? `${c.k8s.namespace}/${c.k8s.pod}${c.k8s.container ? `/${c.k8s.container}` : ''}` : null;
  const ecs = c?.ecs ? `${c.ecs.family ?? 'task'}${c.ecs.container ? `/${c.ecs.container}` : ''}` : null;
  const where = c ? (k8s ?? ecs ?? c.name ?? (typeof c.id === 'string' ? c.id.slice(0, 12) : c.runtime))
    : (p.systemd_unit_group ?? p.systemd_unit ?? null);
  return where ? `${exe} (${where})` : exe;
}

function shortAdvice(sdk: Json | undefined): string {
  if (!sdk) return '';
  const label = sdk.name === 'unknown' ? '' : `${sdk.name}${sdk.version ? ` ${sdk.version}` : ''}: `;
  return `${label}${sdk.advice}`;
}

/** One record → one line (or null: stats records are left to the log file). Pure. */
export function formatLive(rec: Json): string | null {
  switch (rec.event) {
    case 'imds_call': {
      const time = typeof rec.time === 'string' ? rec.time.slice(11, 19) : '?';
      const ver = rec.imds_version ?? rec.provider ?? '?';
      const status = rec.response?.status ?? '-';
      const pid = rec.process?.pid ?? '-';
      const path = `${rec.request?.method === 'GET' ? '' : `${rec.request?.method ?? '?'} `}${rec.request?.path ?? '?'}`;
      const cells = [time, String(ver), String(status), String(pid), callerLabel(rec.process), path];
      const extra = rec.v1_reason && !rec.sdk ? `v1_reason ${rec.v1_reason}` : shortAdvice(rec.sdk);
      return `${cells.map((c, i) => cell(c, COLS[i][1])).join(' ')} ${extra}`.trimEnd();
    }
    case 'ready':
      return `Tracing IMDS calls on ${rec.interface} (attribution: ${rec.backend}${rec.log_file ? `; JSON lines in ${rec.log_file}` : ''}). Ctrl-C to stop.\n${tableHeader()}`;
    case 'error':
      return `ERROR ${rec.component}: ${rec.message}`;
    case 'notice':
      return `NOTICE ${rec.component}: ${rec.message}`;
    default:
      return null;
  }
}

/** Takes JSON lines, writes table lines to `out`. A line that is not JSON is passed on as it is. */
export class LiveTable extends Writable {
  private buf = '';

  constructor(private readonly out: NodeJS.WritableStream) {
    super({ decodeStrings: false });
  }

  override _write(chunk: string | Buffer, _enc: BufferEncoding, done: (err?: Error | null) => void): void {
    this.buf += chunk.toString();
    let text = '';
    let nl: number;
    while ((nl = this.buf.indexOf('\n')) >= 0) {
      const line = this.buf.slice(0, nl);
      this.buf = this.buf.slice(nl + 1);
      let rec: Json | null = null;
      try { rec = JSON.parse(line) as Json; } catch { text += `${line}\n`; continue; }
      const l = formatLive(rec);
      if (l !== null) text += `${l}\n`;
    }
    if (text === '' || this.out.write(text)) done();
    else this.out.once('drain', () => done());
  }
}
