import { describe, it, expect } from 'vitest';
import {
  containerFromCgroup, ipv6FromBytes, parseCgroup, parseCmdline, parseNetTcp, parsePasswd, parseStatus,
  unitFromCgroup, unitGroup, sessionGroup,
} from '../../agent/src/attribution/proc/parse.js';
import { unmapV4 } from '../../agent/src/net.js';

// Captured with `cat /proc/net/tcp` on a Linux 6.x host: a listener on 0.0.0.0:2024, a listener on
// 127.0.0.1:38080 with one loopback connection (both ends), and (as uid 65534) a listener on
// 192.0.2.2:38084.
const NET_TCP = `  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode                                                     
   0: 00000000:07E8 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 119 1 000000004804444d 100 0 0 10 0                       
   1: 0100007F:94C0 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 12165 1 0000000095aa0ffa 100 0 0 10 0                     
   2: 0100007F:D7D8 0100007F:94C0 01 00000000:00000000 00:00000000 00000000     0        0 12168 2 00000000c7aeb674 20 0 0 10 -1                     
   3: 0100007F:94C0 0100007F:D7D8 01 00000000:00000000 00:00000000 00000000     0        0 12169 1 0000000030aea8d4 20 0 0 10 -1                     
   4: 020200C0:94C4 00000000:0000 0A 00000000:00000000 00:00000000 00000000 65534        0 13632 1 00000000038e8254 100 0 0 10 0                     
`;

// `cat /proc/net/tcp6`: listeners on ::1:38081 and ::ffff:127.0.0.1:38082 with connections, a
// connection on fd00::2, and a TIME_WAIT entry (which has fewer columns).
const NET_TCP6 = `  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000001000000:94C1 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 12166 1 000000008c616104 100 0 0 10 0
   1: 0000000000000000FFFF00000100007F:94C2 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 12167 1 00000000b0589d55 100 0 0 10 0
   2: 00000000000000000000000001000000:94C1 00000000000000000000000001000000:C38E 01 00000000:00000000 00:00000000 00000000     0        0 12171 1 00000000b2d93915 20 0 0 10 -1
   3: 0000000000000000FFFF00000100007F:DFC8 0000000000000000FFFF00000100007F:94C2 01 00000000:00000000 00:00000000 00000000     0        0 12172 2 00000000bad4b82a 20 0 0 10 -1
   4: 000000FD000000000000000002000000:B234 000000FD000000000000000002000000:94C3 01 00000000:00000000 00:00000000 00000000     0        0 14343 2 00000000b2d93915 20 0 0 10 -1
   5: 000000FD000000000000000002000000:94C3 000000FD000000000000000002000000:B22A 06 00000000:00000000 03:00001660 00000000     0        0 0 3 00000000c7538287
`;

describe('parseNetTcp', () => {
  it('IPv4: little-endian hex addresses, hex ports and state, decimal uid and inode', () => {
    const e = parseNetTcp(NET_TCP);
    expect(e).toHaveLength(5);
    expect(e[0]).toEqual({ local: '0.0.0.0', lport: 2024, remote: '0.0.0.0', rport: 0, state: 0x0a, uid: 0, inode: 119 });
    expect(e[2]).toEqual({ local: '127.0.0.1', lport: 55256, remote: '127.0.0.1', rport: 38080, state: 1, uid: 0, inode: 12168 });
    expect(e[4]).toEqual({ local: '192.0.2.2', lport: 38084, remote: '0.0.0.0', rport: 0, state: 0x0a, uid: 65534, inode: 13632 });
  });

  it('IPv6: four little-endian words, RFC 5952 text, v4-mapped as ::ffff:a.b.c.d', () => {
    const e = parseNetTcp(NET_TCP6);
    expect(e).toHaveLength(6);
    expect(e[0]).toMatchObject({ local: '::1', lport: 38081, remote: '::', rport: 0, state: 0x0a, inode: 12166 });
    expect(e[1]).toMatchObject({ local: '::ffff:127.0.0.1', lport: 38082 });
    expect(e[2]).toMatchObject({ local: '::1', lport: 38081, remote: '::1', rport: 50062, state: 1 });
    expect(e[3]).toMatchObject({ local: '::ffff:127.0.0.1', lport: 57288, remote: '::ffff:127.0.0.1', rport: 38082 });
    expect(e[4]).toEqual({ local: 'fd00::2', lport: 45620, remote: 'fd00::2', rport: 38083, state: 1, uid: 0, inode: 14343 });
    expect(e[5]).toMatchObject({ local: 'fd00::2', lport: 38083, remote: 'fd00::2', rport: 45610, state: 6, inode: 0 });
  });

  it('IMDS addresses as the kernel writes them', () => {
    const v4 = '  sl  local_address rem_address   st\n   0: 0500000A:9C40 FEA9FEA9:0050 01 00000000:00000000 00:00000000 00000000  1000        0 4242 1\n';
    expect(parseNetTcp(v4)[0]).toMatchObject({ local: '10.0.0.5', lport: 40000, remote: '169.254.169.254', rport: 80, uid: 1000, inode: 4242 });
    // fd00:ec2::254 = fd 00 0e c2 | 00 00 00 00 | 00 00 00 00 | 00 00 02 54
    const v6 = 'header\n   0: 000000FD000000000000000002000000:9C40 C20E00FD000000000000000054020000:0050 01 00000000:00000000 00:00000000 00000000  1000        0 4243 1\n';
    expect(parseNetTcp(v6)[0]).toMatchObject({ local: 'fd00::2', remote: 'fd00:ec2::254', rport: 80, inode: 4243 });
  });

  it('skips the header, blank lines, short lines and bad address widths', () => {
    expect(parseNetTcp('')).toEqual([]);
    expect(parseNetTcp(NET_TCP.split('\n')[0])).toEqual([]);
    expect(parseNetTcp('h\n\n   0: 0100007F:94C0 00000000:0000 0A\n')).toEqual([]);
    expect(parseNetTcp('h\n   0: 0100007:94C0 00000000:0000 0A 0:0 0:0 0 0 0 1\n')).toEqual([]);
  });
});

