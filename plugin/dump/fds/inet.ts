// IPv4/IPv6 sockets → file_entry.isk (+ tcp-stream-<ino>.img for an
// established TCP connection). Everything is read from a duplicate of the
// process's socket (pidfd_getfd), so the socket itself answers getsockopt.
// What CRIU 4.2 dumps is dumped; what it refuses is refused with its words:
// a connected TCP socket needs --tcp-established, a listening socket with
// connections waiting to be accepted and a corked UDP socket are refused.
// Established connections are put in TCP_REPAIR mode while the tree is
// frozen and read (sequence numbers, both queues, options, window); repair
// mode stays on, so the connection closes silently (no FIN, no RST) when
// the dumped process is killed; `TcpRepairHold.release` turns it off again
// for a tree that keeps running (--leave-running, or a failed dump).
import { writeFile } from 'node:fs/promises';
import { encodeImage, FdType, KIND, type FownEntry, type InetSkEntry, type SkOptsEntry, type TcpStreamEntry } from '../../images/index.js';
import { addon } from '../../native/addon.js';
import type { InetSockState, TcpRepairState } from '../../native/types.js';
import { addrText, lockConnection, netLockAvailable, unlockConnection } from './netlock.js';
import type { DumpFdKind } from './types.js';
import { AF_INET, AF_INET6, IPPROTO_TCP, IPPROTO_UDP, SOCK_DGRAM, SOCK_STREAM } from '../../inject/constants.js';

export const TCP = { ESTABLISHED: 1, SYN_SENT: 2, FIN_WAIT1: 4, FIN_WAIT2: 5, CLOSE: 7, CLOSE_WAIT: 8, LAST_ACK: 9, LISTEN: 10, CLOSING: 11 } as const;

/** CRIU's option name and message for a connected TCP socket. */
export const TCP_ESTABLISHED_MESSAGE = 'Connected TCP socket, consider using --tcp-established option.';

const FAMILY_NAMES: Record<number, string> = { 1: 'unix', 16: 'netlink', 17: 'packet' };
const STATE_NAMES: Record<number, string> = {
  1: 'ESTABLISHED', 2: 'SYN_SENT', 3: 'SYN_RECV', 4: 'FIN_WAIT1', 5: 'FIN_WAIT2', 6: 'TIME_WAIT', 7: 'CLOSE',
  8: 'CLOSE_WAIT', 9: 'LAST_ACK', 10: 'LISTEN', 11: 'CLOSING',
};

export interface InetDumpOptions {
  /** CRIU's --tcp-established. */
  tcpEstablished: boolean;
  /** CRIU's --skip-in-flight. */
  skipInFlight?: boolean;
}

const F_DUPFD_CLOEXEC = 1030;

/** Reads a socket of `pid` through a duplicate; the caller closes `dupFd`. */
export function readSocket(pid: number, fd: number): { dupFd: number; state: InetSockState } {
  const dupFd = addon.restorePidfdGetfd(pid, fd);
  try {
    return { dupFd, state: addon.inetSockDump(dupFd) };
  } catch (e) {
    addon.restoreCloseFd(dupFd);
    throw e;
  }
}

/** Why a socket cannot be dumped (a sentence), or undefined if it can. */
export function inetProblem(s: InetSockState, opts: InetDumpOptions): string | undefined {
  if (s.family !== AF_INET && s.family !== AF_INET6) {
    return `${FAMILY_NAMES[s.family] ?? `family ${s.family}`} sockets are not supported`;
  }
  if (s.type === SOCK_DGRAM) {
    if (s.proto !== IPPROTO_UDP) return `datagram sockets of protocol ${s.proto} are not supported`;
    if (s.udpCork) return 'Can\'t dump corked dgram socket';
    return undefined;
  }
  if (s.type !== SOCK_STREAM || s.proto !== IPPROTO_TCP) return `inet sockets of type ${s.type} protocol ${s.proto} are not supported (only TCP and UDP)`;
  if ((s.filterLen ?? 0) > 0) return 'sockets with a BPF filter (SO_ATTACH_FILTER) are not supported';
  switch (s.state) {
    case TCP.LISTEN:
      if ((s.acceptQueue ?? 0) > 0 && !opts.skipInFlight) {
        return `In-flight connection (l): ${s.acceptQueue} connection(s) not yet accepted; In-flight connections can be ignored with the --skip-in-flight option.`;
      }
      return undefined;
    case TCP.CLOSE:
      return undefined;
    case TCP.ESTABLISHED:
      return opts.tcpEstablished ? undefined : TCP_ESTABLISHED_MESSAGE;
    case TCP.SYN_SENT: case TCP.FIN_WAIT1: case TCP.FIN_WAIT2: case TCP.CLOSE_WAIT: case TCP.LAST_ACK: case TCP.CLOSING:
      if (!opts.tcpEstablished) return TCP_ESTABLISHED_MESSAGE;
      return `TCP connections in state ${STATE_NAMES[s.state]} (half-open or closing) are not supported, only ESTABLISHED`;
    default:
      return `Unknown inet socket state ${s.state}`;
  }
}

