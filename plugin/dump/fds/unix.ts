// Unix sockets → file_entry.usk (CRIU's unix_sk_entry) and their queued
// messages → sk-queues.img (sk_packet_entry + the bytes). What a socket is
// connected to comes from sock_diag (the peer's inode, the listener's
// not-yet-accepted connections), read again for each dump pass; queues are
// peeked from a duplicate of the socket (MSG_PEEK with SO_PEEK_OFF: the
// process keeps its data). As CRIU 4.2: a peer outside the tree refuses the
// dump unless --ext-unix-sk, and then only a named datagram peer is
// accepted (recorded as an extra entry with uflags USK_EXTERN). A message
// carrying file descriptors (SCM_RIGHTS) keeps them as files.img ids in
// its scm entry (CRIU's dump_my_file): the tree's own description when a
// fd of the tree has it, else an entry of its own (a pipe end or file
// only in flight); a unix socket only in flight is refused.
import { writeFile } from 'node:fs/promises';
import { encodeImage, FdType, KIND, USK_EXTERN, type SkOptsEntry, type SkPacketEntry, type UnixSkEntry } from '../../images/index.js';
import { addon } from '../../native/addon.js';
import type { UnixDiagEntry, UnixSockState } from '../../native/types.js';
import { KCMP, kcmpSame } from '../../inject/index.js';
import { AF_UNIX, SOCK_DGRAM, SOCK_SEQPACKET, SOCK_STREAM, SOL_SOCKET } from '../../inject/constants.js';
import { ZERO_FOWN } from './common.js';
import type { DumpFdKind, PlannedFd } from './types.js';

export const UNIX_STATE = { ESTABLISHED: 1, CLOSE: 7, LISTEN: 10 } as const;
const SO_DOMAIN = 39;
const SCM_RIGHTS = 1;
/** Largest receive queue dumped (bytes): unix queues are bounded by socket buffers. */
const MAX_QUEUE = 64 << 20;

/** CRIU's words for a peer outside the tree without --ext-unix-sk. */
export const EXT_UNIX_SK_MESSAGE = 'External socket is used. Consider using --ext-unix-sk option.';

const TYPE_NAMES: Record<number, string> = { [SOCK_STREAM]: 'stream', [SOCK_DGRAM]: 'dgram', [SOCK_SEQPACKET]: 'seqpacket' };

export function unixNameText(name: Buffer | undefined): string {
  if (!name?.length) return '(unnamed)';
  return name[0] === 0 ? `@${name.subarray(1).toString('utf8').replace(/\0/g, '@')}` : name.toString('utf8').replace(/\0+$/, '');
}

function socketIno(target: string): number {
  const m = /^socket:\[(\d+)\]$/.exec(target);
  return m ? Number(m[1]) : 0;
}

function zeroOpts(): SkOptsEntry {
  return { so_sndbuf: 0, so_rcvbuf: 0, so_snd_tmo_sec: 0n, so_snd_tmo_usec: 0n, so_rcv_tmo_sec: 0n, so_rcv_tmo_usec: 0n, so_filter: [] };
}

function skOpts(s: UnixSockState): SkOptsEntry {
  return {
    ...zeroOpts(), so_sndbuf: s.sndbuf, so_rcvbuf: s.rcvbuf,
    so_snd_tmo_sec: BigInt(s.sndTmoSec), so_snd_tmo_usec: BigInt(s.sndTmoUsec),
    so_rcv_tmo_sec: BigInt(s.rcvTmoSec), so_rcv_tmo_usec: BigInt(s.rcvTmoUsec),
    reuseaddr: false, so_priority: s.priority, so_rcvlowat: s.rcvlowat, so_mark: s.mark,
    so_passcred: s.passcred, so_passsec: s.passsec,
  };
}

/** A queued message and the fds its SCM_RIGHTS put in the dumper (the caller closes them). */
interface Peeked {
  data: Buffer;
  fds: number[];
}

function closeAll(msgs: readonly Peeked[]): void {
  for (const m of msgs) for (const fd of m.fds) addon.restoreCloseFd(fd);
}

/** Every message queued for `fd` (a duplicate), or the problem that refuses it. */
function peekQueue(fd: number, type: number): Peeked[] | string {
  try {
    const msgs = addon.sockPeek(fd, MAX_QUEUE, true);
    return type === SOCK_STREAM ? msgs.filter((m) => m.data.length > 0 || m.fds.length > 0) : msgs;
  } catch (e) {
    const code = (e as { code?: string }).code;
    return `cannot read the receive queue (${code ?? String(e)})`;
  }
}

