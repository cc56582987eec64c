/**
 * The release tarballs (scripts/release.sh), built once for this file, tried as a fleet operator
 * would: unpacked into an empty root and run with no system Node.js visible (a private mount
 * namespace hides every `node` on PATH), installed with networking off (`unshare -n`), `doctor`
 * and the demo's lab trace run with the installed copy, installed and uninstalled on a real root
 * (a private mount namespace with empty /opt, /usr/local/bin, /etc/systemd/system, /etc/default
 * and /var/log), the ELF files' architecture, libraries and glibc symbol versions checked. Then,
 * when it can run (root, systemd-nspawn), the unit under a real systemd (test/helpers/systemd-box):
 * installed from the release, active only once the agent said READY, errors in the journal, no
 * restart on exit status 2, uninstalled.
 */
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { REPO } from '../helpers/repo.js';
const VERSION = JSON.parse(readFileSync(join(REPO, 'package.json'), 'utf8')).version as string;
const isRoot = process.getuid?.() === 0;
const has = (cmd: string): boolean => spawnSync('sh', ['-c', `command -v ${cmd}`]).status === 0;
const hasArm64 = has('aarch64-linux-gnu-gcc') && existsSync('/usr/lib/aarch64-linux-gnu/libpcap.a');
const skipReason = !isRoot ? 'needs root (mount namespaces, install.sh)'
  : !has('unshare') ? 'unshare(1) missing'
    : !existsSync(join(REPO, 'node_modules', '.bin', 'esbuild')) ? 'esbuild missing: npm ci' : '';
if (skipReason) console.warn(`release tests skipped: ${skipReason}`);
if (!skipReason && !hasArm64) console.warn('release tests: arm64 cross toolchain missing (scripts/setup.sh installs it): x64 only');
const ARCHES = hasArm64 ? ['x64', 'arm64'] as const : ['x64'] as const;

function sh(script: string, timeout = 120_000): { status: number | null; out: string; stdout: string } {
  const r = spawnSync('bash', ['-c', script], { encoding: 'utf8', timeout });
  return { status: r.status, out: `${r.stdout}${r.stderr}`, stdout: r.stdout };
}

/** A shell prefix for a private mount namespace in which no `node` on PATH can run. */
const NO_NODE = `
  set -e
  for n in $(which -a node nodejs 2>/dev/null | sort -u) /usr/bin/node /usr/local/bin/node; do
    [ -e "$n" ] && mount --bind /dev/null "$n"
  done
  if node --version >/dev/null 2>&1; then echo "a system node is still visible" >&2; exit 99; fi
`;
let scripts = 0;
/** Runs inner in a private mount namespace where no system Node.js can run (the script goes in a file: no quoting). */
const noNode = (inner: string): string => {
  const f = join(tmpdir(), `imds-tracer-release-${process.pid}-${scripts++}.sh`);
  writeFileSync(f, `${NO_NODE}\n${inner}\n`);
  return `unshare -m --propagation private bash ${f}; s=$?; rm -f ${f}; exit $s`;
};

const tarball = (dir: string, arch: string): string => join(dir, `imds-tracer-${VERSION}-linux-${arch}.tar.gz`);

/** readelf facts of an ELF file (works for any architecture). */
function elf(path: string): { machine: string; needed: string[]; glibcMax: number } {
  const h = sh(`readelf -h ${JSON.stringify(path)}`).stdout;
  const d = sh(`readelf -d ${JSON.stringify(path)}`).stdout;
  const s = sh(`readelf -W --dyn-syms ${JSON.stringify(path)}`).stdout;
  const versions = [...s.matchAll(/GLIBC_2\.(\d+)/g)].map((m) => Number(m[1]));
  return {
    machine: /Machine:\s*(.+)/.exec(h)?.[1].trim() ?? '',
    needed: [...d.matchAll(/Shared library: \[([^\]]+)\]/g)].map((m) => m[1]),
    glibcMax: Math.max(0, ...versions),
  };
}

