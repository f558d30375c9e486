// epoll: epoll_create1, then every watch added back with epoll_ctl on its
// dumped fd number (the kernel keys watches by file and fd number), so it
// runs after every other fd of the process is in place. Epoll instances
// that watch other epoll instances are ordered so the watched one exists.
import { UserError } from '../../errors.js';
import type { EventpollFileEntry } from '../../images/index.js';
import { NR, type RemoteTask } from '../task.js';
import { placeFd, SCR_FD_ARGS } from './place.js';

const O_CLOEXEC = 0o2000000;
const EPOLL_CTL_ADD = 1;
// Bits the kernel keeps for itself in fdinfo's "events" (EPOLLWAKEUP needs
// CAP_BLOCK_SUSPEND; kept if set).
export function restoreEventpoll(t: RemoteTask, fd: number, e: EventpollFileEntry, cloexec: boolean): void {
  const tmp = Number(t.call('epoll_create1', NR.epoll_create1, O_CLOEXEC));
  placeFd(t, tmp, fd, cloexec);
  for (const w of e.tfd) {
    const ev = Buffer.alloc(12); // struct epoll_event is packed on x86_64
    ev.writeUInt32LE(w.events >>> 0, 0);
    ev.writeBigUInt64LE(w.data, 4);
    t.write(t.scratch + SCR_FD_ARGS, ev);
    const r = t.raw(NR.epoll_ctl, fd, EPOLL_CTL_ADD, w.tfd, t.scratch + SCR_FD_ARGS);
    if (r < 0n) {
      throw new UserError(`pid ${t.pid}: fd ${fd} (epoll): cannot watch fd ${w.tfd} again: epoll_ctl failed with errno ${-r}`);
    }
  }
}

/** Orders epoll fds so that an epoll watched by another comes first; the rest keep their order. */
export function orderEpolls<T extends { fd: number; entry: EventpollFileEntry }>(eps: readonly T[]): T[] {
  const byFd = new Map(eps.map((x) => [x.fd, x]));
  const done = new Set<number>();
  const out: T[] = [];
  const visit = (x: T, depth: number): void => {
    if (done.has(x.fd) || depth > eps.length) return;
    for (const w of x.entry.tfd) {
      const dep = byFd.get(w.tfd);
      if (dep && dep !== x) visit(dep, depth + 1);
    }
    done.add(x.fd);
    out.push(x);
  };
  for (const x of eps) visit(x, 0);
  return out;
}
