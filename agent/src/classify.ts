/**
 * Which metadata service a request is for, and which IMDS version it uses. Pure.
 *
 * - IMDSv2: a request carrying X-aws-ec2-metadata-token, or the token request PUT /latest/api/token.
 * - IMDSv1: any other request on an AWS path (/, /latest..., /<yyyy-mm-dd>..., /1.0...).
 * - Other clouds' probes that hit the same address (GCE, Azure, OCI, ...) are labelled with their
 *   provider and never counted as IMDSv1.
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

type ClassInput = Pick<RequestHead, 'method' | 'target' | 'tokenPresent' | 'metadataFlavor' | 'metadataHeader'>;

const AWS_PATH = /^\/(?:$|latest(?:\/|$)|\d{4}-\d{2}-\d{2}(?:\/|$)|1\.0(?:\/|$))/;
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

export function classify(req: ClassInput): Classification {
  const path = targetPath(req.target);
  if (req.metadataFlavor && /google/i.test(req.metadataFlavor)) return other('gce');
  for (const [re, provider] of OTHER_CLOUDS) if (re.test(path)) return other(provider);
  if (req.metadataHeader && /^true$/i.test(req.metadataHeader) && /^\/metadata\//i.test(path)) {
    return other('azure');
  }
  const tokenRequest = req.method === 'PUT' && /^\/latest\/api\/token\/?$/.test(path);
  if (req.tokenPresent || tokenRequest) return { provider: 'aws', imdsVersion: 'v2', tokenRequest };
  if (AWS_PATH.test(path)) return { provider: 'aws', imdsVersion: 'v1', tokenRequest: false };
  return other('unknown');
}

function other(provider: Provider): Classification {
  return { provider, imdsVersion: null, tokenRequest: false };
}
