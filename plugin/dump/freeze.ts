// Freezing a process tree with ptrace: every thread of every process is
// seized and interrupted, parents before children, each process re-listed
// until no new thread appears (a running thread may create one while its
// siblings are being stopped). release() detaches everything untouched;
// kill() SIGKILLs the tree and reaps what we traced.
import { readFileSync } from 'node:fs';
import { errnoError, detach, interrupt, isEventStop, seize, waitExit, waitStop, cont } from '../inject/index.js';
import { isSystemError } from '../errors.js';
import { listChildren, listTasks } from './proc.js';

export interface FrozenProcess {
  pid: number;
  ppid: number;
  /** Leader first. */
  tids: number[];
  children: number[];
}

export class FrozenTree {
  /** Parents before children (depth-first from the root). */
  readonly processes: FrozenProcess[] = [];
  private readonly seized = new Set<number>();
  /** Signals taken off a thread while stopping it: redelivered at detach. */
  private readonly heldSignals = new Map<number, number>();

  constructor(readonly root: number, private readonly timeoutMs: number) {}

  get tids(): number[] {
    return [...this.seized];
  }

  /** Freezes the whole tree. On failure everything seized so far is released and the error rethrown. */
  freeze(): void {
    try {
      this.freezeSubtree(this.root);
    } catch (e) {
      this.release();
      throw e;
    }
  }

  private freezeSubtree(pid: number): void {
    const tids = this.freezeProcess(pid);
    // Frozen: its children list can only shrink now.
    const children = listChildren(pid);
    this.processes.push({ pid, ppid: ppidOf(pid), tids, children });
    for (const c of children) this.freezeSubtree(c);
  }

  private freezeProcess(pid: number): number[] {
    const mine: number[] = [];
    for (;;) {
      let tids: number[];
      try {
        tids = listTasks(pid);
      } catch {
        throw errnoError(3, `open /proc/${pid}/task`, `pid ${pid}: no such process`);
      }
      const fresh = tids.filter((t) => !this.seized.has(t));
      if (fresh.length === 0) break;
      const stopping: number[] = [];
      for (const t of fresh) {
        try {
          seize(t, 0);
        } catch (e) {
          if (t !== pid && isSystemError(e) && e.code === 'ESRCH') continue; // thread exited
          throw e;
        }
        this.seized.add(t);
        mine.push(t);
        interrupt(t);
        stopping.push(t);
      }
      for (const t of stopping) this.waitInterrupted(t, pid);
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
      if (isEventStop(st)) return;
      // A signal-delivery stop came first: take the signal off and give it
      // back when the thread is released. The interrupt is still pending, so
      // resuming stops the thread again before it reaches user space.
      if (st.event === 0 && st.signal !== undefined) this.heldSignals.set(t, st.signal);
      cont(t, 0);
    }
  }

  /** Signals held back during the freeze (tid → signal): they are pending state of the dump. */
  get held(): ReadonlyMap<number, number> {
    return this.heldSignals;
  }

  /** Detaches every thread, giving back held signals. Ignores threads that vanished. */
  release(): void {
    for (const t of this.seized) {
      try {
        detach(t, this.heldSignals.get(t) ?? 0);
      } catch {
        /* gone */
      }
    }
    this.seized.clear();
  }

  /**
   * SIGKILLs every process and reaps the traced threads. A leader whose
   * parent is this very process is left for its spawner to reap (libuv
   * reaps children node spawned; reaping it here would starve their 'exit').
   */
  kill(): void {
    for (const p of this.processes) {
      try {
        process.kill(p.pid, 'SIGKILL');
      } catch {
        /* already gone */
      }
    }
    for (const p of this.processes) {
      const ours = p.ppid === process.pid;
      for (const t of [...p.tids.slice(1), p.tids[0]!]) {
        if (!this.seized.has(t)) continue;
        if (t === p.pid && ours) continue;
        waitExit(t, this.timeoutMs);
      }
    }
    this.seized.clear();
  }
}

function ppidOf(pid: number): number {
  const s = readFileSync(`/proc/${pid}/stat`, 'utf8');
  return Number(s.slice(s.lastIndexOf(')') + 2).split(' ')[1]);
}