/** Address bytes (network order) as CRIU's u32 words (little-endian reads). */
export function addrWords(b: Buffer): number[] {
  const out: number[] = [];
  for (let i = 0; i + 4 <= b.length; i += 4) out.push(b.readUInt32LE(i));
  return out;
}

export function wordsAddr(words: readonly number[]): Buffer {
  const b = Buffer.alloc(words.length * 4);
  words.forEach((w, i) => b.writeUInt32LE(w >>> 0, i * 4));
  return b;
}

function skOpts(s: InetSockState): SkOptsEntry {
  const o: SkOptsEntry = {
    so_sndbuf: s.sndbuf ?? 0, so_rcvbuf: s.rcvbuf ?? 0,
    so_snd_tmo_sec: BigInt(s.sndTmoSec ?? 0), so_snd_tmo_usec: BigInt(s.sndTmoUsec ?? 0),
    so_rcv_tmo_sec: BigInt(s.rcvTmoSec ?? 0), so_rcv_tmo_usec: BigInt(s.rcvTmoUsec ?? 0),
    reuseaddr: s.reuseaddr ?? false, so_priority: s.priority ?? 0, so_rcvlowat: s.rcvlowat ?? 1, so_mark: s.mark ?? 0,
    so_passcred: s.passcred ?? false, so_passsec: s.passsec ?? false, so_dontroute: s.dontroute ?? false,
    so_no_check: s.noCheck ?? false, so_filter: [], so_reuseport: s.reuseport ?? false,
    so_broadcast: s.broadcast ?? false, so_keepalive: s.keepalive ?? false, so_oobinline: s.oobinline ? 1 : 0,
  };
  if (s.boundDev) o.so_bound_dev = s.boundDev;
  if (s.linger !== undefined) o.so_linger = s.linger;
  if (s.bufLock !== undefined) o.so_buf_lock = s.bufLock;
  return o;
}

/** The files.img entry of an inet socket. */
export function inetEntry(id: number, ino: number, flags: number, fown: FownEntry, s: InetSockState): InetSkEntry {
  const e: InetSkEntry = {
    id, ino, family: s.family, type: s.type, proto: s.proto, state: s.state ?? TCP.CLOSE,
    src_port: s.srcPort ?? 0, dst_port: s.dstPort ?? 0, flags, backlog: s.backlog ?? 0,
    src_addr: addrWords(s.src ?? Buffer.alloc(0)), dst_addr: addrWords(s.dst ?? Buffer.alloc(0)),
    fown, opts: skOpts(s),
  };
  if (s.family === AF_INET6) e.v6only = s.v6only ?? false;
  e.ip_opts = s.family === AF_INET
    ? { freebind: s.freebind ?? false, pktinfo: s.pktinfo ?? false, tos: s.tos ?? 0, ttl: s.ttl ?? 64 }
    : { freebind: s.freebind ?? false };
  if (s.proto === IPPROTO_TCP) {
    e.tcp_opts = { cork: s.cork ?? false, nodelay: s.nodelay ?? false, keepcnt: s.keepcnt, keepidle: s.keepidle, keepintvl: s.keepintvl };
  }
  return e;
}

/** tcp-stream-<ino>.img: the entry and its EXTRA bytes (receive queue, then send queue). */
export function tcpStreamEntry(r: TcpRepairState, nodelay: boolean, cork: boolean): { entry: TcpStreamEntry; extra: Buffer } {
  const entry: TcpStreamEntry = {
    inq_len: r.inqLen, inq_seq: r.inqSeq, outq_len: r.outqLen, outq_seq: r.outqSeq, opt_mask: r.optMask,
    snd_wscale: r.sndWscale, mss_clamp: r.mssClamp, rcv_wscale: r.rcvWscale, cork, nodelay, unsq_len: r.unsqLen,
  };
  if (r.timestamp !== undefined) entry.timestamp = r.timestamp;
  if (r.window) {
    entry.snd_wl1 = r.window.sndWl1;
    entry.snd_wnd = r.window.sndWnd;
    entry.max_window = r.window.maxWindow;
    entry.rcv_wnd = r.window.rcvWnd;
    entry.rcv_wup = r.window.rcvWup;
  }
  return { entry, extra: Buffer.concat([r.inqData, r.outqData]) };
}

