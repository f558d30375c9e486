// native/uffd: the userfaultfd ABI as plain synchronous functions (one
// ioctl each), plus the unix-socket fd passing used to receive a uffd from
// another process. Argument checks live in TypeScript (plugin/uffd/abi.ts);
// here only types are checked. Every failure goes through lr::ThrowErrno;
// operations that can make partial progress attach `progress` (bytes done,
// bigint) to the error.
#include <fcntl.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <string>
#include <vector>

#include "common/errors.h"
#include "common/modules.h"
#include "common/unix_socket.h"
#include "uffd/lazysock.h"
#include "uffd/uffd_abi.h"

namespace lr {
namespace {

Napi::BigInt Big(Napi::Env env, uint64_t v) { return Napi::BigInt::New(env, v); }

std::string Range(uint64_t start, uint64_t len) {
  char buf[64];
  snprintf(buf, sizeof(buf), "[0x%llx, +0x%llx)", (unsigned long long)start, (unsigned long long)len);
  return buf;
}

[[noreturn]] void ThrowProgress(Napi::Env env, int err, const char* syscall, uint64_t start,
                                uint64_t len, uint64_t progress) {
  Napi::Error e = ErrnoError(env, err, syscall, Range(start, len));
  e.Set("progress", Big(env, progress));
  throw e;
}

// uffdCreate(flags, allowDevFallback): the syscall, then /dev/userfaultfd
// (root-only there, but works where the syscall is restricted by sysctl).
Napi::Value Create(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int flags = ArgI32(info, 0, "flags");
  bool fallback = info.Length() > 1 && info[1].ToBoolean().Value();
  int fd = SysUserfaultfd(flags);
  if (fd >= 0) return Napi::Number::New(env, fd);
  int err = errno;
  if (!fallback || (err != EPERM && err != ENOSYS)) ThrowErrno(env, err, "userfaultfd");
  int dev = open("/dev/userfaultfd", O_RDWR | O_CLOEXEC);
  if (dev < 0) ThrowErrno(env, errno, "open", "/dev/userfaultfd (after userfaultfd: " + std::string(ErrnoName(err)) + ")");
  fd = ioctl(dev, USERFAULTFD_IOC_NEW, flags);
  int err2 = errno;
  close(dev);
  if (fd < 0) ThrowErrno(env, err2, "ioctl(USERFAULTFD_IOC_NEW)");
  return Napi::Number::New(env, fd);
}

Napi::Value Api(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = ArgFd(info, 0, "fd");
  struct uffdio_api api{};
  api.api = UFFD_API;
  api.features = ArgU64(info, 1, "features");
  if (ioctl(fd, UFFDIO_API, &api) < 0) ThrowErrno(env, errno, "ioctl(UFFDIO_API)");
  Napi::Object r = Napi::Object::New(env);
  r.Set("api", Big(env, api.api));
  r.Set("features", Big(env, api.features));
  r.Set("ioctls", Big(env, api.ioctls));
  return r;
}

Napi::Value Register(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = ArgFd(info, 0, "fd");
  struct uffdio_register reg{};
  reg.range.start = ArgU64(info, 1, "start");
  reg.range.len = ArgU64(info, 2, "len");
  reg.mode = ArgU64(info, 3, "mode");
  if (ioctl(fd, UFFDIO_REGISTER, &reg) < 0)
    ThrowErrno(env, errno, "ioctl(UFFDIO_REGISTER)", Range(reg.range.start, reg.range.len));
  return Big(env, reg.ioctls);
}

Napi::Value Unregister(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = ArgFd(info, 0, "fd");
  uint64_t start = ArgU64(info, 1, "start"), len = ArgU64(info, 2, "len");
  int r = UffdUnregister(fd, start, len);
  if (r < 0) ThrowErrno(env, -r, "ioctl(UFFDIO_UNREGISTER)", Range(start, len));
  return env.Undefined();
}

// uffdCopy(fd, dst, data, mode): copies the whole Buffer to dst.
Napi::Value Copy(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = ArgFd(info, 0, "fd");
  uint64_t dst = ArgU64(info, 1, "dst");
  if (info.Length() < 3 || !info[2].IsBuffer()) throw Napi::TypeError::New(env, "data must be a Buffer");
  auto data = info[2].As<Napi::Buffer<uint8_t>>();
  uint64_t mode = ArgU64(info, 3, "mode");
  uint64_t done = 0;
  int r = UffdCopy(fd, dst, reinterpret_cast<uint64_t>(data.Data()), data.Length(), mode, &done);
  if (r < 0) ThrowProgress(env, -r, "ioctl(UFFDIO_COPY)", dst, data.Length(), done);
  return Big(env, done);
}

Napi::Value Zeropage(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = ArgFd(info, 0, "fd");
  uint64_t start = ArgU64(info, 1, "start"), len = ArgU64(info, 2, "len"), mode = ArgU64(info, 3, "mode");
  uint64_t done = 0;
  int r = UffdZeropage(fd, start, len, mode, &done);
  if (r < 0) ThrowProgress(env, -r, "ioctl(UFFDIO_ZEROPAGE)", start, len, done);
  return Big(env, done);
}

Napi::Value Wake(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = ArgFd(info, 0, "fd");
  uint64_t start = ArgU64(info, 1, "start"), len = ArgU64(info, 2, "len");
  int r = UffdWake(fd, start, len);
  if (r < 0) ThrowErrno(env, -r, "ioctl(UFFDIO_WAKE)", Range(start, len));
  return env.Undefined();
}

Napi::Value Writeprotect(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = ArgFd(info, 0, "fd");
  struct uffdio_writeprotect wp{};
  wp.range.start = ArgU64(info, 1, "start");
  wp.range.len = ArgU64(info, 2, "len");
  wp.mode = ArgU64(info, 3, "mode");
  if (ioctl(fd, UFFDIO_WRITEPROTECT, &wp) < 0)
    ThrowErrno(env, errno, "ioctl(UFFDIO_WRITEPROTECT)", Range(wp.range.start, wp.range.len));
  return env.Undefined();
}

Napi::Value Continue(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = ArgFd(info, 0, "fd");
  struct uffdio_continue c{};
  c.range.start = ArgU64(info, 1, "start");
  c.range.len = ArgU64(info, 2, "len");
  c.mode = ArgU64(info, 3, "mode");
  int r = ioctl(fd, UFFDIO_CONTINUE, &c);
  uint64_t done = c.mapped > 0 ? static_cast<uint64_t>(c.mapped) : 0;
  if (r < 0) ThrowProgress(env, errno, "ioctl(UFFDIO_CONTINUE)", c.range.start, c.range.len, done);
  return Big(env, c.range.len);
}

Napi::Value Move(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = ArgFd(info, 0, "fd");
  UffdioMove m{};
  m.dst = ArgU64(info, 1, "dst");
  m.src = ArgU64(info, 2, "src");
  m.len = ArgU64(info, 3, "len");
  m.mode = ArgU64(info, 4, "mode");
  int r = ioctl(fd, kUffdioMove, &m);
  uint64_t done = m.move > 0 ? static_cast<uint64_t>(m.move) : 0;
  if (r < 0) ThrowProgress(env, errno, "ioctl(UFFDIO_MOVE)", m.dst, m.len, done);
  return Big(env, done);
}

Napi::Value Poison(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = ArgFd(info, 0, "fd");
  UffdioPoison p{};
  p.range.start = ArgU64(info, 1, "start");
  p.range.len = ArgU64(info, 2, "len");
  p.mode = ArgU64(info, 3, "mode");
  int r = ioctl(fd, kUffdioPoison, &p);
  uint64_t done = p.updated > 0 ? static_cast<uint64_t>(p.updated) : 0;
  if (r < 0) ThrowProgress(env, errno, "ioctl(UFFDIO_POISON)", p.range.start, p.range.len, done);
  return Big(env, p.range.len);
}

// uffdRead(fd, max): non-blocking read of up to `max` messages; [] when
// nothing is pending (EAGAIN). Each message is decoded by event type.
Napi::Value Read(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = ArgFd(info, 0, "fd");
  int max = info.Length() > 1 ? ArgI32(info, 1, "max") : 64;
  if (max < 1 || max > 4096) throw Napi::RangeError::New(env, "max must be 1..4096");
  std::vector<struct uffd_msg> msgs(max);
  ssize_t n = read(fd, msgs.data(), sizeof(struct uffd_msg) * max);
  Napi::Array out = Napi::Array::New(env);
  if (n < 0) {
    if (errno == EAGAIN) return out;
    ThrowErrno(env, errno, "read(userfaultfd)");
  }
  if (n % sizeof(struct uffd_msg) != 0) ThrowErrno(env, EIO, "read(userfaultfd)", "short message");
  for (size_t i = 0; i < static_cast<size_t>(n) / sizeof(struct uffd_msg); i++) {
    const struct uffd_msg& m = msgs[i];
    Napi::Object o = Napi::Object::New(env);
    switch (m.event) {
      case UFFD_EVENT_PAGEFAULT:
        o.Set("event", "pagefault");
        o.Set("flags", Big(env, m.arg.pagefault.flags));
        o.Set("address", Big(env, m.arg.pagefault.address));
        o.Set("ptid", Napi::Number::New(env, m.arg.pagefault.feat.ptid));
        break;
      case UFFD_EVENT_FORK:
        o.Set("event", "fork");
        o.Set("ufd", Napi::Number::New(env, m.arg.fork.ufd));
        break;
      case UFFD_EVENT_REMAP:
        o.Set("event", "remap");
        o.Set("from", Big(env, m.arg.remap.from));
        o.Set("to", Big(env, m.arg.remap.to));
        o.Set("len", Big(env, m.arg.remap.len));
        break;
      case UFFD_EVENT_REMOVE:
      case UFFD_EVENT_UNMAP:
        o.Set("event", m.event == UFFD_EVENT_REMOVE ? "remove" : "unmap");
        o.Set("start", Big(env, m.arg.remove.start));
        o.Set("end", Big(env, m.arg.remove.end));
        break;
      default:
        o.Set("event", "unknown");
        o.Set("code", Napi::Number::New(env, m.event));
        break;
    }
    out.Set(static_cast<uint32_t>(i), o);
  }
  return out;
}

// uffdPoll(fd, timeoutMs): true when readable. Blocks the caller: for tests
// and short bounded waits only.
Napi::Value Poll(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  struct pollfd p{ArgFd(info, 0, "fd"), POLLIN, 0};
  int timeout = ArgI32(info, 1, "timeoutMs");
  int r;
  do r = poll(&p, 1, timeout); while (r < 0 && errno == EINTR);
  if (r < 0) ThrowErrno(env, errno, "poll");
  if (r > 0 && (p.revents & POLLNVAL)) ThrowErrno(env, EBADF, "poll");
  return Napi::Boolean::New(env, r > 0 && (p.revents & (POLLIN | POLLERR | POLLHUP)));
}

// unixListen(path): a listening AF_UNIX stream socket (CLOEXEC).
Napi::Value UnixListen(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsString()) throw Napi::TypeError::New(env, "path must be a string");
  std::string path = info[0].As<Napi::String>();
  const char* what = "bind";
  int fd = ListenUnix(path, SOCK_STREAM, &what);
  if (fd < 0) ThrowErrno(env, -fd, what, path);
  return Napi::Number::New(env, fd);
}

// Accepts one connection and receives one message with its SCM_RIGHTS fds,
// off the JS thread.
class RecvWorker : public Napi::AsyncWorker {
  static constexpr size_t kMaxFds = 16;

