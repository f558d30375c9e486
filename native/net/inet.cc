// Inet sockets (IPv4/IPv6, TCP/UDP) for dump and restore, working on a
// duplicate of the socket (pidfd_getfd at dump; at restore the socket is
// created inside the restored process and duplicated here), so every
// getsockopt/setsockopt acts on the process's own socket:
//   inetSockDump(fd)          family/type/proto/state, addresses, the socket
//                             options that CRIU's sk_opts/tcp_opts/ip_opts keep
//   tcpRepairDump(fd)         TCP_REPAIR on (left on: the socket closes
//                             silently when the dumped process dies), then
//                             sequence numbers, queue lengths and contents
//                             (MSG_PEEK in repair mode), options, window
//   tcpRepair(fd, value)      TCP_REPAIR on (1) / off (0) / off without a
//                             window probe (-1)
//   inetSockRestore(fd, spec) options, bind, listen/connect, or the whole
//                             TCP_REPAIR sequence for an established stream
// Facts from CRIU 4.2 (soccr/soccr.c, criu/sk-inet.c, criu/sockets.c).
#include <napi.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <climits>
#include <linux/sockios.h>
#include <net/if.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <netinet/udp.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cerrno>
#include <string>
#include <vector>

#include "common/errors.h"
#include "common/modules.h"
#include "net/sockopt.h"

#ifndef SIOCOUTQNSD
#define SIOCOUTQNSD 0x894B
#endif
#ifndef SO_BUF_LOCK
#define SO_BUF_LOCK 72
#endif
#ifndef TCP_REPAIR_WINDOW
#define TCP_REPAIR_WINDOW 29
#endif
#ifndef TCPOPT_SACK_PERM
#define TCPOPT_SACK_PERM 4
#endif
#ifndef TCPOPT_WINDOW
#define TCPOPT_WINDOW 3
#endif
#ifndef TCPOPT_TIMESTAMP
#define TCPOPT_TIMESTAMP 8
#endif
#ifndef TCPOPT_MAXSEG
#define TCPOPT_MAXSEG 2
#endif

