/**
 * What the service shows an operator: error and notice records copied to stderr (the journal), with
 * a syslog priority prefix when stderr is the journal; and the readiness notification, sent for real
 * through native/imds_notify to a unix datagram socket (a python3 listener stands in for systemd).
 */
import { spawn, spawnSync } from 'node:child_process';
import { closeSync, existsSync, fstatSync, mkdtempSync, openSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { createInterface } from 'node:readline';
import { afterAll, describe, expect, it } from 'vitest';
import { RecordWriter } from '../../agent/src/output/writer.js';
import { discardsOutput, notifyHelper, notifyLine, sameOutput, stderrIsJournal, SystemdNotifier } from '../../agent/src/output/notify.js';

const collect = (s: PassThrough): (() => string) => {
  let text = '';
  s.on('data', (b: Buffer) => { text += b.toString(); });
  return () => text;
};

describe('error and notice records on stderr', () => {
  it('errors and notices are copied to stderr with their journal priority; other records are not', async () => {
    const stdout = new PassThrough();
    const stderr = new PassThrough();
    const out = collect(stdout);
    const err = collect(stderr);
    const w = new RecordWriter({ stdout, logFile: null, stderr, journalPriority: true });
    w.error('capture', 'capture on eth0 stopped');
    w.notice('cloudwatch', 'shipping records');
    w.write({ event: 'stats' } as never);
    const lines = err().trim().split('\n');
    expect(lines).toHaveLength(2);
    expect(lines[0]).toMatch(/^<3>\{"event":"error",.*"component":"capture","message":"capture on eth0 stopped"\}$/);
    expect(lines[1]).toMatch(/^<5>\{"event":"notice",.*"component":"cloudwatch"/);
    await new Promise((resolve) => setImmediate(resolve)); // stdout's lines go at the end of the turn
    expect(out()).toContain('"event":"stats"');
  });

  it('without the journal: plain JSON lines; with no stderr given: nothing there', () => {
    const stderr = new PassThrough();
    const err = collect(stderr);
    new RecordWriter({ stdout: null, logFile: null, stderr }).error('x', 'y');
    expect(err()).toMatch(/^\{"event":"error"/);
    expect(() => new RecordWriter({ stdout: null, logFile: null }).error('x', 'y')).not.toThrow();
  });

  it('stderr is the journal only when JOURNAL_STREAM names its device and inode', () => {
    const dir = mkdtempSync(join(tmpdir(), 'imds-tracer-js-'));
    try {
      const fd = openSync(join(dir, 'f'), 'w');
      const st = fstatSync(fd);
      expect(stderrIsJournal({ JOURNAL_STREAM: `${st.dev}:${st.ino}` }, fd)).toBe(true);
      expect(stderrIsJournal({ JOURNAL_STREAM: `${st.dev}:${st.ino + 1}` }, fd)).toBe(false);
      expect(stderrIsJournal({}, fd)).toBe(false);
      const fd2 = openSync(join(dir, 'g'), 'w');
      expect(sameOutput(fd, fd)).toBe(true);
      expect(sameOutput(fd, fd2)).toBe(false);
      closeSync(fd);
      closeSync(fd2);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('stdout as /dev/null (StandardOutput=null) is known, so records are not written there; a file, /dev/zero or a pipe are not it', () => {
    const dir = mkdtempSync(join(tmpdir(), 'imds-tracer-js-'));
    const fds = [openSync('/dev/null', 'w'), openSync(join(dir, 'f'), 'w'), openSync('/dev/zero', 'r')];
    try {
      expect(fds.map((fd) => discardsOutput(fd))).toEqual([true, false, false]);
      expect(discardsOutput(-1)).toBe(false);
    } finally {
      for (const fd of fds) closeSync(fd);
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('a notification line never spans two datagrams', () => {
    expect(notifyLine('STATUS', 'a\nb\r\nc')).toBe('STATUS=a b c');
  });
});

const helperBuilt = existsSync(notifyHelper({}));
const python = spawnSync('python3', ['--version']).status === 0;

describe.skipIf(!helperBuilt || !python)(`readiness over NOTIFY_SOCKET through imds_notify${helperBuilt ? '' : ' (skipped: npm run build:native)'}`, () => {
  const dir = mkdtempSync(join(tmpdir(), 'imds-tracer-notify-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  /** A datagram listener: prints each datagram on a line; "LISTENING" once bound. */
  async function listener(path: string): Promise<{ next(): Promise<string>; stop(): void }> {
    const py = spawn('python3', ['-u', '-c', `
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
p = sys.argv[1]
s.bind(p if not p.startswith('@') else '\\0' + p[1:])
print('LISTENING', flush=True)
while True:
    print(s.recv(4096).decode(), flush=True)
`, path], { stdio: ['ignore', 'pipe', 'inherit'] });
    const lines: string[] = [];
    const waiting: ((l: string) => void)[] = [];
    createInterface({ input: py.stdout! }).on('line', (l) => { const w = waiting.shift(); if (w) w(l); else lines.push(l); });
    const next = (): Promise<string> => new Promise((r) => { const l = lines.shift(); if (l !== undefined) r(l); else waiting.push(r); });
    expect(await next()).toBe('LISTENING');
    return { next, stop: () => py.kill() };
  }

  it.each(['path', 'abstract'])('READY=1, STATUS= and STOPPING=1 arrive as separate datagrams (%s socket)', async (kind) => {
    const path = kind === 'path' ? join(dir, 'notify') : `@imds-tracer-test-${process.pid}`;
    const l = await listener(path);
    try {
      const errors: string[] = [];
      const n = SystemdNotifier.start((m) => errors.push(m), { NOTIFY_SOCKET: path });
      expect(n).not.toBeNull();
      n!.send('READY', '1');
      n!.send('STATUS', 'tracing IMDS calls on any');
      expect(await l.next()).toBe('READY=1');
      expect(await l.next()).toBe('STATUS=tracing IMDS calls on any');
      n!.send('STOPPING', '1');
      await n!.close();
      expect(await l.next()).toBe('STOPPING=1');
      expect(errors).toEqual([]);
    } finally {
      l.stop();
    }
  });

  it('no NOTIFY_SOCKET: nothing started; a missing helper or a dead socket: an error saying so', async () => {
    expect(SystemdNotifier.start(() => undefined, {})).toBeNull();
    const errors: string[] = [];
    expect(SystemdNotifier.start((m) => errors.push(m), { NOTIFY_SOCKET: join(dir, 'x'), IMDS_TRACER_NOTIFY_HELPER: join(dir, 'none') })).toBeNull();
    expect(errors).toEqual([expect.stringMatching(/cannot tell systemd the agent is ready: .*none is missing/)]);
    const errs2: string[] = [];
    const n = SystemdNotifier.start((m) => errs2.push(m), { NOTIFY_SOCKET: join(dir, 'nobody-listens') });
    n!.send('READY', '1');
    await n!.close();
    expect(errs2).toEqual([expect.stringMatching(/systemd notification failed: imds_notify: send to .*nobody-listens: (No such file or directory|Connection refused)/)]);
  });
});
