/**
 * Parsing of one HTTP/1.x message head (start line + headers). Pure. Header values that are secrets
 * (the IMDSv2 token) are handed to onSecret and never kept in the returned object.
 */
export interface RequestHead {
  kind: 'request';
  method: string;
  target: string;
  version: string;
  tokenPresent: boolean;
  /** X-aws-ec2-metadata-token-ttl-seconds as sent (number when numeric). */
  tokenTtlSeconds: number | null;
  userAgent: string | null;
  host: string | null;
  forwardedFor: boolean;
  /** Other clouds' markers: GCE "Metadata-Flavor", Azure/others "Metadata". */
  metadataFlavor: string | null;
  metadataHeader: string | null;
  headerCount: number;
  headersTruncated: boolean;
  body: BodyFraming;
}

export interface ResponseHead {
  kind: 'response';
  status: number;
  version: string;
  headerCount: number;
  headersTruncated: boolean;
  body: BodyFraming;
}

export type BodyFraming = { type: 'none' } | { type: 'length'; length: number } | { type: 'chunked' }
  | { type: 'until-close' };

const TOKEN_HEADER = 'x-aws-ec2-metadata-token';
const TTL_HEADER = 'x-aws-ec2-metadata-token-ttl-seconds';
const METHOD_RE = /^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,32}$/;
const MAX_FIELD = 512;

export function looksLikeRequestStart(b: Buffer): boolean {
  // Method token then a space, within the first 33 bytes (or fewer bytes that are all token chars).
  const n = Math.min(b.length, 33);
  for (let i = 0; i < n; i++) {
    const c = b[i];
    if (c === 0x20) return i > 0;
    if (c < 0x21 || c > 0x7e) return false;
  }
  return n < 33;
}

export function looksLikeResponseStart(b: Buffer): boolean {
  const p = 'HTTP/';
  for (let i = 0; i < Math.min(b.length, p.length); i++) if (b[i] !== p.charCodeAt(i)) return false;
  return true;
}

function splitLines(text: string): string[] {
  return text.split(/\r?\n/);
}

function cap(s: string): string {
  return s.length > MAX_FIELD ? s.slice(0, MAX_FIELD) : s;
}

export function parseRequestHead(text: string, truncated: boolean,
  onSecret: (value: string) => void): RequestHead | null {
  const lines = splitLines(text);
  const parts = (lines[0] ?? '').split(' ');
  if (parts.length !== 3 || !METHOD_RE.test(parts[0]) || !/^HTTP\/\d\.\d$/.test(parts[2])
    || parts[1].length === 0) return null;
  const head: RequestHead = {
    kind: 'request', method: parts[0], target: cap(parts[1]), version: parts[2].slice(5),
    tokenPresent: false, tokenTtlSeconds: null, userAgent: null, host: null, forwardedFor: false,
    metadataFlavor: null, metadataHeader: null, headerCount: 0, headersTruncated: truncated,
    body: { type: 'none' },
  };
  const framing = new Framing();
  for (const [name, value] of headers(lines)) {
    head.headerCount++;
    switch (name) {
      case TOKEN_HEADER: head.tokenPresent = true; if (value) onSecret(value); break;
      case TTL_HEADER: head.tokenTtlSeconds = /^\d{1,9}$/.test(value) ? Number(value) : null; break;
      case 'user-agent': head.userAgent = cap(value); break;
      case 'host': head.host = cap(value); break;
      case 'x-forwarded-for': head.forwardedFor = true; break;
      case 'metadata-flavor': head.metadataFlavor = cap(value); break;
      case 'metadata': head.metadataHeader = cap(value); break;
      default: framing.see(name, value);
    }
  }
  head.body = framing.forRequest();
  return head;
}

export function parseResponseHead(text: string, truncated: boolean, requestMethod: string | null)
  : ResponseHead | null {
  const lines = splitLines(text);
  const m = /^HTTP\/(\d\.\d) (\d{3})(?: .*)?$/.exec(lines[0] ?? '');
  if (!m) return null;
  const status = Number(m[2]);
  const framing = new Framing();
  let headerCount = 0;
  for (const [name, value] of headers(lines)) {
    headerCount++;
    framing.see(name, value);
  }
  const bodyless = requestMethod === 'HEAD' || status < 200 || status === 204 || status === 304;
  return {
    kind: 'response', status, version: m[1], headerCount, headersTruncated: truncated,
    body: bodyless ? { type: 'none' } : framing.forResponse(),
  };
}

function* headers(lines: string[]): Generator<[string, string]> {
  for (let i = 1; i < lines.length; i++) {
    const line = lines[i];
    if (line === '') continue;
    const colon = line.indexOf(':');
    if (colon <= 0) continue;
    yield [line.slice(0, colon).trim().toLowerCase(), line.slice(colon + 1).trim()];
  }
}

class Framing {
  private length: number | null = null;
  private chunked = false;

  see(name: string, value: string): void {
    if (name === 'content-length' && /^\d{1,15}$/.test(value)) this.length = Number(value);
    if (name === 'transfer-encoding' && /chunked/i.test(value)) this.chunked = true;
  }

  forRequest(): BodyFraming {
    if (this.chunked) return { type: 'chunked' };
    if (this.length) return { type: 'length', length: this.length };
    return { type: 'none' };
  }

  forResponse(): BodyFraming {
    if (this.chunked) return { type: 'chunked' };
    if (this.length !== null) return this.length ? { type: 'length', length: this.length } : { type: 'none' };
    return { type: 'until-close' };
  }
}
