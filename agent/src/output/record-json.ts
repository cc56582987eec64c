/**
 * The JSON of a record, byte for byte `JSON.stringify(record)`, with the JSON of its shared parts made
 * once. A caller's scrubbed description (Redactor.process), its SDK answer (identifySdkFor) and a
 * connection's description (the pipeline's connectionInfo) are each shared by every record of that
 * caller or connection: they are most of a call record's bytes. Each is made a shared part where it
 * is made (sharedCopy): a deeply frozen copy, so its JSON cannot change, that carries a place for its
 * own JSON, out of sight of JSON.stringify and of any copy (a non-enumerable symbol key). The JSON is
 * made on the part's first record and lives exactly as long as the part: there is no table of parts
 * (a WeakMap's entries are walked by every young-generation GC: bench/RESULTS.md, round 7). The rest
 * of the record is written by JSON.stringify, key by key in the record's own order.
 *
 * The top-level keys are written as they are: a record's keys are plain identifiers (SCHEMA.md), which
 * JSON writes without escapes. Pure (a part's JSON is decided by the part, which cannot change).
 */

/** Where a shared part keeps its JSON. */
const OWN_JSON = Symbol('own JSON');

interface OwnJson {
  text: string | undefined;
}

type Shared = { [OWN_JSON]?: OwnJson };

/** A deep copy of v (plain objects and arrays), every object in it frozen. */
function frozenCopy<T>(v: T): T {
  if (typeof v !== 'object' || v === null) return v;
  if (Array.isArray(v)) return Object.freeze(v.map((x: unknown) => frozenCopy(x))) as T;
  const out: Record<string, unknown> = {};
  for (const k of Object.keys(v)) out[k] = frozenCopy((v as Record<string, unknown>)[k]);
  return Object.freeze(out) as T;
}

/**
 * A deep copy of the plain object v, every object in it frozen, whose JSON (the same as v's) is made
 * once, by the first record that carries it (recordJson), and kept with it.
 */
export function sharedCopy<T extends object>(v: T): T {
  const out: Record<string, unknown> = {};
  for (const k of Object.keys(v)) out[k] = frozenCopy((v as Record<string, unknown>)[k]);
  Object.defineProperty(out, OWN_JSON, { value: { text: undefined } satisfies OwnJson }); // not enumerable, not copied
  return Object.freeze(out) as T;
}

/** The JSON of a value: a shared part's own (made the first time), else JSON.stringify's. */
function valueJson(v: unknown): string | undefined {
  if (typeof v === 'object' && v !== null) {
    const own = (v as Shared)[OWN_JSON];
    if (own !== undefined) return own.text ??= JSON.stringify(v);
  }
  return JSON.stringify(v);
}

/** JSON.stringify(rec), the same bytes, with the JSON of rec's shared parts (one level down) made once. */
export function recordJson(rec: object): string {
  let line = '{';
  let sep = '"';
  for (const key in rec) {
    const json = valueJson((rec as Record<string, unknown>)[key]);
    if (json === undefined) continue; // as JSON.stringify: an undefined value (or a function) is no key
    line += `${sep}${key}":${json}`;
    sep = ',"';
  }
  return `${line}}`;
}
