// eventfd: eventfd2(0) inside the owner, then the 64-bit counter written
// into it (eventfd2 takes only an unsigned int; a write adds the full value).
import { UserError } from '../../errors.js';
import { FdType } from '../../images/index.js';
import { NR } from '../task.js';
import { ownEntry } from './own-entry.js';
import type { RestoreFdKind } from './types.js';

/** Scratch offset for the small structs the event-object kinds pass to system calls. */
export const SCR_EVENT_ARGS = 0x1800n;
const MAX_COUNTER = 0xfffffffffffffffen;

const efd = ownEntry('efd', 'an eventfd', 'eventfd');

export const eventfdKind: RestoreFdKind = {
  type: FdType.EVENTFD,
  name: 'eventfd',
  check(_ctx, file, use) {
    efd.require(file, use);
    if (efd.of(file).counter > MAX_COUNTER) throw new UserError(`pid ${use.pid}: fd ${use.fd}: eventfd counter ${efd.of(file).counter} is out of range`);
  },
  flags: efd.flags,
  fown: efd.fown,
  create(_ctx, file, owner) {
    const e = efd.of(file);
    const fd = Number(owner.call('eventfd2', NR.eventfd2, 0, 0));
    if (e.counter > 0n) {
      const b = Buffer.alloc(8);
      b.writeBigUInt64LE(e.counter);
      owner.write(owner.scratch + SCR_EVENT_ARGS, b);
      owner.call('write(eventfd)', NR.write, fd, owner.scratch + SCR_EVENT_ARGS, 8);
    }
    return { taskFd: fd };
  },
};