/**
 * The duplicates of sockets put in repair mode by a dump. `release(true)`
 * (the tree keeps running) turns repair off before closing them;
 * `release(false)` (the tree is being killed) closes them with repair on,
 * so the kernel drops the connections without telling the peer.
 */
export class TcpRepairHold {
  private readonly fds: number[] = [];

  /** Repairs the connection behind `dupFd` (kept open until release) and reads it. */
  repair(dupFd: number): TcpRepairState {
    const st = addon.tcpRepairDump(dupFd);
    this.fds.push(dupFd);
    return st;
  }

  get size(): number {
    return this.fds.length;
  }

  release(keepRunning: boolean): void {
    for (const fd of this.fds.splice(0)) {
      try {
        if (keepRunning) addon.tcpRepair(fd, 0);
      } finally {
        addon.restoreCloseFd(fd);
      }
    }
  }
}

function socketIno(target: string): number {
  const m = /^socket:\[(\d+)\]$/.exec(target);
  return m ? Number(m[1]) : 0;
}

/** The inet socket kind of one dump: claims AF_INET/AF_INET6 sockets, holds repaired connections until finish(). */
export function inetKind(): DumpFdKind<{ ino: number }> {
  const hold = new TcpRepairHold();
  const streams: { ino: number; entry: TcpStreamEntry; extra: Buffer }[] = [];
  const locked: { ino: number; nsPid: number }[] = [];
  return {
    name: 'inet socket',
    claim(f) {
      if (!f.target.startsWith('socket:[')) return undefined;
      let state: InetSockState;
      try {
        const r = readSocket(f.pid, f.fd);
        addon.restoreCloseFd(r.dupFd);
        state = r.state;
      } catch (e) {
        const code = (e as { code?: string }).code;
        if (code === 'EBADF' || code === 'ENOENT') return undefined; // closed meanwhile: the frozen pass decides
        return `${f.where}: cannot read the socket (${code ?? String(e)})`;
      }
      if (state.family !== AF_INET && state.family !== AF_INET6) return undefined; // another kind's (unix ...)
      const p = inetProblem(state, { tcpEstablished: f.tcpEstablished, skipInFlight: f.skipInFlight });
      return p === undefined ? { data: { ino: socketIno(f.target) } } : `${f.where}: ${p}`;
    },
    describe(ctx, id, p, hostFd) {
      const state = addon.inetSockDump(hostFd);
      const problem = inetProblem(state, { tcpEstablished: p.tcpEstablished, skipInFlight: p.skipInFlight });
      if (problem !== undefined) throw new Error(`${p.where}: ${problem}`);
      const isk = inetEntry(id, p.data.ino, p.flags, p.fown, state);
      if (state.proto === IPPROTO_TCP && state.state === TCP.ESTABLISHED) {
        // Network lock first (as CRIU): the peer's packets are dropped until the restore.
        if (netLockAvailable()) {
          lockConnection({
            ino: p.data.ino, family: state.family, local: addrText(state.family, state.src!), localPort: state.srcPort!,
            peer: addrText(state.family, state.dst!), peerPort: state.dstPort!, nsPid: p.pid,
          });
          locked.push({ ino: p.data.ino, nsPid: p.pid });
        } else {
          ctx.log(`${p.where}: nft not found, the network is not locked: the peer's packets until the restore get a RST`);
        }
        const dup = addon.fdFcntl(hostFd, F_DUPFD_CLOEXEC, 0);
        let r: TcpRepairState;
        try {
          r = hold.repair(dup);
        } catch (e) {
          addon.restoreCloseFd(dup);
          throw e;
        }
        streams.push({ ino: p.data.ino, ...tcpStreamEntry(r, state.nodelay ?? false, state.cork ?? false) });
      }
      return { type: FdType.INETSK, id, isk };
    },
    async writeImages(dir) {
      for (const t of streams) {
        await writeFile(dir.pathOf(KIND.tcpStream, t.ino), encodeImage(KIND.tcpStream, [{ message: t.entry, extra: t.extra }]));
      }
    },
    finish(keepRunning) {
      try {
        hold.release(keepRunning);
      } finally {
        // A tree that runs on needs its network back; a killed one's stays locked for the restore.
        if (keepRunning) for (const l of locked.splice(0)) unlockConnection(l.ino, l.nsPid);
      }
    },
  };
}
