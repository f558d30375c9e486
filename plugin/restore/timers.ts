// Interval timers (setitimer) and POSIX timers (timer_create with the dumped
// id, timer_settime) of a restored process, injected into its leader. Armed
// as late as possible, right before the release, so the restore itself does
// not eat their remaining time; a timer that expires before the release just
// leaves its signal pending (blocked while we inject), delivered once the
// process runs.
//
// Exact ids: PR_TIMER_CREATE_RESTORE_IDS (Linux 6.16+) makes timer_create
// take the id from *timerid. Without it, ids are handed out in increasing
// order from the process's counter, so timers are created in id order and an
// id that does not come out as dumped is a clear error.
import { Errno, UserError, errnoName } from '../errors.js';
import { PR, SYS } from '../inject/constants.js';
import type { ItimerEntry, PosixTimerEntry, TaskTimersEntry } from '../images/index.js';
import type { RemoteTask } from './task.js';

const RESTORE_IDS_OFF = 0;
const RESTORE_IDS_ON = 1;

// Offsets in the task's scratch area (the struct area of process.ts, free by now).
const SCR_ITIMERVAL = 0x1000n;
const SCR_SIGEVENT = 0x1100n;
const SCR_TIMERID = 0x1180n;
const SCR_ITIMERSPEC = 0x1200n;

const ITIMERS: [keyof Pick<TaskTimersEntry, 'real' | 'virt' | 'prof'>, number][] = [['real', 0], ['virt', 1], ['prof', 2]];

function armed(e: ItimerEntry): boolean {
  return e.vsec !== 0n || e.vusec !== 0n || e.isec !== 0n || e.iusec !== 0n;
}

/**
 * The itimerval to arm: a periodic timer dumped with no time left (its
 * ITIMER_REAL signal was pending, so the kernel had not re-armed it yet, or
 * it was about to fire) is armed for one interval, as CRIU does; arming it
 * with the zero value would disarm it for good.
 */
export function itimerValue(e: ItimerEntry): [bigint, bigint, bigint, bigint] {
  if (e.vsec === 0n && e.vusec === 0n) return [e.isec, e.iusec, e.isec, e.iusec];
  return [e.isec, e.iusec, e.vsec, e.vusec];
}

/** The 64-byte sigevent_t: value, signo, notify, then the thread id (SIGEV_THREAD_ID). */
export function sigevent(pt: PosixTimerEntry): Buffer {
  const b = Buffer.alloc(64);
  b.writeBigUInt64LE(BigInt.asUintN(64, pt.sival_ptr), 0);
  b.writeInt32LE(pt.si_signo | 0, 8);
  b.writeInt32LE(pt.it_sigev_notify | 0, 12);
  b.writeInt32LE(pt.notify_thread_id ?? 0, 16);
  return b;
}

function fail(pid: number, what: string, r: bigint): never {
  throw new UserError(`pid ${pid}: ${what} failed in the restored process: ${errnoName(Number(-r))}`);
}

function isErr(r: bigint): boolean {
  return r < 0n && r >= -4095n;
}

/** What restoreTimers needs of a task (a RemoteTask; narrow so the id logic can be unit-tested). */
export type TimerTask = Pick<RemoteTask, 'pid' | 'scratch' | 'write' | 'read' | 'raw'>;

/** Arms the dumped interval and POSIX timers in `t` (the leader; scratch still mapped). */
export function restoreTimers(t: TimerTask, timers: TaskTimersEntry | undefined): void {
  if (!timers) return;
  for (const [key, which] of ITIMERS) {
    const e = timers[key];
    if (!armed(e)) continue;
    const b = Buffer.alloc(32);
    itimerValue(e).forEach((w, i) => b.writeBigUInt64LE(w, i * 8));
    t.write(t.scratch + SCR_ITIMERVAL, b);
    const r = t.raw(SYS.setitimer, which, t.scratch + SCR_ITIMERVAL, 0);
    if (isErr(r)) fail(t.pid, `setitimer(${key})`, r);
  }
  const posix = [...timers.posix].sort((a, b) => a.it_id - b.it_id);
  if (posix.length === 0) return;
  const on = t.raw(SYS.prctl, PR.TIMER_CREATE_RESTORE_IDS, RESTORE_IDS_ON, 0, 0, 0);
  if (isErr(on) && on !== BigInt(-Errno.EINVAL)) fail(t.pid, 'prctl(PR_TIMER_CREATE_RESTORE_IDS)', on);
  const exact = !isErr(on);
  try {
    for (const pt of posix) createTimer(t, pt, exact);
  } finally {
    if (exact) t.raw(SYS.prctl, PR.TIMER_CREATE_RESTORE_IDS, RESTORE_IDS_OFF, 0, 0, 0);
  }
  for (const pt of posix) {
    const noValue = pt.vsec === 0n && pt.vnsec === 0n;
    if (noValue && pt.isec === 0n && pt.insec === 0n) continue; // disarmed
    // Periodic with no time left (its signal pending, not re-armed yet): one interval, as CRIU.
    const b = Buffer.alloc(32);
    [pt.isec, pt.insec, noValue ? pt.isec : pt.vsec, noValue ? pt.insec : pt.vnsec].forEach((w, i) => b.writeBigUInt64LE(w, i * 8));
    t.write(t.scratch + SCR_ITIMERSPEC, b);
    const r = t.raw(SYS.timer_settime, pt.it_id, 0, t.scratch + SCR_ITIMERSPEC, 0);
    if (isErr(r)) fail(t.pid, `timer_settime(${pt.it_id})`, r);
  }
}

function createTimer(t: TimerTask, pt: PosixTimerEntry, exact: boolean): void {
  t.write(t.scratch + SCR_SIGEVENT, sigevent(pt));
  const id = Buffer.alloc(4);
  id.writeInt32LE(pt.it_id, 0);
  t.write(t.scratch + SCR_TIMERID, id);
  const r = t.raw(SYS.timer_create, pt.clock_id | 0, t.scratch + SCR_SIGEVENT, t.scratch + SCR_TIMERID);
  if (r === BigInt(-Errno.EBUSY) && exact) {
    throw new UserError(`pid ${t.pid}: POSIX timer id ${pt.it_id} is already taken in the restored process (timer_create: EBUSY)`);
  }
  if (isErr(r)) fail(t.pid, `timer_create(id ${pt.it_id}, clock ${pt.clock_id | 0})`, r);
  if (exact) return;
  const got = t.read(t.scratch + SCR_TIMERID, 4).readInt32LE(0);
  if (got !== pt.it_id) {
    t.raw(SYS.timer_delete, got);
    throw new UserError(
      `pid ${t.pid}: POSIX timer ${pt.it_id} cannot be recreated with its id (the kernel gave ${got}; ` +
        'this kernel has no PR_TIMER_CREATE_RESTORE_IDS, Linux 6.16+)',
    );
  }
}
