// timerfd: timerfd_create(clock) inside the owner; armed once the owner's
// fds are installed (late, like CRIU's restorer arms it last), with the
// remaining time and interval (for TFD_TIMER_ABSTIME the clock's current
// time is added back, as CRIU does), then the unread expirations put back
// with TFD_IOC_SET_TICKS.
import { FdType, type TimerfdEntry } from '../../images/index.js';
import { NR, type RemoteTask } from '../task.js';
import { SCR_EVENT_ARGS } from './eventfd.js';
import { isFirstUse, ownEntry } from './own-entry.js';
import type { RestoreFdKind } from './types.js';

const TFD_TIMER_ABSTIME = 1;
const TFD_IOC_SET_TICKS = 0x40085400; // _IOW('T', 0, u64)
const NSEC = 1000000000n;

const tfd = ownEntry('tfd', 'a timerfd', 'timerfd');

/** Arms timerfd `fd` of `t` as the image describes. */
export function armTimerfd(t: RemoteTask, fd: number, e: TimerfdEntry): void {
  let vsec = e.vsec;
  let vnsec = e.vnsec;
  // A periodic timer that expired and was not read yet shows 0 remaining in
  // fdinfo (the kernel re-arms it only on read): it is due now, then
  // periodic. Arming it with 0 would disarm it.
  if (vsec === 0n && vnsec === 0n && (e.isec !== 0n || e.insec !== 0n)) vnsec = 1n;
  if ((e.settime_flags & TFD_TIMER_ABSTIME) !== 0 && (vsec !== 0n || vnsec !== 0n)) {
    t.call('clock_gettime', NR.clock_gettime, e.clockid, t.scratch + SCR_EVENT_ARGS);
    const now = t.read(t.scratch + SCR_EVENT_ARGS, 16);
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
  t.write(t.scratch + SCR_EVENT_ARGS, its);
  t.call(`timerfd_settime(${fd})`, NR.timerfd_settime, fd, e.settime_flags, t.scratch + SCR_EVENT_ARGS, 0);
  if (e.ticks > 0n) {
    const b = Buffer.alloc(8);
    b.writeBigUInt64LE(e.ticks);
    t.write(t.scratch + SCR_EVENT_ARGS, b);
    t.call(`ioctl(${fd}, TFD_IOC_SET_TICKS)`, NR.ioctl, fd, TFD_IOC_SET_TICKS, t.scratch + SCR_EVENT_ARGS);
  }
}

export const timerfdKind: RestoreFdKind = {
  type: FdType.TIMERFD,
  name: 'timerfd',
  ...tfd.kind,
  create(_ctx, file, owner) {
    const clockid = tfd.of(file).clockid;
    return { taskFd: Number(owner.call(`timerfd_create(${clockid})`, NR.timerfd_create, clockid, 0)) };
  },
  installed(ctx, task, pid, uses) {
    for (const { use, file } of uses) {
      if (!isFirstUse(ctx, file.id, pid, use.fd)) continue; // once per timer, by its first owner
      armTimerfd(task, use.fd, tfd.of(file));
    }
  },
};
