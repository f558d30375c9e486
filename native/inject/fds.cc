// Primitives for dumping and restoring file descriptors that are not plain
// files (plugin/dump/fds, plugin/restore/fds): passing fds into a restored
// process over SCM_RIGHTS, reading a pipe's queued bytes without consuming
// them (tee), peeking a socket's receive queue, the unix sock_diag table,
// and the few fcntl/getsockopt/send calls the restorer makes on fds it took
// out of a process with pidfd_getfd.
#include <errno.h>
#include <fcntl.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <linux/sock_diag.h>
#include <linux/unix_diag.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "common/errors.h"
#include "common/unix_socket.h"
#include "inject/restore.h"

namespace lr {
namespace {

// fdsSend(sock, fds: number[]): one datagram carrying the fds (SCM_RIGHTS)
// on a connected unix socket (one end of a socketpair made in the restored
// process and taken out with pidfd_getfd: no name, so no namespace matters).
Napi::Value FdsSend(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int sock = ArgFd(info, 0, "sock");
  if (!info[1].IsArray()) throw Napi::TypeError::New(env, "fds must be an array");
  Napi::Array arr = info[1].As<Napi::Array>();
  std::vector<int> fds;
  for (uint32_t i = 0; i < arr.Length(); i++) {
    Napi::Value v = arr.Get(i);
    if (!v.IsNumber()) throw Napi::TypeError::New(env, "fds must hold numbers");
    fds.push_back(v.As<Napi::Number>().Int32Value());
  }
  if (fds.empty() || fds.size() > 250) throw Napi::RangeError::New(env, "between 1 and 250 fds per message");
  char byte = 0;
  ssize_t w = SendWithFds(sock, &byte, 1, fds.data(), fds.size(), MSG_DONTWAIT);
  if (w != 1) ThrowErrno(env, w < 0 ? errno : EPIPE, "sendmsg", "(SCM_RIGHTS to a restored process)");
  return env.Undefined();
}

// pipePeek(fd) -> { size, data }: the pipe's buffer size (F_GETPIPE_SZ) and
// its queued bytes, copied with tee() so the pipe keeps them. fd must be a
// read end (or a read-write open of the pipe).
Napi::Value PipePeek(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = ArgFd(info, 0, "fd");
  int size = fcntl(fd, F_GETPIPE_SZ);
  if (size < 0) ThrowErrno(env, errno, "fcntl(F_GETPIPE_SZ)");
  int p[2];
  if (pipe2(p, O_CLOEXEC) != 0) ThrowErrno(env, errno, "pipe2");
  std::vector<char> data;
  int err = 0;
  const char* what = nullptr;
  if (fcntl(p[1], F_SETPIPE_SZ, size) < 0) {
    err = errno;
    what = "fcntl(F_SETPIPE_SZ)";
  } else {
    ssize_t n = tee(fd, p[1], static_cast<size_t>(size), SPLICE_F_NONBLOCK);
    if (n < 0 && errno != EAGAIN) {
      err = errno;
      what = "tee";
    } else if (n > 0) {
      data.resize(static_cast<size_t>(n));
      size_t got = 0;
      while (got < data.size()) {
        ssize_t r = read(p[0], data.data() + got, data.size() - got);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) {
          err = r < 0 ? errno : EIO;
          what = "read";
          break;
        }
        got += static_cast<size_t>(r);
      }
    }
  }
  close(p[0]);
  close(p[1]);
  if (what) ThrowErrno(env, err, what, "(pipe data)");
  Napi::Object out = Napi::Object::New(env);
  out.Set("size", Napi::Number::New(env, size));
  out.Set("data", Napi::Buffer<char>::Copy(env, data.data(), data.size()));
  return out;
}

// fdFcntl(fd, cmd, arg) -> result (int commands only).
Napi::Value FdFcntl(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = ArgFd(info, 0, "fd");
  int cmd = ArgI32(info, 1, "cmd");
  int64_t arg = ArgI64(info, 2, "arg");
  int r = fcntl(fd, cmd, static_cast<long>(arg));
  if (r < 0) ThrowErrno(env, errno, "fcntl", "(fd " + std::to_string(fd) + ", cmd " + std::to_string(cmd) + ")");
  return Napi::Number::New(env, r);
}

// linkFollow(from, to): a new name `to` for the file `from` names, following
// a magic link (/proc/PID/fd/N, /proc/PID/map_files/...): linkat with
// AT_SYMLINK_FOLLOW. CRIU's link remap of a deleted file that is still
// linked elsewhere (the kernel refuses a file with no links left: ENOENT).
Napi::Value LinkFollow(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsString() || !info[1].IsString()) throw Napi::TypeError::New(env, "from and to must be strings");
  std::string from = info[0].As<Napi::String>().Utf8Value();
  std::string to = info[1].As<Napi::String>().Utf8Value();
  if (linkat(AT_FDCWD, from.c_str(), AT_FDCWD, to.c_str(), AT_SYMLINK_FOLLOW) != 0) ThrowErrno(env, errno, "linkat", "(" + from + " -> " + to + ")");
  return env.Undefined();
}

