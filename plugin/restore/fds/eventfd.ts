// eventfd: eventfd2(0, flags), then the 64-bit counter written into it
// (eventfd2 takes only an unsigned int; a write adds the full value).
import { UserError } from '../../errors.js';
import type { EventfdFileEntry } from '../../images/index.js';
import { NR, type RemoteTask } from '../task.js';
import { placeFd, SCR_FD_ARGS } from './place.js';

const O_NONBLOCK = 0o4000;

export function restoreEventfd(t: RemoteTask, fd: number, e: EventfdFileEntry, cloexec: boolean): void {
  const tmp = Number(t.call('eventfd2', NR.eventfd2, 0, e.flags & O_NONBLOCK));
  if (e.counter > 0n) {
    if (e.counter >= 0xffffffffffffffffn) throw new UserError(`pid ${t.pid}: fd ${fd}: eventfd counter ${e.counter} is out of range`);
    const b = Buffer.alloc(8);
    b.writeBigUInt64LE(e.counter);
    t.write(t.scratch + SCR_FD_ARGS, b);
    t.call(`write(eventfd ${fd})`, NR.write, tmp, t.scratch + SCR_FD_ARGS, 8);
  }
  placeFd(t, tmp, fd, cloexec);
}
