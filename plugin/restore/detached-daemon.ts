// `restore --lazy-pages -d` without a daemon in the work dir: like CRIU's
// `restore -d`, the command returns once the tree runs, so the serving must
// outlive it. A `lazy-pages` daemon is started here as a detached process
// (own session, its output appended to lazy-pages.log in the work dir,
// readiness by --status-fd, the daemon-death watchdog on by default) on a
// socket of its own in the work dir; the restorer hands it the userfaultfds
// over CRIU's lazy-pages protocol and exits. The daemon exits once every page
// is served (writing --stats-file, working sets, its summary to the log).
// It is started first, so its start-up overlaps the restore's own work.
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, openSync, rmSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { UserError } from '../errors.js';
import { projectRoot } from '../cli/paths.js';
import { mark } from '../phases.js';

export interface DetachedDaemonOptions {
  imagesDir: string;
  /** Work dir (-W): the socket and the log go here. */
  workDir: string;
  verify: boolean;
  prefetch: boolean;
  workingSet: boolean;
  recordWorkingSet?: boolean | number;
  workingSetHoldMs?: number;
  statsFile?: string;
  /** Bound on the daemon's start-up (default 30 s). */
  startTimeoutMs?: number;
}

export interface DetachedDaemon {
  readonly pid: number;
  readonly socketPath: string;
  readonly logPath: string;
  /** Resolves once the daemon listens (its status byte); rejects with a UserError if it exits or stalls first. */
  readonly ready: Promise<void>;
  /** The restore went well: let the daemon run on its own (this process may exit). */
  release(): void;
  /** The restore failed: stop the daemon (SIGKILL by pid; the watchdog kills what it adopted) and remove its socket. */
  kill(): void;
}

/** The CLI's entry (it runs the bundle when that is current). */
const cliMain = join(projectRoot, 'bin', 'lazy-restore.js');

export function startDetachedDaemon(o: DetachedDaemonOptions): DetachedDaemon {
  const socketPath = join(o.workDir, `lazy-pages.${process.pid}.socket`);
  const logPath = join(o.workDir, 'lazy-pages.log');
  const args = [cliMain, 'lazy-pages', '-D', o.imagesDir, '--socket', socketPath, '--status-fd', '3'];
  if (!o.verify) args.push('--no-verify');
  if (!o.prefetch) args.push('--no-prefetch');
  if (!o.workingSet) args.push('--no-working-set');
  if (o.recordWorkingSet === true) args.push('--record-working-set');
  else if (typeof o.recordWorkingSet === 'number') args.push(`--record-working-set=${o.recordWorkingSet}`);
  if (o.workingSetHoldMs !== undefined) args.push('--working-set-hold', String(o.workingSetHoldMs));
  if (o.statsFile !== undefined) args.push('--stats-file', resolve(o.statsFile));
  let log: number;
  try {
    log = openSync(logPath, 'a', 0o600);
  } catch (e) {
    throw new UserError(`cannot open the lazy-pages log ${logPath}: ${(e as NodeJS.ErrnoException).code ?? String(e)}`, { cause: e });
  }
  let child: ChildProcess;
  mark('spawning detached daemon');
  try {
    child = spawn(process.execPath, args, { detached: true, stdio: ['ignore', log, log, 'pipe'] });
  } finally {
    closeSync(log);
  }
  const status = child.stdio[3] as NodeJS.ReadableStream & { destroy(): void };
  let settled = false;
  const ready = new Promise<void>((res, rej) => {
    const fail = (why: string): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      rej(new UserError(`lazy-pages daemon (pid ${child.pid ?? '?'}) ${why}; see ${logPath}`));
    };
    const timer = setTimeout(() => fail(`did not listen within ${(o.startTimeoutMs ?? 30_000) / 1000} s (ETIMEDOUT)`), o.startTimeoutMs ?? 30_000);
    status.on('data', () => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      mark('detached daemon ready');
      res();
    });
    status.on('end', () => fail('closed its status fd without listening'));
    status.on('error', (e: Error) => fail(`status fd: ${e.message}`));
    child.on('error', (e) => fail(`could not start: ${e.message}`));
    child.on('exit', (code, signal) => fail(`exited before listening (${signal ?? `code ${code}`})`));
  });
  ready.catch(() => {}); // awaited by the restorer
  const pid = child.pid ?? -1;
  return {
    pid,
    socketPath,
    logPath,
    ready,
    release() {
      status.destroy();
      child.removeAllListeners();
      child.unref();
    },
    kill() {
      status.destroy();
      if (child.exitCode === null && child.signalCode === null && pid > 0) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch { /* gone */ }
      }
      child.unref();
      rmSync(socketPath, { force: true });
    },
  };
}
