// timerfd: timerfd_create(clock, flags), armed with the remaining time and
// interval (for TFD_TIMER_ABSTIME the clock's current time is added back,
// as CRIU's restorer does), then the unread expirations put back with
// TFD_IOC_SET_TICKS.
import type { TimerfdEntry } from '../../images/index.js';
import { NR, type RemoteTask } from '../task.js';
import { placeFd, SCR_FD_ARGS } from './place.js';

const O_NONBLOCK = 0o4000;
const TFD_TIMER_ABSTIME = 1;
const TFD_IOC_SET_TICKS = 0x40085400; // _IOW('T', 0, u64)
const NSEC = 1000000000n;

export function restoreTimerfd(t: RemoteTask, fd: number, e: TimerfdEntry, cloexec: boolean): void {
  const tmp = Number(t.call(`timerfd_create(${e.clockid})`, NR.timerfd_create, e.clockid, e.flags & O_NONBLOCK));
  let vsec = e.vsec;
  let vnsec = e.vnsec;
  if ((e.settime_flags & TFD_TIMER_ABSTIME) !== 0 && (vsec !== 0n || vnsec !== 0n)) {
    t.call('clock_gettime', NR.clock_gettime, e.clockid, t.scratch + SCR_FD_ARGS);
    const now = t.read(t.scratch + SCR_FD_ARGS, 16);
    vsec += now.readBigInt64LE(0);
    vnsec += now.readBigInt64LE(8);
    if (vnsec >= NSEC) {
      vsec += 1n;
      vnsec -= NSEC;
    }
  }
  const its = Buffer.alloc(32);
  its.writeBigInt64LE(e.isec, 0);
  its.writeBigInt64LE(e.insec, 8);
  its.writeBigInt64LE(vsec, 16);
  its.writeBigInt64LE(vnsec, 24);
  t.write(t.scratch + SCR_FD_ARGS, its);
  t.call(`timerfd_settime(fd ${fd})`, NR.timerfd_settime, tmp, e.settime_flags, t.scratch + SCR_FD_ARGS, 0);
  if (e.ticks > 0n) {
    const b = Buffer.alloc(8);
    b.writeBigUInt64LE(e.ticks);
    t.write(t.scratch + SCR_FD_ARGS, b);
    t.call(`ioctl(fd ${fd}, TFD_IOC_SET_TICKS)`, NR.ioctl, tmp, TFD_IOC_SET_TICKS, t.scratch + SCR_FD_ARGS);
  }
  placeFd(t, tmp, fd, cloexec);
}
