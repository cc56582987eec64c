import { describe, it, expect } from 'vitest';
import { classify, targetPath } from '../../agent/src/classify.js';
import { parseRequestHead } from '../../agent/src/wire/http-head.js';

type In = Parameters<typeof classify>[0];
const r = (method: string, target: string, extra: Partial<In> = {}): In => ({
  method, target, tokenPresent: false, metadataFlavor: null, metadataHeader: null, ...extra,
});

describe('targetPath', () => {
  it('origin-form: drops query and fragment', () => {
    expect(targetPath('/latest/meta-data/?x=1')).toBe('/latest/meta-data/');
    expect(targetPath('/latest#frag')).toBe('/latest');
    expect(targetPath('/')).toBe('/');
  });
  it('absolute-form: reduced to its path, "/" when empty', () => {
    expect(targetPath('http://169.254.169.254/latest/meta-data/')).toBe('/latest/meta-data/');
    expect(targetPath('HTTP://169.254.169.254')).toBe('/');
    expect(targetPath('http://[fd00:ec2::254]/latest/api/token')).toBe('/latest/api/token');
    expect(targetPath('https://metadata.google.internal/computeMetadata/v1/?a')).toBe('/computeMetadata/v1/');
    expect(targetPath('http://169.254.169.254?x=1')).toBe('/');
    expect(targetPath('http://169.254.169.254#f')).toBe('/');
  });
});

describe('classify: AWS', () => {
  it('IMDSv1: AWS paths without a token', () => {
    for (const t of ['/', '/latest', '/latest/', '/latest/meta-data/iam/security-credentials/role',
      '/2009-04-04/meta-data/', '/2021-07-15', '/1.0/meta-data/', '/1.0', '/latest/user-data',
      '/latest/dynamic/instance-identity/document', 'http://169.254.169.254/latest/meta-data/',
      'http://169.254.169.254', 'http://169.254.169.254?x=1', '/latest/meta-data?x=1',
      '//latest/meta-data/', '/latest//meta-data']) {
      expect(classify(r('GET', t)), t).toEqual({ provider: 'aws', imdsVersion: 'v1', tokenRequest: false });
    }
  });

  it('IMDSv2: any request with the token header', () => {
    for (const t of ['/latest/meta-data/', '/', '/2009-04-04/', '/not-an-aws-path', '/latest/api/token']) {
      expect(classify(r('GET', t, { tokenPresent: true })), t).toEqual({ provider: 'aws', imdsVersion: 'v2', tokenRequest: false });
    }
  });

  it('IMDSv2: the token request itself, PUT /latest/api/token (with or without header)', () => {
    for (const t of ['/latest/api/token', '/latest/api/token/', 'http://169.254.169.254/latest/api/token', '/latest/api/token?x']) {
      expect(classify(r('PUT', t)), t).toEqual({ provider: 'aws', imdsVersion: 'v2', tokenRequest: true });
    }
    expect(classify(r('PUT', '/latest/api/token', { tokenPresent: true })).tokenRequest).toBe(true);
  });

  it('other methods on the token path without a token are IMDSv1', () => {
    expect(classify(r('GET', '/latest/api/token'))).toEqual({ provider: 'aws', imdsVersion: 'v1', tokenRequest: false });
    expect(classify(r('put', '/latest/api/token')).imdsVersion).toBe('v1');
    expect(classify(r('POST', '/latest/api/token')).tokenRequest).toBe(false);
    expect(classify(r('PUT', '/latest/api/tokens')).tokenRequest).toBe(false);
  });

  it('near-misses of AWS paths are unknown, not IMDSv1', () => {
    for (const t of ['/latestx', '/latest-data', '/2009-4-04/', '/20090404', '/1.01', '/1.0x', '/foo',
      '', '*', 'latest/meta-data', '/LATEST/meta-data']) {
      expect(classify(r('GET', t)), JSON.stringify(t)).toEqual({ provider: 'unknown', imdsVersion: null, tokenRequest: false });
    }
  });
});

