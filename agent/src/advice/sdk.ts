/**
 * Which AWS SDK or tool made an IMDS call, and what to do about it. Pure: a table of rules read
 * from the request's User-Agent, else from the executable when that alone is unambiguous (curl,
 * wget, the AWS CLI). When unsure the answer is "unknown", never a guess.
 *
 * The User-Agent formats are the SDKs' own (read from their sources and checked against the real
 * clients in the lab where they are installed):
 *   botocore   `Botocore/1.29.27 Python/3.11.2 Linux/6.1.0` (the session's user agent; a bare
 *              InstanceMetadataFetcher sends urllib3's `python-urllib3/1.26.12`)
 *   boto3      `Boto3/1.26.0 Python/3.10.12 Linux/5.15 Botocore/1.29.0`, newer
 *              `Boto3/1.34.0 md/Botocore#1.34.0 ua/2.0 os/linux#6.1 lang/python#3.11.2 …`
 *   boto 2     `Boto/2.49.0 Python/2.7.18 Linux/4.14`
 *   aws-cli    `aws-cli/1.16.289 Python/3.6.9 Linux/4.15 botocore/1.13.25`, `aws-cli/2.15.0 Python/3.11.6 …`
 *   Go v1      `aws-sdk-go/1.44.0 (go1.20.3; linux; amd64)`
 *   Go v2      `aws-sdk-go-v2/1.17.0 os/linux lang/go#1.20 md/GOOS#linux md/GOARCH#amd64 api/ec2imds#1.13.0`
 *   Java       `aws-sdk-java/1.12.400 Linux/5.10 OpenJDK_64-Bit_Server_VM/25.362-b09 java/1.8.0_362`
 *              (major 1: SDK v1; major 2: `aws-sdk-java/2.20.0 … io/sync http/UrlConnection`)
 *   JS v2      `aws-sdk-nodejs/2.1693.0 linux/v20.20.2` (browser: `aws-sdk-js/2.x`)
 *   JS v3      `aws-sdk-js/3.450.0 ua/2.0 os/linux#6.1 lang/js md/nodejs#20.9.0 …` (its IMDS client
 *              sends no User-Agent at all: then only the executable is known, which says nothing)
 *   Ruby       `aws-sdk-ruby3/3.130.0` (InstanceProfileCredentials), `… aws-sdk-core/3.130.0`
 *   PHP        `aws-sdk-php/3.147.7 OS/Linux/5.10 lang/php/8.1 GuzzleHttp/7`
 *   .NET       `aws-sdk-dotnet-coreclr/3.7.0.0 aws-sdk-dotnet-core/3.7.0.0 .NET_Core/6.0 OS/Linux`
 *   PowerShell `AWSPowerShell/4.0.1.0 …`, `AWSPowerShell.NetCore/4.1.0.0 …`
 *   C++        `aws-sdk-cpp/1.7.229 Linux/4.14 x86_64 GCC/7.3.1`
 *   boto 2's own IMDS code sends urllib's `Python-urllib/3.11` (Debian's python3-boto 2.49.0, seen in
 *   the lab), so that User-Agent is either boto 2 or code of its own; cloud-init sends
 *   `Cloud-Init/22.4.2` (or requests' own), and its process is `cloud-init`.
 */

import type { SdkInfo } from '../record.js';
import { sharedCopy } from '../output/record-json.js';
export type { SdkInfo };

/** What the call record tells about the caller. */
export interface SdkFacts {
  imdsVersion: 'v1' | 'v2' | null;
  userAgent: string | null;
  exe?: string | null;
  comm?: string | null;
  /** The caller's argv: names a tool run by an interpreter (`python3 /usr/bin/cloud-init …`). */
  argv?: readonly string[] | null;
  v1Reason?: string | null;
}

