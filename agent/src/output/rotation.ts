/**
 * Size-based rotation of the JSON lines file: `calls.jsonl` → `calls.jsonl.1` → … → `calls.jsonl.N`,
 * the oldest dropped. The decisions are pure (planChunks, rotatedName); rotateFiles does the renames.
 * Rotation happens only between lines, so a line is never split across two files.
 */
import { renameSync, unlinkSync } from 'node:fs';

export interface RotationLimits {
  /** Rotate before a line would take the file past this many bytes. */
  maxBytes: number;
  /** Rotated files kept (`.1` … `.files`); 0 keeps none (the file is truncated by renaming it away). */
  files: number;
}

/** `calls.jsonl` and 3 → `calls.jsonl.3`; 0 → the file itself. */
export function rotatedName(path: string, n: number): string {
  return n === 0 ? path : `${path}.${n}`;
}

/**
 * Split lines (with their byte sizes) into runs written to successive files: the first run goes to
 * the current file, which already holds `size` bytes; every later run starts a fresh file (a
 * rotation before it). A file is never taken past maxBytes except by a single line larger than
 * maxBytes, which then fills a file of its own. Pure.
 */
export function planChunks(sizes: readonly number[], size: number, maxBytes: number): number[][] {
  const runs: number[][] = [[]];
  let used = size;
  sizes.forEach((bytes, i) => {
    if (used > 0 && used + bytes > maxBytes) {
      runs.push([]);
      used = 0;
    }
    runs[runs.length - 1].push(i);
    used += bytes;
  });
  return runs;
}

/** Shift `path.(N-1)` → `path.N` … `path` → `path.1`, dropping the oldest. Missing files are skipped. */
export function rotateFiles(path: string, files: number): void {
  const ignoreMissing = (f: () => void): void => {
    try { f(); } catch (err) { if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err; }
  };
  if (files <= 0) {
    ignoreMissing(() => unlinkSync(path));
    return;
  }
  ignoreMissing(() => unlinkSync(rotatedName(path, files)));
  for (let n = files - 1; n >= 0; n--) {
    ignoreMissing(() => renameSync(rotatedName(path, n), rotatedName(path, n + 1)));
  }
}
