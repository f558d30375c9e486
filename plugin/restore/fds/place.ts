// Puts a descriptor created inside a restored process at its dumped number.
import { NR, type RemoteTask } from '../task.js';

const O_CLOEXEC = 0o2000000;
const F_SETFD = 2;
/** Scratch offset for the small structs the fd restorers pass to system calls. */
export const SCR_FD_ARGS = 0x1000n;

/** Moves `tmp` to `fd` (dup3 + close) with the dumped close-on-exec bit; returns `fd`. */
export function placeFd(t: RemoteTask, tmp: number, fd: number, cloexec: boolean): number {
  if (tmp !== fd) {
    t.call(`dup3(${tmp}, ${fd})`, NR.dup3, tmp, fd, cloexec ? O_CLOEXEC : 0);
    t.raw(NR.close, tmp);
  } else {
    t.call(`fcntl(${fd}, F_SETFD)`, NR.fcntl, fd, F_SETFD, cloexec ? 1 : 0);
  }
  return fd;
}
