// Where the userfaultfds of a lazy restore go: the in-process lazy-pages
// daemon (plugin/lazy's LazyPagesServer, the default) or an external daemon
// over CRIU's lazy-pages socket protocol (pid, then the uffd by SCM_RIGHTS,
// per task; -pid for zombies; "RSTF" once the tree runs). CRIU's protocol
// has no acknowledgement, so before dropping its own copy of a uffd the
// restorer checks (kcmp) that the daemon really holds it: a uffd lost in
// flight would otherwise leave its process reading zero pages. Our own
// daemon, asked to ("LRAQ"), acknowledges each pid once adopted ("LRAK", pid, errno; see
// native/uffd/lazysock.cc): its uffd held there and by the daemon-death
// watchdog, a recorded working set copied in (within the hold). The tree is
// released only after every acknowledgement, as the in-process daemon's
// adopt() returns only then.
import { readFileSync, readdirSync, realpathSync } from 'node:fs';
import { UserError, errnoName } from '../errors.js';
import { KCMP, kcmpSame } from '../inject/index.js';
import { addon } from '../native/addon.js';

/** How long a daemon may take to receive a handed-over uffd. */
const TAKE_TIMEOUT_MS = 10_000;

export interface LazyHandoff {
  /** True when adoption may still be in progress while the tree already runs (in-process daemon). */
  readonly overlapsRelease: boolean;
  /**
   * True when the daemon is ours and serves shared memory lazily
   * (plugin/lazy/shmem.ts). CRIU's lazy-pages daemon would not know those
   * ranges: with it, shared memory is restored eagerly, as CRIU does.
   */
  readonly servesSharedMemory: boolean;
  /** Hands `uffd` over (ownership passes); `pid` is the image pid, `hostPid` the pid here. */
  adopt(pid: number, uffd: number, hostPid: number): Promise<void>;
  zombie(pid: number): Promise<void>;
  /** Every process runs: background transfer may start. */
  finished(): Promise<void>;
  /** Resolves once the daemon has served everything (external daemon: at once). */
  done(): Promise<void>;
  close(): Promise<void>;
}

/** The part of plugin/lazy's LazyPagesServer the restorer uses. */
interface LazyServerLike {
  adopt(pid: number, uffd: number, opts?: { hostPid?: number }): Promise<unknown>;
  startPush(): void;
  whenIdle(): Promise<unknown>;
  close(): Promise<void>;
}

class InProcessHandoff implements LazyHandoff {
  readonly overlapsRelease = true;
  readonly servesSharedMemory = true;
  /** `owned`: the server was opened here and is closed here; a caller's server is left open. */
  constructor(private readonly server: LazyServerLike, private readonly owned = true) {}
  async adopt(pid: number, uffd: number, hostPid: number): Promise<void> {
    await this.server.adopt(pid, uffd, { hostPid });
  }
  async zombie(): Promise<void> {}
  async finished(): Promise<void> {
    this.server.startPush();
  }
  async done(): Promise<void> {
    await this.server.whenIdle();
  }
  async close(): Promise<void> {
    if (this.owned) await this.server.close();
  }
}