describe('classify: other clouds are never IMDSv1', () => {
  const cases: Array<[string, string, Partial<In>]> = [
    ['gce', '/computeMetadata/v1/instance/id', {}],
    ['gce', '/computeMetadata', {}],
    ['gce', 'http://metadata.google.internal/computeMetadata/v1/', {}],
    ['gce', '/probe', { metadataFlavor: 'Google' }],
    ['gce', '/computeMetadata/v1/', { metadataFlavor: 'Google' }],
    ['azure', '/metadata/instance?api-version=2021-02-01', {}],
    ['azure', '/metadata/identity/oauth2/token', {}],
    ['azure', '/metadata/scheduledevents', {}],
    ['azure', '/metadata/attested/document', {}],
    ['azure', '/metadata/loadbalancer', {}],
    ['azure', '/metadata/versions', {}],
    ['azure', '/metadata/anything-else', { metadataHeader: 'true' }],
    ['azure', '/metadata/anything-else', { metadataHeader: 'True' }],
    ['oci', '/opc/v2/instance/', {}],
    ['oci', '/opc/v1/instance/', {}],
    ['openstack', '/openstack/latest/meta_data.json', {}],
    ['openstack', '/openstack', {}],
    ['digitalocean', '/metadata/v1/id', {}],
    ['digitalocean', '/metadata/v1.json', {}],
    ['digitalocean', '/metadata/v1', {}],
    ['hetzner', '/hetzner/v1/metadata', {}],
  ];
  for (const [provider, target, extra] of cases) {
    it(`${provider}: ${target} ${JSON.stringify(extra)}`, () => {
      expect(classify(r('GET', target, extra))).toEqual({ provider, imdsVersion: null, tokenRequest: false });
    });
  }

  it('other clouds win even when a token header is present', () => {
    expect(classify(r('GET', '/computeMetadata/v1/', { tokenPresent: true })).imdsVersion).toBeNull();
    expect(classify(r('GET', '/opc/v2/', { tokenPresent: true })).provider).toBe('oci');
  });

  it('a Metadata header that is not "true", or outside /metadata/, is not Azure', () => {
    expect(classify(r('GET', '/metadata/other', { metadataHeader: 'false' })).provider).toBe('unknown');
    expect(classify(r('GET', '/latest/', { metadataHeader: 'true' }))).toEqual({ provider: 'aws', imdsVersion: 'v1', tokenRequest: false });
    expect(classify(r('GET', '/', { metadataFlavor: 'Microsoft' })).imdsVersion).toBe('v1');
  });

  it('"/openstackx" and "/opc" without a slash are not those clouds', () => {
    expect(classify(r('GET', '/openstackx')).provider).toBe('unknown');
    expect(classify(r('GET', '/opc')).provider).toBe('unknown');
  });
});

describe('classify: from parsed heads', () => {
  const head = (text: string) => parseRequestHead(text, false, () => undefined)!;
  it('a real IMDSv2 sequence: token PUT then GET with token', () => {
    expect(classify(head('PUT /latest/api/token HTTP/1.1\r\nX-aws-ec2-metadata-token-ttl-seconds: 21600'))).toEqual(
      { provider: 'aws', imdsVersion: 'v2', tokenRequest: true });
    expect(classify(head('GET /latest/meta-data/ HTTP/1.1\r\nX-AWS-EC2-METADATA-TOKEN: abc'))).toEqual(
      { provider: 'aws', imdsVersion: 'v2', tokenRequest: false });
  });
  it('the TTL header alone on a GET is IMDSv1', () => {
    expect(classify(head('GET /latest/meta-data/ HTTP/1.1\r\nX-aws-ec2-metadata-token-ttl-seconds: 21600')).imdsVersion).toBe('v1');
  });
  it('GCE via header on a parsed head, on a path that is not AWS\'s', () => {
    expect(classify(head('GET /probe HTTP/1.1\r\nMetadata-Flavor: Google')).provider).toBe('gce');
  });
});

