/** The SDK table: real User-Agent strings (from the SDKs' sources and the lab's real clients). */
import { describe, expect, it } from 'vitest';
import { compareVersions, identifySdk, identifySdkFor, type SdkFacts } from '../../agent/src/advice/sdk.js';

const v1 = (userAgent: string | null, more: Partial<SdkFacts> = {}): SdkFacts => ({ imdsVersion: 'v1', userAgent, ...more });

describe('identifySdk: User-Agents', () => {
  it.each([
    ['Botocore/1.12.0 Python/3.6.9 Linux/4.15.0-1057-aws', 'botocore', '1.12.0', 'upgrade botocore to ≥ 1.13.25'],
    ['Boto3/1.9.0 Python/3.7.3 Linux/4.14.77 Botocore/1.12.0', 'boto3', '1.9.0', 'upgrade boto3 to ≥ 1.12.6 and botocore to ≥ 1.13.25'],
    ['Boto3/1.12.0 md/Botocore#1.15.0 ua/2.0 os/linux#6.1.0 lang/python#3.11.2', 'boto3', '1.12.0', 'upgrade boto3 to ≥ 1.12.6'],
    ['aws-cli/1.16.100 Python/2.7.16 Linux/4.14.138-114.102.amzn2.x86_64 botocore/1.12.90', 'aws-cli', '1.16.100', 'upgrade aws-cli to ≥ 1.16.289'],
    ['aws-sdk-go/1.25.0 (go1.13.1; linux; amd64)', 'aws-sdk-go', '1.25.0', 'upgrade aws-sdk-go to ≥ 1.25.38'],
    ['aws-sdk-go-v2/0.18.0 (go1.13; linux; amd64)', 'aws-sdk-go-v2', '0.18.0', 'upgrade aws-sdk-go-v2 to ≥ 0.19.0'],
    ['aws-sdk-java/1.11.600 Linux/4.14.133 OpenJDK_64-Bit_Server_VM/25.222-b10 java/1.8.0_222 vendor/Oracle_Corporation', 'aws-sdk-java', '1.11.600', 'upgrade aws-sdk-java to ≥ 1.11.678'],
    ['aws-sdk-java/2.10.0 Linux/4.14 OpenJDK_64-Bit_Server_VM/11.0.5+10 Java/11.0.5 vendor/Amazon.com_Inc. io/sync http/Apache', 'aws-sdk-java-v2', '2.10.0', 'upgrade aws-sdk-java-v2 to ≥ 2.10.21'],
    ['aws-sdk-nodejs/2.600.0 linux/v12.14.0', 'aws-sdk-js', '2.600.0', 'upgrade aws-sdk-js to ≥ 2.722.0'],
    ['aws-sdk-ruby3/3.70.0', 'aws-sdk-ruby', '3.70.0', 'upgrade aws-sdk-ruby to ≥ 3.79.0'],
    ['aws-sdk-php/3.140.0 OS/Linux/4.14 lang/php/7.3.11 GuzzleHttp/6.3.3', 'aws-sdk-php', '3.140.0', 'upgrade aws-sdk-php to ≥ 3.147.7'],
    ['aws-sdk-dotnet-coreclr/3.3.100.0 aws-sdk-dotnet-core/3.3.600.0 .NET_Core/4.6.27817.03 OS/Linux', 'aws-sdk-net', '3.3.600.0', 'upgrade aws-sdk-net to ≥ 3.3.634.1'],
    ['AWSPowerShell.NetCore/3.3.600.0 aws-sdk-dotnet-coreclr/3.3.600.0 .NET_Core/4.6 OS/Linux', 'aws-tools-powershell', '3.3.600.0', 'upgrade aws-tools-powershell to ≥ 4.0.1.0'],
    ['aws-sdk-cpp/1.7.100 Linux/4.14.152 x86_64 GCC/7.3.1', 'aws-sdk-cpp', '1.7.100', 'upgrade aws-sdk-cpp to ≥ 1.7.229'],
  ])('%s → %s %s: %s', (ua, name, version, advice) => {
    expect(identifySdk(v1(ua))).toMatchObject({ name, version, advice });
  });

  it('an SDK new enough: the v1 call is a fallback, and v1_reason says which', () => {
    const ua = 'Boto3/1.29.27 md/Botocore#1.29.27 ua/2.0 os/linux#6.1.0 lang/python#3.11.2';
    expect(identifySdk(v1(ua, { v1Reason: 'token_put_unanswered' }))).toEqual({
      name: 'boto3', version: '1.29.27', imdsv2_min: '1.12.6',
      advice: expect.stringMatching(/^supports IMDSv2: the v1 call is a fallback — see v1_reason \(the token answer never arrived.*HttpPutResponseHopLimit to 2/),
    });
    expect(identifySdk(v1('aws-sdk-nodejs/2.1693.0 linux/v20.20.2')).advice).toMatch(/^supports IMDSv2: the v1 call is a fallback/);
    // Debian's python3-botocore through a session (the lab's real client).
    expect(identifySdk(v1('Botocore/1.29.27 Python/3.11.2 Linux/6.18.44-fc-v1045', { v1Reason: 'token_put_refused' }))).toMatchObject({
      name: 'botocore', version: '1.29.27', advice: expect.stringMatching(/fallback — see v1_reason \(the token request was refused/) });
    expect(identifySdk(v1('aws-cli/2.15.0 Python/3.11.6 Linux/6.1 exe/x86_64.amzn.2023 prompt/off')).advice).toMatch(/^supports IMDSv2/);
    expect(identifySdk(v1('aws-sdk-java/2.20.0 Linux/5.10 OpenJDK_64-Bit_Server_VM/17.0.6+10-LTS Java/17.0.6')).name).toBe('aws-sdk-java-v2');
    expect(identifySdk(v1('aws-sdk-js/3.450.0 ua/2.0 os/linux#6.1 lang/js md/nodejs#20.9.0')).name).toBe('aws-sdk-js-v3');
  });

  it('legacy boto 2, and HTTP clients without an SDK', () => {
    expect(identifySdk(v1('Boto/2.49.0 Python/2.7.18 Linux/4.14.336'))).toMatchObject({ name: 'boto', advice: 'legacy boto 2 never uses IMDSv2: move to boto3' });
    // boto 2's own IMDS code sends urllib's User-Agent (Debian's python3-boto): either, said so.
    expect(identifySdk(v1('Python-urllib/3.11')).advice).toMatch(/legacy boto 2 .* or the code calls IMDS itself/);
    expect(identifySdk(v1('Cloud-Init/22.4.2'))).toMatchObject({ name: 'cloud-init', version: '22.4.2', advice: expect.stringMatching(/upgrade cloud-init/) });
    expect(identifySdk(v1('python-requests/2.28.1', { exe: '/usr/bin/python3.11', argv: ['/usr/bin/python3', '/usr/bin/cloud-init', 'init'] })).name).toBe('cloud-init');
    for (const [ua, name] of [['curl/7.88.1', 'curl'], ['Wget/1.21.3', 'wget'],
      ['python-requests/2.28.1', 'python-requests'], ['Go-http-client/1.1', 'go-net-http'], ['node', 'node-fetch']]) {
      expect(identifySdk(v1(ua))).toMatchObject({ name, imdsv2_min: null, advice: 'no AWS SDK: the code calls IMDS itself: add the token PUT' });
    }
    expect(identifySdk(v1('python-urllib3/1.26.12')).advice).toMatch(/botocore used without a session/);
  });

  it('no User-Agent: the executable only when it is unambiguous, else unknown', () => {
    expect(identifySdk(v1(null, { exe: '/usr/bin/curl' }))).toMatchObject({ name: 'curl', version: null });
    expect(identifySdk(v1(null, { exe: '/usr/local/bin/aws' }))).toMatchObject({ name: 'aws-cli', version: null, imdsv2_min: '1.16.289' });
    // @aws-sdk v3's IMDS client sends no User-Agent: node alone says nothing.
    expect(identifySdk(v1(null, { exe: '/usr/bin/node', comm: 'node' }))).toMatchObject({ name: 'unknown', version: null });
    expect(identifySdk(v1('my-agent/1.0', { exe: '/usr/bin/python3' }))).toMatchObject({ name: 'unknown' });
  });

  it('IMDSv2 calls: nothing to do', () => {
    expect(identifySdk({ imdsVersion: 'v2', userAgent: 'curl/7.88.1' }).advice).toBe('uses IMDSv2');
    expect(identifySdk({ imdsVersion: 'v2', userAgent: 'aws-sdk-go/1.50.0 (go1.21; linux; amd64)' }).advice).toBe('uses IMDSv2');
  });
});

describe('compareVersions', () => {
  it('compares numerically, part by part', () => {
    expect(compareVersions('1.11.678', '1.11.1000')).toBe(-1);
    expect(compareVersions('2.722.0', '2.1693.0')).toBe(-1);
    expect(compareVersions('3.3.634.1', '3.3.634')).toBe(1);
    expect(compareVersions('1.13.25', '1.13.25')).toBe(0);
  });
});

describe('identifySdkFor: remembered per frozen caller, User-Agent, version and v1 reason', () => {
  const caller = (exe: string, argv: string[] = [exe]) => Object.freeze({ exe, comm: exe.slice(exe.lastIndexOf('/') + 1), argv: Object.freeze(argv) });
  const agents = [null, 'Botocore/1.29.27 Python/3.11.2 Linux/6.1.0', 'aws-sdk-go/1.20.0 (go1.20.3; linux; amd64)', 'curl/8.0.1', 'Cloud-Init/22.4.2'];
  const versions = ['v1', 'v2', null] as const;
  const reasons = [undefined, 'token_put_unanswered', 'token_put_refused'] as const;

  it('the answer identifySdk gives, for every version, v1 reason and User-Agent; frozen; the same object when asked again', () => {
    for (const c of [caller('/usr/bin/python3', ['python3', 'app.py']), caller('/usr/bin/aws'), caller('/usr/bin/python3', ['python3', '/usr/bin/cloud-init'])]) {
      for (const ua of agents) for (const v of versions) for (const why of reasons) {
        const got = identifySdkFor(c, v, ua, why);
        expect(got).toEqual(identifySdk({ imdsVersion: v, userAgent: ua, exe: c.exe, comm: c.comm, argv: c.argv, v1Reason: why }));
        expect(Object.isFrozen(got)).toBe(true);
        expect(identifySdkFor(c, v, ua, why)).toBe(got);
      }
    }
  });

  it('another caller (another executable or argv) gets its own answer', () => {
    expect(identifySdkFor(caller('/usr/bin/aws'), 'v1', null).name).toBe('aws-cli');
    expect(identifySdkFor(caller('/usr/bin/python3', ['python3', 'app.py']), 'v1', null).name).toBe('unknown');
    expect(identifySdkFor(caller('/usr/bin/python3', ['python3', '/usr/bin/cloud-init']), 'v1', null).name).toBe('cloud-init');
  });

  it('callers with no executable, comm or argv (none found) share their answers, whatever else they hold', () => {
    for (const ua of agents) for (const v of versions) for (const why of reasons) {
      const got = identifySdkFor({ exe: null }, v, ua, why);
      expect(got).toEqual(identifySdk({ imdsVersion: v, userAgent: ua, v1Reason: why }));
      expect(Object.isFrozen(got)).toBe(true);
      expect(identifySdkFor({}, v, ua, why)).toBe(got);
    }
    expect(identifySdkFor({ exe: null }, 'v1', null).name).toBe('unknown');
    expect(identifySdkFor({ comm: 'curl' }, 'v1', null).name).toBe('curl'); // one of them: its own answer
  });

  it('a caller that is not frozen (it may change) is answered from its facts each time', () => {
    const c = { exe: '/usr/bin/aws', comm: 'aws', argv: ['aws'] };
    expect(identifySdkFor(c, 'v1', null).name).toBe('aws-cli');
    c.exe = '/usr/bin/curl'; c.comm = 'curl'; c.argv = ['curl'];
    expect(identifySdkFor(c, 'v1', null).name).toBe('curl');
  });
});