/** AWS's published minimum versions that support IMDSv2 (the migration guide). */
export const IMDSV2_MIN = {
  'aws-cli': '1.16.289',
  'aws-tools-powershell': '4.0.1.0',
  'aws-sdk-net': '3.3.634.1',
  'aws-sdk-cpp': '1.7.229',
  'aws-sdk-go': '1.25.38',
  'aws-sdk-go-v2': '0.19.0',
  'aws-sdk-java': '1.11.678',
  'aws-sdk-java-v2': '2.10.21',
  'aws-sdk-js': '2.722.0',
  // Not in AWS's table: v3 shipped token support before its first release (3.0.0).
  'aws-sdk-js-v3': '3.0.0',
  'aws-sdk-php': '3.147.7',
  botocore: '1.13.25',
  boto3: '1.12.6',
  'aws-sdk-ruby': '3.79.0',
} as const;

type Kind = 'sdk' | 'legacy' | 'none' | 'ambiguous' | 'ambiguous-boto' | 'cloud-init';

interface Rule {
  /** Matched against the User-Agent; group 1 is the version. */
  re: RegExp;
  name: string | ((version: string) => string);
  kind: Kind;
  /** A second component whose minimum also applies (boto3 → botocore). */
  also?: { re: RegExp; name: keyof typeof IMDSV2_MIN };
}

const V = '(\\d+(?:\\.\\d+)*)';
/** First match wins: the more specific rules come first (PowerShell before .NET, boto3 before botocore). */
const UA_RULES: Rule[] = [
  { re: new RegExp(`\\bAWSPowerShell(?:\\.NetCore|\\.Common)?/${V}`), name: 'aws-tools-powershell', kind: 'sdk' },
  { re: new RegExp(`\\baws-cli/${V}`), name: 'aws-cli', kind: 'sdk' },
  { re: new RegExp(`\\bBoto3/${V}`), name: 'boto3', kind: 'sdk', also: { re: new RegExp(`\\b(?:md/)?Botocore[/#]${V}`, 'i'), name: 'botocore' } },
  { re: new RegExp(`\\bBotocore/${V}`, 'i'), name: 'botocore', kind: 'sdk' },
  { re: new RegExp(`(?:^|\\s)Boto/${V}`), name: 'boto', kind: 'legacy' },
  { re: new RegExp(`\\baws-sdk-go-v2/${V}`), name: 'aws-sdk-go-v2', kind: 'sdk' },
  { re: new RegExp(`\\baws-sdk-go/${V}`), name: 'aws-sdk-go', kind: 'sdk' },
  { re: new RegExp(`\\baws-sdk-java/${V}`), name: (v) => (major(v) >= 2 ? 'aws-sdk-java-v2' : 'aws-sdk-java'), kind: 'sdk' },
  { re: new RegExp(`\\baws-sdk-nodejs/${V}`), name: 'aws-sdk-js', kind: 'sdk' },
  { re: new RegExp(`\\baws-sdk-js/${V}`), name: (v) => (major(v) >= 3 ? 'aws-sdk-js-v3' : 'aws-sdk-js'), kind: 'sdk' },
  { re: new RegExp(`\\baws-sdk-ruby3/${V}`), name: 'aws-sdk-ruby', kind: 'sdk' },
  { re: new RegExp(`\\baws-sdk-core/${V}`), name: 'aws-sdk-ruby', kind: 'sdk' },
  { re: new RegExp(`\\baws-sdk-ruby2?/${V}`), name: 'aws-sdk-ruby', kind: 'sdk' },
  { re: new RegExp(`\\baws-sdk-php/${V}`), name: 'aws-sdk-php', kind: 'sdk' },
  { re: new RegExp(`\\baws-sdk-dotnet-core/${V}`), name: 'aws-sdk-net', kind: 'sdk' },
  { re: new RegExp(`\\baws-sdk-dotnet-[\\w.]+/${V}`), name: 'aws-sdk-net', kind: 'sdk' },
  { re: new RegExp(`\\baws-sdk-cpp/${V}`), name: 'aws-sdk-cpp', kind: 'sdk' },
  { re: new RegExp(`^Cloud-Init/${V}`), name: 'cloud-init', kind: 'cloud-init' },
  // No AWS SDK: HTTP clients' own User-Agents (AWS SDKs always set theirs, except where noted).
  { re: new RegExp(`^curl/${V}`), name: 'curl', kind: 'none' },
  { re: new RegExp(`^Wget/${V}`), name: 'wget', kind: 'none' },
  // urllib's default: legacy boto 2's IMDS code sends it too.
  { re: new RegExp(`^Python-urllib/${V}`), name: 'python-urllib', kind: 'ambiguous-boto' },
  { re: new RegExp(`^python-requests/${V}`), name: 'python-requests', kind: 'none' },
  { re: new RegExp(`^Go-http-client/${V}`), name: 'go-net-http', kind: 'none' },
  { re: /^(node|undici)$/, name: 'node-fetch', kind: 'none' },
  { re: new RegExp(`^Java/${V}`), name: 'java-httpurlconnection', kind: 'none' },
  { re: new RegExp(`^okhttp/${V}`), name: 'okhttp', kind: 'none' },
  { re: new RegExp(`^Apache-HttpClient/${V}`), name: 'apache-httpclient', kind: 'none' },
  // urllib3's default: botocore's InstanceMetadataFetcher used without a session sends it too.
  { re: new RegExp(`^python-urllib3/${V}`), name: 'python-urllib3', kind: 'ambiguous' },
];