describe.skipIf(Boolean(skipReason))('release tarballs', () => {
  let out: string;
  let work: string;

  beforeAll(() => {
    out = mkdtempSync(join(tmpdir(), 'imds-tracer-release-'));
    work = mkdtempSync(join(tmpdir(), 'imds-tracer-release-work-'));
    const r = sh(`bash ${join(REPO, 'scripts', 'release.sh')} --out ${out} --arch ${hasArm64 ? 'all' : 'x64'}`, 600_000);
    expect(r.status, r.out).toBe(0);
  }, 600_000);
  afterAll(() => {
    for (const d of [out, work]) if (d) rmSync(d, { recursive: true, force: true });
  });

  it('SHA256SUMS lists install.sh and every tarball; each tarball has its MANIFEST, runtime, bundle, helpers, unit, scripts, licences and no node_modules', () => {
    const sums = readFileSync(join(out, 'SHA256SUMS'), 'utf8').trim().split('\n').map((l) => l.split(/\s+\*?/));
    const names = sums.map(([, f]) => f).sort();
    expect(names).toEqual(['install.sh', ...ARCHES.map((a) => `imds-tracer-${VERSION}-linux-${a}.tar.gz`)].sort());
    for (const [sum, f] of sums) expect(createHash('sha256').update(readFileSync(join(out, f))).digest('hex'), f).toBe(sum);
    for (const arch of ARCHES) {
      const list = sh(`tar -tzf ${tarball(out, arch)}`).stdout.split('\n').filter(Boolean);
      const top = `imds-tracer-${VERSION}-linux-${arch}/`;
      expect(list.every((p) => p.startsWith(top)), 'one top directory').toBe(true);
      const files = new Set(list.map((p) => p.slice(top.length)));
      for (const f of ['MANIFEST', 'RELEASE', 'LICENSE', 'THIRD_PARTY_LICENSES', 'package.json', 'bin/imds-tracer', 'bin/imds-tracer.js',
        'runtime/bin/node', 'runtime/LICENSE', 'dist/cli.js', 'dist/lab/imds-server.js', 'native/.output/imds_capture',
        'native/.output/imds_notify', 'bpf/.output/imds_connect', 'systemd/imds-tracer.service', 'scripts/install.sh',
        'scripts/uninstall.sh', 'docs/fleet.md', 'README.md', 'SCHEMA.md']) {
        expect(files.has(f), `${arch}: ${f}`).toBe(true);
      }
      expect([...files].some((f) => f.includes('node_modules')), 'no node_modules: the agent is bundled').toBe(false);
      const release = sh(`tar -xzOf ${tarball(out, arch)} ${top}RELEASE`).stdout;
      expect(release).toMatch(new RegExp(`^arch=${arch}$`, 'm'));
      expect(Number(/^node=(\d+)\./m.exec(release)?.[1]), 'an LTS runtime, 22 or newer').toBeGreaterThanOrEqual(22);
    }
  });

  it.each(ARCHES)('%s: ELF machine matches; the helpers need only glibc (<= GLIBC_2.34), the runtime <= GLIBC_2.28', (arch) => {
    const dir = join(work, `elf-${arch}`);
    mkdirSync(dir);
    expect(sh(`tar -C ${dir} --strip-components=1 -xzf ${tarball(out, arch)}`).status).toBe(0);
    const machine = arch === 'x64' ? /X86-64/ : /AArch64/;
    for (const f of ['native/.output/imds_capture', 'native/.output/imds_notify', 'bpf/.output/imds_connect']) {
      const e = elf(join(dir, f));
      expect(e.machine, f).toMatch(machine);
      // libpcap, libbpf, libelf, zlib linked statically: libpcap's soname differs between Debian and AL2023.
      expect(e.needed.filter((n) => !/^(libc\.so\.6|ld-linux-(x86-64|aarch64)\.so\.[12])$/.test(n)), f).toEqual([]);
      expect(e.glibcMax, `${f} needs GLIBC_2.${e.glibcMax}; AL2023 and RHEL 9 have 2.34`).toBeLessThanOrEqual(34);
      expect(e.glibcMax, f).toBeGreaterThan(0);
    }
    const node = elf(join(dir, 'runtime/bin/node'));
    expect(node.machine).toMatch(machine);
    expect(node.glibcMax).toBeLessThanOrEqual(28);
  });

  it.skipIf(!hasArm64 || !has('qemu-aarch64-static'))('arm64: the capture helper runs (under qemu-user)', () => {
    const dir = join(work, 'elf-arm64');
    const r = spawnSync('qemu-aarch64-static', [join(dir, 'native/.output/imds_capture')], {
      encoding: 'utf8', timeout: 30_000, env: { ...process.env, QEMU_LD_PREFIX: '/usr/aarch64-linux-gnu' },
    });
    expect(r.status, r.stderr).toBe(2);
    expect(r.stderr).toMatch(/^usage: imds_capture/);
  });

  it('x64: unpacked into an empty directory, it runs with no system Node.js: --version, doctor through the capture helper', () => {
    const dir = join(work, 'bare');
    mkdirSync(dir);
    expect(sh(`tar -C ${dir} --strip-components=1 -xzf ${tarball(out, 'x64')}`).status).toBe(0);
    const r = sh(noNode(`${dir}/bin/imds-tracer --version; ${dir}/bin/imds-tracer doctor --json --log-file ${dir}/logs/calls.jsonl`));
    expect(r.status, r.out).toBe(0);
    const [version, json] = r.stdout.split('\n');
    expect(version).toBe(VERSION);
    const report = JSON.parse(json) as { ok: boolean; checks: { id: string; status: string; title: string; detail: string }[] };
    expect(report.ok, json).toBe(true);
    const byId = Object.fromEntries(report.checks.map((c) => [c.id, c]));
    expect(byId.node.detail).toMatch(/v2[2-9]\./);
    // the capture path the agent will use, not the `cap` binding (not shipped)
    expect(byId.libpcap.title).toContain(`${dir}/native/.output/imds_capture`);
    expect(byId.libpcap.status).toBe('PASS');
    expect(byId.libpcap.detail).toMatch(/opened/);
    expect(byId.ebpf.status).toBe('PASS');
  });

  describe('installed with networking off', () => {
    let root: string;
    let rel: string;

    beforeAll(() => {
      root = mkdtempSync(join(tmpdir(), 'imds-tracer-release-root-'));
      rel = join(work, 'download');
      mkdirSync(rel);
      for (const f of ['install.sh', 'SHA256SUMS', `imds-tracer-${VERSION}-linux-x64.tar.gz`]) cpSync(join(out, f), join(rel, f));
    });
    afterAll(() => {
      if (root) rmSync(root, { recursive: true, force: true });
    });

    it('install.sh --from-release DIR: no network, no system Node.js; a second run changes nothing', () => {
      const install = `bash ${rel}/install.sh --from-release ${rel} --root ${root} --no-systemctl --log-group fleet/imds-v1`;
      const first = sh(noNode(`unshare -n ${install}`));
      expect(first.status, first.out).toBe(0);
      expect(first.out).toMatch(/installed .*opt\/imds-tracer from imds-tracer-.*-linux-x64\.tar\.gz/);
      const listing = sh(`cd ${root} && find . -printf '%p %m %u %s\\n' | sort`).stdout;
      const again = sh(noNode(`unshare -n ${install}`));
      expect(again.status, again.out).toBe(0);
      expect(again.out).toMatch(/is up to date/);
      expect(again.out).not.toMatch(/wrote /);
      expect(sh(`cd ${root} && find . -printf '%p %m %u %s\\n' | sort`).stdout).toBe(listing);
      expect(readFileSync(join(root, 'etc/default/imds-tracer'), 'utf8')).toMatch(/^IMDS_TRACER_ARGS="--cloudwatch-log-group fleet\/imds-v1"$/m);
      // systemd makes the log directory (LogsDirectory=); install.sh does not
      expect(existsSync(join(root, 'var/log/imds-tracer'))).toBe(false);
    });

    it('the installed copy: doctor passes and the lab trace (demo) names every IMDSv1 caller through the helper and eBPF', () => {
      const log = join(work, 'demo.jsonl');
      const cmd = `${root}/usr/local/bin/imds-tracer`;
      const r = sh(noNode(`${cmd} doctor --log-file ${work}/doctor/calls.jsonl && ${cmd} demo --keep-log ${log}`), 180_000);
      expect(r.status, r.out).toBe(0);
      const recs = readFileSync(log, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as Record<string, any>);
      const ready = recs.find((x) => x.event === 'ready');
      expect(ready?.capture).toBe('helper');
      expect(ready?.backend).toBe('ebpf');
      const v1 = recs.filter((x) => x.event === 'imds_call' && x.imds_version === 'v1');
      expect(v1.length, r.out).toBeGreaterThanOrEqual(4);
      for (const c of v1) expect(c.process.attribution, JSON.stringify(c)).not.toBe('none');
      expect(recs.at(-1)?.event, 'the final stats come last').toBe('stats');
    });

    it('the eBPF program built from the minimal CO-RE header (what arm64 ships) loads here and names the callers', () => {
      // arm64 cannot be loaded on this x86 machine: the same program, from bpf/vmlinux/core/vmlinux.h, is.
      const objDir = join(work, 'core-bpf');
      const b = sh(`make -C ${join(REPO, 'bpf')} OUTPUT=${objDir} VMLINUX_H=vmlinux/core/vmlinux.h ${objDir}/imds_connect`);
      expect(b.status, b.out).toBe(0);
      const log = join(work, 'demo-core.jsonl');
      const r = sh(noNode(`IMDS_TRACER_EBPF_LOADER=${objDir}/imds_connect ${root}/usr/local/bin/imds-tracer demo --keep-log ${log}`), 180_000);
      expect(r.status, r.out).toBe(0);
      const recs = readFileSync(log, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as Record<string, any>);
      expect(recs.find((x) => x.event === 'ready')?.backend).toBe('ebpf');
      const v1 = recs.filter((x) => x.event === 'imds_call' && x.imds_version === 'v1');
      expect(v1.length).toBeGreaterThanOrEqual(4);
      expect(v1.filter((c) => c.process.attribution === 'ebpf').length, JSON.stringify(v1.map((c) => c.process))).toBeGreaterThanOrEqual(4);
    });

    it('refuses a tarball whose checksum does not match, or with no checksum, changing nothing', () => {
      const bad = join(work, 'bad');
      mkdirSync(bad);
      cpSync(join(rel, 'SHA256SUMS'), join(bad, 'SHA256SUMS'));
      const name = `imds-tracer-${VERSION}-linux-x64.tar.gz`;
      const bytes = readFileSync(join(rel, name));
      bytes[bytes.length - 100] ^= 0xff;
      writeFileSync(join(bad, name), bytes);
      const scratch = mkdtempSync(join(tmpdir(), 'imds-tracer-release-bad-'));
      try {
        const r = sh(`bash ${rel}/install.sh --from-release ${bad}/${name} --root ${scratch} --no-systemctl`);
        expect(r.status).toBe(1);
        expect(r.out).toMatch(/checksum mismatch for imds-tracer-.*: SHA-256 [0-9a-f]{64}, expected [0-9a-f]{64}/);
        rmSync(join(bad, 'SHA256SUMS'));
        const r2 = sh(`bash ${rel}/install.sh --from-release ${bad}/${name} --root ${scratch} --no-systemctl`);
        expect(r2.status).toBe(2);
        expect(r2.out).toMatch(/no checksum .*SHA256SUMS.*--sha256/);
        expect(readdirSync(scratch)).toEqual([]);
      } finally {
        rmSync(scratch, { recursive: true, force: true });
      }
    });
  });

  it('installs and uninstalls on a real root (/ in a private mount namespace)', () => {
    // Empty tmpfs over what install.sh writes: the real-root code paths ($R = "") run, the host is untouched.
    const rel = join(work, 'download');
    const script = `
      for d in /opt /usr/local/bin /etc/systemd/system /etc/default /var/log; do mount -t tmpfs tmpfs "$d"; done
      unshare -n bash ${rel}/install.sh --from-release ${rel} --no-systemctl
      test -x /opt/imds-tracer/runtime/bin/node && test -f /etc/systemd/system/imds-tracer.service
      /usr/local/bin/imds-tracer --version
      mkdir -p /var/log/private/imds-tracer && ln -s private/imds-tracer /var/log/imds-tracer && echo '{}' > /var/log/imds-tracer/calls.jsonl
      bash /opt/imds-tracer/scripts/uninstall.sh --no-systemctl
      echo "left: $(ls -A /opt /usr/local/bin /etc/systemd/system /etc/default | tr '\\n' ' ')"
      echo "records: $(cat /var/log/imds-tracer/calls.jsonl)"
      bash /opt/imds-tracer/scripts/uninstall.sh --no-systemctl 2>/dev/null || bash ${REPO}/scripts/uninstall.sh --no-systemctl --purge-logs
      echo "after purge: $(ls -A /var/log /var/log/private | tr '\\n' ' ')"
    `;
    const r = sh(noNode(script));
    expect(r.status, r.out).toBe(0);
    expect(r.out).toContain(VERSION);
    expect(r.out).toMatch(/uninstall\.sh: removed \/opt\/imds-tracer/);
    expect(r.out).toMatch(/^left: \/etc\/default:\s+\/etc\/systemd\/system:\s+\/opt:\s+\/usr\/local\/bin:\s*$/m);
    expect(r.out).toMatch(/^records: \{\}$/m);
    expect(r.out).toMatch(/^after purge: \/var\/log:\s+private\s+\/var\/log\/private:\s*$/m);
  });

  // ---------------------------------------------------------------------------------------------
  // A real systemd: install from the release, Type=notify, the journal, exit status 2, uninstall
  // ---------------------------------------------------------------------------------------------
  const BOX = join(REPO, 'test', 'helpers', 'systemd-box');
  const boxSkip = process.env.IMDS_TRACER_SKIP_SYSTEMD_BOX === '1' ? 'IMDS_TRACER_SKIP_SYSTEMD_BOX=1'
    : !has('apt-get') && !has('systemd-nspawn') ? 'no systemd-nspawn (and no apt-get to install it)' : '';
  if (!skipReason && boxSkip) console.warn(`systemd-box tests skipped: ${boxSkip}`);

  describe.skipIf(Boolean(boxSkip))('under a real systemd (systemd-box: Debian 12, systemd as PID 1, no Node.js)', () => {
    const boxRoot = process.env.SYSTEMD_BOX_ROOT ?? '/var/tmp/systemd-box/root';
    const inBox = (cmd: string, timeout = 120_000): { status: number | null; out: string; stdout: string } =>
      sh(`${BOX} exec bash -c ${JSON.stringify(cmd)}`, timeout);
    const show = (props: string): Record<string, string> => Object.fromEntries(
      inBox(`systemctl show imds-tracer -p ${props}`).stdout.trim().split('\n').map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]));
    // Fake credentials, no IMDS: the SDK must never reach 169.254.169.254 from the host's network.
    const TEST_ENV = '[Service]\nEnvironment=AWS_ACCESS_KEY_ID=AKIDEXAMPLE AWS_SECRET_ACCESS_KEY=fake AWS_EC2_METADATA_DISABLED=true\n';
    const dropIn = (name: string, text: string): void => {
      mkdirSync(join(boxRoot, 'etc/systemd/system/imds-tracer.service.d'), { recursive: true });
      writeFileSync(join(boxRoot, 'etc/systemd/system/imds-tracer.service.d', name), text);
      inBox('systemctl daemon-reload');
    };
    /** Polls (an event awaited, not a sleep as synchronisation) until f() holds or the bound passes. */
    const until = (f: () => boolean, what: string, bound = 60): void => {
      for (let i = 0; i < bound * 4; i++) {
        if (f()) return;
        spawnSync('sleep', ['0.25']);
      }
      throw new Error(`timed out waiting for ${what}`);
    };

    beforeAll(() => {
      const up = sh(`${BOX} up`, 600_000);
      expect(up.status, up.out).toBe(0);
      // Start clean: a previous run's install, drop-ins and records.
      inBox('[ -x /opt/imds-tracer/scripts/uninstall.sh ] && bash /opt/imds-tracer/scripts/uninstall.sh --purge-logs >/dev/null; rm -rf /etc/systemd/system/imds-tracer.service.d /root/rel; systemctl daemon-reload; systemctl reset-failed imds-tracer 2>/dev/null; true');
      mkdirSync(join(boxRoot, 'root/rel'), { recursive: true });
      for (const f of ['install.sh', 'SHA256SUMS', `imds-tracer-${VERSION}-linux-x64.tar.gz`]) cpSync(join(out, f), join(boxRoot, 'root/rel', f));
      dropIn('test.conf', TEST_ENV);
    }, 900_000);
    afterAll(() => {
      inBox('[ -x /opt/imds-tracer/scripts/uninstall.sh ] && bash /opt/imds-tracer/scripts/uninstall.sh --purge-logs >/dev/null; rm -rf /etc/systemd/system/imds-tracer.service.d /root/rel; true');
      sh(`${BOX} down`);
    }, 120_000);

    it('installs from the release with no Node.js there; active only after the agent is ready (Type=notify), its status line set', () => {
      expect(inBox('command -v node').status, 'the box has no Node.js').not.toBe(0);
      const r = inBox('bash /root/rel/install.sh --from-release /root/rel');
      expect(r.status, r.out).toBe(0);
      expect(r.out).toMatch(/imds-tracer\.service is active/);
      const p = show('ActiveState,Type,NotifyAccess,StatusText,ActiveEnterTimestamp,NRestarts');
      expect(p).toMatchObject({ ActiveState: 'active', Type: 'notify', NotifyAccess: 'all', StatusText: 'tracing IMDS calls on any', NRestarts: '0' });
      const log = inBox('cat /var/log/imds-tracer/calls.jsonl').stdout.trim().split('\n').map((l) => JSON.parse(l) as Record<string, any>);
      const ready = log.find((x) => x.event === 'ready');
      expect(ready, 'the ready record is written before READY=1 is sent').toBeDefined();
      expect(ready?.capture).toBe('helper');
      expect(ready?.backend).toBe('ebpf');
      // active (systemd's clock, µs) no earlier than the ready record (the agent's clock, ms)
      const started = inBox('journalctl -u imds-tracer -o short-unix --no-pager | grep "systemd\\[1\\]: Started imds-tracer.service" | tail -1').stdout;
      const activeAt = Number(started.split(' ')[0]) * 1000;
      expect(activeAt, started).toBeGreaterThanOrEqual(Date.parse(ready!.time));
      // the directory systemd made for LogsDirectory= under DynamicUser=
      expect(inBox('readlink /var/log/imds-tracer; stat -c %a /var/log/private/imds-tracer').stdout.trim().split('\n')).toEqual(['private/imds-tracer', '700']);
    });

    it('without the notify helper the start times out and fails, saying why in the journal (readiness comes from the agent)', () => {
      dropIn('zz-no-notify.conf', '[Service]\nEnvironment=IMDS_TRACER_NOTIFY_HELPER=/nonexistent/imds_notify\nTimeoutStartSec=5s\n');
      try {
        const since = inBox('date +%s').stdout.trim();
        const r = inBox('systemctl restart imds-tracer');
        expect(r.status).not.toBe(0);
        expect(show('Result').Result).toBe('timeout');
        const journal = inBox(`journalctl -u imds-tracer --since @${since} -p err --no-pager -o cat`).stdout;
        expect(journal).toMatch(/"component":"systemd","message":"cannot tell systemd the agent is ready: \/nonexistent\/imds_notify is missing/);
      } finally {
        rmSync(join(boxRoot, 'etc/systemd/system/imds-tracer.service.d/zz-no-notify.conf'));
        inBox('systemctl daemon-reload; systemctl reset-failed imds-tracer; systemctl start imds-tracer');
      }
      expect(show('ActiveState').ActiveState).toBe('active');
    });

    it('error records reach the journal at priority err (systemctl status, journalctl -p err), with the group and the region', () => {
      const since = inBox('date +%s').stdout.trim();
      const r = inBox('bash /root/rel/install.sh --from-release /root/rel --log-group fleet/imds-v1 --agent-args "--cloudwatch-region eu-west-1 --cloudwatch-log-stream box --cloudwatch-endpoint http://127.0.0.1:9"');
      expect(r.status, r.out).toBe(0);
      expect(r.out).toMatch(/restarted imds-tracer\.service/);
      let journal = '';
      until(() => {
        journal = inBox(`journalctl -u imds-tracer --since @${since} -p err --no-pager -o cat`).stdout;
        return /"component":"cloudwatch"/.test(journal);
      }, 'a CloudWatch error in the journal');
      expect(journal).toMatch(/fleet\/imds-v1/);
      expect(inBox('systemctl status imds-tracer --no-pager -n 20').stdout).toMatch(/"event":"error".*"component":"cloudwatch"/);
      expect(journal).toMatch(/region eu-west-1/);
    });

    it('stop: exit 0, the final stats record last, after the CloudWatch exit flush (it counts what was not shipped)', () => {
      expect(inBox('systemctl stop imds-tracer').status).toBe(0);
      expect(show('Result,ExecMainStatus')).toMatchObject({ Result: 'success', ExecMainStatus: '0' });
      const lines = inBox('cat /var/log/imds-tracer/calls.jsonl').stdout.trim().split('\n').map((l) => JSON.parse(l) as Record<string, any>);
      const last = lines.at(-1)!;
      expect(last.event).toBe('stats');
      const journal = inBox('journalctl -u imds-tracer -p err -n 50 --no-pager -o cat').stdout.trim().split('\n');
      const flush = journal.filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as Record<string, any>)
        .findLast((x) => x.event === 'error' && /at exit/.test(x.message));
      expect(flush, 'the exit flush said what it could not ship').toBeDefined();
      expect(Date.parse(last.time), 'the final stats come after the exit flush').toBeGreaterThanOrEqual(Date.parse(flush!.time));
      const unsent = Number(/^(\d+) records not shipped/.exec(flush!.message)?.[1]);
      expect(last.cloudwatch.dropped, 'and count what it could not ship').toBeGreaterThanOrEqual(unsent);
    });

    it('exit status 2 (a usage error) is not restarted: the unit fails at once', () => {
      const r = inBox('bash /root/rel/install.sh --from-release /root/rel --agent-args "--no-such-option"');
      expect(r.status).not.toBe(0);
      expect(show('ActiveState,Result,ExecMainStatus,NRestarts')).toMatchObject({ ActiveState: 'failed', ExecMainStatus: '2', NRestarts: '0' });
      expect(inBox('journalctl -u imds-tracer -n 20 --no-pager -o cat').stdout).toMatch(/unknown option '--no-such-option'/);
    });

    it('uninstall.sh on the real root: stopped, disabled, removed; the records kept', () => {
      const r = inBox('bash /opt/imds-tracer/scripts/uninstall.sh');
      expect(r.status, r.out).toBe(0);
      expect(r.out).toMatch(/removed \/opt\/imds-tracer/);
      expect(inBox('systemctl cat imds-tracer.service').status).not.toBe(0);
      // (the test's own drop-ins are local configuration: kept, and said so)
      expect(r.out).toMatch(/kept \/etc\/systemd\/system\/imds-tracer\.service\.d/);
      expect(inBox('find /opt /usr/local/bin /etc/systemd/system /etc/default -name "imds-tracer*" ! -name "*.service.d"').stdout.trim()).toBe('');
      expect(inBox('test -s /var/log/private/imds-tracer/calls.jsonl').status).toBe(0);
    });
  });
});
