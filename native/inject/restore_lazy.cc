// Restore-side pieces of lazy restore: taking a userfaultfd out of a restored
// process (pidfd_getfd), enabling it (UFFDIO_API with the non-cooperative
// events) and registering whole VMAs (MISSING), and the sending end of CRIU's
// lazy-pages socket (pid, then the uffd over SCM_RIGHTS; "RSTF" at the end).
#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>

#include <string>

#include "common/errors.h"
#include "common/unix_socket.h"
#include "inject/restore.h"

namespace lr {
namespace {

// restorePidfdGetfd(pid, fd) -> a new fd in this process (O_CLOEXEC).
Napi::Value PidfdGetfd(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int pid = ArgI32(info, 0, "pid");
  int fd = ArgFd(info, 1, "fd");
  int pidfd = static_cast<int>(syscall(SYS_pidfd_open, pid, 0));
  if (pidfd < 0) ThrowErrno(env, errno, "pidfd_open", "(pid " + std::to_string(pid) + ")");
  int got = static_cast<int>(syscall(SYS_pidfd_getfd, pidfd, fd, 0));
  int e = errno;
  close(pidfd);
  if (got < 0) ThrowErrno(env, e, "pidfd_getfd", "(pid " + std::to_string(pid) + ", fd " + std::to_string(fd) + ")");
  return Napi::Number::New(env, got);
}

Napi::Value CloseFd(const Napi::CallbackInfo& info) {
  int fd = ArgFd(info, 0, "fd");
  close(fd);
  return info.Env().Undefined();
}

// restoreUffdSetup(uffd, wantFeatures, ranges) -> granted features (bigint).
// ranges: BigUint64Array of (start, length) pairs, each a whole VMA.
Napi::Value UffdSetup(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int uffd = ArgFd(info, 0, "uffd");
  uint64_t want = ArgU64(info, 1, "features");
  if (!info[2].IsTypedArray() || info[2].As<Napi::TypedArray>().TypedArrayType() != napi_biguint64_array)
    throw Napi::TypeError::New(env, "ranges must be a BigUint64Array");
  Napi::BigUint64Array ranges = info[2].As<Napi::BigUint64Array>();

  // UFFDIO_API may be issued once per fd; the caller asks only for features
  // it needs, and the kernel refuses (EINVAL) rather than silently dropping one.
  uffdio_api api{};
  api.api = UFFD_API;
  api.features = want;
  if (ioctl(uffd, UFFDIO_API, &api) != 0) ThrowErrno(env, errno, "ioctl(UFFDIO_API)");
  for (size_t i = 0; i + 1 < ranges.ElementLength(); i += 2) {
    uffdio_register reg{};
    reg.range.start = ranges[i];
    reg.range.len = ranges[i + 1];
    reg.mode = UFFDIO_REGISTER_MODE_MISSING;
    if (ioctl(uffd, UFFDIO_REGISTER, &reg) != 0) {
      char b[96];
      snprintf(b, sizeof(b), "(range 0x%llx+0x%llx)", static_cast<unsigned long long>(reg.range.start),
               static_cast<unsigned long long>(reg.range.len));
      ThrowErrno(env, errno, "ioctl(UFFDIO_REGISTER)", b);
    }
  }
  return Napi::BigInt::New(env, static_cast<uint64_t>(api.features));
}

bool WriteAll(int fd, const void* p, size_t n) {
  const uint8_t* b = static_cast<const uint8_t*>(p);
  while (n > 0) {
    ssize_t w = send(fd, b, n, MSG_NOSIGNAL);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return false;
    b += w;
    n -= static_cast<size_t>(w);
  }
  return true;
}

// restoreLazyConnect(path) -> socket fd
Napi::Value LazyConnect(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsString()) throw Napi::TypeError::New(env, "path must be a string");
  std::string path = info[0].As<Napi::String>().Utf8Value();
  sockaddr_un sa{};
  if (path.size() >= sizeof(sa.sun_path)) ThrowErrno(env, ENAMETOOLONG, "connect", path);
  sa.sun_family = AF_UNIX;
  memcpy(sa.sun_path, path.data(), path.size());
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) ThrowErrno(env, errno, "socket");
  socklen_t len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + path.size());
  if (connect(fd, reinterpret_cast<sockaddr*>(&sa), len) != 0) {
    int e = errno;
    close(fd);
    ThrowErrno(env, e, "connect", path);
  }
  return Napi::Number::New(env, fd);
}

