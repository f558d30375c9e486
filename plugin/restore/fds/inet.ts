// IPv4/IPv6 sockets: socket() inside the restored process, then the rest
// (options, bind, listen/connect, or the TCP_REPAIR sequence of an
// established connection with its queues) done natively on a duplicate
// taken with pidfd_getfd — the same socket. Without --tcp-established an
// image holding a connection is refused, as CRIU does.
import { UserError } from '../../errors.js';
import type { InetSkEntry, TcpStreamEntry } from '../../images/index.js';
import { addon } from '../../native/addon.js';
import type { InetSockSpec } from '../../native/types.js';
import { NR, type RemoteTask } from '../task.js';
import { placeFd } from './place.js';
import { wordsAddr } from '../../dump/fds/inet.js';

const O_NONBLOCK = 0o4000;
const SOCK_NONBLOCK = 0o4000;
const TCP_LISTEN = 10;
const TCP_ESTABLISHED = 1;
const TCP_CLOSE = 7;

export interface TcpStream {
  entry: TcpStreamEntry;
  /** Receive queue then send queue (the image's EXTRA bytes). */
  data: Buffer;
}

/** Whether restoring this socket needs --tcp-established (a connected TCP socket). */
export function isTcpConnection(e: InetSkEntry): boolean {
  return e.type === 1 && e.state !== TCP_LISTEN && e.state !== TCP_CLOSE;
}

function spec(e: InetSkEntry, stream: TcpStream | undefined): InetSockSpec {
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
    if (stream.data.length !== st.inq_len + st.outq_len) {
      throw new UserError(`tcp-stream-${e.ino.toString(16)}.img: ${stream.data.length} queued bytes, the entry says ${st.inq_len} + ${st.outq_len}`);
    }
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

export function restoreInet(
  t: RemoteTask, fd: number, e: InetSkEntry, cloexec: boolean, opts: { tcpEstablished: boolean; stream?: TcpStream },
): void {
  const where = `pid ${t.pid}: fd ${fd} (inet socket, ino ${e.ino})`;
  if (isTcpConnection(e)) {
    if (!opts.tcpEstablished) throw new UserError(`${where}: Connected TCP socket in image (restore with --tcp-established)`);
    if (e.state !== TCP_ESTABLISHED) throw new UserError(`${where}: TCP state ${e.state} is not supported, only ESTABLISHED`);
    if (!opts.stream) throw new UserError(`${where}: tcp-stream-${e.ino.toString(16)}.img is missing`);
  }
  const type = e.type | ((e.flags & O_NONBLOCK) !== 0 ? SOCK_NONBLOCK : 0);
  const tmp = Number(t.call(`socket(${e.family}, ${e.type}, ${e.proto})`, NR.socket, e.family, type, e.proto));
  placeFd(t, tmp, fd, cloexec);
  const dup = addon.restorePidfdGetfd(t.pid, fd);
  try {
    addon.inetSockRestore(dup, spec(e, isTcpConnection(e) ? opts.stream : undefined));
  } catch (err) {
    const x = err as { code?: string; message?: string };
    throw new UserError(`${where}: ${x.message ?? String(err)}`);
  } finally {
    addon.restoreCloseFd(dup);
  }
}
