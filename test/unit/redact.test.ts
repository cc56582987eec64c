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

describe('scrubbing secrets by sensitive words (Datadog-style) and token shapes', () => {
  const r = new Redactor();
  const S = 'hunter2-canary';
  // [argv in, argv out]: every shape the agent must scrub, in the caller's argv or a parent's.
  const argvCases: Array<[string, string[], string[]]> = [
    ['--password value', ['mysql', '--password', S, 'db'], ['mysql', '--password', REDACTED, 'db']],
    ['--db-password=value', ['app', `--db-password=${S}`], ['app', `--db-password=${REDACTED}`]],
    ['--api-key value', ['tool', '--api-key', S], ['tool', '--api-key', REDACTED]],
    ['--api-key=value with spaces', ['tool', `--api-key=${S} more`], ['tool', `--api-key=${REDACTED}`]],
    ['-passwd value', ['x', '-passwd', S], ['x', '-passwd', REDACTED]],
    ['AWS_SECRET_ACCESS_KEY=value', ['env', `AWS_SECRET_ACCESS_KEY=${S}`, 'app'], ['env', `AWS_SECRET_ACCESS_KEY=${REDACTED}`, 'app']],
    ['AWS_SESSION_TOKEN=value', ['env', `AWS_SESSION_TOKEN=${S}`], ['env', `AWS_SESSION_TOKEN=${REDACTED}`]],
    ['TOKEN=value', ['env', `TOKEN=${S}`], ['env', `TOKEN=${REDACTED}`]],
    ['mysql_pwd: value', ['x', `MYSQL_PWD: ${S}`], ['x', `MYSQL_PWD: ${REDACTED}`]],
    ['T=<IMDS token> (token shape)', ['env', `T=${TOKEN}`], ['env', `T=${REDACTED}`]],
    ['a bare name, then its value', ['tool', 'client_secret', S], ['tool', 'client_secret', REDACTED]],
    ['a name with its separator, then a value that looks like an option', ['tool', '--secret=', '-x9'], ['tool', '--secret=', REDACTED]],
    ['a name followed by an option: not a value', ['tool', '--password-stdin', '--user', 'bob'], ['tool', '--password-stdin', '--user', 'bob']],
    ['argv[0] is never a name', ['secret-tool', 'lookup', 'x'], ['secret-tool', 'lookup', 'x']],
  ];
  for (const [name, input, want] of argvCases) {
    it(`argv: ${name}`, () => {
      const out = r.argv(input);
      expect(out).toEqual(want);
      expect(JSON.stringify(out)).not.toContain(S);
    });
  }

  // [text in, text out]: inside one argument (a script given to sh -c / python3 -c, a header).
  const textCases: Array<[string, string, string]> = [
    ['JSON', `{"X-aws-ec2-metadata-token": "${S}"}`, `{"X-aws-ec2-metadata-token": "${REDACTED}"}`],
    ['Python dict', `h = {'X-aws-ec2-metadata-token': '${S}'}`, `h = {'X-aws-ec2-metadata-token': '${REDACTED}'}`],
    ['Python dict, escaped quotes in a shell string', `{\\"X-aws-ec2-metadata-token\\": \\"${S}\\"}`, `{\\"X-aws-ec2-metadata-token\\": \\"${REDACTED}\\"}`],
    ['PowerShell hashtable', `@{"X-aws-ec2-metadata-token" = '${S}'}`, `@{"X-aws-ec2-metadata-token" = '${REDACTED}'}`],
    ['PowerShell hashtable, unquoted value', `@{"X-aws-ec2-metadata-token" = ${S}}`, `@{"X-aws-ec2-metadata-token" = ${REDACTED}}`],
    ['a variable or command substitution is a reference, kept', `@{"X-aws-ec2-metadata-token" = $t}; TOKEN=$(curl -s -X PUT x) T2="$TOKEN"`,
      `@{"X-aws-ec2-metadata-token" = $t}; TOKEN=$(curl -s -X PUT x) T2="$TOKEN"`],
    ['…but the same in quotes is a literal', `PASSWORD='$${S}'`, `PASSWORD='${REDACTED}'`],
    ['a call with the name quoted', `req.add_header('X-aws-ec2-metadata-token', '${S}')`, `req.add_header('X-aws-ec2-metadata-token', '${REDACTED}')`],
    ['index assignment', `h["Api_Key"] = "${S}"`, `h["Api_Key"] = "${REDACTED}"`],
    ['shell assignment in a script', `TOKEN=${S}; curl -s http://x`, `TOKEN=${REDACTED}; curl -s http://x`],
    ['option with a space in a script', `mysql --password ${S} -h db`, `mysql --password ${REDACTED} -h db`],
    ['option with a quoted value in a script', `mysql --password "${S} x" -h db`, `mysql --password "${REDACTED}" -h db`],
    ['a query string', `/latest/x?access_token=${S}&a=1`, `/latest/x?access_token=${REDACTED}&a=1`],
    ['YAML-ish', `auth_token: ${S}`, `auth_token: ${REDACTED}`],
    ['an STS session token anywhere', `echo IQoJb3JpZ2luX2VjEFAKEFAKEFAKEFAKE0123456789`, `echo ${REDACTED}`],
    ['an IMDS token anywhere', `echo ${TOKEN} | x`, `echo ${REDACTED} | x`],
    ['a cut IMDS token (argv bound) anywhere', 'x AQAEAGJfRUe3o', `x ${REDACTED}`],
    ['a URL with a password', `git clone https://bob:${S}@git.example.com/r.git`, `git clone https://bob:${REDACTED}@git.example.com/r.git`],
    ['a Java system property', `-Dspring.datasource.password=${S}`, `-Dspring.datasource.password=${REDACTED}`],
  ];
  for (const [name, input, want] of textCases) {
    it(`text: ${name}`, () => {
      const out = r.text(input);
      expect(out).toBe(want);
      expect(out).not.toContain(S);
    });
  }

  it('leaves ordinary command lines and paths alone', () => {
    for (const s of ['/latest/meta-data/iam/security-credentials/', '/latest/api/token', 'python3 /opt/app.py --poll',
      'X-aws-ec2-metadata-token-ttl-seconds: 21600', 'curl -X PUT -H "X-aws-ec2-metadata-token-ttl-seconds: 21600" http://x',
      'Boto3/1.29.27 md/Botocore#1.29.27', 'echo [REDACTED]', 'http://169.254.169.254:80/latest/meta-data/',
      'ssh://git@example.com/r.git']) {
      expect(r.text(s)).toBe(s);
    }
    expect(r.argv(['java', '-cp', 'a.jar:b.jar', 'com.example.Main', '--port', '8080'])).toEqual(
      ['java', '-cp', 'a.jar:b.jar', 'com.example.Main', '--port', '8080']);
  });

  it('is idempotent', () => {
    const once = r.argv(['sh', '-c', `T=${TOKEN}; curl -H "X-aws-ec2-metadata-token: $T" --password ${S} x`, '--api-key', S]);
    expect(r.argv(once)).toEqual(once);
    expect(JSON.stringify(once)).not.toContain(S);
    expect(JSON.stringify(once)).not.toContain(TOKEN);
  });

  it('extra words (--scrub-word) are scrubbed too; the defaults stay', () => {
    const plain = new Redactor();
    const more = new Redactor(undefined, ['licence']);
    expect(plain.argv(['app', '--licence-key', S])).toEqual(['app', '--licence-key', S]);
    expect(more.argv(['app', '--licence-key', S, `--password=${S}`])).toEqual(['app', '--licence-key', REDACTED, `--password=${REDACTED}`]);
  });

  it('validScrubWord refuses patterns and single characters', async () => {
    const { validScrubWord } = await import('../../agent/src/scrub.js');
    expect(validScrubWord('licence')).toBe(true);
    expect(validScrubWord('x-api-key')).toBe(true);
    expect(validScrubWord('p')).toBe(false);
    expect(validScrubWord('a|b')).toBe(false);
    expect(validScrubWord('.*')).toBe(false);
  });

  it('redactProcess with the argv scrubber: the caller and every ancestor', () => {
    const p: ProcessInfo = {
      attribution: 'ebpf', pid: 7, argv: ['python3', '-c', 'x', '--api-key', S],
      ancestors: [{ pid: 6, comm: 'sh', argv: ['sh', '-c', `AWS_SECRET_ACCESS_KEY=${S} python3 -c x`] },
        { pid: 5, comm: 'bash', argv: ['bash', '--db-password', S] }],
    };
    const out = redactProcess(p, (s) => r.text(s), (a) => r.argv(a));
    expect(JSON.stringify(out)).not.toContain(S);
    expect(out.ancestors![1].argv).toEqual(['bash', '--db-password', REDACTED]);
  });
});

