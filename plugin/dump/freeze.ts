// Freezing a process tree with ptrace: every thread of every process is
// seized and interrupted, parents before children, each process re-listed
// until no new thread appears (a running thread may create one while its
// siblings are being stopped). release() detaches everything untouched;
// kill() SIGKILLs the tree and reaps what we traced.
// With a freezer cgroup (a container's, named by its runtime) the cgroup is
// frozen first and every thread in it seized and interrupted while nothing
// in it can fork or exit, then thawed: the walk below then only waits for
// stops (CRIU's freeze_processes). Threads of the cgroup outside the tree
// are held stopped too and let go at the end.
import { existsSync, readFileSync } from 'node:fs';
import { PTRACE_O } from '../inject/constants.js';
import { seccompModeOf } from './seccomp.js';
import { detach, interrupt, isEventStop, seize, waitExit, waitPid, waitStop, cont } from '../inject/index.js';
import { isSystemError, Errno, sysError } from '../errors.js';
import { listChildren, listTasks } from './proc.js';
import type { CgroupFreezer } from './cgroup-freezer.js';
import { isStopSignal, isZombie, reapZombieInParent } from './taskstate.js';

export interface FrozenProcess {
  pid: number;
  ppid: number;
  /** Leader first. */
  tids: number[];
  children: number[];
  /** A zombie: never seized (ptrace refuses them), dumped from /proc alone. */
  zombie?: boolean;
  /** Set when the process was stopped (group stop) when it was frozen: the stop signal. */
  stopSignal?: number;
}

export class FrozenTree {
  /** Parents before children (depth-first from the root). */
  readonly processes: FrozenProcess[] = [];
  private readonly seized = new Set<number>();
  /** Seized threads whose interrupt stop has been consumed. */
  private readonly stopped = new Set<number>();
  /** Threads of the freezer cgroup that are not in the tree (held until the end). */
  private readonly others: number[] = [];
  /** Stop signal of each thread found in a group stop when it was seized. */
  private readonly groupStopped = new Map<number, number>();

  constructor(readonly root: number, private readonly timeoutMs: number, private readonly cgroup?: CgroupFreezer) {}

  get tids(): number[] {
    return [...this.seized];
  }

  /** Freezes the whole tree. On failure everything seized so far is released and the error rethrown. */
  freeze(): void {
    try {
      if (this.cgroup) this.seizeCgroup(this.cgroup);
      this.freezeSubtree(this.root);
      this.holdOthers();
    } catch (e) {
      this.release();
      throw e;
    }
  }