/** Executables that say by themselves what they are (basename of `exe`, else `comm`). */
const EXE_RULES: Array<{ re: RegExp; name: string; kind: Kind }> = [
  { re: /^curl$/, name: 'curl', kind: 'none' },
  { re: /^wget$/, name: 'wget', kind: 'none' },
  { re: /^aws$/, name: 'aws-cli', kind: 'sdk' },
];

const NO_SDK_ADVICE = 'no AWS SDK: the code calls IMDS itself: add the token PUT';

function major(v: string): number {
  return Number(v.split('.')[0]);
}

/** Numeric comparison of dotted versions (missing parts are 0). */
export function compareVersions(a: string, b: string): number {
  const pa = a.split(/[.\-+_]/).map((x) => Number.parseInt(x, 10) || 0);
  const pb = b.split(/[.\-+_]/).map((x) => Number.parseInt(x, 10) || 0);
  for (let i = 0; i < Math.max(pa.length, pb.length); i++) {
    const d = (pa[i] ?? 0) - (pb[i] ?? 0);
    if (d !== 0) return Math.sign(d);
  }
  return 0;
}

function fallbackAdvice(f: SdkFacts): string {
  if (f.v1Reason === 'token_put_unanswered') {
    return 'supports IMDSv2: the v1 call is a fallback — see v1_reason (the token answer never arrived: in a container, set HttpPutResponseHopLimit to 2)';
  }
  if (f.v1Reason === 'token_put_refused') {
    return 'supports IMDSv2: the v1 call is a fallback — see v1_reason (the token request was refused: find what answers it)';
  }
  return 'supports IMDSv2: the v1 call is a fallback — see v1_reason (none seen: a token request that failed unseen, or code that calls without a token, e.g. aws-sdk v2 MetadataService.request() without fetchMetadataToken())';
}

