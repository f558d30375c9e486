// Starting the C test workloads (native/helpers/workload-*.c) as children of
// the test process and driving their protocol: wait for CTRL_DIR/ready
// (inotify, bounded), send SIGUSR1 ("go"), wait for exit and read
// CTRL_DIR/result. Also usable by restore tests on restored processes.
import { spawn, type ChildProcess, type StdioOptions } from 'node:child_process';
import { closeSync, existsSync, openSync, readFileSync, watch } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, dirname, join } from 'node:path';
import { helperPath } from '../../plugin/native/addon.js';
import { tempDir } from './env.js';

// libuv opens one inotify fd on the first fs.watch and keeps it for the
// life of the loop: open it now so fd-leak checks taken later do not see it.
watch(tmpdir()).close();

/** Resolves when `path` exists (inotify on its directory), rejects after timeoutMs. */
export function waitForFile(path: string, timeoutMs: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const dir = dirname(path);
    const name = basename(path);
    let done = false;
    const finish = (err?: Error): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      w.close();
      if (err) reject(err);
      else resolve();
    };
    const w = watch(dir, (_ev, f) => {
      if (f === name && existsSync(path)) finish();
    });
    const timer = setTimeout(() => finish(new Error(`timed out after ${timeoutMs} ms waiting for ${path}`)), timeoutMs);
    if (existsSync(path)) finish();
  });
}

/** Parses "key=value" lines. */
export function parseReport(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of text.split('\n')) {
    const i = line.indexOf('=');
    if (i > 0) out[line.slice(0, i)] = line.slice(i + 1);
  }
  return out;
}

export interface Workload {
  child: ChildProcess;
  pid: number;
  ctrlDir: string;
  report: Record<string, string>;
  /** Resolves with the exit code (or signal name) once the child is reaped by node. */
  exited: Promise<number | string>;
  /** Sends SIGUSR1 to `pid` (default: the original pid). */
  go(pid?: number): void;
  /** Reads CTRL_DIR/result (after exit). */
  result(): string;
  /** SIGKILL if still running and remove the control dir. */
  dispose(): Promise<void>;
}

export interface WorkloadOptions {
  /** The program to run instead of build/bin/<name> (e.g. a copy of it). */
  binary?: string;
  /** Its environment (default: this process's). */
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  stdio?: StdioOptions;
  detached?: boolean;
  readyTimeoutMs?: number;
}

/** Starts build/bin/<name> CTRL_DIR ...args and waits for its ready report. */
export async function startWorkload(name: string, args: string[] = [], opts: WorkloadOptions = {}): Promise<Workload> {
  const ctrl = tempDir('lr-wl-');
  // stderr goes to a regular file (dumpable, unlike the runner's pipe); the
  // workload leads its own session (setsid) like a daemon, so a dump needs
  // no --shell-job.
  const log = openSync(join(ctrl.path, 'stderr.log'), 'a');
  let child: ChildProcess;
  try {
    child = spawn(opts.binary ?? helperPath(name), [ctrl.path, ...args], {
      cwd: opts.cwd ?? ctrl.path,
      ...(opts.env ? { env: opts.env } : {}),
      stdio: opts.stdio ?? ['ignore', 'ignore', log],
      detached: opts.detached ?? true,
    });
  } finally {
    closeSync(log);
  }
  let alive = true;
  const exited = new Promise<number | string>((resolve) => {
    child.on('exit', (code, sig) => {
      alive = false;
      resolve(code ?? sig ?? -1);
    });
  });
  const pid = child.pid!;
  const readyPath = join(ctrl.path, 'ready');
  try {
    await Promise.race([
      waitForFile(readyPath, opts.readyTimeoutMs ?? 20000),
      exited.then((c) => { throw new Error(`${name} exited (${c}) before it was ready`); }),
    ]);
  } catch (e) {
    if (alive) child.kill('SIGKILL');
    await exited;
    ctrl.dispose();
    throw e;
  }
  const report = parseReport(readFileSync(readyPath, 'utf8'));
  try {
    await waitInSigsuspend(pid, 5000);
  } catch (e) {
    if (alive) child.kill('SIGKILL');
    await exited;
    ctrl.dispose();
    throw e;
  }
  return {
    child, pid, ctrlDir: ctrl.path, report, exited,
    go: (p = pid) => process.kill(p, 'SIGUSR1'),
    result: () => readFileSync(join(ctrl.path, 'result'), 'utf8').trim(),
    dispose: async () => {
      // Descendants it reported (workload-tree) are ours too.
      for (const k of ['child', 'grandchild']) {
        const p = Number(report[k]);
        if (p > 0 && sessionOf(p) === pid) try { process.kill(p, 'SIGKILL'); } catch { /* gone */ }
      }
      if (alive) {
        try { process.kill(pid, 'SIGKILL'); } catch { /* already gone */ }
        await exited;
      }
      ctrl.dispose();
    },
  };
}

/** Session id of a live process (0 if gone): guards against killing a reused pid. */
function sessionOf(p: number): number {
  try {
    const s = readFileSync(`/proc/${p}/stat`, 'utf8');
    return Number(s.slice(s.lastIndexOf(')') + 2).split(' ')[3]);
  } catch {
    return 0;
  }
}

const SYS_rt_sigsuspend = 130;

/**
 * Resolves once the main thread of `pid` is blocked in rt_sigsuspend, the
 * last step of wl_ready_and_wait: the ready file is written just before it,
 * and a dump taken in between would see the stack still changing. The kernel
 * signals no event for "entered a syscall", so /proc/PID/syscall is polled,
 * bounded by timeoutMs.
 */
export async function waitInSigsuspend(pid: number, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    let nr = -1;
    try {
      nr = Number.parseInt(readFileSync(`/proc/${pid}/syscall`, 'utf8'), 10);
    } catch {
      throw new Error(`pid ${pid} exited before it waited for SIGUSR1`);
    }
    if (nr === SYS_rt_sigsuspend) return;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for pid ${pid} to block in rt_sigsuspend`);
    await new Promise((r) => setTimeout(r, 2));
  }
}
