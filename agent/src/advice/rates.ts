/**
 * Throttling risk of one caller, folded from its call records: the IMDS throttles per network
 * interface (HTTP 429), so a caller's peak rates, its 429s, and whether it fetches its role's
 * credentials over and over instead of caching them (SDKs cache them for hours) are what matter.
 * Pure and bounded: rates are counted in one-second and one-minute buckets, of which only the last
 * `windowS` seconds are kept (records come from files oldest first; one more out of order than that
 * counts in a bucket of its own).
 */
import { DEFAULTS } from '../defaults.js';

export interface CallerRates {
  /** Most calls in one second (UTC second boundaries). */
  peak_per_second: number;
  /** Most calls in one minute (UTC minute boundaries). */
  peak_per_minute: number;
  /** Calls answered 429 (throttled by the IMDS). */
  throttled: number;
  /** Fetches of a role's credentials document (`…/iam/security-credentials/<role>`). */
  credential_fetches: number;
  /** Most such fetches in one minute. */
  credential_fetches_peak_per_minute: number;
  /** The caller fetches credentials again and again instead of caching them (peak per minute ≥ the threshold). */
  credentials_not_cached: boolean;
}

/** `/latest/meta-data/iam/security-credentials/<role>` (any version directory), not the listing. */
export function isCredentialFetch(path: string): boolean {
  const p = path.replace(/[?#].*$/, '').replace(/\/{2,}/g, '/');
  return /^\/[^/]+\/meta-data\/iam\/security-credentials\/[^/]+\/?$/.test(p);
}

class Buckets {
  private readonly counts = new Map<number, number>();
  private latest = -Infinity;
  peak = 0;

  constructor(private readonly widthMs: number, private readonly keep: number) {}

  add(t: number): void {
    const b = Math.floor(t / this.widthMs);
    const n = (this.counts.get(b) ?? 0) + 1;
    this.counts.set(b, n);
    if (n > this.peak) this.peak = n;
    if (b > this.latest) {
      this.latest = b;
      if (this.counts.size > this.keep) {
        for (const k of this.counts.keys()) if (k <= this.latest - this.keep) this.counts.delete(k);
      }
    }
  }
}

export class RateCounter {
  private readonly perSecond: Buckets;
  private readonly perMinute: Buckets;
  private readonly credPerMinute: Buckets;
  private throttled = 0;
  private credentialFetches = 0;

  constructor(private readonly o = DEFAULTS.advice) {
    this.perSecond = new Buckets(1000, o.rateWindowS);
    this.perMinute = new Buckets(60_000, Math.max(2, Math.ceil(o.rateWindowS / 60)));
    this.credPerMinute = new Buckets(60_000, Math.max(2, Math.ceil(o.rateWindowS / 60)));
  }

  add(t: number, path: string | null, status: number | null): void {
    this.perSecond.add(t);
    this.perMinute.add(t);
    if (status === 429) this.throttled++;
    if (path !== null && isCredentialFetch(path)) {
      this.credentialFetches++;
      this.credPerMinute.add(t);
    }
  }

  result(): CallerRates {
    return {
      peak_per_second: this.perSecond.peak,
      peak_per_minute: this.perMinute.peak,
      throttled: this.throttled,
      credential_fetches: this.credentialFetches,
      credential_fetches_peak_per_minute: this.credPerMinute.peak,
      credentials_not_cached: this.credPerMinute.peak >= this.o.credentialFetchesPerMinute,
    };
  }
}

/** One line for a person: `peak 12/s 300/min, 429×4; fetches credentials 40 times a minute: cache them`. */
export function describeRates(r: CallerRates): string {
  const parts = [`peak ${r.peak_per_second}/s ${r.peak_per_minute}/min`];
  if (r.throttled > 0) parts.push(`throttled (429) ×${r.throttled}`);
  let s = parts.join(', ');
  if (r.credentials_not_cached) {
    s += `; fetches credentials ${r.credential_fetches_peak_per_minute} times a minute instead of caching them: let the SDK's credential provider cache them`;
  }
  return s;
}
