// epoll: epoll_create1 inside the owner; the watches are added once the
// owner's fds are all installed, with epoll_ctl on their dumped fd numbers
// (the kernel keys a watch by file and fd number), in the owner (the
// process the dump read them from). Epoll instances watching other epoll
// instances work in any order: every fd is in place by then.
import { UserError, errnoName } from '../../errors.js';
import { FdType } from '../../images/index.js';
import { NR } from '../task.js';
import { SCR_EVENT_ARGS } from './eventfd.js';
import { isFirstUse, ownEntry } from './own-entry.js';
import type { RestoreFdKind } from './types.js';

const EPOLL_CTL_ADD = 1;

const ep = ownEntry('epfd', 'an epoll instance', 'epoll');

export const eventpollKind: RestoreFdKind = {
  type: FdType.EVENTPOLL,
  name: 'epoll instance',
  check(ctx, file, use) {
    ep.require(file, use);
    if (!isFirstUse(ctx, file.id, use.pid, use.fd)) return;
    for (const w of ep.of(file).tfd) {
      const has = [...ctx.files.keys()].some((id) => ctx.uses(id).some((u) => u.pid === use.pid && u.fd === w.tfd));
      if (!has) throw new UserError(`pid ${use.pid}: fd ${use.fd} (epoll instance) watches fd ${w.tfd}, which the image does not have`);
    }
  },
  flags: ep.flags,
  fown: ep.fown,
  create(_ctx, _file, owner) {
    return { taskFd: Number(owner.call('epoll_create1', NR.epoll_create1, 0)) };
  },
  installed(ctx, task, pid, uses) {
    for (const { use, file } of uses) {
      if (!isFirstUse(ctx, file.id, pid, use.fd)) continue; // the watches belong to the description: added once
      for (const w of ep.of(file).tfd) {
        const ev = Buffer.alloc(12); // struct epoll_event is packed on x86-64
        ev.writeUInt32LE(w.events >>> 0, 0);
        ev.writeBigUInt64LE(w.data, 4);
        task.write(task.scratch + SCR_EVENT_ARGS, ev);
        const r = task.raw(NR.epoll_ctl, use.fd, EPOLL_CTL_ADD, w.tfd, task.scratch + SCR_EVENT_ARGS);
        if (r < 0n) throw new UserError(`pid ${pid}: fd ${use.fd} (epoll instance): cannot watch fd ${w.tfd} again: ${errnoName(Number(-r))}`);
      }
    }
  },
};
