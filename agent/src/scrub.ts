/**
 * Scrubbing secrets out of command lines (and any other text the agent writes), the way process
 * agents do it: a list of sensitive words matched inside argument and key names, whose values are
 * replaced; plus IMDS and STS token shapes wherever they appear. Pure.
 *
 * A name is a run of [A-Za-z0-9_.-]; it is sensitive when it contains one of the words (any case,
 * "-" and "_" alike: api_key matches --api-key) and is not exempt. Its value is replaced in these shapes:
 *  - `--name value` (the next argument, or within a script the next word), unless that is itself
 *    an option (`-x…`, `--x…`) when nothing but whitespace separates them;
 *  - `--name=value`, `name=value`, `name: value`, `name := value`, `name => value`;
 *  - a quoted name in JSON, a Python dict, a PowerShell hashtable or a call:
 *    `{"name": "value"}`, `{'name': value}`, `@{"name" = 'value'}`, `h["name"] = v`,
 *    `add_header('name', 'value')`;
 *  - a name alone as an argument (`-H X-aws-ec2-metadata-token: $T`): the next argument.
 * A quoted value is replaced inside its quotes; an unquoted one up to whitespace or shell/code
 * punctuation, unless it is a shell/PowerShell reference (`$T`, `${T}`, `$(curl …)`), which holds no
 * secret itself (the argument after a bare name is replaced whatever it is). Independently, IMDSv2 tokens (`AQAE` + base64) and STS session tokens
 * (`IQoJb3JpZ2lu…`, `FwoGZXIvYXdzE…`) are replaced wherever they appear, and so is the password of
 * a URL (`https://user:password@host`). argv[0] is never a name
 * (as in Datadog's scrubber: a program is not a key).
 */
export const REDACTED = '[REDACTED]';

