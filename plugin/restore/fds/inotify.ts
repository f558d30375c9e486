// inotify: inotify_init1, then each watch added by path with its mask, with
// its dumped watch descriptor: INOTIFY_IOC_SETNEXTWD sets the number the
// next watch gets (CONFIG_CHECKPOINT_RESTORE); without it the watch is added
// and removed until the kernel's cyclic counter hands out that number (what
// CRIU does), and the IN_IGNORED events those removals queue are read away
// before the process runs.
import { UserError } from '../../errors.js';
import type { InotifyFileEntry } from '../../images/index.js';
import { errnoName, NR, type RemoteTask } from '../task.js';
import { placeFd, SCR_FD_ARGS } from './place.js';

const O_NONBLOCK = 0o4000;
const F_SETFL = 4;
const NR_INOTIFY_RM_WATCH = 255;
const INOTIFY_IOC_SETNEXTWD = 0x40044900; // _IOW('I', 0, __s32); the argument is the number itself
// Event bits and the watch flags that change behaviour (kept, unlike CRIU,
// which keeps only IN_ALL_EVENTS and so turns a one-shot watch permanent).
const IN_ALL_EVENTS = 0xfff;
const IN_WATCH_FLAGS = 0x01000000 | 0x02000000 | 0x04000000 | 0x80000000; // ONLYDIR DONT_FOLLOW EXCL_UNLINK ONESHOT
const MAX_TRIES = 1 << 16;
const DRAIN_BYTES = 4096;

export function restoreInotify(t: RemoteTask, fd: number, e: InotifyFileEntry, cloexec: boolean): void {
  const where = `pid ${t.pid}: fd ${fd} (inotify)`;
  const tmp = Number(t.call('inotify_init1', NR.inotify_init1, O_NONBLOCK));
  let removed = false;
  for (const w of [...e.wd].sort((a, b) => a.wd - b.wd)) {
    const path = w.f_handle.path;
    if (!path) throw new UserError(`${where}: watch ${w.wd} has no path in the image`);
    const mask = w.mask & (IN_ALL_EVENTS | IN_WATCH_FLAGS);
    const setNext = t.raw(NR.ioctl, tmp, INOTIFY_IOC_SETNEXTWD, w.wd) === 0n;
    for (let i = 0; ; i++) {
      const a = t.putString(path);
      const r = t.raw(NR.inotify_add_watch, tmp, a, mask);
      if (r < 0n) throw new UserError(`${where}: cannot watch ${path}: ${errnoName(Number(-r))}`);
      if (Number(r) === w.wd) break;
      if (setNext || Number(r) > w.wd || i >= MAX_TRIES) {
        throw new UserError(`${where}: the watch of ${path} got wd ${r}, the image has ${w.wd}`);
      }
      t.call('inotify_rm_watch', NR_INOTIFY_RM_WATCH, tmp, r);
      removed = true;
    }
  }
  if (removed) {
    while (t.raw(NR.read, tmp, t.scratch + SCR_FD_ARGS, DRAIN_BYTES) > 0n) { /* IN_IGNORED of removed watches */ }
  }
  if ((e.flags & O_NONBLOCK) === 0) t.call(`fcntl(${fd}, F_SETFL)`, NR.fcntl, tmp, F_SETFL, 0);
  placeFd(t, tmp, fd, cloexec);
}