describe('ipv6FromBytes / unmapV4', () => {
  it('formats like Node', () => {
    expect(ipv6FromBytes([0xfd, 0, 0x0e, 0xc2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0x54])).toBe('fd00:ec2::254');
    expect(ipv6FromBytes(Array(16).fill(0))).toBe('::');
    expect(ipv6FromBytes([0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 1])).toBe('2001:db8::1:0:0:1');
    expect(ipv6FromBytes([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 169, 254, 169, 254])).toBe('::ffff:169.254.169.254');
  });
  it('unmapV4 turns ::ffff:a.b.c.d into a.b.c.d and leaves others alone', () => {
    expect(unmapV4('::ffff:169.254.169.254')).toBe('169.254.169.254');
    expect(unmapV4('::FFFF:10.0.0.1')).toBe('10.0.0.1');
    expect(unmapV4('fd00:ec2::254')).toBe('fd00:ec2::254');
    expect(unmapV4('10.0.0.1')).toBe('10.0.0.1');
    expect(unmapV4('::ffff:a9fe:a9fe')).toBe('::ffff:a9fe:a9fe');
  });
});

describe('parseStatus', () => {
  it('reads name, tgid, ppid, real uid and gid', () => {
    const text = 'Name:\tpython3 worker\nUmask:\t0022\nState:\tS (sleeping)\nTgid:\t4321\nNgid:\t0\nPid:\t4322\nPPid:\t17\n'
      + 'TracerPid:\t0\nUid:\t1000\t1001\t1002\t1003\nGid:\t2000\t2000\t2000\t2000\nFDSize:\t64\n';
    expect(parseStatus(text)).toEqual({ name: 'python3 worker', tgid: 4321, ppid: 17, uid: 1000, gid: 2000 });
  });
  it('missing fields become empty/zero', () => {
    expect(parseStatus('')).toEqual({ name: '', tgid: 0, ppid: 0, uid: 0, gid: 0 });
  });
  it('parses this process\'s real status', async () => {
    const fs = await import('node:fs');
    const st = parseStatus(fs.readFileSync('/proc/self/status', 'utf8'));
    expect(st.tgid).toBe(process.pid);
    expect(st.ppid).toBe(process.ppid);
    expect(st.uid).toBe(process.getuid!());
  });
});

describe('parseCmdline', () => {
  it('NUL-separated with a trailing NUL', () => {
    expect(parseCmdline(Buffer.from('curl\0-s\0http://169.254.169.254/\0'))).toEqual(['curl', '-s', 'http://169.254.169.254/']);
  });
  it('without a trailing NUL (rewritten argv), empty arguments kept', () => {
    expect(parseCmdline(Buffer.from('nginx: worker process'))).toEqual(['nginx: worker process']);
    expect(parseCmdline(Buffer.from('a\0\0b\0'))).toEqual(['a', '', 'b']);
  });
  it('empty (kernel threads) and UTF-8', () => {
    expect(parseCmdline(Buffer.alloc(0))).toEqual([]);
    expect(parseCmdline(Buffer.from('échó\0ü\0'))).toEqual(['échó', 'ü']);
  });
});

describe('parsePasswd', () => {
  it('maps uid to name, skipping comments and junk', () => {
    const m = parsePasswd('root:x:0:0:root:/root:/bin/bash\n# comment\nnobody:x:65534:65534:nobody:/:/usr/sbin/nologin\n'
      + 'broken:x:abc:0::/:\n\nec2-user:x:1000:1000::/home/ec2-user:/bin/bash');
    expect([...m.entries()]).toEqual([[0, 'root'], [65534, 'nobody'], [1000, 'ec2-user']]);
  });
});

const ID = 'a'.repeat(12) + '0123456789abcdef'.repeat(3) + 'b'.repeat(4);
const POD = '5f1c2d3e-aaaa-4bbb-8ccc-0123456789ab';

