/**
 * Which files `report` reads by default, and reading JSON lines from them as streams (large files;
 * `.gz` rotated files too). Unparsable lines are counted, never fatal.
 */
import { createReadStream, readdirSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { createInterface } from 'node:readline';
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

/** Call onRecord for every parsable JSON line of the file; counts lines and unparsable ones. */
export async function readJsonLines(path: string, onRecord: (rec: unknown) => void, counts: ReadCounts): Promise<void> {
  const file = createReadStream(path);
  const opened = new Promise<void>((resolve, reject) => { file.once('open', () => resolve()); file.once('error', reject); });
  await opened;
  let input: Readable = file;
  if (path.endsWith('.gz')) input = file.pipe(createGunzip());
  const failed = new Promise<never>((_, reject) => input.once('error', reject));
  const lines = createInterface({ input, crlfDelay: Infinity });
  const done = (async () => {
    for await (const line of lines) {
      if (line.trim() === '') continue;
      counts.lines++;
      let rec: unknown;
      try { rec = JSON.parse(line); } catch { counts.unparsable++; continue; }
      onRecord(rec);
    }
  })();
  await Promise.race([done, failed]);
}