const NAME_CHAR = 'A-Za-z0-9_.\\-';
/** IMDSv2 tokens (AQAE…, ~56 chars of base64) and STS session tokens; short prefixes too (an argv cut at its bound). */
const TOKEN_SHAPES = /(?<![A-Za-z0-9+/_-])(?:AQAE[A-Za-z0-9+/_-]{8,}|IQoJb3JpZ2lu[A-Za-z0-9+/_-]{8,}|FwoGZXIvYXdzE[A-Za-z0-9+/_-]{8,})={0,2}/g;
/** The password of a URL's user information (scheme://user:password@host). */
const URL_PASSWORD = /(?<=[A-Za-z][A-Za-z0-9+.-]*:\/\/[^\s/:@]*:)[^\s/@]+(?=@)/g;
/** Characters that end an unquoted value in text (shell and code punctuation). */
const VALUE_STOP = /[\s"'&;|,(){}[\]<>`]/;

/** A word the user may add: name characters only, at least two. */
export function validScrubWord(w: string): boolean {
  return /^[A-Za-z0-9_.-]{2,}$/.test(w);
}

const escape = (s: string): string => s.replace(/[.*+?^${}()|[\]\\-]/g, '\\$&');
/** A word as a pattern: "-" and "_" stand for each other (api_key matches --api-key, API-KEY). */
const wordPattern = (w: string): string => w.split(/[-_]/).map(escape).join('[-_]');

export class Scrubber {
  /** A sensitive name (group 2), with up to two dashes (group 1) and an opening quote (group q). */
  private readonly keyRe: RegExp;
  /** An argument that is a sensitive name alone, maybe quoted, maybe with its separator. */
  private readonly bareRe: RegExp;
  /** An argument `--name=value`: everything after `=` is the value, spaces included. */
  private readonly optionRe: RegExp;

  constructor(words: readonly string[], exempt: readonly string[] = []) {
    const w = [...new Set(words.map((x) => x.toLowerCase()))].filter(validScrubWord);
    if (w.length === 0) throw new Error('no valid scrub words');
    const W = w.sort((a, b) => b.length - a.length).map(wordPattern).join('|');
    const notExempt = exempt.length ? `(?!(?:${exempt.map(wordPattern).join('|')})(?![${NAME_CHAR}]))` : '';
    const name = `(?!-)${notExempt}[${NAME_CHAR}]*?(?:${W})[${NAME_CHAR}]*(?![${NAME_CHAR}])`;
    this.keyRe = new RegExp(`(?<![${NAME_CHAR}\\\\])(?<q>\\\\?["'])?(-{0,2})(${name})`, 'gi');
    this.bareRe = new RegExp(`^(\\\\?["'])?-{0,2}${name}\\1?\\s*(?<sep>[:=,])?\\s*$`, 'i');
    this.optionRe = new RegExp(`^(-{1,2}${name}\\s*=)(.+)$`, 'is');
  }

  /** Text with every sensitive value and token shape replaced. */
  text(s: string): string {
    if (s.length === 0) return s;
    return this.values(s).replace(TOKEN_SHAPES, REDACTED).replace(URL_PASSWORD, REDACTED);
  }

  /** argv with secrets replaced: names and their values across arguments, then each argument as text. */
  argv(args: readonly string[]): string[] {
    const out: string[] = [];
    let pending: { sep: boolean } | null = null;
    for (let i = 0; i < args.length; i++) {
      const a = args[i];
      if (pending && (pending.sep || !/^-{1,2}[A-Za-z]/.test(a))) {
        out.push(REDACTED);
        pending = null;
        continue;
      }
      pending = null;
      const opt = i > 0 ? this.optionRe.exec(a) : null;
      out.push(opt ? `${opt[1]}${REDACTED}` : this.text(a));
      const bare = i > 0 ? this.bareRe.exec(a) : null;
      if (bare) pending = { sep: bare.groups?.sep !== undefined };
    }
    return out;
  }

  /** Replace the value after each sensitive name in s. */
  private values(s: string): string {
    const re = this.keyRe; // global: its lastIndex is the scan position (reset here; values() never nests)
    re.lastIndex = 0;
    let out = '';
    let from = 0;
    let m: RegExpExecArray | null;
    while ((m = re.exec(s)) !== null) {
      const q = m.groups?.q ?? '';
      const dashes = m[2];
      let p = m.index + m[0].length;
      const quotedKey = q !== '' && s.startsWith(q, p);
      if (quotedKey) p += q.length;
      const sep = (quotedKey ? /^\]?\s*(?::=|=>|[:=,])\s*/ : /^\s*(?::=|=>|[:=])\s*/).exec(s.slice(p, p + 64));
      let valueAt: number;
      if (sep) {
        valueAt = p + sep[0].length;
      } else if (!quotedKey && dashes !== '' && /^\s+/.test(s.slice(p, p + 64))) {
        valueAt = p + (/^\s+/.exec(s.slice(p))?.[0].length ?? 0);
        if (/^-{1,2}[A-Za-z]/.test(s.slice(valueAt, valueAt + 3))) continue; // an option, not a value
      } else {
        continue;
      }
      const v = valueSpan(s, valueAt);
      if (!v) continue;
      out += s.slice(from, v.start) + REDACTED;
      from = v.end;
      re.lastIndex = Math.max(re.lastIndex, v.end);
    }
    return from === 0 ? s : out + s.slice(from);
  }
}

/** Where the value starting at i lies (inside its quotes when quoted), or null when there is none. */
function valueSpan(s: string, i: number): { start: number; end: number } | null {
  if (i >= s.length) return null;
  let quote = '';
  if (s[i] === '\\' && (s[i + 1] === '"' || s[i + 1] === "'")) quote = s.slice(i, i + 2);
  else if (s[i] === '"' || s[i] === "'") quote = s[i];
  if (quote) {
    const start = i + quote.length;
    const close = s.indexOf(quote, start);
    const end = close === -1 ? s.length : close;
    return end > start ? { start, end } : null;
  }
  // An unquoted $name, ${name} or $(command) is a reference, not a literal: in a shell or PowerShell
  // script a literal secret starting with "$" has to be quoted (quoted values are always replaced).
  if (s[i] === '$') return null;
  let end = i;
  while (end < s.length && !VALUE_STOP.test(s[end])) end++;
  return end > i ? { start: i, end } : null;
}
