// epoll → file_entry.epfd: every watched (fd, events, data) from fdinfo's
// "tfd:" lines. The kernel keys a watch by (file, fd number), so restore
// re-adds each watch with epoll_ctl on the same fd number; that is only
// faithful if the fd number still names the watched file. kcmp
// (KCMP_EPOLL_TFD) checks that, as CRIU does; a watch whose fd was closed
// or reused is refused, naming it.
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
    if (!fds.has(w.tfd)) return `watches fd ${w.tfd}, which is closed (a watch on a file only reachable through a dup or another fd is not supported)`;
    let same: number;
    try {
      same = addon.kcmpEpollTfd(pid, w.tfd, epfd, w.tfd, toff);
    } catch (e) {
      return `cannot check watched fd ${w.tfd} (${(e as { code?: string }).code ?? String(e)})`;
    }
    if (same !== 0) return `watches fd ${w.tfd}, which now refers to another file (a watch on a file only reachable through a dup or another fd is not supported)`;
    tfd.push({ id, tfd: w.tfd, events: w.events, data: w.data, dev: w.sdev, inode: w.ino, pos: w.pos });
  }
  return { id, flags, fown, tfd };
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
