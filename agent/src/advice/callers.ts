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
  /** The container's names, as one label (`web`, `payments/api-7d4b9c-xk2lp/api`, `billing-worker/worker`), when known. */
  container_name: string | null;
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
    argv: Array.isArray(p.argv) ? (p.argv as unknown[]).filter((a): a is string => typeof a === 'string') : null,
  });
}

/** `process.container`'s names as one label: Kubernetes namespace/pod/container, ECS family/container, Docker name. */
export function containerLabel(r: Json): string | null {
  const c = ((r.process ?? {}) as Json).container as Json | null | undefined;
  if (!c || typeof c !== 'object') return null;
  const k = c.k8s as Json | undefined;
  if (k && typeof k.namespace === 'string' && typeof k.pod === 'string') {
    return [k.namespace, k.pod, str(k.container)].filter(Boolean).join('/');
  }
  const e = c.ecs as Json | undefined;
  if (e && typeof e.task_arn === 'string') return [str(e.family) ?? e.task_arn, str(e.container)].filter(Boolean).join('/');
  return str(c.name);
}

export class CallerAdvisor implements GroupEnricher {
  private readonly byKey = new Map<string, { rates: RateCounter; sdk: SdkInfo; at: number; name: string | null }>();

  add(key: string, r: Json, t: number): void {
    let e = this.byKey.get(key);
    if (!e) {
      e = { rates: new RateCounter(), sdk: sdkOf(r), at: t, name: containerLabel(r) };
      this.byKey.set(key, e);
    } else if (t >= e.at) {
      e.sdk = sdkOf(r);
      e.at = t;
      e.name = containerLabel(r) ?? e.name;
    }
    const req = (r.request ?? {}) as Json;
    const status = (r.response as Json | undefined)?.status;
    e.rates.add(t, str(req.path), typeof status === 'number' ? status : null);
  }

  fields(key: string): Partial<CallerAdvice> {
    const e = this.byKey.get(key);
    return e ? { sdk: e.sdk, rates: e.rates.result(), ...(e.name ? { container_name: e.name } : {}) } : {};
  }
}
