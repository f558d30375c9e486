// The daemon-death watchdog (issue: a restored process never runs on wrong
// memory). A separate small process (native/helpers/lr-watchdog.c) holds a
// duplicate of every userfaultfd the daemon serves, taken with pidfd_getfd,
// so that if the daemon dies the restored processes block on their next lazy
// page instead of reading zeros; the watchdog then SIGKILLs them and logs why.
// This class is the daemon's side of the line protocol on the watchdog's stdin.
import { spawn, type ChildProcess } from 'node:child_process';
import { openSync, closeSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { helperPath } from '../native/addon.js';
import { UserError } from '../errors.js';
import { log } from '../log.js';

interface Pending { resolve: () => void; reject: (e: Error) => void; what: string }

export class Watchdog {
  private readonly pending: Pending[] = [];
  private closed = false;
  private dead = false;
  private readonly exited: Promise<number | null>;
  /** All of its stdio closed too (no fd of ours left). */
  private readonly closedPipes: Promise<void>;

  private constructor(private readonly child: ChildProcess) {
    const rl = createInterface({ input: child.stdout! });
    rl.on('line', (line) => this.onLine(line));
    child.once('error', (e) => this.failAll(new UserError(`watchdog: ${e.message}`)));
    // Writing to a watchdog that just died is reported by 'exit'/'close', not as an uncaught EPIPE.
    child.stdin!.on('error', () => {});
    this.exited = new Promise((resolve) => child.once('exit', (code) => {
      // New requests are refused from now on; pending ones fail on 'close'.
      this.dead = true;
      if (!this.closed) {
        // The processes it held, and those served from now on, have no guard left.
        log.error(`lazy-pages: the daemon-death watchdog (pid ${child.pid}) exited unexpectedly (${child.signalCode !== null ? `signal ${child.signalCode}` : `code ${code}`}): lazily restored processes are no longer guarded against this daemon's death`);
      }
      resolve(code);
    }));
    // Pending requests fail only on 'close' (exited and stdout drained), not on
    // 'exit': the exit of a watchdog that answered BYE can be seen before its
    // OK line has been read, and failing then would lose the answer.
    this.closedPipes = new Promise((resolve) => child.once('close', (code) => {
      this.failAll(new UserError(`watchdog exited (code ${code})`));
      resolve();
    }));
    // The watchdog never keeps the daemon alive by itself; only a pending request does.
    child.unref();
    this.pipes(false);
  }

  private pipes(ref: boolean): void {
    for (const s of [this.child.stdin, this.child.stdout] as unknown as ({ ref?(): void; unref?(): void } | null)[]) {
      if (ref) s?.ref?.();
      else s?.unref?.();
    }
  }

  /** Starts the watchdog for this process; resolves once it is ready. */
  static async start(opts: { logFile?: string } = {}): Promise<Watchdog> {
    const logFd = opts.logFile !== undefined ? openSync(opts.logFile, 'a') : undefined;
    try {
      const child = spawn(helperPath('lr-watchdog'), [String(process.pid)], {
        // Its own session: a signal to the daemon's process group must not reach it.
        detached: true,
        stdio: ['pipe', 'pipe', logFd ?? 'inherit'],
      });
      const w = new Watchdog(child);
      await w.request(null, 'start');
      return w;
    } finally {
      if (logFd !== undefined) closeSync(logFd);
    }
  }

  get pid(): number | undefined {
    return this.child.pid;
  }

  /** Hands over a duplicate of `uffd` (an fd of this process) serving `pid`. */
  adopt(pid: number, uffd: number): Promise<void> {
    return this.request(`ADOPT ${pid} ${uffd}`, `adopt pid ${pid}`);
  }

  /** Also kill `pid` if the daemon dies (e.g. a child forked after restore). */
  watch(pid: number): Promise<void> {
    return this.request(`WATCH ${pid}`, `watch pid ${pid}`);
  }

  /** `pid` is fully restored or gone: stop guarding it. */
  done(pid: number): Promise<void> {
    return this.request(`DONE ${pid}`, `done pid ${pid}`);
  }

  /** Normal shutdown: the watchdog releases everything and exits. */
  async close(): Promise<void> {
    if (this.closed) return;
    try {
      if (!this.dead) {
        const bye = this.request('BYE', 'close');
        this.closed = true;
        await bye;
        this.child.stdin!.end();
        this.child.ref();
        this.pipes(true);
        await this.exited;
        await this.closedPipes;
      }
    } finally {
      this.closed = true;
      // 'close' does not wait for stdin (and a watchdog that died left its pipes): drop our ends
      // now, whatever happened above, so that no fd of ours outlives close().
      await Promise.all([this.child.stdin, this.child.stdout].map((st) => {
        if (!st || st.closed) return undefined;
        const done = new Promise<void>((resolve) => st.once('close', () => resolve()));
        st.destroy();
        return done;
      }));
    }
  }

  private request(line: string | null, what: string): Promise<void> {
    if (this.closed) return Promise.reject(new UserError(`watchdog: ${what}: already closed`));
    if (this.dead) return Promise.reject(new UserError(`watchdog: ${what}: the watchdog process is gone`));
    return new Promise((resolve, reject) => {
      if (this.pending.length === 0) this.pipes(true);
      this.pending.push({ resolve, reject, what });
      if (line !== null) this.child.stdin!.write(`${line}\n`);
    });
  }

  private onLine(line: string): void {
    const p = this.pending.shift();
    if (!p) return;
    if (this.pending.length === 0) this.pipes(false);
    if (line === 'OK' || line === 'READY') p.resolve();
    else p.reject(new UserError(`watchdog: ${p.what}: ${line.replace(/^ERR /, '')}`));
  }

  private failAll(e: Error): void {
    this.dead = true;
    for (const p of this.pending.splice(0)) p.reject(e);
  }
}