namespace lr {
namespace {

struct RepairWindow {
  uint32_t snd_wl1, snd_wnd, max_window, rcv_wnd, rcv_wup;
};
struct RepairOpt {
  uint32_t opt_code, opt_val;
};

const char* OptName(int level, int opt) {
  if (level == SOL_TCP) {
    switch (opt) {
      case TCP_REPAIR: return "setsockopt(TCP_REPAIR)";
      case TCP_REPAIR_QUEUE: return "setsockopt(TCP_REPAIR_QUEUE)";
      case TCP_QUEUE_SEQ: return "setsockopt(TCP_QUEUE_SEQ)";
      case TCP_REPAIR_OPTIONS: return "setsockopt(TCP_REPAIR_OPTIONS)";
      case TCP_REPAIR_WINDOW: return "setsockopt(TCP_REPAIR_WINDOW)";
      case TCP_TIMESTAMP: return "setsockopt(TCP_TIMESTAMP)";
      case TCP_NODELAY: return "setsockopt(TCP_NODELAY)";
      case TCP_CORK: return "setsockopt(TCP_CORK)";
      default: return "setsockopt(SOL_TCP)";
    }
  }
  return "setsockopt";
}

void SetInt(Napi::Env env, int fd, int level, int opt, int v, const char* what) {
  if (setsockopt(fd, level, opt, &v, sizeof(v)) < 0) ThrowErrno(env, errno, OptName(level, opt), what);
}

Napi::Buffer<uint8_t> AddrBytes(Napi::Env env, const sockaddr_storage& ss) {
  if (ss.ss_family == AF_INET6) {
    auto* a = reinterpret_cast<const sockaddr_in6*>(&ss);
    return Napi::Buffer<uint8_t>::Copy(env, a->sin6_addr.s6_addr, 16);
  }
  auto* a = reinterpret_cast<const sockaddr_in*>(&ss);
  return Napi::Buffer<uint8_t>::Copy(env, reinterpret_cast<const uint8_t*>(&a->sin_addr.s_addr), 4);
}

int Port(const sockaddr_storage& ss) {
  if (ss.ss_family == AF_INET6) return ntohs(reinterpret_cast<const sockaddr_in6*>(&ss)->sin6_port);
  return ntohs(reinterpret_cast<const sockaddr_in*>(&ss)->sin_port);
}

// inetSockDump(fd) -> plain object (see plugin/native/types.ts InetSockState).
Napi::Value InetSockDump(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = ArgFd(info, 0, "fd");
  Napi::Object o = Napi::Object::New(env);
  int family = GetSockInt(env, fd, SOL_SOCKET, SO_DOMAIN, "SO_DOMAIN");
  int type = GetSockInt(env, fd, SOL_SOCKET, SO_TYPE, "SO_TYPE");
  int proto = GetSockInt(env, fd, SOL_SOCKET, SO_PROTOCOL, "SO_PROTOCOL");
  o.Set("family", family);
  o.Set("type", type);
  o.Set("proto", proto);
  if (family != AF_INET && family != AF_INET6) return o;

  sockaddr_storage src{}, dst{};
  socklen_t sl = sizeof(src), dl = sizeof(dst);
  if (getsockname(fd, reinterpret_cast<sockaddr*>(&src), &sl) < 0) ThrowErrno(env, errno, "getsockname", "fd " + std::to_string(fd));
  src.ss_family = family;
  bool connected = getpeername(fd, reinterpret_cast<sockaddr*>(&dst), &dl) == 0;
  if (!connected) {
    memset(&dst, 0, sizeof(dst));
    dst.ss_family = family;
  }
  o.Set("src", AddrBytes(env, src));
  o.Set("srcPort", Port(src));
  o.Set("dst", AddrBytes(env, dst));
  o.Set("dstPort", Port(dst));

  int state = connected ? TCP_ESTABLISHED : TCP_CLOSE;
  int backlog = 0;
  if (proto == IPPROTO_TCP) {
    tcp_info ti{};
    socklen_t tl = sizeof(ti);
    if (getsockopt(fd, SOL_TCP, TCP_INFO, &ti, &tl) < 0) ThrowErrno(env, errno, "getsockopt", "TCP_INFO");
    state = ti.tcpi_state;
    // For a listening socket TCP_INFO reports the accept queue length in
    // tcpi_unacked and the backlog (sk_max_ack_backlog) in tcpi_sacked.
    if (state == TCP_LISTEN) {
      backlog = ti.tcpi_sacked;
      o.Set("acceptQueue", static_cast<double>(ti.tcpi_unacked));
    }
    o.Set("nodelay", GetSockInt(env, fd, SOL_TCP, TCP_NODELAY, "TCP_NODELAY") != 0);
    o.Set("cork", GetSockInt(env, fd, SOL_TCP, TCP_CORK, "TCP_CORK") != 0);
    o.Set("keepcnt", GetSockInt(env, fd, SOL_TCP, TCP_KEEPCNT, "TCP_KEEPCNT"));
    o.Set("keepidle", GetSockInt(env, fd, SOL_TCP, TCP_KEEPIDLE, "TCP_KEEPIDLE"));
    o.Set("keepintvl", GetSockInt(env, fd, SOL_TCP, TCP_KEEPINTVL, "TCP_KEEPINTVL"));
  } else if (proto == IPPROTO_UDP) {
    o.Set("udpCork", GetSockInt(env, fd, SOL_UDP, UDP_CORK, "UDP_CORK") != 0);
  }
  o.Set("state", state);
  o.Set("backlog", backlog);
  int q = 0;
  if (state != TCP_LISTEN && ioctl(fd, SIOCINQ, &q) == 0) o.Set("inq", q);
  if (state != TCP_LISTEN && ioctl(fd, SIOCOUTQ, &q) == 0) o.Set("outq", q);

  o.Set("sndbuf", GetSockInt(env, fd, SOL_SOCKET, SO_SNDBUF, "SO_SNDBUF"));
  o.Set("rcvbuf", GetSockInt(env, fd, SOL_SOCKET, SO_RCVBUF, "SO_RCVBUF"));
  int v = 0;
  if (TryGetSockInt(fd, SOL_SOCKET, SO_BUF_LOCK, &v)) o.Set("bufLock", v);
  GetSockTimeouts(env, fd, o);
  o.Set("reuseaddr", GetSockInt(env, fd, SOL_SOCKET, SO_REUSEADDR, "SO_REUSEADDR") != 0);
  o.Set("reuseport", GetSockInt(env, fd, SOL_SOCKET, SO_REUSEPORT, "SO_REUSEPORT") != 0);
  o.Set("priority", GetSockInt(env, fd, SOL_SOCKET, SO_PRIORITY, "SO_PRIORITY"));
  o.Set("rcvlowat", GetSockInt(env, fd, SOL_SOCKET, SO_RCVLOWAT, "SO_RCVLOWAT"));
  o.Set("mark", GetSockInt(env, fd, SOL_SOCKET, SO_MARK, "SO_MARK"));
  if (TryGetSockInt(fd, SOL_SOCKET, SO_PASSCRED, &v)) o.Set("passcred", v != 0);  // EOPNOTSUPP on inet sockets in newer kernels
  if (TryGetSockInt(fd, SOL_SOCKET, SO_PASSSEC, &v)) o.Set("passsec", v != 0);  // EOPNOTSUPP on inet sockets in newer kernels
  if (TryGetSockInt(fd, SOL_SOCKET, SO_DONTROUTE, &v)) o.Set("dontroute", v != 0);  // EOPNOTSUPP on inet sockets in newer kernels
  if (TryGetSockInt(fd, SOL_SOCKET, SO_NO_CHECK, &v)) o.Set("noCheck", v != 0);  // EOPNOTSUPP on inet sockets in newer kernels
  o.Set("broadcast", GetSockInt(env, fd, SOL_SOCKET, SO_BROADCAST, "SO_BROADCAST") != 0);
  o.Set("keepalive", GetSockInt(env, fd, SOL_SOCKET, SO_KEEPALIVE, "SO_KEEPALIVE") != 0);
  o.Set("oobinline", GetSockInt(env, fd, SOL_SOCKET, SO_OOBINLINE, "SO_OOBINLINE") != 0);
  linger lg{};
  socklen_t ll = sizeof(lg);
  if (getsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, &ll) < 0) ThrowErrno(env, errno, "getsockopt", "SO_LINGER");
  if (lg.l_onoff) o.Set("linger", lg.l_linger);
  char dev[IFNAMSIZ + 1] = {0};
  socklen_t dvl = IFNAMSIZ;
  if (getsockopt(fd, SOL_SOCKET, SO_BINDTODEVICE, dev, &dvl) == 0 && dvl > 0 && dev[0]) o.Set("boundDev", std::string(dev));
  // A socket filter (SO_ATTACH_FILTER) cannot be restored: report its length.
  int flen = 0;
  socklen_t fll = 0;
  if (getsockopt(fd, SOL_SOCKET, SO_GET_FILTER, nullptr, &fll) == 0) flen = static_cast<int>(fll);
  o.Set("filterLen", flen);
  if (family == AF_INET6) o.Set("v6only", GetSockInt(env, fd, SOL_IPV6, IPV6_V6ONLY, "IPV6_V6ONLY") != 0);
  if (family == AF_INET) {
    o.Set("freebind", GetSockInt(env, fd, SOL_IP, IP_FREEBIND, "IP_FREEBIND") != 0);
    o.Set("tos", GetSockInt(env, fd, SOL_IP, IP_TOS, "IP_TOS"));
    o.Set("ttl", GetSockInt(env, fd, SOL_IP, IP_TTL, "IP_TTL"));
    o.Set("pktinfo", GetSockInt(env, fd, SOL_IP, IP_PKTINFO, "IP_PKTINFO") != 0);
  } else {
    o.Set("freebind", GetSockInt(env, fd, SOL_IPV6, IPV6_FREEBIND, "IPV6_FREEBIND") != 0);
  }
  return o;
}

void RepairSet(Napi::Env env, int fd, int v) { SetInt(env, fd, SOL_TCP, TCP_REPAIR, v, v ? "on" : "off"); }

// Selects a repair queue and reads its sequence number; peeks `len` bytes.
Napi::Buffer<uint8_t> PeekQueue(Napi::Env env, int fd, int queue, uint32_t len, uint32_t* seq) {
  SetInt(env, fd, SOL_TCP, TCP_REPAIR_QUEUE, queue, queue == TCP_RECV_QUEUE ? "recv" : "send");
  socklen_t l = sizeof(*seq);
  if (getsockopt(fd, SOL_TCP, TCP_QUEUE_SEQ, seq, &l) < 0) ThrowErrno(env, errno, "getsockopt", "TCP_QUEUE_SEQ");
  std::vector<uint8_t> buf(len + 1);
  ssize_t n = len ? recv(fd, buf.data(), len + 1, MSG_PEEK | MSG_DONTWAIT) : 0;
  if (n < 0) ThrowErrno(env, errno, "recv", "MSG_PEEK of a repair queue");
  if (static_cast<uint32_t>(n) != len) {
    throw Napi::Error::New(env, "repair queue holds " + std::to_string(n) + " bytes, expected " + std::to_string(len));
  }
  return Napi::Buffer<uint8_t>::Copy(env, buf.data(), len);
}

// tcpRepairDump(fd) -> TcpRepairState; leaves the socket in repair mode.
Napi::Value TcpRepairDump(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = ArgFd(info, 0, "fd");
  RepairSet(env, fd, 1);
  try {
    Napi::Object o = Napi::Object::New(env);
    tcp_info ti{};
    socklen_t tl = sizeof(ti);
    if (getsockopt(fd, SOL_TCP, TCP_INFO, &ti, &tl) < 0) ThrowErrno(env, errno, "getsockopt", "TCP_INFO");
    o.Set("state", ti.tcpi_state);
    int outq = 0, unsq = 0, inq = 0;
    if (ioctl(fd, SIOCOUTQ, &outq) < 0) ThrowErrno(env, errno, "ioctl", "SIOCOUTQ");
    if (ioctl(fd, SIOCOUTQNSD, &unsq) < 0) ThrowErrno(env, errno, "ioctl", "SIOCOUTQNSD");
    if (ioctl(fd, SIOCINQ, &inq) < 0) ThrowErrno(env, errno, "ioctl", "SIOCINQ");
    o.Set("outqLen", outq);
    o.Set("unsqLen", unsq);
    o.Set("inqLen", inq);
    int mss = GetSockInt(env, fd, SOL_TCP, TCP_MAXSEG, "TCP_MAXSEG");
    o.Set("mssClamp", mss);
    o.Set("optMask", ti.tcpi_options);
    if (ti.tcpi_options & TCPI_OPT_WSCALE) {
      o.Set("sndWscale", ti.tcpi_snd_wscale);
      o.Set("rcvWscale", ti.tcpi_rcv_wscale);
    } else {
      o.Set("sndWscale", 0);
      o.Set("rcvWscale", 0);
    }
    if (ti.tcpi_options & TCPI_OPT_TIMESTAMPS) {
      uint32_t ts = static_cast<uint32_t>(GetSockInt(env, fd, SOL_TCP, TCP_TIMESTAMP, "TCP_TIMESTAMP"));
      o.Set("timestamp", static_cast<double>(ts));
    }
    RepairWindow w{};
    socklen_t wl = sizeof(w);
    if (getsockopt(fd, SOL_TCP, TCP_REPAIR_WINDOW, &w, &wl) == 0) {
      Napi::Object wo = Napi::Object::New(env);
      wo.Set("sndWl1", static_cast<double>(w.snd_wl1));
      wo.Set("sndWnd", static_cast<double>(w.snd_wnd));
      wo.Set("maxWindow", static_cast<double>(w.max_window));
      wo.Set("rcvWnd", static_cast<double>(w.rcv_wnd));
      wo.Set("rcvWup", static_cast<double>(w.rcv_wup));
      o.Set("window", wo);
    } else if (errno != ENOPROTOOPT) {
      ThrowErrno(env, errno, "getsockopt", "TCP_REPAIR_WINDOW");
    }
    uint32_t inqSeq = 0, outqSeq = 0;
    o.Set("inqData", PeekQueue(env, fd, TCP_RECV_QUEUE, static_cast<uint32_t>(inq), &inqSeq));
    o.Set("outqData", PeekQueue(env, fd, TCP_SEND_QUEUE, static_cast<uint32_t>(outq), &outqSeq));
    o.Set("inqSeq", static_cast<double>(inqSeq));
    o.Set("outqSeq", static_cast<double>(outqSeq));
    SetInt(env, fd, SOL_TCP, TCP_REPAIR_QUEUE, TCP_NO_QUEUE, "none");
    return o;
  } catch (...) {
    int off = 0;
    setsockopt(fd, SOL_TCP, TCP_REPAIR, &off, sizeof(off));
    throw;
  }
}

Napi::Value TcpRepair(const Napi::CallbackInfo& info) {
  int fd = ArgFd(info, 0, "fd");
  int v = ArgI32(info, 1, "value");
  RepairSet(info.Env(), fd, v);
  return info.Env().Undefined();
}

// ---- restore ----------------------------------------------------------------

uint32_t U32(const Napi::Object& o, const char* k, uint32_t dflt = 0) {
  Napi::Value v = o.Get(k);
  if (v.IsUndefined() || v.IsNull()) return dflt;
  if (v.IsBigInt()) {
    bool lossless = false;
    return static_cast<uint32_t>(v.As<Napi::BigInt>().Uint64Value(&lossless));
  }
  if (v.IsBoolean()) return v.As<Napi::Boolean>().Value() ? 1 : 0;
  return static_cast<uint32_t>(v.As<Napi::Number>().Int64Value());
}
bool Has(const Napi::Object& o, const char* k) {
  Napi::Value v = o.Get(k);
  return !v.IsUndefined() && !v.IsNull();
}

socklen_t MakeAddr(Napi::Env env, int family, const Napi::Object& spec, const char* addrKey, const char* portKey,
                   sockaddr_storage* ss) {
  memset(ss, 0, sizeof(*ss));
  Napi::Value av = spec.Get(addrKey);
  if (!av.IsBuffer()) throw Napi::TypeError::New(env, std::string(addrKey) + " must be a Buffer");
  auto b = av.As<Napi::Buffer<uint8_t>>();
  uint16_t port = static_cast<uint16_t>(U32(spec, portKey));
  if (family == AF_INET6) {
    if (b.Length() != 16) throw Napi::RangeError::New(env, std::string(addrKey) + ": an IPv6 address has 16 bytes");
    auto* a = reinterpret_cast<sockaddr_in6*>(ss);
    a->sin6_family = AF_INET6;
    a->sin6_port = htons(port);
    memcpy(a->sin6_addr.s6_addr, b.Data(), 16);
    if (Has(spec, "scopeId")) a->sin6_scope_id = U32(spec, "scopeId");
    return sizeof(*a);
  }
  if (b.Length() != 4) throw Napi::RangeError::New(env, std::string(addrKey) + ": an IPv4 address has 4 bytes");
  auto* a = reinterpret_cast<sockaddr_in*>(ss);
  a->sin_family = AF_INET;
  a->sin_port = htons(port);
  memcpy(&a->sin_addr.s_addr, b.Data(), 4);
  return sizeof(*a);
}

void SendAll(Napi::Env env, int fd, const uint8_t* data, size_t len, const char* what) {
  size_t off = 0, chunk = len;
  while (off < len) {
    size_t n = std::min(chunk, len - off);
    ssize_t r = send(fd, data + off, n, 0);
    if (r <= 0) {
      // In repair mode the kernel allocates one linear skb per call: halve
      // the chunk on failure as CRIU does (ENOMEM for large queues).
      if (chunk > 1024) { chunk >>= 1; continue; }
      ThrowErrno(env, r < 0 ? errno : EIO, "send", what);
    }
    off += static_cast<size_t>(r);
  }
}

void RestoreStream(Napi::Env env, int fd, int family, const Napi::Object& spec) {
  Napi::Object st = spec.Get("stream").As<Napi::Object>();
  sockaddr_storage src{}, dst{};
  socklen_t sl = MakeAddr(env, family, spec, "src", "srcPort", &src);
  socklen_t dl = MakeAddr(env, family, spec, "dst", "dstPort", &dst);
  // As CRIU's restore_prepare_socket: the largest buffers and O_NONBLOCK, so
  // putting the queues back never blocks (the dumped sizes and status flags
  // are set afterwards).
  SetInt(env, fd, SOL_SOCKET, SO_SNDBUFFORCE, INT_MAX / 2, "SO_SNDBUFFORCE");
  SetInt(env, fd, SOL_SOCKET, SO_RCVBUFFORCE, INT_MAX / 2, "SO_RCVBUFFORCE");
  int fl = fcntl(fd, F_GETFL);
  if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) ThrowErrno(env, errno, "fcntl(O_NONBLOCK)");
  RepairSet(env, fd, 1);
  if (bind(fd, reinterpret_cast<sockaddr*>(&src), sl) < 0) ThrowErrno(env, errno, "bind", "repaired TCP socket");
  uint32_t inqLen = U32(st, "inqLen"), outqLen = U32(st, "outqLen"), unsq = U32(st, "unsqLen");
  uint32_t seq = U32(st, "inqSeq") - inqLen;
  SetInt(env, fd, SOL_TCP, TCP_REPAIR_QUEUE, TCP_RECV_QUEUE, "recv");
  if (setsockopt(fd, SOL_TCP, TCP_QUEUE_SEQ, &seq, sizeof(seq)) < 0) ThrowErrno(env, errno, "setsockopt(TCP_QUEUE_SEQ)", "recv");
  seq = U32(st, "outqSeq") - outqLen;
  SetInt(env, fd, SOL_TCP, TCP_REPAIR_QUEUE, TCP_SEND_QUEUE, "send");
  if (setsockopt(fd, SOL_TCP, TCP_QUEUE_SEQ, &seq, sizeof(seq)) < 0) ThrowErrno(env, errno, "setsockopt(TCP_QUEUE_SEQ)", "send");
  if (connect(fd, reinterpret_cast<sockaddr*>(&dst), dl) < 0 && errno != EINPROGRESS) ThrowErrno(env, errno, "connect", "repaired TCP socket");
  uint32_t mask = U32(st, "optMask");
  RepairOpt opts[4];
  int n = 0;
  if (mask & TCPI_OPT_SACK) opts[n++] = {TCPOPT_SACK_PERM, 0};
  if (mask & TCPI_OPT_WSCALE) opts[n++] = {TCPOPT_WINDOW, U32(st, "sndWscale") + (U32(st, "rcvWscale") << 16)};
  if (mask & TCPI_OPT_TIMESTAMPS) opts[n++] = {TCPOPT_TIMESTAMP, 0};
  opts[n++] = {TCPOPT_MAXSEG, U32(st, "mssClamp")};
  if (setsockopt(fd, SOL_TCP, TCP_REPAIR_OPTIONS, opts, n * sizeof(RepairOpt)) < 0) ThrowErrno(env, errno, "setsockopt(TCP_REPAIR_OPTIONS)");
  if (mask & TCPI_OPT_TIMESTAMPS) SetInt(env, fd, SOL_TCP, TCP_TIMESTAMP, static_cast<int>(U32(st, "timestamp")), "");
  Napi::Value iv = spec.Get("inqData"), ov = spec.Get("outqData");
  if (inqLen) {
    auto b = iv.As<Napi::Buffer<uint8_t>>();
    if (b.Length() != inqLen) throw Napi::RangeError::New(env, "inqData length differs from inqLen");
    SetInt(env, fd, SOL_TCP, TCP_REPAIR_QUEUE, TCP_RECV_QUEUE, "recv");
    SendAll(env, fd, b.Data(), inqLen, "receive queue");
  }
  if (unsq > outqLen) throw Napi::RangeError::New(env, "unsqLen is larger than outqLen");
  const uint8_t* out = nullptr;
  if (outqLen) {
    auto b = ov.As<Napi::Buffer<uint8_t>>();
    if (b.Length() != outqLen) throw Napi::RangeError::New(env, "outqData length differs from outqLen");
    out = b.Data();
    if (outqLen - unsq) {
      SetInt(env, fd, SOL_TCP, TCP_REPAIR_QUEUE, TCP_SEND_QUEUE, "send");
      SendAll(env, fd, out, outqLen - unsq, "send queue (sent part)");
    }
  }
  if (Has(st, "sndWnd")) {
    RepairWindow w{U32(st, "sndWl1"), U32(st, "sndWnd"), U32(st, "maxWindow"), U32(st, "rcvWnd"), U32(st, "rcvWup")};
    if (setsockopt(fd, SOL_TCP, TCP_REPAIR_WINDOW, &w, sizeof(w)) < 0) ThrowErrno(env, errno, "setsockopt(TCP_REPAIR_WINDOW)");
  }
  SetInt(env, fd, SOL_TCP, TCP_REPAIR_QUEUE, TCP_NO_QUEUE, "none");
  // Leaving repair mode: -1 (TCP_REPAIR_OFF_NO_WP) skips the window probe,
  // as CRIU does when the kernel knows it; fall back to 0.
  int off = -1;
  if (setsockopt(fd, SOL_TCP, TCP_REPAIR, &off, sizeof(off)) < 0) RepairSet(env, fd, 0);
  // The never-sent tail goes out as ordinary data.
  if (unsq) SendAll(env, fd, out + (outqLen - unsq), unsq, "send queue (unsent part)");
}

