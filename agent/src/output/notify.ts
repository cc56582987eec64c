/**
 * systemd's readiness protocol (Type=notify) for `run`: READY=1 once capture and attribution are
 * attached, STATUS= lines, STOPPING=1 on the way out. Node.js cannot send unix datagrams, so the
 * lines go through native/imds_notify (one long-lived child; see its header for why not a
 * short-lived `systemd-notify`). Without NOTIFY_SOCKET (not under systemd) nothing happens.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, fstatSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { ROOT } from '../paths.js';

/** The notify helper of this installation (IMDS_TRACER_NOTIFY_HELPER overrides it). */
export function notifyHelper(env: NodeJS.ProcessEnv = process.env): string {
  return env.IMDS_TRACER_NOTIFY_HELPER ?? join(ROOT, 'native', '.output', 'imds_notify');
}

/** One notification line: KEY=value, no newline (a newline would split it into two datagrams). */
export function notifyLine(key: 'READY' | 'STATUS' | 'STOPPING', value: string): string {
  return `${key}=${value.replace(/[\r\n]+/g, ' ')}`;
}

/** Is stderr the journal? systemd sets JOURNAL_STREAM to its device:inode (systemd.exec(5)). */
export function stderrIsJournal(env: NodeJS.ProcessEnv = process.env, fd = 2): boolean {
  const js = env.JOURNAL_STREAM;
  if (!js) return false;
  try {
    const st = fstatSync(fd);
    return js === `${st.dev}:${st.ino}`;
  } catch {
    return false;
  }
}

/** Are stdout and stderr the same file (a terminal)? Then a copy of errors on stderr is a duplicate. */
export function sameOutput(a = 1, b = 2): boolean {
  try {
    const x = fstatSync(a);
    const y = fstatSync(b);
    return x.dev === y.dev && x.ino === y.ino;
  } catch {
    return false;
  }
}

/**
 * Is fd /dev/null (the systemd unit's StandardOutput=null)? Then records written there are encoded
 * and written for nothing: the agent does not write them.
 */
export function discardsOutput(fd = 1): boolean {
  try {
    const x = fstatSync(fd);
    const devNull = statSync('/dev/null');
    return x.isCharacterDevice() && x.rdev === devNull.rdev;
  } catch {
    return false;
  }
}

export class SystemdNotifier {
  private constructor(private child: ChildProcess | null, private readonly onError: (m: string) => void) {}

  /** null when not started by systemd with Type=notify; an error (said once) when the helper is missing. */
  static start(onError: (m: string) => void, env: NodeJS.ProcessEnv = process.env): SystemdNotifier | null {
    if (!env.NOTIFY_SOCKET) return null;
    const helper = notifyHelper(env);
    if (!existsSync(helper)) {
      onError(`cannot tell systemd the agent is ready: ${helper} is missing (run npm run build, or reinstall); systemd will time the start out`);
      return null;
    }
    const child = spawn(helper, [], { stdio: ['pipe', 'ignore', 'pipe'], env: { NOTIFY_SOCKET: env.NOTIFY_SOCKET } });
    const n = new SystemdNotifier(child, onError);
    let stderr = '';
    child.stderr!.on('data', (b: Buffer) => { stderr += b.toString(); });
    child.stdin!.on('error', () => undefined);
    child.once('error', (err) => { n.child = null; onError(`cannot tell systemd the agent is ready: ${err.message}`); });
    // 'close', not 'exit': the helper's last words on stderr may still be unread when it has exited.
    child.once('close', (code) => {
      if (code && n.child !== null) onError(`systemd notification failed: ${stderr.trim() || `imds_notify exit ${code}`}`);
      n.child = null;
    });
    return n;
  }

  send(key: 'READY' | 'STATUS' | 'STOPPING', value: string): void {
    this.child?.stdin?.write(`${notifyLine(key, value)}\n`);
  }

  /** Closes the helper's stdin: it sends what it has and exits. */
  close(): Promise<void> {
    const c = this.child;
    if (!c) return Promise.resolve();
    return new Promise((resolve) => {
      c.once('close', () => resolve()); // its error, if any, said first
      c.stdin?.end();
    });
  }
}
