/**
 * Per-caller advice folded next to the report's groups: the SDK and what to do (from the latest
 * call's `sdk` field, or worked out from its User-Agent and executable for records written before
 * that field existed), and the caller's rates. Bounded by the number of callers.
 */
import { identifySdk, type SdkInfo } from './sdk.js';
import { RateCounter, type CallerRates } from './rates.js';

export interface CallerAdvice {
  sdk: SdkInfo;
  rates: CallerRates;
}

export interface GroupEnricher {
  add(key: string, rec: Record<string, unknown>, t: number): void;
  fields(key: string): Partial<CallerAdvice>;
}

type Json = Record<string, unknown>;
const str = (v: unknown): string | null => (typeof v === 'string' ? v : null);

function isSdk(v: unknown): v is SdkInfo {
  const o = v as Json | null;
  return !!o && typeof o === 'object' && typeof o.name === 'string' && typeof o.advice === 'string';
}

/** The `sdk` of a call record, or identifySdk() on what it holds. Pure. */
export function sdkOf(r: Json): SdkInfo {
  if (isSdk(r.sdk)) return r.sdk;
  const p = (r.process ?? {}) as Json;
  const v = r.imds_version;
  return identifySdk({
    imdsVersion: v === 'v1' || v === 'v2' ? v : null,
    userAgent: str(((r.request ?? {}) as Json).user_agent),
    exe: str(p.exe), comm: str(p.comm), v1Reason: str(r.v1_reason),
  });
}

export class CallerAdvisor implements GroupEnricher {
  private readonly byKey = new Map<string, { rates: RateCounter; sdk: SdkInfo; at: number }>();

  add(key: string, r: Json, t: number): void {
    let e = this.byKey.get(key);
    if (!e) {
      e = { rates: new RateCounter(), sdk: sdkOf(r), at: t };
      this.byKey.set(key, e);
    } else if (t >= e.at) {
      e.sdk = sdkOf(r);
      e.at = t;
    }
    const req = (r.request ?? {}) as Json;
    const status = (r.response as Json | undefined)?.status;
    e.rates.add(t, str(req.path), typeof status === 'number' ? status : null);
  }

  fields(key: string): Partial<CallerAdvice> {
    const e = this.byKey.get(key);
    return e ? { sdk: e.sdk, rates: e.rates.result() } : {};
  }
}