void RestoreOpts(Napi::Env env, int fd, int family, int proto, const Napi::Object& spec) {
  // setsockopt doubles buffer sizes; the dumped values are doubled already.
  int sb = static_cast<int>(U32(spec, "sndbuf") / 2), rb = static_cast<int>(U32(spec, "rcvbuf") / 2);
  if (sb) SetInt(env, fd, SOL_SOCKET, SO_SNDBUFFORCE, sb, "SO_SNDBUFFORCE");
  if (rb) SetInt(env, fd, SOL_SOCKET, SO_RCVBUFFORCE, rb, "SO_RCVBUFFORCE");
  // SO_*BUFFORCE locked the sizes; put the dumped lock bits back (autotuning).
  if (Has(spec, "bufLock")) SetInt(env, fd, SOL_SOCKET, SO_BUF_LOCK, static_cast<int>(U32(spec, "bufLock")), "SO_BUF_LOCK");
  if (Has(spec, "priority")) SetInt(env, fd, SOL_SOCKET, SO_PRIORITY, static_cast<int>(U32(spec, "priority")), "SO_PRIORITY");
  if (Has(spec, "rcvlowat")) SetInt(env, fd, SOL_SOCKET, SO_RCVLOWAT, static_cast<int>(U32(spec, "rcvlowat")), "SO_RCVLOWAT");
  if (U32(spec, "mark")) SetInt(env, fd, SOL_SOCKET, SO_MARK, static_cast<int>(U32(spec, "mark")), "SO_MARK");
  if (U32(spec, "passcred")) SetInt(env, fd, SOL_SOCKET, SO_PASSCRED, 1, "SO_PASSCRED");
  if (U32(spec, "passsec")) SetInt(env, fd, SOL_SOCKET, SO_PASSSEC, 1, "SO_PASSSEC");
  if (U32(spec, "dontroute")) SetInt(env, fd, SOL_SOCKET, SO_DONTROUTE, 1, "SO_DONTROUTE");
  if (U32(spec, "noCheck")) SetInt(env, fd, SOL_SOCKET, SO_NO_CHECK, 1, "SO_NO_CHECK");
  if (U32(spec, "broadcast")) SetInt(env, fd, SOL_SOCKET, SO_BROADCAST, 1, "SO_BROADCAST");
  if (U32(spec, "oobinline")) SetInt(env, fd, SOL_SOCKET, SO_OOBINLINE, 1, "SO_OOBINLINE");
  if (U32(spec, "keepalive")) SetInt(env, fd, SOL_SOCKET, SO_KEEPALIVE, 1, "SO_KEEPALIVE");
  if (Has(spec, "linger")) {
    linger lg{1, static_cast<int>(U32(spec, "linger"))};
    if (setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg)) < 0) ThrowErrno(env, errno, "setsockopt(SO_LINGER)");
  }
  timeval tv{static_cast<time_t>(U32(spec, "sndTmoSec")), static_cast<suseconds_t>(U32(spec, "sndTmoUsec"))};
  if (tv.tv_sec || tv.tv_usec) {
    if (setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) < 0) ThrowErrno(env, errno, "setsockopt(SO_SNDTIMEO)");
  }
  tv = {static_cast<time_t>(U32(spec, "rcvTmoSec")), static_cast<suseconds_t>(U32(spec, "rcvTmoUsec"))};
  if (tv.tv_sec || tv.tv_usec) {
    if (setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) < 0) ThrowErrno(env, errno, "setsockopt(SO_RCVTIMEO)");
  }
  SetInt(env, fd, SOL_SOCKET, SO_REUSEADDR, U32(spec, "reuseaddr") ? 1 : 0, "SO_REUSEADDR");
  SetInt(env, fd, SOL_SOCKET, SO_REUSEPORT, U32(spec, "reuseport") ? 1 : 0, "SO_REUSEPORT");
  if (family == AF_INET) {
    if (U32(spec, "freebind")) SetInt(env, fd, SOL_IP, IP_FREEBIND, 1, "IP_FREEBIND");
    if (U32(spec, "pktinfo")) SetInt(env, fd, SOL_IP, IP_PKTINFO, 1, "IP_PKTINFO");
    if (Has(spec, "tos") && U32(spec, "tos")) SetInt(env, fd, SOL_IP, IP_TOS, static_cast<int>(U32(spec, "tos")), "IP_TOS");
    if (Has(spec, "ttl")) {
      int cur = 0;
      if (TryGetSockInt(fd, SOL_IP, IP_TTL, &cur) && cur != static_cast<int>(U32(spec, "ttl")))
        SetInt(env, fd, SOL_IP, IP_TTL, static_cast<int>(U32(spec, "ttl")), "IP_TTL");
    }
  } else if (U32(spec, "freebind")) {
    SetInt(env, fd, SOL_IPV6, IPV6_FREEBIND, 1, "IPV6_FREEBIND");
  }
  if (proto == IPPROTO_TCP) {
    if (U32(spec, "nodelay")) SetInt(env, fd, SOL_TCP, TCP_NODELAY, 1, "TCP_NODELAY");
    if (U32(spec, "cork")) SetInt(env, fd, SOL_TCP, TCP_CORK, 1, "TCP_CORK");
    if (Has(spec, "keepcnt")) SetInt(env, fd, SOL_TCP, TCP_KEEPCNT, static_cast<int>(U32(spec, "keepcnt")), "TCP_KEEPCNT");
    if (Has(spec, "keepidle")) SetInt(env, fd, SOL_TCP, TCP_KEEPIDLE, static_cast<int>(U32(spec, "keepidle")), "TCP_KEEPIDLE");
    if (Has(spec, "keepintvl")) SetInt(env, fd, SOL_TCP, TCP_KEEPINTVL, static_cast<int>(U32(spec, "keepintvl")), "TCP_KEEPINTVL");
  }
}

