/**
 * Which files `report` reads by default, and reading JSON lines from them as streams (large files;
 * `.gz` rotated files too). Unparsable lines are counted, never fatal; a file that fails part-way
 * keeps what was read before the failure.
 */
import { createReadStream, readdirSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { StringDecoder } from 'node:string_decoder';
import type { Readable } from 'node:stream';
import { createGunzip } from 'node:zlib';

/**
 * The log file and its rotated siblings (`name.N`, `name.N.gz`), oldest first: highest N first, the
 * live file last. Pure: takes the directory's entries.
 */
export function siblingsOldestFirst(logFile: string, entries: readonly string[]): string[] {
  const base = basename(logFile);
  const rotated: Array<{ n: number; name: string }> = [];
  for (const name of entries) {
    if (!name.startsWith(`${base}.`)) continue;
    const m = /^(\d+)(\.gz)?$/.exec(name.slice(base.length + 1));
    if (m) rotated.push({ n: Number(m[1]), name });
  }
  rotated.sort((a, b) => b.n - a.n || a.name.localeCompare(b.name));
  const dir = dirname(logFile);
  return [...rotated.map((r) => join(dir, r.name)), ...(entries.includes(base) ? [logFile] : [])];
}

export function defaultFiles(logFile: string): string[] {
  let entries: string[] = [];
  try { entries = readdirSync(dirname(logFile)); } catch { /* none */ }
  return siblingsOldestFirst(logFile, entries);
}

export interface ReadCounts {
  lines: number;
  unparsable: number;
}

/**
 * Splits decoded text into lines as it arrives; the text after the last newline is held until
 * more comes, and handed back by rest() (a last line without its newline, or one cut short).
 */
export class LineSplitter {
  private held = '';
  push(text: string, onLine: (line: string) => void): void {
    let from = 0;
    const s = this.held + text;
    for (let nl = s.indexOf('\n', from); nl !== -1; nl = s.indexOf('\n', from)) {
      onLine(s.slice(from, nl).replace(/\r$/, ''));
      from = nl + 1;
    }
    this.held = s.slice(from);
  }
  rest(): string {
    const r = this.held;
    this.held = '';
    return r;
  }
}

/** Count one line and hand its record on (or count it unparsable). Pure but for the callback. */
function takeLine(line: string, onRecord: (rec: unknown) => void, counts: ReadCounts): void {
  if (line.trim() === '') return;
  counts.lines++;
  let rec: unknown;
  try { rec = JSON.parse(line); } catch { counts.unparsable++; return; }
  onRecord(rec);
}

/** A file that could not be read to its end: how far reading got, and why it stopped. */
export class ReadError extends Error {
  constructor(readonly path: string, readonly linesRead: number, readonly reason: Error) {
    super(reason.message);
  }
}

/**
 * Call onRecord for every parsable JSON line of the file; counts lines and unparsable ones. When
 * the file cannot be opened, or stops being readable part-way (a truncated or corrupt `.gz`), every
 * line read before that point has already been handed on, and a ReadError says how many and why.
 * The text after the last complete line of such a file is tried as a line too.
 */
export async function readJsonLines(path: string, onRecord: (rec: unknown) => void, counts: ReadCounts): Promise<void> {
  const before = counts.lines;
  const file = createReadStream(path);
  let input: Readable = file;
  if (path.endsWith('.gz')) input = file.pipe(createGunzip());
  const decoder = new StringDecoder('utf8');
  const split = new LineSplitter();
  const onLine = (line: string): void => takeLine(line, onRecord, counts);
  await new Promise<void>((resolve, reject) => {
    let settled = false;
    const fail = (err: Error): void => {
      if (settled) return;
      settled = true;
      file.destroy();
      input.destroy();
      split.push(decoder.end(), onLine);
      onLine(split.rest());
      reject(new ReadError(path, counts.lines - before, err));
    };
    file.once('error', fail);
    if (input !== file) input.once('error', fail);
    input.on('data', (chunk: Buffer) => split.push(decoder.write(chunk), onLine));
    input.once('end', () => {
      if (settled) return;
      settled = true;
      split.push(decoder.end(), onLine);
      onLine(split.rest());
      resolve();
    });
  });
}
