/**
 * A readable copy of the built agent, for tests that run it as another (unprivileged) user.
 *
 * The checkout may live where only root can enter (a clone under /root, mode 0700): another user
 * then cannot even reach dist/cli.js there. stageBuild() copies what running the agent needs —
 * package.json, bin/, dist/, the capture helper, the eBPF loader and the production dependencies
 * (package.json `dependencies`, followed through each package's own) — into a fresh directory
 * under the system's temp directory, world-readable and writable by root only, whatever the
 * modes of the checkout. It never changes the checkout.
 */
import { chmodSync, cpSync, existsSync, lstatSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, relative } from 'node:path';

export interface StagedBuild {
  /** The copy's root (holds package.json, dist/, bin/, bpf/.output, native/.output, node_modules). */
  root: string;
  /** dist/cli.js of the copy. */
  cli: string;
  remove(): void;
}

/** What running the built agent needs from a checkout, besides the production dependencies. */
export const STAGED_ITEMS = ['package.json', 'bin', 'dist', 'bpf/.output/imds_connect', 'native/.output/imds_capture'];

/**
 * The directories (relative to repo) of the production dependencies, resolved the way Node does
 * (nearest node_modules first, walking up to the repository's). Missing optional ones are skipped.
 */
export function productionPackages(repo: string): string[] {
  const found = new Set<string>();
  const visit = (fromDir: string): void => {
    const pkg = JSON.parse(readFileSync(join(fromDir, 'package.json'), 'utf8')) as {
      dependencies?: Record<string, string>; optionalDependencies?: Record<string, string>;
    };
    for (const name of Object.keys({ ...pkg.dependencies, ...pkg.optionalDependencies })) {
      const dir = resolvePackage(repo, fromDir, name);
      if (dir === null || found.has(dir)) continue;
      found.add(dir);
      visit(dir);
    }
  };
  visit(repo);
  return [...found].map((d) => relative(repo, d)).sort();
}

function resolvePackage(repo: string, fromDir: string, name: string): string | null {
  for (let dir = fromDir; ; dir = dirname(dir)) {
    const candidate = join(dir, 'node_modules', name);
    if (existsSync(join(candidate, 'package.json'))) return candidate;
    if (dir === repo || dirname(dir) === dir) return null;
  }
}

/** Directories 0755; files readable by all, executable by all where the owner may execute them. */
function readableByAll(path: string): void {
  const st = lstatSync(path);
  if (st.isSymbolicLink()) return;
  if (st.isDirectory()) {
    chmodSync(path, 0o755);
    for (const name of readdirSync(path)) readableByAll(join(path, name));
  } else {
    chmodSync(path, (st.mode & 0o100) !== 0 ? 0o755 : 0o644);
  }
}

/** Copy the built agent of `repo` to a readable temp directory (see the file's comment). */
export function stageBuild(repo: string): StagedBuild {
  const root = mkdtempSync(join(tmpdir(), 'imds-tracer-staged-'));
  try {
    for (const item of [...STAGED_ITEMS, ...productionPackages(repo)]) {
      const from = join(repo, item);
      if (existsSync(from)) cpSync(from, join(root, item), { recursive: true, dereference: true });
    }
    readableByAll(root); // whatever the checkout's modes (and mkdtemp's 0700)
  } catch (err) {
    rmSync(root, { recursive: true, force: true });
    throw err;
  }
  return { root, cli: join(root, 'dist', 'cli.js'), remove: () => rmSync(root, { recursive: true, force: true }) };
}