function sdkAdvice(name: string, version: string | null, f: SdkFacts, extra?: { name: string; version: string }): SdkInfo {
  const min = (IMDSV2_MIN as Record<string, string>)[name] ?? null;
  if (version === null) {
    return { name, version, imdsv2_min: min,
      advice: f.imdsVersion === 'v1' ? `version not seen: make sure ${name} is ≥ ${min}, then see v1_reason` : 'uses IMDSv2' };
  }
  const old: string[] = [];
  if (min && compareVersions(version, min) < 0) old.push(`${name} to ≥ ${min}`);
  if (extra) {
    const xmin = IMDSV2_MIN[extra.name as keyof typeof IMDSV2_MIN];
    if (compareVersions(extra.version, xmin) < 0) old.push(`${extra.name} to ≥ ${xmin}`);
  }
  if (old.length > 0) return { name, version, imdsv2_min: min, advice: `upgrade ${old.join(' and ')}` };
  if (f.imdsVersion !== 'v1') return { name, version, imdsv2_min: min, advice: 'uses IMDSv2' };
  return { name, version, imdsv2_min: min, advice: fallbackAdvice(f) };
}

function fromKind(kind: Kind, name: string, version: string | null, f: SdkFacts, extra?: { name: string; version: string }): SdkInfo {
  switch (kind) {
    case 'sdk': return sdkAdvice(name, version, f, extra);
    case 'legacy': return { name, version, imdsv2_min: null, advice: 'legacy boto 2 never uses IMDSv2: move to boto3' };
    case 'none': return { name, version, imdsv2_min: null, advice: f.imdsVersion === 'v1' ? NO_SDK_ADVICE : 'uses IMDSv2' };
    case 'ambiguous-boto': return { name, version, imdsv2_min: null,
      advice: f.imdsVersion === 'v1'
        ? "urllib's own User-Agent: legacy boto 2 (never uses IMDSv2: move to boto3) or the code calls IMDS itself (add the token PUT)"
        : 'uses IMDSv2' };
    case 'cloud-init': return { name, version, imdsv2_min: null,
      advice: f.imdsVersion === 'v1' ? 'cloud-init without a token: an old release: upgrade cloud-init (current releases use IMDSv2)' : 'uses IMDSv2' };
    case 'ambiguous': return { name, version, imdsv2_min: null,
      advice: f.imdsVersion === 'v1'
        ? "urllib3's own User-Agent: botocore used without a session (then upgrade botocore to ≥ 1.13.25) or the code calls IMDS itself (add the token PUT)"
        : 'uses IMDSv2' };
  }
}

function basename(p: string | null | undefined): string | null {
  if (!p) return null;
  const i = p.lastIndexOf('/');
  return p.slice(i + 1) || null;
}

const SDK_MEMO_SIZE = 512;
const sdkMemo = new Map<string, SdkInfo>();
/** One part of a memo key: absent, or its length and text (no two sets of facts share a key). */
const memoPart = (x: string | null | undefined): string => (x === null || x === undefined ? '|' : `|${x.length}:${x}`);

/**
 * identifySdk, remembered for the facts it reads (a host has few distinct callers: the same answer
 * is asked for again and again). The answer is a shared copy (output/record-json.ts): frozen, records
 * share it, none can change it, and its JSON is made once.
 */
export function identifySdkMemo(f: SdkFacts): SdkInfo {
  const argv = f.argv ?? [];
  const key = `${f.imdsVersion}${memoPart(f.userAgent)}${memoPart(f.exe)}${memoPart(f.comm)}${memoPart(argv[0])}${memoPart(argv[1])}${memoPart(f.v1Reason)}`;
  let info = sdkMemo.get(key);
  if (info === undefined) {
    info = sharedCopy(identifySdk(f));
    if (sdkMemo.size >= SDK_MEMO_SIZE) sdkMemo.clear();
    sdkMemo.set(key, info);
  }
  return info;
}

/** What identifySdk reads of the caller's description. */
export interface SdkCaller {
  readonly exe?: string | null;
  readonly comm?: string | null;
  readonly argv?: readonly string[] | null;
}

const SDK_AGENTS_PER_CALLER = 64;
/**
 * Answers by caller (a frozen description, by identity), then by User-Agent, then in one of nine
 * slots: IMDS version (v1, v2, none) × v1 reason (none, token_put_unanswered, token_put_refused).
 */
