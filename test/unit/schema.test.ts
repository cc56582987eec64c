import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { check, SCHEMAS, validate } from '../../agent/src/schema.js';

const doc = readFileSync(new URL('../../SCHEMA.md', import.meta.url), 'utf8');
const examples = [...doc.matchAll(/```json\n([\s\S]*?)\n```/g)].map((m) => JSON.parse(m[1]));

describe('SCHEMA.md', () => {
  it('has an example of every record kind', () => {
    expect(new Set(examples.map((e) => e.event))).toEqual(new Set(Object.keys(SCHEMAS)));
  });

  it.each(examples.map((e, i) => [i, e.event, e]))('example %i (%s) matches the schema', (_i, _kind, ex) => {
    expect(validate(ex)).toEqual([]);
  });
});

describe('schema checking', () => {
  const call = examples.find((e) => e.event === 'imds_call');

  it('rejects a renamed field and a wrong type', () => {
    const renamed = { ...call, imdsVersion: call.imds_version };
    delete renamed.imds_version;
    expect(validate(renamed)).toEqual(expect.arrayContaining([
      '$.imdsVersion: not in the schema', '$.imds_version: missing',
    ]));
    expect(validate({ ...call, request: { ...call.request, token_present: 'no' } }))
      .toEqual(['$.request.token_present: expected boolean, got "no"']);
  });

  it('rejects an unknown record kind and an unknown attribution', () => {
    expect(validate({ event: 'imds-call' })).toHaveLength(1);
    expect(check({ ...call, process: { attribution: 'guess' } }, SCHEMAS.imds_call)).toHaveLength(1);
  });
});
