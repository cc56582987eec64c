import { describe, expect, it } from 'vitest';
import { isCredentialFetch, RateCounter } from '../../agent/src/advice/rates.js';
import { VerdictInput } from '../../agent/src/advice/verdict.js';

describe('rates', () => {
  it('a credentials document fetch is the role path, not the listing', () => {
    expect(isCredentialFetch('/latest/meta-data/iam/security-credentials/app-role')).toBe(true);
    expect(isCredentialFetch('/2021-07-15/meta-data/iam/security-credentials/app-role/')).toBe(true);
    expect(isCredentialFetch('/latest/meta-data/iam/security-credentials/')).toBe(false);
    expect(isCredentialFetch('/latest/meta-data/iam/info')).toBe(false);
  });

  it('peaks per second and per minute; old buckets are dropped, the peak stays', () => {
    const r = new RateCounter({ credentialFetchesPerMinute: 5, rateWindowS: 120 });
    const t0 = Date.UTC(2026, 10, 28, 10, 0, 0);
    for (let i = 0; i < 7; i++) r.add(t0 + 100 + i, '/latest/meta-data/iam/security-credentials/r', i === 0 ? 429 : 200);
    for (let s = 0; s < 600; s++) r.add(t0 + 3_600_000 + s * 1000, '/latest/meta-data/instance-id', 200);
    expect(r.result()).toEqual({ peak_per_second: 7, peak_per_minute: 60, throttled: 1, credential_fetches: 7,
      credential_fetches_peak_per_minute: 7, credentials_not_cached: true });
  });

  it('a caller below the credentials threshold caches them', () => {
    const r = new RateCounter({ credentialFetchesPerMinute: 5, rateWindowS: 120 });
    for (let i = 0; i < 4; i++) r.add(Date.UTC(2026, 10, 28, 10, 0, i), '/latest/meta-data/iam/security-credentials/r', 200);
    expect(r.result().credentials_not_cached).toBe(false);
  });
});

describe('verdict', () => {
  it('no records prove nothing: not ready', () => {
    expect(new VerdictInput().verdict([])).toMatchObject({ status: 'not_ready', summary: 'not ready: no records in the files read' });
  });

  it('an AWS call of unknown version without wire_reason (another cloud) does not block; one with wire_reason does', () => {
    const v = new VerdictInput();
    v.add({ event: 'ready', time: '2026-11-28T00:00:00.000Z' });
    v.add({ event: 'imds_call', time: '2026-11-28T01:00:00.000Z', imds_version: null, provider: 'gce' });
    expect(v.verdict([]).status).toBe('ready');
    v.add({ event: 'imds_call', time: '2026-11-28T02:00:00.000Z', imds_version: null, wire_reason: 'no_request_seen' });
    expect(v.verdict([])).toMatchObject({ status: 'not_ready', summary: 'not ready: could not read 1 call', days_traced: 0.1 });
  });
});