const sdkByCaller = new WeakMap<SdkCaller, Map<string | null, Array<SdkInfo | undefined>>>();

/** The key of every caller with no executable, comm or argv (no caller found): their answers are the same. */
const NOBODY: SdkCaller = Object.freeze({});

const versionSlot = (v: SdkFacts['imdsVersion']): number => (v === 'v1' ? 0 : v === 'v2' ? 1 : 2);
const reasonSlot = (r: string | null | undefined): number =>
  (r === undefined || r === null ? 0 : r === 'token_put_unanswered' ? 1 : r === 'token_put_refused' ? 2 : -1);

/**
 * identifySdk for a call of `caller`, remembered for that description itself when it is frozen (a
 * frozen description's exe, comm and argv cannot change: Redactor.process hands out such), or for
 * every caller with none of them (NOBODY): no key text is made per call. Else (or for a v1 reason of
 * another kind) identifySdkMemo. Either answer is frozen and shared by the records it is given to.
 */
export function identifySdkFor(caller: SdkCaller, imdsVersion: SdkFacts['imdsVersion'], userAgent: string | null,
  v1Reason?: string | null): SdkInfo {
  const reason = reasonSlot(v1Reason);
  const key = caller.exe == null && caller.comm == null && caller.argv == null ? NOBODY : caller;
  if (reason < 0 || (key === caller && !Object.isFrozen(caller))) {
    return identifySdkMemo({ imdsVersion, userAgent, exe: caller.exe, comm: caller.comm, argv: caller.argv, v1Reason });
  }
  let byAgent = sdkByCaller.get(key);
  if (byAgent === undefined) {
    byAgent = new Map();
    sdkByCaller.set(key, byAgent);
  }
  let slots = byAgent.get(userAgent);
  if (slots === undefined) {
    if (byAgent.size >= SDK_AGENTS_PER_CALLER) byAgent.clear();
    slots = [undefined, undefined, undefined, undefined, undefined, undefined, undefined, undefined, undefined];
    byAgent.set(userAgent, slots);
  }
  const i = versionSlot(imdsVersion) * 3 + reason;
  let info = slots[i];
  if (info === undefined) {
    info = sharedCopy(identifySdk({ imdsVersion, userAgent, exe: caller.exe, comm: caller.comm, argv: caller.argv, v1Reason }));
    slots[i] = info;
  }
  return info;
}

/** The SDK and the advice for one call. Pure. */
export function identifySdk(f: SdkFacts): SdkInfo {
  const ua = f.userAgent?.trim() || null;
  const tool = [f.exe, f.comm, ...(f.argv ?? []).slice(0, 2)].map((x) => basename(x ?? null));
  if (tool.includes('cloud-init')) {
    return fromKind('cloud-init', 'cloud-init', ua ? (new RegExp(`^Cloud-Init/${V}`).exec(ua)?.[1] ?? null) : null, f);
  }
  if (ua) {
    for (const r of UA_RULES) {
      const m = r.re.exec(ua);
      if (!m) continue;
      const version = m[1] ?? null;
      const name = typeof r.name === 'function' ? r.name(version ?? '0') : r.name;
      const am = r.also ? r.also.re.exec(ua) : null;
      return fromKind(r.kind, name, version, f, am && r.also ? { name: r.also.name, version: am[1] } : undefined);
    }
  }
  const exe = basename(f.exe) ?? f.comm ?? null;
  if (exe) {
    for (const r of EXE_RULES) if (r.re.test(exe)) return fromKind(r.kind, r.name, null, f);
  }
  return {
    name: 'unknown', version: null, imdsv2_min: null,
    advice: f.imdsVersion === 'v1'
      ? `unknown client (${ua ? `User-Agent "${ua.slice(0, 60)}"` : 'no User-Agent'}): look at its command line; an AWS SDK needs upgrading, code of its own needs the token PUT`
      : 'uses IMDSv2',
  };
}