class SocketHandoff implements LazyHandoff {
  readonly overlapsRelease = false;
  private sock = -1;
  private daemonPid = -1;
  private connected: Promise<void> | undefined;
  /** Our daemon: it acknowledges each adopted pid (CRIU's does not: kcmp is the check then). */
  private acks = false;
  /** Pids sent and not yet acknowledged. */
  private readonly waiting = new Map<number, { resolve: () => void; reject: (e: Error) => void }>();
  private readingAcks = false;
  /** `ready`: a daemon still starting (restore -d's detached daemon); connect once it listens. */
  constructor(readonly path: string, private readonly ready?: Promise<void>) {
    if (ready === undefined) this.connect();
  }
  /** A daemon still starting is restore -d's own; a listening one is ours if it runs our program (same executable). */
  get servesSharedMemory(): boolean {
    return this.ours();
  }
  private ours(): boolean {
    if (this.ready !== undefined) return true;
    try {
      return realpathSync(`/proc/${this.daemonPid}/exe`) === realpathSync(process.execPath);
    } catch {
      return false;
    }
  }
  private connect(): void {
    try {
      this.sock = addon.restoreLazyConnect(this.path);
    } catch (e) {
      const code = (e as { code?: string }).code ?? String(e);
      throw new UserError(`cannot connect to the lazy-pages daemon at ${this.path}: ${code}`, { cause: e });
    }
    try {
      this.daemonPid = addon.restoreLazyPeerPid(this.sock);
    } catch (e) {
      this.closeSock();
      throw new UserError(`lazy-pages daemon at ${this.path}: ${(e as { code?: string }).code ?? String(e)}`, { cause: e });
    }
    this.acks = this.daemonPid !== process.pid && (this.ready !== undefined || (this.ours() && runsLazyPages(this.daemonPid)));
    if (this.acks) {
      try {
        addon.restoreLazyAskAcks(this.sock);
      } catch (e) {
        this.closeSock();
        throw new UserError(`lazy-pages daemon at ${this.path}: ${(e as { code?: string }).code ?? String(e)}`, { cause: e });
      }
    }
  }
  private async ensure(): Promise<void> {
    if (this.sock >= 0 || this.ready === undefined) return;
    this.connected ??= this.ready.then(() => this.connect());
    await this.connected;
  }
  async adopt(pid: number, uffd: number): Promise<void> {
    try {
      await this.ensure();
      addon.restoreLazySendTask(this.sock, pid, uffd);
      if (this.acks) await this.waitAck(pid);
      else await this.waitTaken(pid, uffd);
    } finally {
      // The daemon holds its own copy now (or the send failed): ours must go,
      // or the uffd would outlive the daemon.
      addon.restoreCloseFd(uffd);
    }
  }
  async zombie(pid: number): Promise<void> {
    await this.ensure();
    addon.restoreLazySendTask(this.sock, pid, -1);
  }
  /** Resolves once our daemon acknowledged `pid` as adopted; rejects when it refused it, went away or stayed silent (bounded). */
  private waitAck(pid: number): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      this.waiting.set(pid, { resolve, reject });
      if (this.readingAcks) return;
      this.readingAcks = true;
      // After this turn's other sends (processes handed over together).
      setImmediate(() => this.readAcks());
    });
  }
  /**
   * Reads acknowledgements until every pid sent has one. It blocks this
   * thread (nothing else is to be done before they come: the tree waits for
   * them), bounded by TAKE_TIMEOUT_MS.
   */
  private readAcks(): void {
    const deadline = Date.now() + TAKE_TIMEOUT_MS;
    try {
      while (this.waiting.size > 0) {
        const left = deadline - Date.now();
        const pids = [...this.waiting.keys()].join(', ');
        if (left <= 0) throw new UserError(`lazy-pages daemon (pid ${this.daemonPid}) did not take the userfaultfd of pid ${pids} within ${TAKE_TIMEOUT_MS / 1000} s: ETIMEDOUT (the restore is abandoned rather than left on zero pages)`);
        let a: { pid: number; errno: number } | undefined;
        try {
          a = addon.restoreLazyReadAck(this.sock, left);
        } catch (e) {
          throw new UserError(`lazy-pages daemon (pid ${this.daemonPid}) is gone before it took the userfaultfd of pid ${pids}: ${(e as { code?: string }).code ?? String(e)}`, { cause: e });
        }
        const w = a && this.waiting.get(a.pid);
        if (!a || !w) continue;
        this.waiting.delete(a.pid);
        if (a.errno === 0) w.resolve();
        else w.reject(new UserError(`lazy-pages daemon (pid ${this.daemonPid}) refused pid ${a.pid}: ${errnoName(a.errno)} (see its log)`));
      }
    } catch (e) {
      for (const w of this.waiting.values()) w.reject(e as Error);
      this.waiting.clear();
    } finally {
      this.readingAcks = false;
    }
  }
  /** Resolves once the daemon holds a file that is our `uffd` (kcmp), bounded. */
  private async waitTaken(pid: number, uffd: number): Promise<void> {
    const me = process.pid;
    const deadline = Date.now() + TAKE_TIMEOUT_MS;
    for (;;) {
      let fds: string[];
      try {
        fds = readdirSync(`/proc/${this.daemonPid}/fd`);
      } catch (e) {
        throw new UserError(`lazy-pages daemon (pid ${this.daemonPid}) is gone before it took the userfaultfd of pid ${pid}: ${(e as { code?: string }).code ?? String(e)}`, { cause: e });
      }
      for (const name of fds) {
        const fd = Number(name);
        if (this.daemonPid === me && fd === uffd) continue; // our own copy (a daemon in this process)
        try {
          if (kcmpSame(me, this.daemonPid, KCMP.FILE, uffd, fd)) return;
        } catch { /* that fd was closed meanwhile */ }
      }
      if (Date.now() > deadline) {
        throw new UserError(`lazy-pages daemon (pid ${this.daemonPid}) did not take the userfaultfd of pid ${pid} within ${TAKE_TIMEOUT_MS / 1000} s: ETIMEDOUT (the restore is abandoned rather than left on zero pages)`);
      }
      await new Promise((r) => setTimeout(r, 1));
    }
  }
  async finished(): Promise<void> {
    await this.ensure();
    addon.restoreLazySendFinish(this.sock);
    this.closeSock();
  }
  async done(): Promise<void> {}
  async close(): Promise<void> {
    this.closeSock();
  }
  private closeSock(): void {
    if (this.sock >= 0) addon.restoreCloseFd(this.sock);
    this.sock = -1;
  }
}

/** Whether `pid` runs our `lazy-pages` command (its argv has that word after the script). */
function runsLazyPages(pid: number): boolean {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').slice(1, 4).includes('lazy-pages');
  } catch {
    return false;
  }
}

/** The caller's own LazyPagesServer (e.g. to watch its progress), instead of one opened here. */
export type ExternalLazyServer = LazyServerLike;

export async function openLazyHandoff(imagesDir: string, socketPath: string | undefined, server?: ExternalLazyServer, verify = true, socketReady?: Promise<void>): Promise<LazyHandoff> {
  if (socketPath !== undefined) return new SocketHandoff(socketPath, socketReady);
  if (server !== undefined) return new InProcessHandoff(server, false);
  const mod = (await import('../lazy/index.js')) as unknown as {
    LazyPagesServer: { open(o: { imagesDir: string; verify?: boolean }): Promise<LazyServerLike> };
  };
  return new InProcessHandoff(await mod.LazyPagesServer.open({ imagesDir, verify }));
}