describe('Redactor: texts and argvs already redacted are remembered, and forgotten when a secret is seen', () => {
  it('a text or argv redacted before a token was seen on the wire is redacted again after it', () => {
    const r = new Redactor();
    const token = 'Zm9vYmFyYmF6cXV4cXV1eA';
    const path = `/latest/meta-data/?t=${token}`;
    const argv = ['python3', 'app.py', token];
    expect(r.text(path)).toBe(path);
    expect(r.argv(argv)).toEqual(argv);
    r.addSecret(token);
    expect(r.text(path)).toBe('/latest/meta-data/?t=[REDACTED]');
    expect(r.argv(argv)).toEqual(['python3', 'app.py', '[REDACTED]']);
  });

  it('each caller gets an argv of its own; argvs that join alike are told apart', () => {
    const r = new Redactor();
    const a = r.argv(['curl', '--password', 'hunter2']);
    a.push('changed');
    expect(r.argv(['curl', '--password', 'hunter2'])).toEqual(['curl', '--password', '[REDACTED]']);
    expect(r.argv(['ab', 'c'])).toEqual(['ab', 'c']);
    expect(r.argv(['a', 'bc'])).toEqual(['a', 'bc']);
  });
});

describe('Redactor.process: one frozen redacted description per description', () => {
  const S = 'hunter2hunter2';
  const description = (): ProcessInfo => ({
    attribution: 'ebpf', pid: 7, comm: 'python3', exe: '/usr/bin/python3', argv: ['python3', 'app.py', '--password', S],
    uid: 0, user: 'root', ppid: 6,
    ancestors: [{ pid: 6, comm: 'sh', argv: ['sh', '-c', `python3 app.py --password ${S}`] }, { pid: 1, comm: 'init', argv: null }],
    cgroup: '/system.slice/app.service', container: { runtime: 'docker', id: 'abc', k8s: { namespace: 'n', pod: 'p', container: null } },
    systemd_unit: 'app.service',
  });
  const deepFrozen = (v: unknown): boolean =>
    typeof v !== 'object' || v === null || (Object.isFrozen(v) && Object.values(v).every(deepFrozen));

  it('the same JSON as redactProcess with the redactor\'s argv, secrets scrubbed', () => {
    const r = new Redactor();
    const p = description();
    const want = JSON.stringify(redactProcess(p, (s) => r.text(s), (a) => r.argv(a)));
    expect(JSON.stringify(r.process(p))).toBe(want);
    expect(JSON.stringify(r.process(p))).toBe(want);
    expect(want).not.toContain(S);
  });

  it('the same description again: the same answer, frozen all the way down; the description itself is not frozen or changed', () => {
    const r = new Redactor();
    const p = description();
    const before = JSON.stringify(p);
    const a = r.process(p);
    expect(r.process(p)).toBe(a);
    expect(deepFrozen(a)).toBe(true);
    expect(Object.isFrozen(p) || Object.isFrozen(p.argv) || Object.isFrozen(p.container)).toBe(false);
    expect(a.container).not.toBe(p.container); // a copy: the attributor's objects stay its own
    expect(JSON.stringify(p)).toBe(before);
  });

  it('another description, or one with another argv, gets its own answer', () => {
    const r = new Redactor();
    const p = description();
    const q = { ...description(), argv: ['python3', 'other.py'] };
    expect(r.process(q)).not.toBe(r.process(p));
    expect(r.process(q).argv).toEqual(['python3', 'other.py']);
    expect(r.process(p).argv).toEqual(['python3', 'app.py', '--password', REDACTED]);
  });

  it('a secret seen on the wire afterwards is scrubbed from a description redacted before it', () => {
    const r = new Redactor();
    const token = 'Zm9vYmFyYmF6cXV4cXV1eA';
    const p: ProcessInfo = { attribution: 'ebpf', pid: 8, argv: ['app', token], ancestors: [{ pid: 1, comm: 'sh', argv: ['sh', token] }] };
    expect(r.process(p).argv).toEqual(['app', token]);
    r.addSecret(token);
    expect(JSON.stringify(r.process(p))).not.toContain(token);
  });

  it('a description without argv (no caller found) gets a plain copy each time', () => {
    const r = new Redactor();
    const p: ProcessInfo = { attribution: 'none', reason: 'x' };
    const a = r.process(p);
    expect(a).toEqual(p);
    expect(a).not.toBe(p);
    expect(r.process(p)).not.toBe(a);
    expect(Object.isFrozen(a)).toBe(false);
  });
});
