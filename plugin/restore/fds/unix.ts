// Unix sockets (files.img usk entries, queued messages in sk-queues.img),
// created inside their first owner by injected syscalls, as CRIU 4.2 does:
//  - two sockets that are each other's peer (a socketpair, or a client and
//    the connection a listener accepted) → one socketpair(); each queue is
//    written through the other end, message by message;
//  - any other socket → socket(), bind to its name (a path is unlinked
//    first, then its mode and owner are put back; a name that was unlinked
//    is unlinked again after the bind), listen, connect to its peer by name
//    (a listener or datagram socket of the tree, or with --ext-unix-sk the
//    external one). A datagram socket's queue is sent again to its name by
//    a temporary socket before it connects (a connected datagram socket
//    accepts only its peer's messages; a disconnect would drop the queue);
//    a semi-closed connection gets its queue from a temporary socketpair
//    end that is closed again (the reader sees the data, then EOF).
//  - then the socket options, then the shutdown state.
// A connected stream socket's own name is not restored (CRIU's FIXME too).
import { Errno, ImageError, UserError } from '../../errors.js';
import { FdType, KIND, USK_EXTERN, type FileEntry, type SkPacketEntry, type UnixSkEntry } from '../../images/index.js';
import { addon } from '../../native/addon.js';
import type { UnixSockOpts } from '../../native/types.js';
import { unixNameText } from '../../dump/fds/unix.js';
import { InjectedSyscallError, NR, type RemoteTask } from '../task.js';
import type { CreateContext, LoadContext, RestoreFdKind } from './types.js';
import { UnixGhosts } from './unix-ghost.js';
import { AF_UNIX, SOCK_CLOEXEC, SOCK_DGRAM, SOCK_SEQPACKET, SOCK_STREAM } from '../../inject/constants.js';

const SCM_RIGHTS = 1;

/** One queued message and the files.img ids of the files it carries (SCM_RIGHTS). */
interface QueuedMessage {
  data: Buffer;
  rights: number[];
}
const ESTABLISHED = 1;
const CLOSE = 7;
const LISTEN = 10;
const AT_FDCWD = -100;
const AT_SYMLINK_NOFOLLOW = 0x100;
const SHUTDOWN_BOTH = 3;
/** Scratch offsets (the fd kinds own 0x0-0x1fff of the task's scratch page). */
const SCR_ADDR = 0x1800n;
const SCR_PAIR = 0x1900n;
const SCR_PATH = 0x1a00n;
const SCR_PATH2 = 0x1b00n;
const SUN_PATH_MAX = 108;

/** The external message CRIU prints when --ext-unix-sk is missing at restore. */
export const EXT_UNIX_SK_RESTORE_MESSAGE = 'External socket found in image. Consider using the --ext-unix-sk option to allow restoring it.';

function usk(f: FileEntry): UnixSkEntry {
  return f.usk!;
}

function optsOf(e: UnixSkEntry): UnixSockOpts {
  const o = e.opts;
  return {
    sndbuf: o.so_sndbuf, rcvbuf: o.so_rcvbuf,
    sndTmoSec: Number(o.so_snd_tmo_sec), sndTmoUsec: Number(o.so_snd_tmo_usec),
    rcvTmoSec: Number(o.so_rcv_tmo_sec), rcvTmoUsec: Number(o.so_rcv_tmo_usec),
    passcred: o.so_passcred ?? false, passsec: o.so_passsec ?? false,
    priority: o.so_priority ?? 0, rcvlowat: o.so_rcvlowat ?? 1, mark: o.so_mark ?? 0,
  };
}

