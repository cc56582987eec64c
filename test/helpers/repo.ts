/**
 * Where the tests find the checkout and its build: one place instead of each test file computing
 * the repository root. `CLI` is the built command line (dist/cli.js; `npm run build:ts` makes it).
 */
import { spawnSync, type SpawnSyncOptions } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';

export const REPO = join(import.meta.dirname, '..', '..');
export const DIST = join(REPO, 'dist');
export const CLI = join(DIST, 'cli.js');

/** Why tests that run the built CLI must skip, or null when it is built. */
export const notBuilt: string | null = existsSync(CLI) ? null : 'dist/ not built: run npm run build';

/** Run the built CLI to its end: status, stdout and stderr as text. */
export function runCli(args: string[], o: SpawnSyncOptions = {}): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', ...o });
  return { status: r.status, stdout: String(r.stdout ?? ''), stderr: String(r.stderr ?? '') };
}
