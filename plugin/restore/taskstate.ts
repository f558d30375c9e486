// Restoring task states other than running (CRIU's TASK_DEAD and
// TASK_STOPPED). A zombie is a stub cloned in its restored parent that
// exits with the dumped status right after the tree of stubs exists, before
// any process state is restored; its parent then reaps it with that status.
// A stopped process is released with its stop signal and stays stopped until
// SIGCONT.
import { readFileSync } from 'node:fs';
import { UserError } from '../errors.js';
import { PR } from '../inject/constants.js';
import { cont, waitPid } from '../inject/ptrace.js';
import { addon } from '../native/addon.js';
import type { ProcessPlan } from './plan.js';
import { NR, type RemoteTask } from './task.js';

const SIGABRT = 6;
const SIGCHLD = 17;
const SIGSTOP = 19;
const STOP_SIGNALS = new Set([19, 20, 21, 22]); // STOP TSTP TTIN TTOU

/** Signals whose default action ends the process (CRIU's SIG_FATAL_MASK). */
const FATAL = new Set([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 24, 25, 26, 27, 29, 30, 31]);

// Register indexes of restoreGetRegs/restoreSetRegs (user_regs_struct order).
const R_AX = 10;
const R_SI = 13;
const R_DI = 14;
const R_ORIG_AX = 15;
const R_IP = 16;

/** Scratch offset for rt_sigtimedwait's arguments (past the areas plugin/restore/process.ts uses). */
const SCR_SIGWAIT = 0x3c00n;

export interface ZombieExit {
  /** Exit code, when the zombie exited. */
  code?: number;
  /** Terminating signal, when it was killed. */
  signal?: number;
}

/**
 * How a zombie ends, from its wait status (exit code << 8, or the signal in
 * the low 7 bits). As CRIU: a signal whose default action does not kill is
 * replaced by SIGABRT. Unlike CRIU (which keeps 7 bits), the whole 8-bit
 * exit code is kept.
 */
export function zombieExit(status: number): ZombieExit {
  const sig = status & 0x7f;
  if (sig !== 0) return { signal: FATAL.has(sig) ? sig : SIGABRT };
  return { code: (status >> 8) & 0xff };
}

/** The signal a stopped process is stopped with again (CRIU: stop_signo if it is a stop signal, else SIGSTOP). */
export function stopSignalOf(p: ProcessPlan): number {
  const s = p.threads[0]?.core.tc?.stop_signo;
  return s !== undefined && STOP_SIGNALS.has(s) ? s : SIGSTOP;
}

/**
 * Makes the (still traced) stub of a zombie end the way the dumped process
 * did: name, then exit_group(code) or a fatal signal sent to itself (not
 * dumpable first, so no core file is written). Waits, as its tracer, for the
 * exit: that hands the exit notification to its real parent, the restored
 * parent's stub, whose stray SIGCHLD drainSigchld() then takes back.
 */
export function endZombie(t: RemoteTask, p: ProcessPlan, timeoutMs: number): void {
  const tc = p.threads[0]!.core.tc!;
  const how = zombieExit(tc.exit_code);
  if (tc.comm) {
    t.putString(tc.comm.slice(0, 15));
    t.call('prctl(PR_SET_NAME)', NR.prctl, PR.SET_NAME, t.scratch);
  }
  const regs = addon.restoreGetRegs(t.pid);
  regs[R_IP] = t.gadget;
  regs[R_ORIG_AX] = BigInt.asUintN(64, -1n);
  if (how.signal !== undefined) {
    t.call('prctl(PR_SET_DUMPABLE, 0)', NR.prctl, PR.SET_DUMPABLE, 0);
    regs[R_AX] = BigInt(NR.kill);
    regs[R_DI] = BigInt(p.pid); // its own pid, as it sees itself
    regs[R_SI] = BigInt(how.signal);
  } else {
    regs[R_AX] = BigInt(NR.exit_group);
    regs[R_DI] = BigInt(how.code!);
  }
  addon.restoreSetRegs(t.pid, regs);
  addon.restoreSetSigmask(t.pid, 0n);
  cont(t.pid, 0);
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const st = waitPid(t.pid, Math.max(0, deadline - Date.now()));
    if (st === null) throw new UserError(`pid ${p.pid}: the zombie did not exit within ${timeoutMs} ms`);
    if (st.kind === 'exited' || st.kind === 'signaled') {
      const ok = how.signal !== undefined ? st.kind === 'signaled' && st.signal === how.signal : st.kind === 'exited' && st.exitCode === how.code;
      if (!ok) throw new UserError(`pid ${p.pid}: the zombie ended ${st.kind === 'exited' ? `with code ${st.exitCode}` : `by signal ${st.signal}`}, not as dumped (status 0x${tc.exit_code.toString(16)})`);
      return;
    }
    // The signal it sent itself is reported first (signal-delivery stop): deliver it.
    cont(t.pid, st.kind === 'stopped' && st.event === 0 && st.signal === how.signal ? how.signal! : 0);
  }
}

/**
 * Takes back the SIGCHLD a restored zombie's exit queued in its parent's
 * stub (a traced task queues even signals it ignores): the dumped parent had
 * long received it, and a SIGCHLD it still had pending is in its image and
 * re-queued later with the other pending signals.
 */
export function drainSigchld(parent: RemoteTask): void {
  const b = Buffer.alloc(24);
  b.writeBigUInt64LE(1n << BigInt(SIGCHLD - 1), 0); // the set
  // 8..24: timespec {0, 0}: do not wait
  parent.write(parent.scratch + SCR_SIGWAIT, b);
  for (let i = 0; i < 64; i++) {
    const r = parent.raw(NR.rt_sigtimedwait, parent.scratch + SCR_SIGWAIT, 0, parent.scratch + SCR_SIGWAIT + 8n, 8);
    if (r !== BigInt(SIGCHLD)) return;
  }
}

/**
 * Waits (bounded, 1 s) until a process released with its stop signal has
 * entered the group stop, so restore() returns with it stopped.
 */
export function waitStopped(hostPid: number): void {
  const deadline = Date.now() + 1000;
  const tick = new Int32Array(new SharedArrayBuffer(4));
  for (;;) {
    let state = '';
    try {
      const s = readFileSync(`/proc/${hostPid}/stat`, 'utf8');
      state = s.slice(s.lastIndexOf(')') + 2, s.lastIndexOf(')') + 3);
    } catch { /* gone */ }
    if (state !== 'R' || Date.now() >= deadline) return;
    Atomics.wait(tick, 0, 0, 1);
  }
}
