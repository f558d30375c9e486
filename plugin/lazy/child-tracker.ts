// Forked children: the engine reports a fork with the child's uffd but not
// its pid. This finds the pid (among the parent's children, in fork order),
// then hands the child to the daemon-death watchdog, or kills it if it
// failed while still unknown.
import { log } from '../log.js';
import type { FaultEngineLike } from './engine.js';
import { closeQuietly, errText } from './helpers.js';
import type { KillOutcome } from './kill.js';
import type { Proc } from './proc.js';
import { childrenOf, identify, isAlive } from './procfs.js';
import type { LazyErrorEvent, LazyProcessStats } from './types.js';
import type { Watchdog } from '../integrity/watchdog.js';

/** Attempts (backing off up to 50 ms each) before a child is given up as not found. */
const FIND_ATTEMPTS = 40;

/** What the tracker needs from the server. */
export interface ChildHost {
  readonly engine: FaultEngineLike;
  readonly watchdog: Pick<Watchdog, 'adopt' | 'watch' | 'done'> | undefined;
  isClosed(): boolean;
  killPid(pid: number): KillOutcome;
  snapshotOf(p: Proc): LazyProcessStats;
  emitError(ev: LazyErrorEvent): void;
}

export class ChildTracker {
  constructor(private readonly host: ChildHost) {}

  /** Finds a forked child's pid among its parent's children not yet claimed (retrying, bounded). */
  resolve(c: Proc, attempt = 0): void {
    if (c.hostPid !== undefined || c.state !== 'serving' || this.host.isClosed()) return;
    this.resolveNow(c);
    if (c.hostPid !== undefined) return;
    if (attempt < FIND_ATTEMPTS) setTimeout(() => this.resolve(c, attempt + 1), Math.min(2 ** attempt, 50)).unref();
    else {
      log.warn(`lazy-pages: a child forked by pid ${c.parent?.hostPid ?? c.imagePid} was not found: the watchdog does not guard it`);
      c.guard.dropFd();
    }
  }

  /** One look for c's pid (and its unresolved descendants'). */
  resolveNow(c: Proc): void {
    const parent = c.parent;
    if (!parent || parent.hostPid === undefined || c.hostPid !== undefined) return;
    const claimed = new Set(parent.children.map((x) => x.hostPid).filter((x): x is number => x !== undefined));
    // Forks are reported in order and pids grow, so the earliest unresolved
    // child takes the lowest unclaimed pid.
    const unresolved = parent.children.filter((x) => x.hostPid === undefined);
    const candidates = childrenOf(parent.hostPid).filter((pid) => !claimed.has(pid));
    for (let i = 0; i < unresolved.length && i < candidates.length; i++) {
      const child = unresolved[i]!;
      child.hostPid = candidates[i]!;
      child.identity = identify(child.hostPid);
      if (child.guard.killWhenFound) this.findToKill(child);
      else if (this.host.watchdog && child.state === 'serving') this.guard(child);
      else child.guard.dropFd();
      for (const gc of child.children) if (gc.hostPid === undefined) this.resolveNow(gc);
    }
  }

  /**
   * A failed process whose pid was unknown (a forked child): keeps looking for
   * it (bounded) and kills it once found; only then is its uffd released.
   */
  findToKill(p: Proc, attempt = 0): void {
    if (!p.guard.killWhenFound || this.host.isClosed()) return;
    if (p.hostPid === undefined) this.resolveNow(p);
    if (p.hostPid === undefined) {
      if (attempt < FIND_ATTEMPTS) setTimeout(() => this.findToKill(p, attempt + 1), Math.min(2 ** attempt, 50)).unref();
      else log.warn(`lazy-pages: a child forked by pid ${p.parent?.hostPid ?? p.imagePid} that cannot be served was not found: left blocked on its faults`);
      return;
    }
    const kill = p.identity && !isAlive(p.identity) ? 'gone' : this.host.killPid(p.hostPid);
    if (kill !== 'killed' && kill !== 'gone') {
      log.warn(`lazy-pages: pid ${p.hostPid} (a child that cannot be served) could not be killed (${kill}): left blocked on its faults`);
      return;
    }
    p.guard.killWhenFound = false;
    if (kill === 'killed') this.host.emitError({ proc: this.host.snapshotOf(p), killed: true, message: `pid ${p.hostPid} (forked by pid ${p.parent?.hostPid ?? p.parent?.imagePid}) found: killed with SIGKILL`, error: new Error('killed once found') });
    this.release(p, p.hostPid);
  }

  /** Ends serving p: the engine's uffd copy, the watchdog's fd and guard go (`pid`: its host pid, if known). */
  release(p: Proc, pid: number | undefined): void {
    try {
      this.host.engine.release(p.engineProc);
    } catch {
      /* already gone in the engine */
    }
    p.guard.dropFd();
    this.watchdogDone(pid);
  }

  /** The watchdog no longer needs to guard `pid` (complete, exited or already killed). */
  watchdogDone(pid: number | undefined): void {
    if (!this.host.watchdog || pid === undefined) return;
    this.host.watchdog.done(pid).catch((e: unknown) => log.debug(`lazy-pages: watchdog DONE ${pid}: ${errText(e)}`));
  }

  /**
   * Hands a forked child (pid now known) to the watchdog: ADOPT with a copy
   * of its uffd so it blocks rather than reads zeros if this daemon dies, or
   * just WATCH (killed with its tree) when no copy could be taken.
   */
  private guard(child: Proc): void {
    const pid = child.hostPid!;
    const fd = child.guard.takeFd();
    const req = fd !== undefined ? this.host.watchdog!.adopt(pid, fd) : this.host.watchdog!.watch(pid);
    req.catch((e: unknown) => log.warn(`lazy-pages: forked child pid ${pid}: the watchdog could not take it: ${errText(e)}`))
      .finally(() => {
        if (fd !== undefined) closeQuietly(fd);
      });
  }
}
