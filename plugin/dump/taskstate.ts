// Task states other than running (CRIU's TASK_DEAD and TASK_STOPPED):
// zombies in the tree, which are never seized (ptrace refuses them) and are
// dumped from /proc alone as a core with their exit status, and stopped
// processes (SIGSTOP, job control), which are frozen like any other and
// dumped with the signal that stopped them.
import { TASK_DEAD, type CoreEntry } from '../images/index.js';
import { findVdsoGadget, injectSyscall } from '../inject/index.js';
import { SYS } from '../inject/constants.js';
import { listTasks, readStat, type ProcStat } from './proc.js';

/** The stop signals (SIGSTOP, SIGTSTP, SIGTTIN, SIGTTOU): a group stop reports one of these. */
export const STOP_SIGNALS: ReadonlySet<number> = new Set([19, 20, 21, 22]);

export function isStopSignal(sig: number | undefined): boolean {
  return sig !== undefined && STOP_SIGNALS.has(sig);
}

export function isZombieState(state: string): boolean {
  return state === 'Z' || state === 'X';
}

/** True when `pid` is a zombie now (false when it is gone). */
export function isZombie(pid: number): boolean {
  try {
    return isZombieState(readStat(pid).state);
  } catch {
    return false;
  }
}

/** Why a zombie cannot be dumped, or undefined when it can (CRIU's rules). */
export function zombieProblem(pid: number, stat: ProcStat, isRoot: boolean): string | undefined {
  if (stat.state === 'X') return `pid ${pid}: the process is being reaped (ESRCH)`;
  if (isRoot) return `pid ${pid}: the root of the tree is a zombie`;
  let threads: number[] = [];
  try {
    threads = listTasks(pid);
  } catch { /* reaped meanwhile: the frozen pass reports it */ }
  if (threads.length > 1) return `pid ${pid}: the thread group leader exited but ${threads.length - 1} threads still run (a zombie leader with threads is not supported)`;
  return undefined;
}

/**
 * The core image of a zombie, as CRIU writes it: no registers or thread
 * state, only task_core with TASK_DEAD, the wait status (/proc/PID/stat
 * field 52: exit code << 8, or the terminating signal) and the name.
 */
export function zombieCore(stat: ProcStat): CoreEntry {
  return {
    mtype: 1, // x86_64
    tc: {
      task_state: TASK_DEAD, exit_code: stat.exitCode, personality: 0, flags: 0, blk_sigset: 0n,
      comm: stat.comm, sigactions: [],
    },
  };
}

const WNOHANG = 1;
const WALL = 0x40000000;

/**
 * Reaps a zombie from inside its frozen parent (an injected wait4), so that
 * killing the tree after the dump does not leave it for a slow init to reap
 * while it holds the pid the restore needs. Best effort.
 */
export function reapZombieInParent(parent: number, zombie: number, timeoutMs: number): void {
  try {
    injectSyscall(parent, SYS.wait4, [zombie, 0, WNOHANG | WALL, 0], { gadget: findVdsoGadget(parent), timeoutMs });
  } catch { /* the tree is being killed anyway */ }
}
