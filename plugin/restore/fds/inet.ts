// IPv4/IPv6 sockets (TCP, UDP): socket() inside the owner, then the rest
// (options, bind, listen/connect, or the TCP_REPAIR sequence of an
// established connection with its queues from tcp-stream-<ino>.img) done
// natively on a duplicate taken with pidfd_getfd — the same socket.
// Without --tcp-established an image holding a connection is refused at
// plan time, as CRIU does.
import { ImageError, UserError } from '../../errors.js';
import { FdType, KIND, type FileEntry, type InetSkEntry, type TcpStreamEntry } from '../../images/index.js';
import { addon } from '../../native/addon.js';
import type { InetSockSpec } from '../../native/types.js';
import { wordsAddr } from '../../dump/fds/inet.js';
import { unlockConnection } from '../../dump/fds/netlock.js';
import { AF_INET, AF_INET6, IPPROTO_TCP, IPPROTO_UDP, SOCK_DGRAM, SOCK_STREAM } from '../../inject/constants.js';
import { NR } from '../task.js';
import type { RestoreFdKind } from './types.js';

const TCP_ESTABLISHED = 1;
const TCP_CLOSE = 7;
const TCP_LISTEN = 10;

export interface TcpStream {
  entry: TcpStreamEntry;
  /** Receive queue then send queue (the image's EXTRA bytes). */
  data: Buffer;
}

/** Whether restoring this socket needs --tcp-established (a connected TCP socket). */
export function isTcpConnection(e: InetSkEntry): boolean {
  return e.type === 1 && e.state !== TCP_LISTEN && e.state !== TCP_CLOSE;
}

function isk(f: FileEntry): InetSkEntry {
  return f.isk!;
}

export function inetSpec(e: InetSkEntry, stream: TcpStream | undefined): InetSockSpec {
  const o = e.opts;
  const s: InetSockSpec = {
    family: e.family, proto: e.proto, state: e.state,
    src: wordsAddr(e.src_addr), srcPort: e.src_port, dst: wordsAddr(e.dst_addr), dstPort: e.dst_port,
    backlog: e.backlog, v6only: e.v6only, boundDev: o.so_bound_dev,
    sndbuf: o.so_sndbuf, rcvbuf: o.so_rcvbuf, bufLock: o.so_buf_lock,
    sndTmoSec: Number(o.so_snd_tmo_sec), sndTmoUsec: Number(o.so_snd_tmo_usec),
    rcvTmoSec: Number(o.so_rcv_tmo_sec), rcvTmoUsec: Number(o.so_rcv_tmo_usec),
    reuseaddr: o.reuseaddr ?? false, reuseport: o.so_reuseport ?? false, priority: o.so_priority, rcvlowat: o.so_rcvlowat,
    mark: o.so_mark, passcred: o.so_passcred, passsec: o.so_passsec, dontroute: o.so_dontroute, noCheck: o.so_no_check,
    broadcast: o.so_broadcast, keepalive: o.so_keepalive, oobinline: (o.so_oobinline ?? 0) !== 0, linger: o.so_linger,
    freebind: e.ip_opts?.freebind, pktinfo: e.ip_opts?.pktinfo, tos: e.ip_opts?.tos, ttl: e.ip_opts?.ttl,
    nodelay: e.tcp_opts?.nodelay ?? stream?.entry.nodelay, cork: e.tcp_opts?.cork ?? stream?.entry.cork,
    keepcnt: e.tcp_opts?.keepcnt ?? o.tcp_keepcnt, keepidle: e.tcp_opts?.keepidle ?? o.tcp_keepidle,
    keepintvl: e.tcp_opts?.keepintvl ?? o.tcp_keepintvl,
  };
  if (stream) {
    const st = stream.entry;
    s.stream = {
      inqLen: st.inq_len, inqSeq: st.inq_seq, outqLen: st.outq_len, outqSeq: st.outq_seq, unsqLen: st.unsq_len ?? 0,
      optMask: st.opt_mask, sndWscale: st.snd_wscale, rcvWscale: st.rcv_wscale ?? 0, mssClamp: st.mss_clamp,
      timestamp: st.timestamp, sndWl1: st.snd_wl1, sndWnd: st.snd_wnd, maxWindow: st.max_window, rcvWnd: st.rcv_wnd, rcvWup: st.rcv_wup,
    };
    s.inqData = stream.data.subarray(0, st.inq_len);
    s.outqData = stream.data.subarray(st.inq_len);
  }
  return s;
}

