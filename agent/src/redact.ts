/**
 * Removing IMDS tokens from anything the agent writes. Two layers: a pattern for the token header
 * written on a command line (curl -H "X-aws-ec2-metadata-token: ...", wget --header=...), and the
 * exact token values the agent has seen on the wire, wherever they appear. Pure apart from the
 * bounded set of seen values it holds.
 */
import type { ProcessInfo } from './record.js';

export const REDACTED = '[REDACTED]';

// The header name, not followed by "-ttl-seconds", then ":" or "=", then the value.
const HEADER_RE = /(x-aws-ec2-metadata-token(?!-ttl)\s*[:=]\s*)("?)([^\s"';&|]+)/gi;
const MIN_SECRET = 8;
// The shape of an IMDSv2 token (base64, starting "AQAE"): redacted even when the agent never saw it on
// the wire (a caller whose request capture missed still has its token on its command line).
const TOKEN_SHAPE_RE = /AQAE[A-Za-z0-9+/=_-]{16,}/g;
// An argument that is the header name alone (optionally with its separator): the value is the next one.
const BARE_HEADER_RE = /x-aws-ec2-metadata-token(?!-ttl)\s*[:=]?\s*$/i;

/** Each argument through redact; an argument following a bare token header is removed whole. */
export function redactArgv(args: string[], redact: (s: string) => string): string[] {
  return args.map((a, i) => (i > 0 && BARE_HEADER_RE.test(args[i - 1]) ? REDACTED : redact(a)));
}

export class Redactor {
  private readonly seen = new Set<string>();

  constructor(private readonly maxSecrets = 1024) {}

  /** Remember a secret value seen on the wire (a token in a request header). */
  addSecret(value: string): void {
    const v = value.trim();
    if (v.length < MIN_SECRET || this.seen.has(v)) return;
    if (this.seen.size >= this.maxSecrets) {
      const oldest = this.seen.values().next().value as string;
      this.seen.delete(oldest);
    }
    this.seen.add(v);
  }

  text(s: string): string {
    let out = s.replace(HEADER_RE, (_m, name: string, quote: string) => `${name}${quote}${REDACTED}`)
      .replace(TOKEN_SHAPE_RE, REDACTED);
    for (const secret of this.seen) {
      if (out.includes(secret)) out = out.split(secret).join(REDACTED);
    }
    return out;
  }

  /** argv with token values removed, including a value given as the argument after a bare header. */
  argv(args: string[]): string[] {
    return redactArgv(args, (a) => this.text(a));
  }
}

/** A process description with every argv (its own and its ancestors') passed through redact. */
export function redactProcess(p: ProcessInfo, redact: (s: string) => string): ProcessInfo {
  const out: ProcessInfo = { ...p };
  if (p.argv) out.argv = redactArgv(p.argv, redact);
  if (p.ancestors) out.ancestors = p.ancestors.map((a) => ({ ...a, argv: a.argv ? redactArgv(a.argv, redact) : null }));
  return out;
}
