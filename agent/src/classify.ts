/**
 * Which metadata service a request is for, and which IMDS version it uses. Pure.
 *
 * - AWS: a request whose path is an AWS path (/, /latest..., /<yyyy-mm-dd>..., /1.0...) is always an
 *   AWS request, whatever its headers say (the IMDS ignores other clouds' headers and serves it). The
 *   path is read every way a server might read it (as sent; with dot segments removed; with
 *   percent-encoded characters decoded, %2F included or not): if any reading is an AWS path, it is AWS.
 * - IMDSv2: an AWS request carrying X-aws-ec2-metadata-token, or the token request (method `PUT`,
 *   case-sensitive as methods are, on /latest/api/token read as servers read paths) — unless its head
 *   is ambiguous (RequestHead.ambiguity): then it is IMDSv1.
 * - IMDSv1: any other request on an AWS path.
 * - Other clouds' probes that hit the same address (GCE, Azure, OCI, ...) are labelled with their
 *   provider, from their own paths (and a header only on paths that are not AWS's), never IMDSv1.
 */
import type { RequestHead } from './wire/http-head.js';

export type Provider = 'aws' | 'gce' | 'azure' | 'oci' | 'openstack' | 'digitalocean' | 'hetzner'
  | 'alibaba' | 'unknown';

export interface Classification {
  provider: Provider;
  imdsVersion: 'v1' | 'v2' | null;
  /** True for the IMDSv2 session token request. */
  tokenRequest: boolean;
}

type ClassInput = Pick<RequestHead, 'method' | 'target' | 'tokenPresent' | 'metadataFlavor' | 'metadataHeader'>
  & Partial<Pick<RequestHead, 'ambiguity'>>;

const AWS_PATH = /^\/(?:$|latest(?:\/|$)|\d{4}-\d{2}-\d{2}(?:\/|$)|1\.0(?:\/|$))/;
const TOKEN_PATH = /^\/latest\/api\/token\/?$/;
const OTHER_CLOUDS: Array<[RegExp, Provider]> = [
  [/^\/computeMetadata(?:\/|$)/i, 'gce'],
  [/^\/metadata\/(?:instance|identity|scheduledevents|attested|loadbalancer|versions)/i, 'azure'],
  [/^\/opc\//i, 'oci'],
  [/^\/openstack(?:\/|$)/i, 'openstack'],
  [/^\/metadata\/v1(?:\/|\.json|$)/i, 'digitalocean'],
  [/^\/hetzner\//i, 'hetzner'],
];

/** The path part of a request target: origin-form as is, absolute-form reduced to its path. */
export function targetPath(target: string): string {
  const abs = /^https?:\/\/[^/?#]*(.*)$/i.exec(target);
  // Absolute-form with an empty path ("http://host" or "http://host?x") means "/".
  const t = abs ? (abs[1].startsWith('/') ? abs[1] : `/${abs[1]}`) : target;
  const q = t.search(/[?#]/);
  // The service tolerates repeated slashes (SDKs joining an endpoint ending in "/" send "//latest").
  return (q >= 0 ? t.slice(0, q) : t).replace(/\/{2,}/g, '/');
}

/** RFC 3986 §5.2.4: "." and ".." segments removed (a ".." above the root stays at the root). */
export function removeDotSegments(path: string): string {
  if (!/(?:^|\/)\.\.?(?:\/|$)/.test(path)) return path;
  const out: string[] = [];
  const segs = path.split('/');
  for (let i = 0; i < segs.length; i++) {
    const s = segs[i];
    const last = i === segs.length - 1;
    if (s === '.' || s === '..') {
      if (s === '..' && out.length > 1) out.pop();
      if (last) out.push('');
      continue;
    }
    out.push(s);
  }
  const joined = out.join('/');
  return joined.startsWith('/') ? joined : `/${joined}`;
}

/** Percent-decoding: of unreserved characters only (what every server decodes), or of every octet. */
export function percentDecode(path: string, all: boolean): string {
  return path.replace(/%([0-9a-fA-F]{2})/g, (m, hex: string) => {
    const c = String.fromCharCode(parseInt(hex, 16));
    return all || /[A-Za-z0-9\-._~]/.test(c) ? c : m;
  });
}

/**
 * Every reading of a request target's path a server behind the IMDS address might make, the
 * canonical one (unreserved characters decoded, dot segments removed) first.
 */
export function pathReadings(target: string): string[] {
  const raw = targetPath(target);
  const collapse = (p: string): string => p.replace(/\/{2,}/g, '/');
  const canonical = collapse(removeDotSegments(percentDecode(raw, false)));
  const readings = [canonical, raw, collapse(removeDotSegments(raw)),
    collapse(removeDotSegments(percentDecode(raw, true)))];
  return [...new Set(readings)];
}

const READINGS_MEMO_SIZE = 512;
const readingsMemo = new Map<string, readonly string[]>();

/** pathReadings, remembered (a host asks for few distinct paths, again and again). */
function readingsOf(target: string): readonly string[] {
  let r = readingsMemo.get(target);
  if (r === undefined) {
    r = pathReadings(target);
    if (readingsMemo.size >= READINGS_MEMO_SIZE) readingsMemo.clear();
    readingsMemo.set(target, r);
  }
  return r;
}

export function classify(req: ClassInput): Classification {
  const readings = readingsOf(req.target);
  const path = readings[0];
  let aws = false;
  for (let i = 0; i < readings.length && !aws; i++) aws = AWS_PATH.test(readings[i]);
  if (!aws) {
    if (req.metadataFlavor && /google/i.test(req.metadataFlavor)) return other('gce');
    for (const [re, provider] of OTHER_CLOUDS) if (re.test(path)) return other(provider);
    if (req.metadataHeader && /^true$/i.test(req.metadataHeader) && /^\/metadata\//i.test(path)) {
      return other('azure');
    }
  }
  const tokenRequest = req.method === 'PUT' && TOKEN_PATH.test(path);
  if ((req.tokenPresent || tokenRequest) && !req.ambiguity) return tokenRequest ? AWS_V2_TOKEN : AWS_V2;
  if (aws || req.tokenPresent || tokenRequest) return tokenRequest ? AWS_V1_TOKEN : AWS_V1;
  return other('unknown');
}

/*
 * The answers, made once and frozen: a classification is only read (a request classified again gets
 * a new answer, never a changed one), so every call shares one instead of having a copy made.
 */
const answer = (provider: Provider, imdsVersion: Classification['imdsVersion'], tokenRequest: boolean): Classification =>
  Object.freeze({ provider, imdsVersion, tokenRequest });
const AWS_V2 = answer('aws', 'v2', false);
const AWS_V2_TOKEN = answer('aws', 'v2', true);
const AWS_V1 = answer('aws', 'v1', false);
const AWS_V1_TOKEN = answer('aws', 'v1', true);
const OTHERS = new Map<Provider, Classification>();

function other(provider: Provider): Classification {
  let c = OTHERS.get(provider);
  if (c === undefined) {
    c = answer(provider, null, false);
    OTHERS.set(provider, c);
  }
  return c;
}
