// epoll → file_entry.epfd: every watched (fd, events, data) from fdinfo's
// "tfd:" lines. The kernel keys a watch by (file, fd number), so restore
// re-adds each watch with epoll_ctl on the same fd number; that is only
// faithful if the fd number still names the watched file. kcmp
// (KCMP_EPOLL_TFD) checks that, as CRIU does. A watch whose fd was closed
// or reused since (zdtm epoll: watches added through a dup that was then
// closed) is recorded, as CRIU records it, under another fd of the process
// that holds the same file (found with kcmp); with no such fd, or when that
// fd is already watched by the same instance, it is refused, naming it.
import { readdirSync } from 'node:fs';
import { FdType, type EventpollFileEntry, type EventpollTfdEntry, type FownEntry } from '../../images/index.js';
import { ZERO_FOWN } from './common.js';
import type { DumpFdKind } from './types.js';
import { addon } from '../../native/addon.js';

export interface EpollWatch {
  tfd: number;
  events: number;
  data: bigint;
  pos: bigint;
  ino: bigint;
  sdev: number;
}

export function parseEpollFdinfo(text: string): EpollWatch[] {
  const out: EpollWatch[] = [];
  const re = /^tfd:\s*(\d+)\s+events:\s*([0-9a-fA-F]+)\s+data:\s*([0-9a-fA-F]+)\s+pos:\s*(-?\d+)\s+ino:\s*([0-9a-fA-F]+)\s+sdev:\s*([0-9a-fA-F]+)/gm;
  for (let m = re.exec(text); m; m = re.exec(text)) {
    out.push({
      tfd: Number(m[1]), events: parseInt(m[2]!, 16), data: BigInt(`0x${m[3]}`), pos: BigInt(m[4]!),
      ino: BigInt(`0x${m[5]}`), sdev: parseInt(m[6]!, 16),
    });
  }
  return out;
}

/**
 * The entry for one epoll instance, or the problems found. `fds` are the
 * fd numbers the process has open (a watch must name one of them).
 */
export function describeEventpoll(
  pid: number, epfd: number, id: number, flags: number, fown: FownEntry, fdinfo: string, fds: ReadonlySet<number>,
): EventpollFileEntry | string {
  const watches = parseEpollFdinfo(fdinfo);
  const tfd: EventpollTfdEntry[] = [];
  const seen = new Map<number, number>();
  for (const w of watches) {
    // Several watches may share an fd number (different files registered
    // under it over time); toff picks the n-th one in kcmp.
    const toff = seen.get(w.tfd) ?? 0;
    seen.set(w.tfd, toff + 1);
    let at = w.tfd;
    if (!fds.has(w.tfd) || !sameFile(pid, w.tfd, epfd, w.tfd, toff)) {
      const other = [...fds].sort((a, b) => a - b).find((fd) => fd !== epfd && fd !== w.tfd && sameFile(pid, fd, epfd, w.tfd, toff));
      const was = fds.has(w.tfd) ? 'now refers to another file' : 'is closed';
      if (other === undefined) return `watches fd ${w.tfd}, which ${was}, and no other fd of the process holds the watched file (not supported)`;
      at = other;
    }
    tfd.push({ id, tfd: at, events: w.events, data: w.data, dev: w.sdev, inode: w.ino, pos: w.pos });
  }
  // Two watches under one fd number cannot be added back to one instance.
  const taken = new Map<number, number>();
  for (const [i, t] of tfd.entries()) {
    const j = taken.get(t.tfd);
    if (j !== undefined) {
      return `watches one file both as fd ${watches[j]!.tfd} and as fd ${watches[i]!.tfd}, which cannot be told apart on restore (fd ${t.tfd}) (not supported)`;
    }
    taken.set(t.tfd, i);
  }
  return { id, flags, fown, tfd };
}

/** Whether the file at `fd` in `pid` is the one `epfd` watches as (tfd, toff) (kcmp KCMP_EPOLL_TFD). */
function sameFile(pid: number, fd: number, epfd: number, tfd: number, toff: number): boolean {
  try {
    return addon.kcmpEpollTfd(pid, fd, epfd, tfd, toff) === 0;
  } catch {
    return false;
  }
}

function openFds(pid: number): Set<number> {
  return new Set(readdirSync(`/proc/${pid}/fd`).map(Number));
}

export function eventpollKind(): DumpFdKind<null> {
  return {
    name: 'epoll',
    claim(f) {
      if (f.target !== 'anon_inode:[eventpoll]') return undefined;
      const e = describeEventpoll(f.pid, f.fd, 0, f.flags, ZERO_FOWN, f.fdinfo, openFds(f.pid));
      return typeof e === 'string' ? `${f.where}: ${e}` : { data: null };
    },
    describe(ctx, id, p) {
      const fds = new Set(ctx.allFds.filter((x) => x.pid === p.pid).map((x) => x.fd));
      const e = describeEventpoll(p.pid, p.fd, id, p.flags, p.fown, p.fdinfo, fds);
      if (typeof e === 'string') throw new Error(`${p.where}: ${e}`);
      return { type: FdType.EVENTPOLL, id, epfd: e };
    },
  };
}
