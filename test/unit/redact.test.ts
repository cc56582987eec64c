import { describe, it, expect } from 'vitest';
import { Redactor, REDACTED, redactProcess } from '../../agent/src/redact.js';
import type { ProcessInfo } from '../../agent/src/record.js';

const TOKEN = 'AQAEAGJfRUe3oYQ0IXnDAJT6aKUKt-hsNwyYOoi8eXCZJ4T_Og==';

describe('Redactor.text: the header pattern', () => {
  const r = new Redactor();
  const cases: Array<[string, string]> = [
    [`X-aws-ec2-metadata-token: ${TOKEN}`, `X-aws-ec2-metadata-token: ${REDACTED}`],
    [`X-aws-ec2-metadata-token:${TOKEN}`, `X-aws-ec2-metadata-token:${REDACTED}`],
    [`--header=X-aws-ec2-metadata-token:${TOKEN}`, `--header=X-aws-ec2-metadata-token:${REDACTED}`],
    [`--header=X-aws-ec2-metadata-token: ${TOKEN}`, `--header=X-aws-ec2-metadata-token: ${REDACTED}`],
    [`x-aws-ec2-metadata-token=${TOKEN}`, `x-aws-ec2-metadata-token=${REDACTED}`],
    [`X-AWS-EC2-METADATA-TOKEN : ${TOKEN}`, `X-AWS-EC2-METADATA-TOKEN : ${REDACTED}`],
    [`X-aws-ec2-metadata-token: "${TOKEN}"`, `X-aws-ec2-metadata-token: "${REDACTED}"`],
    [`curl -s -H "X-aws-ec2-metadata-token: ${TOKEN}" http://169.254.169.254/latest/meta-data/`,
      `curl -s -H "X-aws-ec2-metadata-token: ${REDACTED}" http://169.254.169.254/latest/meta-data/`],
    [`curl -H 'X-aws-ec2-metadata-token: ${TOKEN}' http://x; echo done`,
      `curl -H 'X-aws-ec2-metadata-token: ${REDACTED}' http://x; echo done`],
    [`wget --header=X-aws-ec2-metadata-token:${TOKEN}&&true`, `wget --header=X-aws-ec2-metadata-token:${REDACTED}&&true`],
    [`a X-aws-ec2-metadata-token: ${TOKEN} b X-aws-ec2-metadata-token: ${TOKEN}2 c`,
      `a X-aws-ec2-metadata-token: ${REDACTED} b X-aws-ec2-metadata-token: ${REDACTED} c`],
  ];
  for (const [input, want] of cases) {
    it(JSON.stringify(input).slice(0, 70), () => {
      const out = r.text(input);
      expect(out).toBe(want);
      expect(out).not.toContain(TOKEN);
    });
  }

  it('the TTL header value is not redacted', () => {
    for (const s of ['X-aws-ec2-metadata-token-ttl-seconds: 21600', '--header=X-aws-ec2-metadata-token-ttl-seconds:21600',
      'curl -X PUT -H "X-aws-ec2-metadata-token-ttl-seconds: 21600" http://169.254.169.254/latest/api/token']) {
      expect(r.text(s)).toBe(s);
    }
  });

  it('text without tokens is unchanged', () => {
    for (const s of ['', 'curl http://169.254.169.254/latest/meta-data/', 'X-aws-ec2-metadata-token', 'x-aws-ec2-metadata:abc']) {
      expect(r.text(s)).toBe(s);
    }
  });
});

describe('Redactor: seen secrets', () => {
  it('a value seen on the wire is redacted anywhere, every occurrence', () => {
    const r = new Redactor();
    r.addSecret(TOKEN);
    expect(r.text(`python3 fetch.py --token ${TOKEN} --again=${TOKEN}`)).toBe(`python3 fetch.py --token ${REDACTED} --again=${REDACTED}`);
    expect(r.text(`/latest/meta-data/?t=${TOKEN}`)).toBe(`/latest/meta-data/?t=${REDACTED}`);
  });

  it('values are trimmed; short values (under 8 chars) are ignored', () => {
    const r = new Redactor();
    r.addSecret(`  ${TOKEN}\t`);
    r.addSecret('abc');
    r.addSecret('1234567');
    expect(r.text(`x ${TOKEN} y`)).toBe(`x ${REDACTED} y`);
    expect(r.text('abc 1234567')).toBe('abc 1234567');
    r.addSecret('12345678');
    expect(r.text('id 12345678')).toBe(`id ${REDACTED}`);
  });

  it('the set is bounded: the oldest secret is forgotten first', () => {
    const r = new Redactor(3);
    const s = ['secret-0000', 'secret-1111', 'secret-2222', 'secret-3333'];
    for (const v of s) r.addSecret(v);
    expect(r.text(s.join(' '))).toBe(`secret-0000 ${REDACTED} ${REDACTED} ${REDACTED}`);
    r.addSecret('secret-1111'); // already known: no eviction
    expect(r.text('secret-1111 secret-2222')).toBe(`${REDACTED} ${REDACTED}`);
    expect((r as unknown as { seen: Set<string> }).seen.size).toBe(3);
  });

  it('stays bounded under many secrets', () => {
    const r = new Redactor(10);
    for (let i = 0; i < 1000; i++) r.addSecret(`token-value-${i}`);
    expect((r as unknown as { seen: Set<string> }).seen.size).toBe(10);
    expect(r.text('token-value-999')).toBe(REDACTED);
    expect(r.text('token-value-5 ')).toBe('token-value-5 ');
  });
});