/** Whether `fd` (ours) is a unix socket. */
function isUnixSocket(fd: number): boolean {
  try {
    return addon.getsockoptInt(fd, SOL_SOCKET, SO_DOMAIN) === AF_UNIX;
  } catch {
    return false;
  }
}

/** The unix socket kind of one dump. */
export function unixKind(): DumpFdKind<{ ino: number }> {
  let diag = new Map<number, UnixDiagEntry>();
  /** Not-yet-accepted connection (client inode) → its listener's inode. */
  let icons = new Map<number, number>();
  const queues: { message: SkPacketEntry; extra: Buffer }[] = [];
  const externals = new Map<number, number>();
  /** fds peeked out of queues (SCM_RIGHTS), closed once the images are written. */
  const inFlight: number[] = [];
  const closeInFlight = (): void => {
    for (const fd of inFlight.splice(0)) addon.restoreCloseFd(fd);
  };
  const refresh = (): void => {
    diag = new Map(addon.unixDiag().map((d) => [d.ino, d]));
    icons = new Map();
    for (const d of diag.values()) for (const c of d.icons) if (c) icons.set(c, d.ino);
  };

  /** Why this socket cannot be dumped (a sentence), or undefined. */
  const problem = (p: PlannedFd<{ ino: number }>, inTree: ReadonlySet<number>, extUnixSk: boolean, treeFds: readonly PlannedFd<{ ino: number }>[]): string | undefined => {
    const d = diag.get(p.data.ino);
    if (!d) return 'unix socket not found by sock_diag (a socket of another network namespace is not supported)';
    if (!TYPE_NAMES[d.type]) return `unix sockets of type ${d.type} are not supported`;
    if (d.state !== UNIX_STATE.ESTABLISHED && d.state !== UNIX_STATE.CLOSE && d.state !== UNIX_STATE.LISTEN) return `Unknown state ${d.state} for unix socket ${d.ino}`;
    if (d.state === UNIX_STATE.LISTEN) {
      if (d.icons.some((c) => c === 0)) return `Found a closed in-flight socket to ${d.ino}`;
      return undefined;
    }
    if (d.peer) {
      const peer = diag.get(d.peer);
      if (!inTree.has(d.peer)) {
        if (!extUnixSk) return EXT_UNIX_SK_MESSAGE;
        if (!peer || peer.type !== SOCK_DGRAM) return `Can't dump half of stream unix connection. name: ${unixNameText(d.name)}; peer name: ${unixNameText(peer?.name)}`;
        if (!peer.name?.length) return 'Can\'t dump name-less external socket.';
      } else if (peer && peer.peer !== d.ino && !peer.name?.length) {
        return `Unix socket ${d.ino} with unreachable peer ${d.peer} (${peer.peer})`;
      }
    } else if (d.state === UNIX_STATE.ESTABLISHED && d.type !== SOCK_DGRAM) {
      const listener = icons.get(d.ino);
      if (listener === undefined) {
        if (d.shutdown !== 3) return `Dangling connection ${d.ino}`;
      } else {
        if (!inTree.has(listener)) return `In-flight connection ${d.ino} to a listening socket outside the tree`;
        if (d.wqlen !== 0) return `Non-empty write queue on an in-flight socket ${d.ino}`;
      }
    }
    if (d.rqlen > 0) {
      const dup = addon.restorePidfdGetfd(p.pid, p.fd);
      try {
        const q = peekQueue(dup, d.type);
        if (typeof q === 'string') return q;
        try {
          // A unix socket passed in a message and closed by its sender (in flight only) is not dumped.
          for (const m of q) {
            for (const fd of m.fds) {
              if (!isUnixSocket(fd)) continue;
              const self = process.pid;
              if (!treeFds.some((t) => kcmpSame(t.pid, self, KCMP.FILE, t.fd, fd))) {
                return 'a queued message carries a unix socket that no process of the tree holds (in-flight socket, SCM_RIGHTS), which is not supported';
              }
            }
          }
        } finally {
          closeAll(q);
        }
      } finally {
        addon.restoreCloseFd(dup);
      }
    }
    return undefined;
  };

  return {
    name: 'unix socket',
    claim(f) {
      if (!f.target.startsWith('socket:[')) return undefined;
      let domain: number;
      try {
        const dup = addon.restorePidfdGetfd(f.pid, f.fd);
        try {
          domain = addon.getsockoptInt(dup, SOL_SOCKET, SO_DOMAIN);
        } finally {
          addon.restoreCloseFd(dup);
        }
      } catch (e) {
        const code = (e as { code?: string }).code;
        if (code === 'EBADF' || code === 'ENOENT') return undefined;
        return `${f.where}: cannot read the socket (${code ?? String(e)})`;
      }
      if (domain !== AF_UNIX) return undefined;
      return { data: { ino: socketIno(f.target) } };
    },
    checkTree(fds, ctx) {
      refresh();
      const inTree = new Set(fds.map((f) => f.data.ino));
      const problems: string[] = [];
      const seen = new Set<number>();
      for (const f of fds) {
        if (seen.has(f.data.ino)) continue;
        seen.add(f.data.ino);
        const why = problem(f, inTree, ctx.options.extUnixSk, fds);
        if (why) problems.push(`${f.where}: ${why}`);
      }
      return problems;
    },
    describe(ctx, id, p, hostFd) {
      const d = diag.get(p.data.ino);
      if (!d) throw new Error(`${p.where}: unix socket not found by sock_diag`);
      const st = addon.unixSockDump(hostFd);
      const name = d.name ?? Buffer.alloc(0);
      const ue: UnixSkEntry = {
        id, ino: d.ino, type: d.type, state: d.state, flags: p.flags, uflags: 0,
        backlog: d.state === UNIX_STATE.LISTEN ? d.wqlen : 0, peer: d.peer || (icons.get(d.ino) ?? 0),
        fown: p.fown, opts: skOpts(st), name,
      };
      if (d.shutdown) ue.shutdown = d.shutdown;
      if (name.length && name[0] !== 0) {
        const text = name.toString('utf8').replace(/\0+$/, '');
        const f = st.file;
        if (!f) ue.deleted = true;
        else {
          if (f.deleted) ue.deleted = true;
          if (f.mode !== undefined) ue.file_perms = { mode: f.mode, uid: f.uid ?? 0, gid: f.gid ?? 0 };
          if (!text.startsWith('/')) {
            if (!f.path.endsWith(`/${text}`)) throw new Error(`${p.where}: cannot resolve the relative socket name ${text} (bound file ${f.path})`);
            ue.name_dir = f.path.slice(0, f.path.length - text.length - 1) || '/';
          }
        }
      }
      if (d.rqlen > 0 && d.state !== UNIX_STATE.LISTEN) {
        const q = peekQueue(hostFd, d.type);
        if (typeof q === 'string') throw new Error(`${p.where}: ${q}`);
        // Kept open until the images are written: the table compares later fds with them (kcmp).
        for (const m of q) inFlight.push(...m.fds);
        for (const m of q) {
          const scm = m.fds.length ? [{ type: SCM_RIGHTS, rights: m.fds.map((fd) => ctx.scmFile(fd, p.where)) }] : [];
          queues.push({ message: { id_for: id, length: m.data.length, scm }, extra: m.data });
        }
      }
      const inTree = new Set(ctx.allFds.filter((f) => f.kind === p.kind).map((f) => (f.data as { ino: number }).ino));
      if (d.peer && !inTree.has(d.peer) && !externals.has(d.peer)) {
        const peer = diag.get(d.peer);
        const eid = ctx.newId();
        externals.set(d.peer, eid);
        ctx.addEntry({
          type: FdType.UNIXSK, id: eid,
          usk: {
            id: eid, ino: d.peer, type: SOCK_DGRAM, state: UNIX_STATE.LISTEN, flags: 0, uflags: USK_EXTERN, backlog: 0, peer: 0,
            fown: ZERO_FOWN, opts: zeroOpts(), name: peer?.name ?? Buffer.alloc(0),
          },
        });
        ctx.log(`${p.where}: peer ${d.peer} (${unixNameText(peer?.name)}) is outside the tree: dumped as external (--ext-unix-sk)`);
      }
      return { type: FdType.UNIXSK, id, usk: ue };
    },
    async writeImages(dir) {
      closeInFlight();
      if (!queues.length) return;
      await writeFile(dir.pathOf(KIND.skQueues), encodeImage(KIND.skQueues, queues));
    },
    finish() {
      closeInFlight();
    },
  };
}