export function unixKind(): RestoreFdKind {
  /** Queued messages by the files.img id of the socket that holds them (with the files their SCM_RIGHTS carry). */
  const queues = new Map<number, QueuedMessage[]>();
  let image: Awaited<ReturnType<LoadContext['dir']['readImage']>> | undefined;
  const readQueues = async (ctx: LoadContext): Promise<NonNullable<typeof image> | null> => {
    if (image === undefined) image = await ctx.dir.readImage(KIND.skQueues);
    return image ?? null;
  };
  let byIno = new Map<number, FileEntry>();
  // Sockets bound to names unlinked at dump time (plugin/restore/fds/unix-ghost.ts).
  const ghosts = new UnixGhosts((task, s, slot = 0) => task.putString(s, slot ? SCR_PATH2 : SCR_PATH));

  const indexSockets = (ctx: LoadContext): void => {
    byIno = new Map();
    for (const f of ctx.files.values()) if (f.type === FdType.UNIXSK && f.usk) byIno.set(f.usk.ino, f);
  };

  /** The peer entry when the two sockets are each other's peer and both are fds of the tree. */
  const pairPeer = (ctx: LoadContext, e: UnixSkEntry): FileEntry | undefined => {
    if (!e.peer) return undefined;
    const p = byIno.get(e.peer);
    if (!p?.usk || (p.usk.uflags & USK_EXTERN) || p.usk.peer !== e.ino || p.usk.ino === e.ino) return undefined;
    return ctx.uses(p.id).length ? p : undefined;
  };

  const sockaddr = (name: Buffer): { addr: Buffer; len: number } => {
    const addr = Buffer.alloc(2 + SUN_PATH_MAX);
    addr.writeUInt16LE(AF_UNIX, 0);
    name.copy(addr, 2);
    return { addr, len: 2 + name.length };
  };

  /** The path a name resolves to from the task (with its name_dir, the task's cwd is set to it first). */
  const enterDir = (task: RemoteTask, e: UnixSkEntry): void => {
    if (e.name_dir && e.name[0] !== 0) task.call(`chdir(${e.name_dir})`, NR.chdir, task.putString(e.name_dir, SCR_PATH));
  };

  const connectTo = (task: RemoteTask, fd: number, peer: UnixSkEntry, what: string): void => {
    // A peer whose name is unlinked again is reached through the restorer's hold on its file.
    const ghost = ghosts.connectPath(peer);
    if (ghost === undefined) enterDir(task, peer);
    const { addr, len } = sockaddr(ghost !== undefined ? Buffer.from(ghost) : peer.name);
    task.write(task.scratch + SCR_ADDR, addr);
    try {
      task.call(`connect to ${unixNameText(peer.name)}`, NR.connect, fd, task.scratch + SCR_ADDR, len);
    } catch (err) {
      throw new UserError(`${what}: cannot connect to ${unixNameText(peer.name)}: ${(err as InjectedSyscallError).code ?? String(err)}`, { cause: err });
    }
  };

  const bindName = (task: RemoteTask, fd: number, e: UnixSkEntry, what: string): void => {
    if (!e.name.length) return;
    if (e.type !== SOCK_DGRAM && e.state === ESTABLISHED) return; // as CRIU: the listener owns the name
    const isPath = e.name[0] !== 0;
    const pathText = e.name.toString('utf8').replace(/\0+$/, '');
    enterDir(task, e);
    if (isPath && !e.deleted) {
      const r = task.raw(NR.unlinkat, AT_FDCWD, task.putString(pathText, SCR_PATH), 0);
      if (r < 0n && r !== BigInt(-Errno.ENOENT)) throw new UserError(`${what}: cannot unlink ${pathText} before binding to it: ${new InjectedSyscallError(task.pid, 'unlink', Number(-r)).code}`);
    }
    if (isPath && e.deleted) ghosts.prepare(task, e, pathText, what);
    const { addr, len } = sockaddr(e.name);
    task.write(task.scratch + SCR_ADDR, addr);
    try {
      task.call(`bind(${unixNameText(e.name)})`, NR.bind, fd, task.scratch + SCR_ADDR, len);
    } catch (err) {
      throw new UserError(`${what}: cannot bind to ${unixNameText(e.name)}: ${(err as InjectedSyscallError).code ?? String(err)}`, { cause: err });
    }
    if (isPath && e.deleted) ghosts.keep(task, e, pathText, what);
    if (!isPath || e.deleted) return;
    const p = task.putString(pathText, SCR_PATH);
    if (e.file_perms) {
      task.call(`chmod(${pathText})`, NR.fchmodat, AT_FDCWD, p, e.file_perms.mode & 0o7777);
      task.call(`chown(${pathText})`, NR.fchownat, AT_FDCWD, p, e.file_perms.uid, e.file_perms.gid, AT_SYMLINK_NOFOLLOW);
    }
  };

  /** A name that was unlinked at dump time is unlinked again once the socket is bound (and its queue is back). */
  const unlinkIfDeleted = (task: RemoteTask, e: UnixSkEntry, what: string, cleanup = true): void => {
    if (!e.deleted || !e.name.length || e.name[0] === 0) return;
    if (e.type !== SOCK_DGRAM && e.state === ESTABLISHED) return;
    enterDir(task, e);
    const pathText = e.name.toString('utf8').replace(/\0+$/, '');
    task.call(`unlink(${pathText})`, NR.unlinkat, AT_FDCWD, task.putString(pathText, SCR_PATH), 0);
    if (cleanup) ghosts.cleanup(task, e, what);
  };

  /**
   * Writes `msgs` into the socket whose peer is `hostFd` (one send per
   * message); the files a message carries are created first (ctx.ensure)
   * and attached to its first send (SCM_RIGHTS).
   */
  const fill = (ctx: CreateContext, hostFd: number, msgs: readonly QueuedMessage[], type: number, what: string): void => {
    if (!msgs.length) return;
    const total = msgs.reduce((n, m) => n + m.data.length, 0);
    // The sender's buffer bounds what can be queued: make room (its dumped value is set afterwards).
    addon.unixSockOptsRestore(hostFd, { ...NO_OPTS, sndbuf: Math.max(total * 4, 1 << 20) });
    for (const m of msgs) {
      const fds = m.rights.map((id) => ctx.ensure(id));
      let off = 0;
      do {
        let n: number;
        try {
          n = off === 0 && fds.length ? addon.sendFdsNoWait(hostFd, m.data, fds) : addon.sendNoWait(hostFd, m.data.subarray(off));
        } catch (err) {
          throw new UserError(`${what}: cannot queue ${m.data.length} bytes${fds.length ? ` with ${fds.length} fds` : ''} again: ${(err as { code?: string }).code ?? String(err)}`, { cause: err });
        }
        if (type !== SOCK_STREAM && n !== m.data.length) throw new UserError(`${what}: a ${m.data.length}-byte message was queued as ${n} bytes`);
        off += n;
      } while (off < m.data.length);
    }
  };

  const finishSocket = (ctx: CreateContext, task: RemoteTask, fd: number, e: UnixSkEntry): void => {
    const h = ctx.pull(task, fd);
    try {
      addon.unixSockOptsRestore(h, optsOf(e));
    } finally {
      addon.restoreCloseFd(h);
    }
    if (e.shutdown) task.call(`shutdown(${fd})`, NR.shutdown, fd, e.shutdown - 1);
  };

  const socketpair = (task: RemoteTask, type: number): [number, number] => {
    task.call('socketpair(AF_UNIX)', NR.socketpair, AF_UNIX, type | SOCK_CLOEXEC, 0, task.scratch + SCR_PAIR);
    const b = task.read(task.scratch + SCR_PAIR, 8);
    return [b.readInt32LE(0), b.readInt32LE(4)];
  };

  return {
    type: FdType.UNIXSK,
    name: 'unix socket',
    async inFlight(ctx) {
      const img = await readQueues(ctx);
      const ids: number[] = [];
      for (const x of img?.entries ?? []) {
        for (const sc of (x.message as unknown as SkPacketEntry).scm ?? []) {
          for (const id of sc.rights ?? []) if (!ctx.uses(id).length) ids.push(id);
        }
      }
      return ids;
    },
    async load(ctx) {
      indexSockets(ctx);
      const img = await readQueues(ctx);
      for (const x of img?.entries ?? []) {
        const m = x.message as unknown as SkPacketEntry;
        const data = x.extra ?? Buffer.alloc(0);
        if (data.length !== m.length) throw new ImageError(img!.file, x.offset, `socket id ${m.id_for}: ${m.length} bytes announced, ${data.length} present`);
        const rights: number[] = [];
        for (const sc of m.scm ?? []) {
          if (sc.type !== SCM_RIGHTS) throw new ImageError(img!.file, x.offset, `socket id ${m.id_for}: control message type ${sc.type} is not supported (only SCM_RIGHTS)`);
          for (const id of sc.rights ?? []) {
            if (!ctx.files.has(id)) throw new ImageError(img!.file, x.offset, `socket id ${m.id_for}: a queued message carries file id ${id}, which files.img does not have`);
            rights.push(id);
          }
        }
        let l = queues.get(m.id_for);
        if (!l) queues.set(m.id_for, (l = []));
        l.push({ data, rights });
      }
    },
    check(ctx, file, use) {
      const where = `pid ${use.pid}: fd ${use.fd} (unix socket)`;
      const e = file.usk;
      if (!e) throw new UserError(`${where}: files.img id ${file.id} has no unix socket data`);
      if (e.type !== SOCK_STREAM && e.type !== SOCK_DGRAM && e.type !== SOCK_SEQPACKET) throw new UserError(`${where}: socket type ${e.type} is not supported (stream, dgram, seqpacket)`);
      if (e.state !== ESTABLISHED && e.state !== CLOSE && e.state !== LISTEN) throw new UserError(`${where}: socket state ${e.state} is not supported (ESTABLISHED, CLOSE, LISTEN)`);
      if (e.uflags & ~USK_EXTERN) throw new UserError(`${where}: socket flags 0x${e.uflags.toString(16)} (service, callback or inherited sockets) are not supported`);
      if (e.uflags & USK_EXTERN) throw new UserError(`${where}: files.img id ${file.id} describes a socket outside the tree (external), not one of the tree's`);
      if (e.name.length > SUN_PATH_MAX) throw new UserError(`${where}: socket name of ${e.name.length} bytes is too long`);
      if (e.peer && !pairPeer(ctx, e)) {
        const p = byIno.get(e.peer);
        if (!p?.usk) throw new UserError(`${where}: its peer socket (ino ${e.peer}) is not in the image`);
        if (p.usk.uflags & USK_EXTERN) {
          if (!ctx.options.extUnixSk) throw new UserError(`${where}: ${EXT_UNIX_SK_RESTORE_MESSAGE}`);
        } else if (!p.usk.name.length) {
          throw new UserError(`${where}: its peer socket (ino ${e.peer}) has no name to connect to`);
        } else if (!ctx.uses(p.id).length) {
          throw new UserError(`${where}: its peer socket (ino ${e.peer}) is not open in the tree`);
        }
        if (e.type !== SOCK_DGRAM && p.usk.state !== LISTEN) throw new UserError(`${where}: a connected ${e.type === SOCK_STREAM ? 'stream' : 'seqpacket'} socket whose peer (ino ${e.peer}) is neither its peer nor listening`);
      } else if (!e.peer && e.type !== SOCK_DGRAM && e.state === ESTABLISHED && e.shutdown !== SHUTDOWN_BOTH) {
        throw new UserError(`${where}: connected socket without a peer (dangling connection)`);
      }
    },
    flags: (f) => usk(f).flags,
    fown: (f) => usk(f).fown,
    finish() {
      ghosts.close();
    },
    create(ctx, file, owner) {
      const e = usk(file);
      const what = `pid ${owner.pid}: unix socket ino ${e.ino} (${unixNameText(e.name)})`;
      const peerFile = pairPeer(ctx, e);
      if (peerFile) {
        const p = usk(peerFile);
        const [a, b] = socketpair(owner, e.type);
        try {
          const ha = ctx.pull(owner, a);
          const hb = ctx.pull(owner, b);
          try {
            fill(ctx, hb, queues.get(file.id) ?? [], e.type, what);
            fill(ctx, ha, queues.get(peerFile.id) ?? [], e.type, what);
          } finally {
            addon.restoreCloseFd(ha);
            addon.restoreCloseFd(hb);
          }
          if (e.type === SOCK_DGRAM) {
            // An unlinked name goes right after its bind (both ends may have had the same
            // one); the directories made for them after both (they may share one).
            bindName(owner, a, e, what);
            unlinkIfDeleted(owner, e, what, false);
            bindName(owner, b, p, what);
            unlinkIfDeleted(owner, p, what, false);
            ghosts.cleanup(owner, p, what);
            ghosts.cleanup(owner, e, what);
          }
          finishSocket(ctx, owner, a, e);
          finishSocket(ctx, owner, b, p);
        } catch (err) {
          owner.raw(NR.close, a);
          owner.raw(NR.close, b);
          throw err;
        }
        ctx.provide(peerFile.id, { taskFd: b, task: owner });
        return { taskFd: a };
      }
      const msgs = queues.get(file.id) ?? [];
      const semiClosed = e.type !== SOCK_DGRAM && e.state === ESTABLISHED && !e.peer;
      let fd: number;
      // An unnamed datagram socket with a queue and no peer was connected to a socket that is gone.
      const orphanDgram = e.type === SOCK_DGRAM && !e.name.length && !e.peer;
      if ((e.type !== SOCK_DGRAM || orphanDgram) && (msgs.length || semiClosed)) {
        // A connection whose peer is gone: its queue comes from a temporary peer, closed again
        // (as the original's peer was: a later send fails as it would have).
        const [x, t] = socketpair(owner, e.type);
        try {
          const ht = ctx.pull(owner, t);
          try {
            fill(ctx, ht, msgs, e.type, what);
          } finally {
            addon.restoreCloseFd(ht);
          }
        } catch (err) {
          owner.raw(NR.close, x);
          throw err;
        } finally {
          owner.raw(NR.close, t);
        }
        fd = x;
      } else {
        fd = Number(owner.call('socket(AF_UNIX)', NR.socket, AF_UNIX, e.type | SOCK_CLOEXEC, 0));
      }
      try {
        bindName(owner, fd, e, what);
        if (e.type === SOCK_DGRAM && msgs.length && !orphanDgram) {
          // Datagrams are queued again by a temporary socket that sends to the name, before
          // the socket connects to its own peer (which would refuse other senders).
          if (!e.name.length) throw new UserError(`${what}: ${msgs.length} queued datagram(s) on a socket with neither a name nor a peer in the tree cannot be queued again`);
          const t = Number(owner.call('socket(AF_UNIX)', NR.socket, AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0));
          try {
            connectTo(owner, t, e, what);
            const ht = ctx.pull(owner, t);
            try {
              fill(ctx, ht, msgs, e.type, what);
            } finally {
              addon.restoreCloseFd(ht);
            }
          } finally {
            owner.raw(NR.close, t);
          }
        }
        unlinkIfDeleted(owner, e, what);
        if (e.state === LISTEN) owner.call(`listen(${unixNameText(e.name)})`, NR.listen, fd, e.backlog);
        if (e.peer) {
          const p = byIno.get(e.peer)!;
          if (!(usk(p).uflags & USK_EXTERN)) {
            if (p.id !== file.id) ctx.ensure(p.id); // bound (and listening) before we connect; a socket may be its own peer
          }
          else ctx.log(`${what}: connecting to the external socket ${unixNameText(usk(p).name)} (--ext-unix-sk)`);
          connectTo(owner, fd, usk(p), what);
        }
        finishSocket(ctx, owner, fd, e);
      } catch (err) {
        owner.raw(NR.close, fd);
        throw err;
      }
      return { taskFd: fd };
    },
  };
}

const NO_OPTS: UnixSockOpts = {
  sndbuf: 0, rcvbuf: 0, sndTmoSec: 0, sndTmoUsec: 0, rcvTmoSec: 0, rcvTmoUsec: 0, passcred: false, passsec: false, priority: 0, rcvlowat: 0, mark: 0,
};