describe('Redactor.argv and redactProcess', () => {
  it('argv: each argument is redacted', () => {
    const r = new Redactor();
    expect(r.argv(['curl', '-H', `X-aws-ec2-metadata-token: ${TOKEN}`, 'http://169.254.169.254/latest/meta-data/'])).toEqual(
      ['curl', '-H', `X-aws-ec2-metadata-token: ${REDACTED}`, 'http://169.254.169.254/latest/meta-data/']);
    expect(r.argv(['curl', '-H', 'X-aws-ec2-metadata-token-ttl-seconds: 21600'])).toEqual(
      ['curl', '-H', 'X-aws-ec2-metadata-token-ttl-seconds: 21600']);
  });

  it('argv: a value given as the argument after a bare header is redacted', () => {
    const r = new Redactor();
    // e.g. an unquoted `curl -H X-aws-ec2-metadata-token: $TOKEN ...` in a script
    expect(r.argv(['curl', '-H', 'X-aws-ec2-metadata-token:', TOKEN, 'http://169.254.169.254/'])).toEqual(
      ['curl', '-H', 'X-aws-ec2-metadata-token:', REDACTED, 'http://169.254.169.254/']);
    expect(r.argv(['tool', '--header', 'X-aws-ec2-metadata-token', TOKEN])).toEqual(
      ['tool', '--header', 'X-aws-ec2-metadata-token', REDACTED]);
    // but the TTL header's value is not a secret
    expect(r.argv(['curl', '-H', 'X-aws-ec2-metadata-token-ttl-seconds:', '21600'])).toEqual(
      ['curl', '-H', 'X-aws-ec2-metadata-token-ttl-seconds:', '21600']);
  });

  it('redactProcess: own argv and every ancestor argv, nothing else touched', () => {
    const r = new Redactor();
    r.addSecret('seen-on-the-wire-1234');
    const p: ProcessInfo = {
      attribution: 'proc', pid: 10, comm: 'curl', exe: '/usr/bin/curl',
      argv: ['curl', '-H', `X-aws-ec2-metadata-token: ${TOKEN}`, 'http://169.254.169.254/'],
      ancestors: [
        { pid: 9, comm: 'bash', argv: ['bash', '-c', 'curl -H "x-aws-ec2-metadata-token: seen-on-the-wire-1234"'] },
        { pid: 1, comm: 'init', argv: null },
      ],
    };
    const out = redactProcess(p, (s) => r.text(s));
    expect(out.argv).toEqual(['curl', '-H', `X-aws-ec2-metadata-token: ${REDACTED}`, 'http://169.254.169.254/']);
    expect(out.ancestors![0].argv).toEqual(['bash', '-c', `curl -H "x-aws-ec2-metadata-token: ${REDACTED}"`]);
    expect(out.ancestors![1].argv).toBeNull();
    expect(out.pid).toBe(10);
    expect(out.exe).toBe('/usr/bin/curl');
    expect(JSON.stringify(out)).not.toContain(TOKEN);
    expect(JSON.stringify(out)).not.toContain('seen-on-the-wire-1234');
    // the input is not mutated
    expect(p.argv![2]).toContain(TOKEN);
  });

  it('redactProcess: a value after a bare header in argv is redacted', () => {
    const r = new Redactor();
    const p: ProcessInfo = { attribution: 'proc', argv: ['curl', '-H', 'X-aws-ec2-metadata-token:', TOKEN, 'http://169.254.169.254/'] };
    const out = redactProcess(p, (s) => r.text(s));
    expect(JSON.stringify(out)).not.toContain(TOKEN);
  });

  it('redactProcess without argv leaves it absent', () => {
    const out = redactProcess({ attribution: 'none', reason: 'x' }, (s) => s.toUpperCase());
    expect(out).toEqual({ attribution: 'none', reason: 'x' });
  });
});
