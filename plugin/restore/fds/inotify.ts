// inotify: inotify_init1 inside the owner, then each watch added by path
// with its mask and its dumped watch descriptor: INOTIFY_IOC_SETNEXTWD sets
// the number the next watch gets (CONFIG_CHECKPOINT_RESTORE); without it
// the watch is added and removed until the kernel's cyclic counter hands out
// that number (what CRIU does), and the IN_IGNORED events those removals
// queue are read away.
import { UserError, errnoName } from '../../errors.js';
import { FdType } from '../../images/index.js';
import { NR } from '../task.js';
import { SCR_EVENT_ARGS } from './eventfd.js';
import { ownEntry } from './own-entry.js';
import type { RestoreFdKind } from './types.js';

const O_NONBLOCK = 0o4000;
const NR_INOTIFY_RM_WATCH = 255;
const INOTIFY_IOC_SETNEXTWD = 0x40044900; // _IOW('I', 0, __s32); the argument is the number itself
// Event bits and the watch flags that change behaviour (kept, unlike CRIU,
// which keeps only IN_ALL_EVENTS and so turns a one-shot watch permanent).
const IN_ALL_EVENTS = 0xfff;
const IN_WATCH_FLAGS = 0x01000000 | 0x02000000 | 0x04000000 | 0x80000000; // ONLYDIR DONT_FOLLOW EXCL_UNLINK ONESHOT
const MAX_TRIES = 1 << 16;
const DRAIN_BYTES = 2048;

const ify = ownEntry('ify', 'an inotify instance', 'inotify');

export const inotifyKind: RestoreFdKind = {
  type: FdType.INOTIFY,
  name: 'inotify instance',
  check(_ctx, file, use) {
    ify.require(file, use);
    for (const w of ify.of(file).wd) {
      if (!w.f_handle.path) throw new UserError(`pid ${use.pid}: fd ${use.fd} (inotify): watch ${w.wd} has no path in the image`);
    }
  },
  flags: ify.flags,
  fown: ify.fown,
  create(_ctx, file, owner) {
    const where = `pid ${owner.pid}: inotify (files.img id ${file.id})`;
    // Non-blocking while restoring (the drain below must not block); the registry sets the dumped flags after.
    const fd = Number(owner.call('inotify_init1', NR.inotify_init1, O_NONBLOCK));
    let removed = false;
    for (const w of [...ify.of(file).wd].sort((a, b) => a.wd - b.wd)) {
      const path = w.f_handle.path!;
      const mask = w.mask & (IN_ALL_EVENTS | IN_WATCH_FLAGS);
      const setNext = owner.raw(NR.ioctl, fd, INOTIFY_IOC_SETNEXTWD, w.wd) === 0n;
      for (let i = 0; ; i++) {
        const a = owner.putString(path);
        const r = owner.raw(NR.inotify_add_watch, fd, a, mask);
        if (r < 0n) throw new UserError(`${where}: cannot watch ${path}: ${errnoName(Number(-r))}`);
        if (Number(r) === w.wd) break;
        if (setNext || Number(r) > w.wd || i >= MAX_TRIES) throw new UserError(`${where}: the watch of ${path} got wd ${r}, the image has ${w.wd}`);
        owner.call('inotify_rm_watch', NR_INOTIFY_RM_WATCH, fd, r);
        removed = true;
      }
    }
    if (removed) {
      while (owner.raw(NR.read, fd, owner.scratch + SCR_EVENT_ARGS, DRAIN_BYTES) > 0n) { /* IN_IGNORED of removed watches */ }
    }
    return { taskFd: fd };
  },
};
