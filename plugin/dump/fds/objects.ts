// Dispatch for the fd kinds of event objects and inet sockets: which kind a
// descriptor is (from its /proc/PID/fd link), the look-only check before the
// freeze, and the files.img entry once the tree is frozen. Each kind lives
// in its own module (eventfd, eventpoll, signalfd, timerfd, inotify, inet).
import { readFileSync } from 'node:fs';
import { FdType, type FileEntry, type FownEntry, type TcpStreamEntry } from '../../images/index.js';
import { addon } from '../../native/addon.js';
import { describeEventfd } from './eventfd.js';
import { describeEventpoll } from './eventpoll.js';
import { describeInotify } from './inotify.js';
import { inetEntry, inetProblem, readSocket, tcpStreamEntry, TcpRepairHold, type InetDumpOptions } from './inet.js';
import { describeSignalfd } from './signalfd.js';
import { describeTimerfd } from './timerfd.js';

export type ObjectKind = 'eventfd' | 'eventpoll' | 'signalfd' | 'timerfd' | 'inotify' | 'inet';

export { TcpRepairHold, type InetDumpOptions };

type EventKind = Exclude<ObjectKind, 'inet'>;

const ANON: Record<string, EventKind> = {
  'anon_inode:[eventfd]': 'eventfd',
  'anon_inode:[eventpoll]': 'eventpoll',
  'anon_inode:[signalfd]': 'signalfd',
  'anon_inode:[timerfd]': 'timerfd',
  'anon_inode:inotify': 'inotify',
};

/** The kind of a descriptor by its fd link, if it is one of ours ('socket' until its family is known). */
export function objectKindOf(target: string): EventKind | 'socket' | undefined {
  if (target.startsWith('socket:[')) return 'socket';
  return ANON[target];
}

export function socketIno(target: string): number {
  const m = /^socket:\[(\d+)\]$/.exec(target);
  return m ? Number(m[1]) : 0;
}

const ZERO_FOWN: FownEntry = { uid: 0, euid: 0, signum: 0, pid_type: 0, pid: 0 };

function fdinfoText(pid: number, fd: number): string {
  return readFileSync(`/proc/${pid}/fdinfo/${fd}`, 'utf8');
}

export interface ObjectContext {
  opts: InetDumpOptions;
  /** Open fd numbers of the process (epoll watches must name one). */
  fds: ReadonlySet<number>;
}

/**
 * Look-only check (the tree may be running): the kind, or why the fd
 * cannot be dumped. Sockets are read through a short-lived duplicate.
 */
export function planObject(pid: number, fd: number, target: string, ctx: ObjectContext): ObjectKind | { problem: string } {
  const k = objectKindOf(target);
  if (k === undefined) return { problem: 'this kind of file is not supported' };
  try {
    if (k === 'socket') {
      const { dupFd, state } = readSocket(pid, fd);
      addon.restoreCloseFd(dupFd);
      const p = inetProblem(state, ctx.opts);
      return p === undefined ? 'inet' : { problem: p };
    }
    const r = describe(pid, fd, k, 0, 0, ZERO_FOWN, ctx);
    return typeof r === 'string' ? { problem: r } : k;
  } catch (e) {
    const code = (e as { code?: string }).code;
    if (code === 'ENOENT' || code === 'EBADF') return k === 'socket' ? 'inet' : k; // closed meanwhile: the frozen pass sees it
    return { problem: `cannot read its state (${code ?? String(e)})` };
  }
}

function describe(pid: number, fd: number, k: EventKind, id: number, flags: number, fown: FownEntry, ctx: ObjectContext): FileEntry | string {
  const text = fdinfoText(pid, fd);
  switch (k) {
    case 'eventfd': {
      const e = describeEventfd(id, flags, fown, text);
      return typeof e === 'string' ? e : { type: FdType.EVENTFD, id, efd: e };
    }
    case 'eventpoll': {
      const e = describeEventpoll(pid, fd, id, flags, fown, text, ctx.fds);
      return typeof e === 'string' ? e : { type: FdType.EVENTPOLL, id, epfd: e };
    }
    case 'signalfd': return { type: FdType.SIGNALFD, id, sgfd: describeSignalfd(id, flags, fown, text) };
    case 'timerfd': return { type: FdType.TIMERFD, id, tfd: describeTimerfd(id, flags, fown, text) };
    case 'inotify': {
      const e = describeInotify(pid, id, flags, fown, text);
      return typeof e === 'string' ? e : { type: FdType.INOTIFY, id, ify: e };
    }
  }
}

export interface DescribedObject {
  file: FileEntry;
  /** tcp-stream-<ino>.img of an established connection. */
  tcpStream?: { ino: number; entry: TcpStreamEntry; extra: Buffer };
}

/**
 * The files.img entry of one descriptor of a frozen process. Established
 * TCP connections are put in repair mode (held by `hold`). Throws a
 * sentence (Error) when the fd cannot be dumped after all.
 */
export function describeObject(
  pid: number, fd: number, target: string, kind: ObjectKind, id: number, flags: number, ctx: ObjectContext, hold: TcpRepairHold,
): DescribedObject {
  if (kind !== 'inet') {
    const r = describe(pid, fd, kind, id, flags, ZERO_FOWN, ctx);
    if (typeof r === 'string') throw new Error(r);
    return { file: r };
  }
  const { dupFd, state } = readSocket(pid, fd);
  let held = false;
  try {
    const p = inetProblem(state, ctx.opts);
    if (p !== undefined) throw new Error(p);
    const ino = socketIno(target);
    const isk = inetEntry(id, ino, flags, ZERO_FOWN, state);
    const out: DescribedObject = { file: { type: FdType.INETSK, id, isk } };
    if (state.proto === 6 && state.state === 1) {
      const r = hold.repair(dupFd);
      held = true;
      const s = tcpStreamEntry(r, state.nodelay ?? false, state.cork ?? false);
      out.tcpStream = { ino, ...s };
    }
    return out;
  } finally {
    if (!held) addon.restoreCloseFd(dupFd);
  }
}
