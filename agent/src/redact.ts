/**
 * Removing secrets from anything the agent writes. Two layers: the scrubber (scrub.ts: sensitive
 * words in argument and key names, IMDS/STS token shapes), and the exact token values the agent has
 * seen on the wire, wherever they appear. Pure apart from the bounded set of seen values it holds.
 */
import { DEFAULTS } from './defaults.js';
import { sharedCopy } from './output/record-json.js';
import type { ProcessInfo } from './record.js';
import { REDACTED, Scrubber } from './scrub.js';

export { REDACTED };

const MIN_SECRET = 8;
const TEXT_MEMO_SIZE = 512;
const ARGV_MEMO_SIZE = 256;
const defaultScrubber = new Scrubber(DEFAULTS.scrubWords, DEFAULTS.scrubExempt);
/** redactProcess's text redaction, unused when its argv redaction is given. */
const unused = (s: string): string => s;

/**
 * argv through redact, with the default words deciding which arguments name a secret (whose value
 * is the next argument, removed whole).
 */
export function redactArgv(args: string[], redact: (s: string) => string): string[] {
  return defaultScrubber.argv(args).map((a) => (a === REDACTED ? a : redact(a)));
}

export class Redactor {
  private readonly seen = new Set<string>();
  /** Texts already redacted (paths and User-Agents repeat): forgotten whenever a new secret is seen. */
  private readonly texts = new Map<string, string>();
  /** argvs already redacted (a host has few callers, calling again and again), forgotten likewise. */
  private readonly argvs = new Map<string, string[]>();
  private argvsBySame = new WeakMap<string[], string[]>();
  /**
   * Process descriptions already redacted, by the description itself: attribution hands out one
   * description for a caller's calls (a kept-alive connection's caller, the eBPF backend's LastProcess)
   * and never changes it once made. Forgotten likewise whenever a new secret is seen.
   */
  private processes = new WeakMap<ProcessInfo, ProcessInfo>();
  private readonly scrubber: Scrubber;
  /** argv bound once (not a new function per record). */
  private readonly argvOf = (args: string[]): string[] => this.argv(args);

  /** extraWords: added to the default scrub words (`run --scrub-word`). */
  constructor(private readonly maxSecrets = 1024, extraWords: readonly string[] = []) {
    this.scrubber = extraWords.length
      ? new Scrubber([...DEFAULTS.scrubWords, ...extraWords], DEFAULTS.scrubExempt)
      : defaultScrubber;
  }

  /** Remember a secret value seen on the wire (a token in a request header). */
  addSecret(value: string): void {
    const v = value.trim();
    if (v.length < MIN_SECRET || this.seen.has(v)) return;
    if (this.seen.size >= this.maxSecrets) {
      const oldest = this.seen.values().next().value as string;
      this.seen.delete(oldest);
    }
    this.seen.add(v);
    this.texts.clear(); // a text redacted before may hold the new secret
    this.argvs.clear();
    this.argvsBySame = new WeakMap();
    this.processes = new WeakMap();
  }

  text(s: string): string {
    let out = this.texts.get(s);
    if (out === undefined) {
      out = this.seenOut(this.scrubber.text(s));
      if (this.texts.size >= TEXT_MEMO_SIZE) this.texts.clear();
      this.texts.set(s, out);
    }
    return out;
  }

  private seenOut(s: string): string {
    let out = s;
    for (const secret of this.seen) {
      if (out.includes(secret)) out = out.split(secret).join(REDACTED);
    }
    return out;
  }

  /** argv with secrets removed: values of sensitive names (also the argument after a bare name), token shapes, seen tokens. */
  argv(args: string[]): string[] {
    let out = this.argvsBySame.get(args); // the same array again (attribution keeps what it found per process)
    if (out === undefined) {
      let key = '';
      for (const a of args) key += `${a.length}:${a}`; // no two argvs share a key
      out = this.argvs.get(key);
      if (out === undefined) {
        out = this.scrubber.argv(args).map((a) => this.seenOut(a));
        if (this.argvs.size >= ARGV_MEMO_SIZE) this.argvs.clear();
        this.argvs.set(key, out);
      }
      this.argvsBySame.set(args, out);
    }
    return out.slice(); // the caller's own array
  }

  /**
   * redactProcess(p) with this redactor's argv, as a shared copy (deeply frozen, its JSON made once:
   * output/record-json.ts) remembered for p itself: a caller's descriptions are redacted once, not
   * once per record; what is remembered by the redacted description (the SDK answer) is remembered
   * for as long. Records share it: nothing can change it. A description with no argv (no caller
   * found) gets a plain copy each time, as redactProcess gives: nothing to remember it by.
   */
  process(p: ProcessInfo): ProcessInfo {
    if (p.argv === undefined && p.ancestors === undefined) return redactProcess(p, unused, this.argvOf);
    let out = this.processes.get(p);
    if (out === undefined) {
      out = sharedCopy(redactProcess(p, unused, this.argvOf));
      this.processes.set(p, out);
    }
    return out;
  }
}

/**
 * A process description with every argv (its own and its ancestors') passed through argv: the one
 * place both attribution backends' results are scrubbed before any output.
 */
export function redactProcess(p: ProcessInfo, redact: (s: string) => string,
  argv: (args: string[]) => string[] = (a) => redactArgv(a, redact)): ProcessInfo {
  const out: ProcessInfo = { ...p };
  if (p.argv) out.argv = argv(p.argv);
  if (p.ancestors) out.ancestors = p.ancestors.map((a) => ({ ...a, argv: a.argv ? argv(a.argv) : null }));
  return out;
}