// sendNoWait(fd, data) -> bytes sent (MSG_DONTWAIT | MSG_NOSIGNAL); a short
// or failed send is the caller's decision (EAGAIN is thrown like any errno).
Napi::Value SendNoWait(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = ArgFd(info, 0, "fd");
  if (!info[1].IsBuffer()) throw Napi::TypeError::New(env, "data must be a Buffer");
  Napi::Buffer<char> b = info[1].As<Napi::Buffer<char>>();
  ssize_t w;
  do w = send(fd, b.Data(), b.Length(), MSG_DONTWAIT | MSG_NOSIGNAL);
  while (w < 0 && errno == EINTR);
  if (w < 0) ThrowErrno(env, errno, "send", "(fd " + std::to_string(fd) + ")");
  return Napi::Number::New(env, static_cast<double>(w));
}

// getsockoptInt(fd, level, name) -> int value.
Napi::Value GetsockoptInt(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = ArgFd(info, 0, "fd");
  int level = ArgI32(info, 1, "level");
  int name = ArgI32(info, 2, "name");
  int v = 0;
  socklen_t len = sizeof(v);
  if (getsockopt(fd, level, name, &v, &len) != 0) ThrowErrno(env, errno, "getsockopt", "(fd " + std::to_string(fd) + ", option " + std::to_string(name) + ")");
  return Napi::Number::New(env, v);
}

// getsockoptTimeval(fd, name) -> [sec, usec] for SO_SNDTIMEO / SO_RCVTIMEO.
Napi::Value GetsockoptTimeval(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = ArgFd(info, 0, "fd");
  int name = ArgI32(info, 1, "name");
  timeval tv{};
  socklen_t len = sizeof(tv);
  if (getsockopt(fd, SOL_SOCKET, name, &tv, &len) != 0) ThrowErrno(env, errno, "getsockopt", "(fd " + std::to_string(fd) + ")");
  Napi::Array a = Napi::Array::New(env, 2);
  a.Set(0u, Napi::Number::New(env, static_cast<double>(tv.tv_sec)));
  a.Set(1u, Napi::Number::New(env, static_cast<double>(tv.tv_usec)));
  return a;
}

// sockPeek(fd, maxBytes[, rights]) -> Buffer[]: every message in the
// receive queue, oldest first, read with MSG_PEEK and an advancing
// SO_PEEK_OFF so the queue is left as it was (SO_PEEK_OFF is reset to -1,
// the default, afterwards). Without `rights`, a message carrying file
// descriptors (SCM_RIGHTS) fails with EBADMSG (the fds the peek produced
// are closed). With `rights` true the result is { data, fds }[]: the fds
// a peek installs in this process (close-on-exec), the caller's to close.
Napi::Value SockPeek(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = ArgFd(info, 0, "fd");
  int64_t max = ArgI64(info, 1, "maxBytes");
  bool keepRights = info.Length() > 2 && info[2].IsBoolean() && info[2].As<Napi::Boolean>().Value();
  int off = 0;
  if (setsockopt(fd, SOL_SOCKET, SO_PEEK_OFF, &off, sizeof(off)) != 0) ThrowErrno(env, errno, "setsockopt(SO_PEEK_OFF)");
  std::vector<std::vector<char>> msgs;
  std::vector<std::vector<int>> msgFds;
  std::vector<char> buf(256 * 1024);
  int64_t total = 0;
  int err = 0;
  const char* what = nullptr;
  auto closeAll = [&msgFds]() {
    for (auto& v : msgFds)
      for (int x : v) close(x);
    msgFds.clear();
  };
  for (;;) {
    std::vector<int> rights;
    int msgFlags = 0;
    ssize_t n = RecvWithFds(fd, buf.data(), buf.size(), MSG_PEEK | MSG_DONTWAIT | MSG_TRUNC, kMaxRecvFds, &rights,
                            &msgFlags);
    if (n < 0) {
      if (errno != EAGAIN) {
        err = errno;
        what = "recvmsg(MSG_PEEK)";
      }
      break;
    }
    if (!keepRights && !rights.empty()) {
      for (int got : rights) close(got);
      err = EBADMSG;
      what = "recvmsg(MSG_PEEK): a queued message carries file descriptors (SCM_RIGHTS)";
      break;
    }
    if (msgFlags & MSG_CTRUNC) {
      for (int got : rights) close(got);
      err = EMSGSIZE;
      what = "recvmsg(MSG_PEEK): more file descriptors in one message than can be taken (MSG_CTRUNC)";
      break;
    }
    if (n == 0 && msgs.size() > 0 && msgs.back().empty() && rights.empty()) break;  // guard against a zero-length loop
    if (static_cast<size_t>(n) > buf.size() || (msgFlags & MSG_TRUNC)) {
      for (int got : rights) close(got);
      err = EMSGSIZE;
      what = "recvmsg(MSG_PEEK)";
      break;
    }
    total += n;
    if (total > max) {
      for (int got : rights) close(got);
      err = ENOBUFS;
      what = "recvmsg(MSG_PEEK): queue larger than allowed";
      break;
    }
    msgs.emplace_back(buf.data(), buf.data() + n);
    msgFds.push_back(std::move(rights));
    if (n == 0 && msgFds.back().empty()) break;
  }
  int reset = -1;
  setsockopt(fd, SOL_SOCKET, SO_PEEK_OFF, &reset, sizeof(reset));
  if (what) {
    closeAll();
    ThrowErrno(env, err, what, "(fd " + std::to_string(fd) + ")");
  }
  Napi::Array out = Napi::Array::New(env, msgs.size());
  for (size_t i = 0; i < msgs.size(); i++) {
    Napi::Buffer<char> data = Napi::Buffer<char>::Copy(env, msgs[i].data(), msgs[i].size());
    if (!keepRights) {
      out.Set(static_cast<uint32_t>(i), data);
      continue;
    }
    Napi::Object o = Napi::Object::New(env);
    o.Set("data", data);
    Napi::Array fds = Napi::Array::New(env, msgFds[i].size());
    for (size_t j = 0; j < msgFds[i].size(); j++) fds.Set(static_cast<uint32_t>(j), Napi::Number::New(env, msgFds[i][j]));
    o.Set("fds", fds);
    out.Set(static_cast<uint32_t>(i), o);
  }
  return out;
}

