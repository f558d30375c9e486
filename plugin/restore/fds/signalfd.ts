// signalfd: signalfd4(-1, mask, 8, flags).
import type { SignalfdEntry } from '../../images/index.js';
import { NR, type RemoteTask } from '../task.js';
import { placeFd, SCR_FD_ARGS } from './place.js';

const O_NONBLOCK = 0o4000;

export function restoreSignalfd(t: RemoteTask, fd: number, e: SignalfdEntry, cloexec: boolean): void {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(e.sigmask);
  t.write(t.scratch + SCR_FD_ARGS, b);
  const tmp = Number(t.call('signalfd4', NR.signalfd4, -1, t.scratch + SCR_FD_ARGS, 8, e.flags & O_NONBLOCK));
  placeFd(t, tmp, fd, cloexec);
}