 public:
  RecvWorker(Napi::Env env, int lfd, int timeout, size_t max)
      : Napi::AsyncWorker(env), deferred_(Napi::Promise::Deferred::New(env)), lfd_(lfd), timeout_(timeout), max_(max) {}
  Napi::Promise Promise() { return deferred_.Promise(); }

  void Execute() override {
    int r = WaitReadable(lfd_, timeout_);
    if (r < 0) { err_ = -r; sys_ = r == -ETIMEDOUT || r == -EBADF ? "accept" : "poll"; return; }
    conn_ = accept4(lfd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (conn_ < 0) { err_ = errno; sys_ = "accept4"; return; }
    r = WaitReadable(conn_, timeout_);
    if (r < 0) { err_ = -r; sys_ = "recvmsg"; return; }
    data_.resize(max_);
    ssize_t n = RecvWithFds(conn_, data_.data(), data_.size(), 0, kMaxFds, &fds_);
    if (n < 0) { err_ = errno; sys_ = "recvmsg"; return; }
    data_.resize(n);
  }
  void OnOK() override {
    Napi::Env env = Env();
    if (err_ != 0) {
      if (conn_ >= 0) close(conn_);
      for (int fd : fds_) close(fd);
      deferred_.Reject(ErrnoError(env, err_, sys_).Value());
      return;
    }
    Napi::Object r = Napi::Object::New(env);
    r.Set("conn", Napi::Number::New(env, conn_));
    r.Set("data", Napi::Buffer<uint8_t>::Copy(env, data_.data(), data_.size()));
    Napi::Array fds = Napi::Array::New(env);
    for (size_t i = 0; i < fds_.size(); i++) fds.Set(static_cast<uint32_t>(i), Napi::Number::New(env, fds_[i]));
    r.Set("fds", fds);
    deferred_.Resolve(r);
  }

 private:
  Napi::Promise::Deferred deferred_;
  int lfd_, timeout_;
  size_t max_;
  int conn_ = -1;
  int err_ = 0;
  const char* sys_ = "";
  std::vector<uint8_t> data_;
  std::vector<int> fds_;
};

Napi::Value AcceptRecvFds(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int lfd = ArgFd(info, 0, "listenFd");
  int timeout = ArgI32(info, 1, "timeoutMs");
  int max = info.Length() > 2 ? ArgI32(info, 2, "maxBytes") : 65536;
  if (max < 1 || max > (1 << 24)) throw Napi::RangeError::New(env, "maxBytes must be 1..16M");
  auto* w = new RecvWorker(env, lfd, timeout, static_cast<size_t>(max));
  Napi::Promise p = w->Promise();
  w->Queue();
  return p;
}

}  // namespace

void InitUffd(Napi::Env env, Napi::Object exports) {
  exports.Set("uffdCreate", Napi::Function::New(env, Create, "uffdCreate"));
  exports.Set("uffdApi", Napi::Function::New(env, Api, "uffdApi"));
  exports.Set("uffdRegister", Napi::Function::New(env, Register, "uffdRegister"));
  exports.Set("uffdUnregister", Napi::Function::New(env, Unregister, "uffdUnregister"));
  exports.Set("uffdCopy", Napi::Function::New(env, Copy, "uffdCopy"));
  exports.Set("uffdZeropage", Napi::Function::New(env, Zeropage, "uffdZeropage"));
  exports.Set("uffdWake", Napi::Function::New(env, Wake, "uffdWake"));
  exports.Set("uffdWriteprotect", Napi::Function::New(env, Writeprotect, "uffdWriteprotect"));
  exports.Set("uffdContinue", Napi::Function::New(env, Continue, "uffdContinue"));
  exports.Set("uffdMove", Napi::Function::New(env, Move, "uffdMove"));
  exports.Set("uffdPoison", Napi::Function::New(env, Poison, "uffdPoison"));
  exports.Set("uffdRead", Napi::Function::New(env, Read, "uffdRead"));
  exports.Set("uffdPoll", Napi::Function::New(env, Poll, "uffdPoll"));
  exports.Set("unixListen", Napi::Function::New(env, UnixListen, "unixListen"));
  exports.Set("acceptRecvFds", Napi::Function::New(env, AcceptRecvFds, "acceptRecvFds"));
  InitLazySocket(env, exports);  // plugin/lazy: CRIU lazy-pages socket (lazysock.cc)
}

}  // namespace lr