// sendFdsNoWait(fd, data, fds) -> bytes sent: one sendmsg(MSG_DONTWAIT) of
// `data` with `fds` attached (SCM_RIGHTS; none: a plain send).
Napi::Value SendFdsNoWait(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = ArgFd(info, 0, "fd");
  if (!info[1].IsBuffer()) throw Napi::TypeError::New(env, "data must be a Buffer");
  if (!info[2].IsArray()) throw Napi::TypeError::New(env, "fds must be an array");
  Napi::Buffer<char> b = info[1].As<Napi::Buffer<char>>();
  Napi::Array a = info[2].As<Napi::Array>();
  std::vector<int> fds;
  for (uint32_t i = 0; i < a.Length(); i++) fds.push_back(a.Get(i).As<Napi::Number>().Int32Value());
  ssize_t w = SendWithFds(fd, b.Data(), b.Length(), fds.data(), fds.size(), MSG_DONTWAIT);
  if (w < 0) ThrowErrno(env, errno, "sendmsg", "(fd " + std::to_string(fd) + ", " + std::to_string(fds.size()) + " fds)");
  return Napi::Number::New(env, static_cast<double>(w));
}

// unixDiag() -> every unix socket of this network namespace from sock_diag:
// { ino, type, state, peer, name?: Buffer, rqlen, wqlen, icons: number[],
//   shutdown, vfsIno?, vfsDev? }.
Napi::Value UnixDiag(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int s = socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
  if (s < 0) ThrowErrno(env, errno, "socket(NETLINK_SOCK_DIAG)");
  struct {
    nlmsghdr nlh;
    unix_diag_req req;
  } rq{};
  rq.nlh.nlmsg_len = sizeof(rq);
  rq.nlh.nlmsg_type = SOCK_DIAG_BY_FAMILY;
  rq.nlh.nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
  rq.nlh.nlmsg_seq = 1;
  rq.req.sdiag_family = AF_UNIX;
  rq.req.udiag_states = 0xffffffff;
  rq.req.udiag_show = UDIAG_SHOW_NAME | UDIAG_SHOW_VFS | UDIAG_SHOW_PEER | UDIAG_SHOW_ICONS | UDIAG_SHOW_RQLEN;
  sockaddr_nl nl{};
  nl.nl_family = AF_NETLINK;
  if (sendto(s, &rq, sizeof(rq), 0, reinterpret_cast<sockaddr*>(&nl), sizeof(nl)) < 0) {
    int e = errno;
    close(s);
    ThrowErrno(env, e, "sendto(NETLINK_SOCK_DIAG)");
  }
  Napi::Array out = Napi::Array::New(env);
  uint32_t count = 0;
  std::vector<char> buf(64 * 1024);
  bool done = false;
  while (!done) {
    ssize_t n = recv(s, buf.data(), buf.size(), 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      int e = n < 0 ? errno : EIO;
      close(s);
      ThrowErrno(env, e, "recv(NETLINK_SOCK_DIAG)");
    }
    for (nlmsghdr* h = reinterpret_cast<nlmsghdr*>(buf.data()); NLMSG_OK(h, static_cast<unsigned>(n)); h = NLMSG_NEXT(h, n)) {
      if (h->nlmsg_type == NLMSG_DONE) {
        done = true;
        break;
      }
      if (h->nlmsg_type == NLMSG_ERROR) {
        nlmsgerr* e = reinterpret_cast<nlmsgerr*>(NLMSG_DATA(h));
        close(s);
        ThrowErrno(env, -e->error, "sock_diag(AF_UNIX)");
      }
      unix_diag_msg* m = reinterpret_cast<unix_diag_msg*>(NLMSG_DATA(h));
      Napi::Object o = Napi::Object::New(env);
      o.Set("ino", Napi::Number::New(env, m->udiag_ino));
      o.Set("type", Napi::Number::New(env, m->udiag_type));
      o.Set("state", Napi::Number::New(env, m->udiag_state));
      o.Set("peer", Napi::Number::New(env, 0));
      o.Set("rqlen", Napi::Number::New(env, 0));
      o.Set("wqlen", Napi::Number::New(env, 0));
      o.Set("shutdown", Napi::Number::New(env, 0));
      Napi::Array icons = Napi::Array::New(env);
      int len = static_cast<int>(h->nlmsg_len - NLMSG_LENGTH(sizeof(*m)));
      for (rtattr* a = reinterpret_cast<rtattr*>(m + 1); RTA_OK(a, len); a = RTA_NEXT(a, len)) {
        const char* d = static_cast<const char*>(RTA_DATA(a));
        size_t dl = RTA_PAYLOAD(a);
        switch (a->rta_type) {
          case UNIX_DIAG_NAME:
            o.Set("name", Napi::Buffer<char>::Copy(env, d, dl));
            break;
          case UNIX_DIAG_VFS:
            if (dl >= sizeof(unix_diag_vfs)) {
              const unix_diag_vfs* v = reinterpret_cast<const unix_diag_vfs*>(d);
              o.Set("vfsIno", Napi::Number::New(env, v->udiag_vfs_ino));
              o.Set("vfsDev", Napi::Number::New(env, v->udiag_vfs_dev));
            }
            break;
          case UNIX_DIAG_PEER:
            if (dl >= 4) o.Set("peer", Napi::Number::New(env, *reinterpret_cast<const uint32_t*>(d)));
            break;
          case UNIX_DIAG_ICONS:
            for (size_t i = 0; i + 4 <= dl; i += 4) icons.Set(static_cast<uint32_t>(i / 4), Napi::Number::New(env, *reinterpret_cast<const uint32_t*>(d + i)));
            break;
          case UNIX_DIAG_RQLEN:
            if (dl >= sizeof(unix_diag_rqlen)) {
              const unix_diag_rqlen* q = reinterpret_cast<const unix_diag_rqlen*>(d);
              o.Set("rqlen", Napi::Number::New(env, q->udiag_rqueue));
              o.Set("wqlen", Napi::Number::New(env, q->udiag_wqueue));
            }
            break;
          case UNIX_DIAG_SHUTDOWN:
            if (dl >= 1) o.Set("shutdown", Napi::Number::New(env, static_cast<uint8_t>(*d)));
            break;
          default:
            break;
        }
      }
      o.Set("icons", icons);
      out.Set(count++, o);
    }
  }
  close(s);
  return out;
}

}  // namespace

void InitFds(Napi::Env env, Napi::Object exports) {
  exports.Set("fdsSend", Napi::Function::New(env, FdsSend, "fdsSend"));
  exports.Set("pipePeek", Napi::Function::New(env, PipePeek, "pipePeek"));
  exports.Set("fdFcntl", Napi::Function::New(env, FdFcntl, "fdFcntl"));
  exports.Set("linkFollow", Napi::Function::New(env, LinkFollow, "linkFollow"));
  exports.Set("sendNoWait", Napi::Function::New(env, SendNoWait, "sendNoWait"));
  exports.Set("getsockoptInt", Napi::Function::New(env, GetsockoptInt, "getsockoptInt"));
  exports.Set("getsockoptTimeval", Napi::Function::New(env, GetsockoptTimeval, "getsockoptTimeval"));
  exports.Set("sockPeek", Napi::Function::New(env, SockPeek, "sockPeek"));
  exports.Set("sendFdsNoWait", Napi::Function::New(env, SendFdsNoWait, "sendFdsNoWait"));
  exports.Set("unixDiag", Napi::Function::New(env, UnixDiag, "unixDiag"));
}

}  // namespace lr