describe('parseCgroup / containerFromCgroup / unitFromCgroup', () => {
  it('the unified line wins over v1 lines', () => {
    const f = parseCgroup(`12:pids:/docker/${ID}\n0::/system.slice/amazon-ssm-agent.service\n`);
    expect(f).toEqual({ path: '/system.slice/amazon-ssm-agent.service', container: null, systemdUnit: 'amazon-ssm-agent.service' });
  });

  it('v1 only: name=systemd/pids/memory/cpu line', () => {
    const f = parseCgroup(`5:devices:/other\n4:pids:/docker/${ID}\n1:name=systemd:/docker/${ID}\n`);
    expect(f.path).toBe(`/docker/${ID}`);
    expect(f.container).toEqual({ runtime: 'docker', id: ID });
    expect(f.systemdUnit).toBeNull();
  });

  it('this machine\'s hybrid cgroup file (root unified path)', () => {
    const text = '9:name=systemd:/\n8:pids:/\n7:blkio:/\n4:memory:/process_api/2457e2bb5e7331240210d07ae9d157c0\n0::/\n';
    expect(parseCgroup(text)).toEqual({ path: '/', container: null, systemdUnit: null });
  });

  it('empty file', () => {
    expect(parseCgroup('')).toEqual({ path: null, container: null, systemdUnit: null });
  });

  const containers: Array<[string, string, Record<string, unknown>]> = [
    ['docker (systemd driver)', `/system.slice/docker-${ID}.scope`, { runtime: 'docker', id: ID }],
    ['docker (cgroupfs)', `/docker/${ID}`, { runtime: 'docker', id: ID }],
    ['containerd under kubernetes (systemd driver)',
      `/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod${POD.replace(/-/g, '_')}.slice/cri-containerd-${ID}.scope`,
      { runtime: 'containerd', id: ID, pod_uid: POD }],
    ['cri-o', `/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod${POD.replace(/-/g, '_')}.slice/crio-${ID}.scope`,
      { runtime: 'cri-o', id: ID, pod_uid: POD }],
    ['podman', `/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-${ID}.scope/container`, { runtime: 'podman', id: ID }],
    ['kubernetes (cgroupfs)', `/kubepods/burstable/pod${POD}/${ID}`, { runtime: 'kubernetes', id: ID, pod_uid: POD }],
    ['kubernetes pod without a container id', `/kubepods/besteffort/pod${POD}`, { runtime: 'kubernetes', id: null, pod_uid: POD }],
    ['ECS (EC2 launch type)', `/ecs/0123456789abcdef0123456789abcdef/${ID}`,
      { runtime: 'ecs', id: ID, task_id: '0123456789abcdef0123456789abcdef' }],
    ['ECS (awsvpc/Fargate style)', '/ecs/0123456789abcdef0123456789abcdef/0123456789abcdef0123456789abcdef-1234567890',
      { runtime: 'ecs', id: '0123456789abcdef0123456789abcdef-1234567890', task_id: '0123456789abcdef0123456789abcdef' }],
  ];
  for (const [name, path, want] of containers) {
    it(`container: ${name}`, () => {
      expect(containerFromCgroup(path)).toEqual(want);
      expect(unitFromCgroup(path)).toBeNull();
      expect(parseCgroup(`0::${path}\n`).container).toEqual(want);
    });
  }

  it('no container for host paths and short ids', () => {
    expect(containerFromCgroup('/system.slice/sshd.service')).toBeNull();
    expect(containerFromCgroup('/docker/abc123')).toBeNull();
    expect(containerFromCgroup(`/system.slice/docker-${ID.toUpperCase()}.scope`)).toBeNull();
  });

  it('systemd units: deepest .service or .scope, never init.scope', () => {
    expect(unitFromCgroup('/system.slice/cloud-init.service')).toBe('cloud-init.service');
    expect(unitFromCgroup('/user.slice/user-1000.slice/session-3.scope')).toBe('session-3.scope');
    expect(unitFromCgroup('/user.slice/user-1000.slice/user@1000.service/app.slice/app-foo.scope')).toBe('app-foo.scope');
    expect(unitFromCgroup('/user.slice/user-1000.slice/user@1000.service/init.scope')).toBe('user@1000.service');
    expect(unitFromCgroup('/init.scope')).toBeNull();
    expect(unitFromCgroup('/')).toBeNull();
    expect(unitFromCgroup('/system.slice')).toBeNull();
  });
});

describe('unitGroup: a login session is one caller', () => {
  it.each([
    ['session-3.scope', '/user.slice/user-1000.slice/session-3.scope', 'user-1000.slice/session-*.scope'],
    ['session-c12.scope', '/user.slice/user-0.slice/session-c12.scope', 'user-0.slice/session-*.scope'],
    ['session-3.scope', '/machine.slice/session-3.scope', 'session-3.scope'], // not under a user slice
    ['sshd.service', '/system.slice/sshd.service', 'sshd.service'],
    [null, '/', null],
  ])('%s in %s -> %s', (unit, path, group) => expect(unitGroup(unit, path)).toBe(group));
  it('sessionGroup adds the field only when it differs', () => {
    expect(sessionGroup('session-3.scope', '/user.slice/user-1000.slice/session-3.scope'))
      .toEqual({ systemd_unit_group: 'user-1000.slice/session-*.scope' });
    expect(sessionGroup('cron.service', '/system.slice/cron.service')).toEqual({});
  });
});
