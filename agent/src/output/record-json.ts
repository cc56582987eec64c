/**
 * The JSON of a record, byte for byte `JSON.stringify(record)`, with the JSON of its deeply frozen
 * parts made once and reused. A caller's scrubbed description (Redactor.process) and its SDK answer
 * (identifySdkFor) are frozen objects shared by every record of that caller: they are more than half
 * of a call record's bytes, and their JSON cannot change, so it is made the first time and kept as long
 * as the part lives (a WeakMap). The rest of the record is written by JSON.stringify, key by key in the
 * record's own order.
 *
 * The top-level keys are written as they are: a record's keys are plain identifiers (SCHEMA.md), which
 * JSON writes without escapes. Pure (the cache holds only what a part's identity decides).
 */

/** A part's JSON, or null: the part is frozen but something inside it is not (its JSON could change). */
const partJson = new WeakMap<object, string | null>();

/** Whether v and everything inside it is frozen (a primitive is). */
function deeplyFrozen(v: unknown): boolean {
  if (typeof v !== 'object' || v === null) return true;
  if (!Object.isFrozen(v)) return false;
  for (const x of Object.values(v)) if (!deeplyFrozen(x)) return false;
  return true;
}

/** The JSON of a value: from the cache for a deeply frozen object, else JSON.stringify's. */
function valueJson(v: unknown): string | undefined {
  if (typeof v !== 'object' || v === null || !Object.isFrozen(v)) return JSON.stringify(v);
  let json = partJson.get(v);
  if (json === undefined) {
    json = deeplyFrozen(v) ? JSON.stringify(v) : null;
    partJson.set(v, json);
  }
  return json ?? JSON.stringify(v);
}

/** JSON.stringify(rec), the same bytes, with the JSON of rec's deeply frozen values (one level down) reused. */
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