describe('classify: no header hides an AWS request', () => {
  const V1 = { provider: 'aws', imdsVersion: 'v1', tokenRequest: false };
  it('Metadata-Flavor: Google (or any value containing "google") on an AWS path is IMDSv1', () => {
    for (const flavor of ['Google', 'google', 'NotGoogle', 'GOOGLE, x']) {
      for (const t of ['/latest/meta-data/iam/security-credentials/', '/', '/latest/meta-data/', '/2021-07-15/user-data']) {
        expect(classify(r('GET', t, { metadataFlavor: flavor })), `${flavor} ${t}`).toEqual(V1);
      }
    }
    const h = parseRequestHead('GET /latest/meta-data/iam/security-credentials/ HTTP/1.1\r\nMetadata-Flavor: Google', false, () => undefined)!;
    expect(classify(h)).toEqual(V1);
  });
  it('an Azure "Metadata: true" header on an AWS path is IMDSv1 too', () => {
    expect(classify(r('GET', '/latest/meta-data/', { metadataHeader: 'true' }))).toEqual(V1);
  });
  it('with the token header, an AWS path is IMDSv2 whatever other clouds\' headers say', () => {
    expect(classify(r('GET', '/latest/meta-data/', { metadataFlavor: 'Google', tokenPresent: true })))
      .toEqual({ provider: 'aws', imdsVersion: 'v2', tokenRequest: false });
  });
});

describe('classify: paths read the way servers read them', () => {
  const V1 = { provider: 'aws', imdsVersion: 'v1', tokenRequest: false };
  it('dot segments are removed before matching', () => {
    for (const t of ['/x/../latest/meta-data/', '/computeMetadata/../latest/meta-data/iam/security-credentials/',
      '/./latest/meta-data', '/../latest/meta-data/', '/opc/v2/../../latest/user-data', '/metadata/instance/../../']) {
      expect(classify(r('GET', t)), t).toEqual(V1);
    }
  });
  it('percent-encoding: unreserved characters, dots and %2F decoded', () => {
    for (const t of ['/%6catest/meta-data/', '/x/%2e%2e/latest/meta-data/', '/x/%2E%2E/latest/', '/computeMetadata%2F..%2F..%2Flatest/meta-data/',
      '/%2Flatest/meta-data/', '/%2e/latest', '/computeMetadata/%2e%2e/latest/meta-data/']) {
      expect(classify(r('GET', t)), t).toEqual(V1);
    }
  });
  it('another cloud\'s path reached through dots or encoding is that cloud', () => {
    expect(classify(r('GET', '/x/../computeMetadata/v1/')).provider).toBe('gce');
    expect(classify(r('GET', '/%63omputeMetadata/v1/')).provider).toBe('gce');
  });
  it('methods are case-sensitive: "put" is not the token request', () => {
    expect(classify(r('put', '/latest/api/token'))).toEqual(V1);
    expect(classify(r('Put', '/latest/api/token'))).toEqual(V1);
  });
  it('the token request read through dots and encoding', () => {
    for (const t of ['/latest/api/../api/token', '/latest/api/%74oken', '/x/../latest/api/token']) {
      expect(classify(r('PUT', t)), t).toEqual({ provider: 'aws', imdsVersion: 'v2', tokenRequest: true });
    }
  });
  it('an ambiguous head is IMDSv1 even with the token header or as the token request', () => {
    expect(classify(r('GET', '/latest/meta-data/', { tokenPresent: true, ambiguity: 'obs_fold' }))).toEqual(V1);
    expect(classify(r('PUT', '/latest/api/token', { ambiguity: 'bare_lf' })))
      .toEqual({ provider: 'aws', imdsVersion: 'v1', tokenRequest: true });
    expect(classify(r('GET', '/computeMetadata/v1/', { ambiguity: 'bare_lf' })).provider).toBe('gce');
  });
});
