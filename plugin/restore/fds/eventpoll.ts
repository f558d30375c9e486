// epoll: epoll_create1 inside the owner; the watches are added once the
// owner's fds are all installed, with epoll_ctl on their dumped fd numbers
// (the kernel keys a watch by file and fd number), in the owner (the
// process the dump read them from). Epoll instances watching other epoll
// instances work in any order: every fd is in place by then.
import { UserError, errnoName } from '../../errors.js';
import { FdType, type EventpollFileEntry, type FileEntry } from '../../images/index.js';
import { NR } from '../task.js';
import { SCR_EVENT_ARGS } from './eventfd.js';
import type { RestoreFdKind } from './types.js';

const EPOLL_CTL_ADD = 1;

function ep(f: FileEntry): EventpollFileEntry {
  return f.epfd!;
}

export const eventpollKind: RestoreFdKind = {
  type: FdType.EVENTPOLL,
  name: 'epoll instance',
  check(ctx, file, use) {
    if (!file.epfd) throw new UserError(`pid ${use.pid}: fd ${use.fd}: files.img id ${file.id} is an epoll instance without epoll data`);
    const owner = ctx.uses(file.id)[0];
    if (owner?.pid !== use.pid || owner.fd !== use.fd) return;
    for (const w of file.epfd.tfd) {
      const has = [...ctx.files.keys()].some((id) => ctx.uses(id).some((u) => u.pid === use.pid && u.fd === w.tfd));
      if (!has) throw new UserError(`pid ${use.pid}: fd ${use.fd} (epoll instance) watches fd ${w.tfd}, which the image does not have`);
    }
  },
  flags: (f) => ep(f).flags,
  fown: (f) => ep(f).fown,
  create(_ctx, _file, owner) {
    return { taskFd: Number(owner.call('epoll_create1', NR.epoll_create1, 0)) };
  },
  installed(ctx, task, pid, uses) {
    for (const { use, file } of uses) {
      const first = ctx.uses(file.id)[0];
      if (first?.pid !== pid || first.fd !== use.fd) continue; // the watches belong to the description: added once
      for (const w of ep(file).tfd) {
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