  /**
   * Freezes the cgroup, seizes and interrupts each thread in it, thaws it.
   * A thread that cannot be seized while frozen is exiting (or a zombie):
   * try again a little later, bounded (CRIU's -EAGAIN loop).
   */
  private seizeCgroup(cg: CgroupFreezer): void {
    const deadline = Date.now() + this.timeoutMs;
    cg.freeze(this.timeoutMs);
    try {
      for (;;) {
        let exiting: number | undefined;
        for (const t of cg.threads()) {
          if (this.seized.has(t)) continue;
          try {
            seize(t, seccompModeOf(t, t) !== 0 ? PTRACE_O.SUSPEND_SECCOMP : 0);
          } catch (e) {
            if (isSystemError(e) && (e.code === 'ESRCH' || e.code === 'EPERM')) {
              if (e.code === 'EPERM' && existsSync(`/proc/${t}`)) {
                const tracer = tracerOf(t);
                if (tracer !== 0 && tracer !== process.pid) throw sysError(Errno.EPERM, 'ptrace', `tid ${t} in freeze cgroup ${cg.dir}: already traced by pid ${tracer}`);
                exiting = t; // a zombie or exiting: look again
              }
              continue;
            }
            throw e;
          }
          this.seized.add(t);
          interrupt(t);
        }
        if (exiting === undefined) return;
        if (Date.now() >= deadline) {
          throw sysError(Errno.EAGAIN, 'ptrace', `tid ${exiting} in freeze cgroup ${cg.dir} is exiting and cannot be seized`);
        }
        Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 10);
      }
    } finally {
      cg.thaw();
    }
  }

  /** Waits for the stop of every cgroup thread the walk did not reach. */
  private holdOthers(): void {
    for (const t of [...this.seized]) {
      if (this.stopped.has(t)) continue;
      this.waitInterrupted(t, -1); // (-1: an exit is no error here)
      if (this.seized.has(t)) {
        this.stopped.add(t);
        this.others.push(t);
      }
    }
  }

  private freezeSubtree(pid: number): void {
    // Seized while its cgroup was frozen, but exiting: take the exit report
    // we get as its tracer, so its parent sees the zombie.
    if (this.seized.has(pid) && !this.stopped.has(pid) && isZombie(pid)) {
      waitPid(pid, this.timeoutMs);
      this.seized.delete(pid);
    }
    // A child that exited is a zombie its frozen parent can no longer reap.
    if (pid !== this.root && isZombie(pid)) {
      this.processes.push({ pid, ppid: ppidOf(pid), tids: [pid], children: [], zombie: true });
      return;
    }
    let tids: number[];
    try {
      tids = this.freezeProcess(pid);
    } catch (e) {
      // Exited between the listing and the seize (ptrace refuses zombies).
      if (pid !== this.root && isZombie(pid) && !this.seized.has(pid)) {
        this.processes.push({ pid, ppid: ppidOf(pid), tids: [pid], children: [], zombie: true });
        return;
      }
      throw e;
    }
    // Frozen: its children list can only shrink now.
    const children = listChildren(pid);
    const stopSignal = this.groupStopped.get(pid);
    this.processes.push({ pid, ppid: ppidOf(pid), tids, children, ...(stopSignal !== undefined ? { stopSignal } : {}) });
    for (const c of children) this.freezeSubtree(c);
  }

  private freezeProcess(pid: number): number[] {
    const mine: number[] = [];
    for (;;) {
      let tids: number[];
      try {
        tids = listTasks(pid);
      } catch {
        throw sysError(Errno.ESRCH, `open /proc/${pid}/task`, `pid ${pid}: no such process`);
      }
      const fresh = tids.filter((t) => !this.stopped.has(t));
      if (fresh.length === 0) break;
      const stopping: number[] = [];
      for (const t of fresh) {
        if (this.seized.has(t)) { // seized and interrupted with the cgroup
          mine.push(t);
          stopping.push(t);
          continue;
        }
        try {
          // A thread under seccomp: our injected system calls must not meet
          // its filters while it is ours (CRIU's PTRACE_O_SUSPEND_SECCOMP).
          seize(t, seccompModeOf(pid, t) !== 0 ? PTRACE_O.SUSPEND_SECCOMP : 0);
        } catch (e) {
          if (t !== pid && isSystemError(e) && e.code === 'ESRCH') continue; // thread exited
          throw e;
        }
        this.seized.add(t);
        mine.push(t);
        interrupt(t);
        stopping.push(t);
      }
      for (const t of stopping) {
        this.waitInterrupted(t, pid);
        if (this.seized.has(t)) this.stopped.add(t);
      }
    }
    // Keep the leader first.
    return [pid, ...mine.filter((t) => t !== pid && this.seized.has(t)).sort((a, b) => a - b)];
  }

  /** Waits for the PTRACE_EVENT_STOP of `t`, holding back any signal reported before it. */
  private waitInterrupted(t: number, pid: number): void {
    for (;;) {
      let st;
      try {
        st = waitStop(t, this.timeoutMs);
      } catch (e) {
        if (t !== pid && isSystemError(e) && e.code === 'ESRCH') {
          this.seized.delete(t); // the thread exited while we stopped it (and is reaped)
          return;
        }
        throw e;
      }
      if (isEventStop(st)) {
        // A group stop (the task was stopped by SIGSTOP/SIGTSTP/...) reports
        // the stop signal; our own interrupt reports SIGTRAP. A stopped task
        // still has our interrupt pending: resume it once to take that trap
        // now (as CRIU's compel does), not in the middle of an injection.
        if (isStopSignal(st.signal) && !this.groupStopped.has(t)) {
          this.groupStopped.set(t, st.signal!);
          cont(t, 0);
          continue;
        }
        return;
      }
      // A signal-delivery stop came first: let the thread take the signal
      // (as CRIU's compel does). The interrupt is still pending and is
      // checked before the next signal is dequeued, so the thread stops
      // again right after the kernel has set up the handler frame, and the
      // dump sees that state. Holding the signal back instead would lose its
      // siginfo (sender, value), and a signal given with PTRACE_DETACH from
      // an event stop is dropped by the kernel.
      cont(t, st.event === 0 && st.signal !== undefined ? st.signal : 0);
    }
  }

  /** Detaches every thread. Ignores threads that vanished. */
  release(): void {
    for (const t of this.seized) {
      try {
        detach(t, 0);
      } catch {
        /* gone */
      }
    }
    this.seized.clear();
    this.stopped.clear();
    this.cgroup?.restore();
    // A process that was stopped re-enters its group stop on its own after
    // the detach (the kernel re-arms it); wait, bounded, until it has, so
    // the caller gets the tree back in the state it was in.
    const deadline = Date.now() + 1000;
    const tick = new Int32Array(new SharedArrayBuffer(4));
    for (const p of this.processes) {
      if (p.stopSignal === undefined) continue;
      while (Date.now() < deadline && stateOf(p.pid) === 'R') Atomics.wait(tick, 0, 0, 1);
    }
  }

  /**
   * SIGKILLs every process and reaps the traced threads. A leader whose
   * parent is this very process is left for its spawner to reap (libuv
   * reaps children node spawned; reaping it here would starve their 'exit').
   */
  kill(): void {
    // Zombies first, reaped by their frozen parents: once the tree is killed
    // they would be left to init, which reaps orphans slowly.
    for (const p of this.processes) {
      if (p.zombie && this.seized.has(p.ppid)) reapZombieInParent(p.ppid, p.pid, this.timeoutMs);
    }
    for (const p of this.processes) {
      if (p.zombie) continue;
      try {
        process.kill(p.pid, 'SIGKILL');
      } catch {
        /* already gone */
      }
    }
    // Children first: a pid namespace's init that is killed waits for every
    // task of its namespace to be reaped, and we, their tracer, reap them.
    for (const p of [...this.processes].reverse()) {
      const ours = p.ppid === process.pid;
      for (const t of [...p.tids.slice(1), p.tids[0]!]) {
        if (!this.seized.has(t)) continue;
        if (t === p.pid && ours) continue;
        waitExit(t, this.timeoutMs);
      }
    }
    for (const t of this.others) {
      try {
        detach(t, 0);
      } catch {
        /* gone */
      }
    }
    this.seized.clear();
    this.stopped.clear();
  }
}

/** The state letter of /proc/PID/stat ('' when gone). */
function stateOf(pid: number): string {
  try {
    const s = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return s.slice(s.lastIndexOf(')') + 2, s.lastIndexOf(')') + 3);
  } catch {
    return '';
  }
}

function tracerOf(tid: number): number {
  try {
    return Number(/^TracerPid:\s+(\d+)/m.exec(readFileSync(`/proc/${tid}/status`, 'utf8'))?.[1] ?? 0);
  } catch {
    return 0;
  }
}

function ppidOf(pid: number): number {
  const s = readFileSync(`/proc/${pid}/stat`, 'utf8');
  return Number(s.slice(s.lastIndexOf(')') + 2).split(' ')[1]);
}