// inetSockRestore(fd, spec): `fd` is a fresh socket of the right family,
// type and protocol (created inside the restored process).
Napi::Value InetSockRestore(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = ArgFd(info, 0, "fd");
  if (info.Length() < 2 || !info[1].IsObject()) throw Napi::TypeError::New(env, "spec must be an object");
  Napi::Object spec = info[1].As<Napi::Object>();
  int family = static_cast<int>(U32(spec, "family"));
  int proto = static_cast<int>(U32(spec, "proto"));
  int state = static_cast<int>(U32(spec, "state"));
  if (family == AF_INET6 && U32(spec, "v6only")) SetInt(env, fd, SOL_IPV6, IPV6_V6ONLY, 1, "IPV6_V6ONLY");
  // Bind with SO_REUSEADDR/SO_REUSEPORT on (connections of the dumped
  // socket may linger in TIME_WAIT); the dumped values are set afterwards.
  SetInt(env, fd, SOL_SOCKET, SO_REUSEADDR, 1, "SO_REUSEADDR");
  SetInt(env, fd, SOL_SOCKET, SO_REUSEPORT, 1, "SO_REUSEPORT");
  if (Has(spec, "boundDev")) {
    std::string dev = spec.Get("boundDev").As<Napi::String>().Utf8Value();
    if (setsockopt(fd, SOL_SOCKET, SO_BINDTODEVICE, dev.c_str(), dev.size()) < 0) ThrowErrno(env, errno, "setsockopt(SO_BINDTODEVICE)", dev);
  }
  if (Has(spec, "stream")) {
    RestoreStream(env, fd, family, spec);
  } else {
    sockaddr_storage ss{};
    if (U32(spec, "srcPort")) {
      socklen_t l = MakeAddr(env, family, spec, "src", "srcPort", &ss);
      if (bind(fd, reinterpret_cast<sockaddr*>(&ss), l) < 0) ThrowErrno(env, errno, "bind", "port " + std::to_string(U32(spec, "srcPort")));
    }
    if (state == TCP_LISTEN) {
      if (listen(fd, static_cast<int>(U32(spec, "backlog"))) < 0) ThrowErrno(env, errno, "listen");
    }
    if (U32(spec, "dstPort")) {
      socklen_t l = MakeAddr(env, family, spec, "dst", "dstPort", &ss);
      if (connect(fd, reinterpret_cast<sockaddr*>(&ss), l) < 0) ThrowErrno(env, errno, "connect", "port " + std::to_string(U32(spec, "dstPort")));
    }
  }
  RestoreOpts(env, fd, family, proto, spec);
  return env.Undefined();
}

}  // namespace

void InitNet(Napi::Env env, Napi::Object exports) {
  exports.Set("inetSockDump", Napi::Function::New(env, InetSockDump, "inetSockDump"));
  exports.Set("tcpRepairDump", Napi::Function::New(env, TcpRepairDump, "tcpRepairDump"));
  exports.Set("tcpRepair", Napi::Function::New(env, TcpRepair, "tcpRepair"));
  exports.Set("inetSockRestore", Napi::Function::New(env, InetSockRestore, "inetSockRestore"));
}

}  // namespace lr