// restoreLazySendTask(sock, pid, uffd): message A (uffd >= 0) or B (uffd < 0: zombie, sends -pid).
Napi::Value LazySendTask(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int sock = ArgFd(info, 0, "sock");
  int32_t pid = ArgI32(info, 1, "pid");
  int32_t uffd = ArgI32(info, 2, "uffd");
  int32_t v = uffd >= 0 ? pid : -pid;
  if (!WriteAll(sock, &v, sizeof(v))) ThrowErrno(env, errno ? errno : EPIPE, "send", "(lazy-pages socket)");
  if (uffd < 0) return env.Undefined();
  char byte = 0;
  ssize_t w = SendWithFds(sock, &byte, 1, &uffd, 1, 0);
  if (w != 1) ThrowErrno(env, w < 0 ? errno : EPIPE, "sendmsg", "(lazy-pages socket, SCM_RIGHTS)");
  return env.Undefined();
}

// restoreLazyPeerPid(sock) -> the daemon's pid as seen here (SO_PEERCRED).
Napi::Value LazyPeerPid(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int sock = ArgFd(info, 0, "sock");
  ucred cred{};
  socklen_t len = sizeof(cred);
  if (getsockopt(sock, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) ThrowErrno(env, errno, "getsockopt", "(lazy-pages socket, SO_PEERCRED)");
  return Napi::Number::New(env, cred.pid);
}

// restoreLazySendFinish(sock): message C, "RSTF".
Napi::Value LazySendFinish(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int sock = ArgFd(info, 0, "sock");
  uint32_t v = 0x52535446;
  if (!WriteAll(sock, &v, sizeof(v))) ThrowErrno(env, errno ? errno : EPIPE, "send", "(lazy-pages socket)");
  return env.Undefined();
}

// restoreLazyAskAcks(sock): "LRAQ", our extension: our daemon then acknowledges each pid (restoreLazyReadAck).
Napi::Value LazyAskAcks(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int sock = ArgFd(info, 0, "sock");
  uint32_t v = 0x5141524c;
  if (!WriteAll(sock, &v, sizeof(v))) ThrowErrno(env, errno ? errno : EPIPE, "send", "(lazy-pages socket)");
  return env.Undefined();
}

// restoreLazyReadAck(sock, timeoutMs) -> { pid, errno } or undefined when
// nothing came within timeoutMs: reads one 12-byte "LRAK" acknowledgement
// of our lazy-pages daemon (native/uffd/lazysock.cc). EOF is ECONNRESET, any
// other message EPROTO.
Napi::Value LazyReadAck(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int sock = ArgFd(info, 0, "sock");
  int timeout = ArgI32(info, 1, "timeoutMs");
  int32_t msg[3];
  size_t have = 0;
  while (have < sizeof(msg)) {
    pollfd p{sock, POLLIN, 0};
    int n = poll(&p, 1, have == 0 ? timeout : 1000);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) ThrowErrno(env, errno, "poll", "(lazy-pages socket)");
    if (n == 0) {
      if (have == 0) return env.Undefined();
      ThrowErrno(env, ETIMEDOUT, "recv", "(lazy-pages socket: a cut acknowledgement)");
    }
    ssize_t r = recv(sock, reinterpret_cast<uint8_t*>(msg) + have, sizeof(msg) - have, MSG_DONTWAIT);
    if (r < 0 && (errno == EINTR || errno == EAGAIN)) continue;
    if (r < 0) ThrowErrno(env, errno, "recv", "(lazy-pages socket)");
    if (r == 0) ThrowErrno(env, ECONNRESET, "recv", "(lazy-pages socket: the daemon closed it)");
    have += static_cast<size_t>(r);
  }
  if (static_cast<uint32_t>(msg[0]) != 0x4b41524c) ThrowErrno(env, EPROTO, "recv", "(lazy-pages socket: not an acknowledgement)");
  Napi::Object o = Napi::Object::New(env);
  o.Set("pid", Napi::Number::New(env, msg[1]));
  o.Set("errno", Napi::Number::New(env, msg[2]));
  return o;
}

}  // namespace

void InitRestoreLazy(Napi::Env env, Napi::Object exports) {
  exports.Set("restorePidfdGetfd", Napi::Function::New(env, PidfdGetfd, "restorePidfdGetfd"));
  exports.Set("restoreCloseFd", Napi::Function::New(env, CloseFd, "restoreCloseFd"));
  exports.Set("restoreUffdSetup", Napi::Function::New(env, UffdSetup, "restoreUffdSetup"));
  exports.Set("restoreLazyConnect", Napi::Function::New(env, LazyConnect, "restoreLazyConnect"));
  exports.Set("restoreLazySendTask", Napi::Function::New(env, LazySendTask, "restoreLazySendTask"));
  exports.Set("restoreLazyPeerPid", Napi::Function::New(env, LazyPeerPid, "restoreLazyPeerPid"));
  exports.Set("restoreLazySendFinish", Napi::Function::New(env, LazySendFinish, "restoreLazySendFinish"));
  exports.Set("restoreLazyReadAck", Napi::Function::New(env, LazyReadAck, "restoreLazyReadAck"));
  exports.Set("restoreLazyAskAcks", Napi::Function::New(env, LazyAskAcks, "restoreLazyAskAcks"));
}

}  // namespace lr