export function inetKind(): RestoreFdKind {
  const streams = new Map<number, TcpStream>();
  return {
    type: FdType.INETSK,
    name: 'inet socket',
    async load(ctx, entries) {
      for (const f of entries) {
        const e = f.isk;
        if (!e || !isTcpConnection(e) || !ctx.options.tcpEstablished || e.state !== TCP_ESTABLISHED) continue;
        const file = ctx.dir.pathOf(KIND.tcpStream, e.ino);
        const img = await ctx.dir.readImage(KIND.tcpStream, e.ino);
        if (!img) continue; // check() names the fd
        const x = img.entries[0];
        if (!x || img.entries.length !== 1) throw new ImageError(file, undefined, `expected exactly one entry, found ${img.entries.length}`);
        const entry = x.message as unknown as TcpStreamEntry;
        const data = x.extra ?? Buffer.alloc(0);
        if (data.length !== entry.inq_len + entry.outq_len) {
          throw new ImageError(file, undefined, `${data.length} queued bytes, the entry says ${entry.inq_len} + ${entry.outq_len}`);
        }
        if ((entry.unsq_len ?? 0) > entry.outq_len) throw new ImageError(file, undefined, `unsq_len ${entry.unsq_len} is larger than outq_len ${entry.outq_len}`);
        streams.set(e.ino, { entry, data });
      }
    },
    check(ctx, file, use) {
      const where = `pid ${use.pid}: fd ${use.fd} (inet socket)`;
      const e = file.isk;
      if (!e) throw new UserError(`${where}: files.img id ${file.id} has no inet socket data`);
      if (e.family !== AF_INET && e.family !== AF_INET6) throw new UserError(`${where}: address family ${e.family} is not supported`);
      if (!((e.type === SOCK_STREAM && e.proto === IPPROTO_TCP) || (e.type === SOCK_DGRAM && e.proto === IPPROTO_UDP))) {
        throw new UserError(`${where}: socket type ${e.type} protocol ${e.proto} is not supported (only TCP and UDP)`);
      }
      if (isTcpConnection(e)) {
        if (!ctx.options.tcpEstablished) throw new UserError(`${where}: Connected TCP socket in image (restore with --tcp-established)`);
        if (e.state !== TCP_ESTABLISHED) throw new UserError(`${where}: TCP state ${e.state} is not supported, only ESTABLISHED`);
        if (!streams.has(e.ino)) throw new UserError(`${where}: ${ctx.dir.pathOf(KIND.tcpStream, e.ino)} is missing (ENOENT)`);
      }
    },
    flags: (f) => isk(f).flags,
    fown: (f) => isk(f).fown,
    create(_ctx, file, owner) {
      const e = isk(file);
      const fd = Number(owner.call(`socket(${e.family}, ${e.type}, ${e.proto})`, NR.socket, e.family, e.type, e.proto));
      const dup = addon.restorePidfdGetfd(owner.pid, fd);
      try {
        addon.inetSockRestore(dup, inetSpec(e, isTcpConnection(e) ? streams.get(e.ino) : undefined));
      } catch (err) {
        owner.raw(NR.close, fd);
        const x = err as { message?: string };
        throw new UserError(`pid ${owner.pid}: inet socket (ino ${e.ino}, port ${e.src_port}): ${x.message ?? String(err)}`);
      } finally {
        addon.restoreCloseFd(dup);
      }
      // The connection exists again: let the peer's (retransmitted) packets
      // in, in the namespace the socket lives in (the owner's).
      if (isTcpConnection(e)) unlockConnection(e.ino, owner.pid);
      return { taskFd: fd };
    },
  };
}
