// Restore of event objects and inet sockets: planning (from files.img, and
// tcp-stream-<ino>.img for established connections; refused before
// anything is created) and re-creation inside each restored process, after
// its regular files: every kind but epoll first, then the epoll instances,
// whose watches name the other fds by number. Descriptors sharing one open
// file description (same file id) are dup3'ed from the first.
import { ImageError, UserError } from '../../errors.js';
import { FdType, KIND, type FdinfoEntry, type FileEntry, type ImageDir, type TcpStreamEntry } from '../../images/index.js';
import { NR, type RemoteTask } from '../task.js';
import { restoreEventfd } from './eventfd.js';
import { orderEpolls, restoreEventpoll } from './eventpoll.js';
import { isTcpConnection, restoreInet, type TcpStream } from './inet.js';
import { restoreInotify } from './inotify.js';
import { restoreSignalfd } from './signalfd.js';
import { restoreTimerfd } from './timerfd.js';

const O_CLOEXEC = 0o2000000;

export interface ObjectFdPlan {
  fd: number;
  id: number;
  cloexec: boolean;
  file: FileEntry;
  stream?: TcpStream;
}

export interface ObjectRestoreOptions {
  /** CRIU's --tcp-established. */
  tcpEstablished: boolean;
}

const KIND_NAMES: Record<number, string> = {
  [FdType.INETSK]: 'inet socket', [FdType.UNIXSK]: 'unix socket', [FdType.PACKETSK]: 'packet socket',
  [FdType.NETLINKSK]: 'netlink socket', [FdType.EVENTFD]: 'eventfd', [FdType.EVENTPOLL]: 'epoll',
  [FdType.SIGNALFD]: 'signalfd', [FdType.TIMERFD]: 'timerfd', [FdType.INOTIFY]: 'inotify', [FdType.FANOTIFY]: 'fanotify',
  [FdType.NS]: 'namespace file', [FdType.TUNF]: 'tun device', [FdType.MEMFD]: 'memfd', [FdType.BPFMAP]: 'bpf map',
  [FdType.PIDFD]: 'pidfd', [FdType.FIFO]: 'fifo', [FdType.PIPE]: 'pipe', [FdType.EXT]: 'external file', [FdType.TTY]: 'tty',
};

/** A readable name for a file_entry type ("unix socket (UNIXSK)"). */
export function fdKindName(type: number): string {
  const sym = Object.entries(FdType).find(([, v]) => v === type)?.[0];
  return `${KIND_NAMES[type] ?? `type ${type}`}${sym ? ` (${sym})` : ''}`;
}

const OURS = new Set<number>([FdType.INETSK, FdType.EVENTFD, FdType.EVENTPOLL, FdType.SIGNALFD, FdType.TIMERFD, FdType.INOTIFY]);

export function isObjectFd(f: FileEntry): boolean {
  return OURS.has(f.type);
}

/** Plans one fd of ours; throws a UserError/ImageError naming pid and fd for what cannot be restored. */
export async function planObjectFd(dir: ImageDir, pid: number, fi: FdinfoEntry, f: FileEntry, opts: ObjectRestoreOptions): Promise<ObjectFdPlan> {
  const where = `pid ${pid}: fd ${fi.fd} (${fdKindName(f.type)})`;
  const sub = f.isk ?? f.efd ?? f.epfd ?? f.sgfd ?? f.tfd ?? f.ify;
  if (!sub) throw new ImageError(dir.pathOf(KIND.files), undefined, `file id ${f.id} (${fdKindName(f.type)}) has no ${fdKindName(f.type)} entry`);
  const plan: ObjectFdPlan = { fd: fi.fd, id: fi.id, cloexec: (fi.flags & 1) !== 0, file: f };
  const isk = f.isk;
  if (isk) {
    if (isk.family !== 2 && isk.family !== 10) throw new UserError(`${where}: address family ${isk.family} is not supported`);
    if (!((isk.type === 1 && isk.proto === 6) || (isk.type === 2 && isk.proto === 17))) {
      throw new UserError(`${where}: socket type ${isk.type} protocol ${isk.proto} is not supported (only TCP and UDP)`);
    }
    if (isTcpConnection(isk)) {
      if (!opts.tcpEstablished) throw new UserError(`${where}: Connected TCP socket in image (restore with --tcp-established)`);
      if (isk.state !== 1) throw new UserError(`${where}: TCP state ${isk.state} is not supported, only ESTABLISHED`);
      const img = await dir.readImage(KIND.tcpStream, isk.ino);
      const file = dir.pathOf(KIND.tcpStream, isk.ino);
      if (!img) throw new UserError(`${where}: ${file} is missing (ENOENT)`);
      const e = img.entries[0];
      if (!e || img.entries.length !== 1) throw new ImageError(file, undefined, `expected exactly one entry, found ${img.entries.length}`);
      const entry = e.message as unknown as TcpStreamEntry;
      const data = e.extra ?? Buffer.alloc(0);
      if (data.length !== entry.inq_len + entry.outq_len) {
        throw new ImageError(file, undefined, `${data.length} queued bytes, the entry says ${entry.inq_len} + ${entry.outq_len}`);
      }
      plan.stream = { entry, data };
    }
  }
  return plan;
}

function createOne(t: RemoteTask, o: ObjectFdPlan, opts: ObjectRestoreOptions): void {
  const f = o.file;
  if (f.efd) restoreEventfd(t, o.fd, f.efd, o.cloexec);
  else if (f.sgfd) restoreSignalfd(t, o.fd, f.sgfd, o.cloexec);
  else if (f.tfd) restoreTimerfd(t, o.fd, f.tfd, o.cloexec);
  else if (f.ify) restoreInotify(t, o.fd, f.ify, o.cloexec);
  else if (f.isk) restoreInet(t, o.fd, f.isk, o.cloexec, { tcpEstablished: opts.tcpEstablished, ...(o.stream ? { stream: o.stream } : {}) });
  else if (f.epfd) restoreEventpoll(t, o.fd, f.epfd, o.cloexec);
}

/** Recreates the planned object fds of one process (after its regular files). */
export function restoreObjectFds(t: RemoteTask, objs: readonly ObjectFdPlan[], opts: ObjectRestoreOptions): void {
  const firstFd = new Map<number, number>();
  const place = (o: ObjectFdPlan): void => {
    const shared = firstFd.get(o.id);
    if (shared !== undefined) {
      t.call(`dup3(${shared}, ${o.fd})`, NR.dup3, shared, o.fd, o.cloexec ? O_CLOEXEC : 0);
      return;
    }
    createOne(t, o, opts);
    firstFd.set(o.id, o.fd);
  };
  const sorted = [...objs].sort((a, b) => a.fd - b.fd);
  for (const o of sorted) if (!o.file.epfd) place(o);
  const eps = orderEpolls(sorted.filter((o) => o.file.epfd).map((o) => ({ fd: o.fd, entry: o.file.epfd!, o })));
  for (const x of eps) place(x.o);
}
