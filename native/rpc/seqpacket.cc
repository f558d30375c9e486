// native/rpc: the SOCK_SEQPACKET socket of CRIU's RPC (criu swrk FD, criu
// service): one protobuf message per record, optionally with one fd in
// SCM_RIGHTS (the orphan-pts-master notification). Records are read off
// the JS thread; the length of the next record is taken with
// MSG_PEEK|MSG_TRUNC first, as CRIU does, so no record is ever cut.
#include <fcntl.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "common/errors.h"
#include "common/modules.h"
#include "common/unix_socket.h"

namespace lr {
namespace {

constexpr size_t kMaxRecord = 16 << 20;

// seqpacketPair(): [fd, fd], both CLOEXEC.
Napi::Value Pair(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0) ThrowErrno(env, errno, "socketpair");
  Napi::Array a = Napi::Array::New(env, 2);
  a.Set(0u, Napi::Number::New(env, sv[0]));
  a.Set(1u, Napi::Number::New(env, sv[1]));
  return a;
}

// Receives one record; resolves with a Buffer, or null when the peer closed
// (a zero-length read, as CRIU treats it) or reset the connection.
class RecvWorker : public Napi::AsyncWorker {
 public:
  RecvWorker(Napi::Env env, int fd, int timeout)
      : Napi::AsyncWorker(env), deferred_(Napi::Promise::Deferred::New(env)), fd_(fd), timeout_(timeout) {}
  Napi::Promise Promise() { return deferred_.Promise(); }

  void Execute() override {
    int r = WaitReadable(fd_, timeout_);
    if (r < 0) { err_ = -r; sys_ = r == -ETIMEDOUT || r == -EBADF ? "recv" : "poll"; return; }
    ssize_t len;
    do len = recv(fd_, nullptr, 0, MSG_PEEK | MSG_TRUNC | MSG_DONTWAIT); while (len < 0 && errno == EINTR);
    if (len < 0) {
      if (errno == ECONNRESET) { eof_ = true; return; }
      err_ = errno; sys_ = "recv"; return;
    }
    if (len == 0) {
      // Either an empty record or the end: consume it and report the end.
      char c;
      ssize_t n;
      do n = recv(fd_, &c, 1, MSG_DONTWAIT); while (n < 0 && errno == EINTR);
      eof_ = true;
      return;
    }
    if (static_cast<size_t>(len) > kMaxRecord) { err_ = EMSGSIZE; sys_ = "recv"; return; }
    data_.resize(static_cast<size_t>(len));
    ssize_t n;
    do n = recv(fd_, data_.data(), data_.size(), MSG_TRUNC | MSG_DONTWAIT); while (n < 0 && errno == EINTR);
    if (n < 0) {
      if (errno == ECONNRESET) { eof_ = true; return; }
      err_ = errno; sys_ = "recv"; return;
    }
    data_.resize(static_cast<size_t>(n) < data_.size() ? static_cast<size_t>(n) : data_.size());
  }
  void OnOK() override {
    Napi::Env env = Env();
    if (err_ != 0) {
      deferred_.Reject(ErrnoError(env, err_, sys_).Value());
      return;
    }
    if (eof_) {
      deferred_.Resolve(env.Null());
      return;
    }
    deferred_.Resolve(Napi::Buffer<uint8_t>::Copy(env, data_.data(), data_.size()));
  }

 private:
  Napi::Promise::Deferred deferred_;
  int fd_, timeout_;
  bool eof_ = false;
  int err_ = 0;
  const char* sys_ = "";
  std::vector<uint8_t> data_;
};

// seqpacketRecv(fd, timeoutMs): Promise<Buffer | null>; timeoutMs -1 waits until a record or the end.
Napi::Value Recv(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = ArgFd(info, 0, "fd");
  int timeout = ArgI32(info, 1, "timeoutMs");
  auto* w = new RecvWorker(env, fd, timeout);
  Napi::Promise p = w->Promise();
  w->Queue();
  return p;
}

// seqpacketSend(fd, data, passFd?): one record, with passFd in SCM_RIGHTS when given (>= 0).
Napi::Value Send(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = ArgFd(info, 0, "fd");
  if (info.Length() < 2 || !info[1].IsBuffer()) throw Napi::TypeError::New(env, "data must be a Buffer");
  Napi::Buffer<uint8_t> data = info[1].As<Napi::Buffer<uint8_t>>();
  int pass = info.Length() > 2 && !info[2].IsUndefined() ? ArgI32(info, 2, "passFd") : -1;
  if (SendWithFds(fd, data.Data(), data.Length(), &pass, pass >= 0 ? 1 : 0, 0) < 0) ThrowErrno(env, errno, "sendmsg");
  return env.Undefined();
}

// peerCred(fd): { pid, uid, gid } of the other end (SO_PEERCRED).
Napi::Value PeerCred(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = ArgFd(info, 0, "fd");
  struct ucred uc{};
  socklen_t len = sizeof(uc);
  if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &uc, &len) < 0) ThrowErrno(env, errno, "getsockopt(SO_PEERCRED)");
  Napi::Object o = Napi::Object::New(env);
  o.Set("pid", Napi::Number::New(env, uc.pid));
  o.Set("uid", Napi::Number::New(env, uc.uid));
  o.Set("gid", Napi::Number::New(env, uc.gid));
  return o;
}

// socketType(fd): SO_TYPE (SOCK_SEQPACKET = 5), to refuse a wrong fd with a clear error.
Napi::Value SocketType(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = ArgFd(info, 0, "fd");
  int type = 0;
  socklen_t len = sizeof(type);
  if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) < 0) ThrowErrno(env, errno, "getsockopt(SO_TYPE)");
  return Napi::Number::New(env, type);
}

// setCloexec(fd, on): an inherited fd must not leak into the processes we start.
Napi::Value SetCloexec(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = ArgFd(info, 0, "fd");
  bool on = info.Length() < 2 || info[1].ToBoolean();
  int flags = fcntl(fd, F_GETFD);
  if (flags < 0) ThrowErrno(env, errno, "fcntl(F_GETFD)");
  flags = on ? (flags | FD_CLOEXEC) : (flags & ~FD_CLOEXEC);
  if (fcntl(fd, F_SETFD, flags) < 0) ThrowErrno(env, errno, "fcntl(F_SETFD)");
  return env.Undefined();
}

// seqpacketListen(path): a listening AF_UNIX SOCK_SEQPACKET socket (criu service).
Napi::Value Listen(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsString()) throw Napi::TypeError::New(env, "path must be a string");
  std::string path = info[0].As<Napi::String>();
  const char* what = "bind";
  int fd = ListenUnix(path, SOCK_SEQPACKET, &what);
  if (fd < 0) ThrowErrno(env, -fd, what, path);
  return Napi::Number::New(env, fd);
}

class AcceptWorker : public Napi::AsyncWorker {
 public:
  AcceptWorker(Napi::Env env, int fd, int timeout)
      : Napi::AsyncWorker(env), deferred_(Napi::Promise::Deferred::New(env)), fd_(fd), timeout_(timeout) {}
  Napi::Promise Promise() { return deferred_.Promise(); }
  void Execute() override {
    int r = WaitReadable(fd_, timeout_);
    if (r < 0) { err_ = -r; sys_ = r == -ETIMEDOUT || r == -EBADF ? "accept" : "poll"; return; }
    conn_ = accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (conn_ < 0) { err_ = errno; sys_ = "accept4"; }
  }
  void OnOK() override {
    Napi::Env env = Env();
    if (err_ != 0) deferred_.Reject(ErrnoError(env, err_, sys_).Value());
    else deferred_.Resolve(Napi::Number::New(env, conn_));
  }

 private:
  Napi::Promise::Deferred deferred_;
  int fd_, timeout_;
  int conn_ = -1;
  int err_ = 0;
  const char* sys_ = "";
};

// seqpacketAccept(listenFd, timeoutMs): Promise<fd>.
Napi::Value Accept(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = ArgFd(info, 0, "listenFd");
  int timeout = ArgI32(info, 1, "timeoutMs");
  auto* w = new AcceptWorker(env, fd, timeout);
  Napi::Promise p = w->Promise();
  w->Queue();
  return p;
}

}  // namespace

void InitRpc(Napi::Env env, Napi::Object exports) {
  exports.Set("seqpacketPair", Napi::Function::New(env, Pair, "seqpacketPair"));
  exports.Set("seqpacketRecv", Napi::Function::New(env, Recv, "seqpacketRecv"));
  exports.Set("seqpacketSend", Napi::Function::New(env, Send, "seqpacketSend"));
  exports.Set("seqpacketListen", Napi::Function::New(env, Listen, "seqpacketListen"));
  exports.Set("seqpacketAccept", Napi::Function::New(env, Accept, "seqpacketAccept"));
  exports.Set("peerCred", Napi::Function::New(env, PeerCred, "peerCred"));
  exports.Set("socketType", Napi::Function::New(env, SocketType, "socketType"));
  exports.Set("setCloexec", Napi::Function::New(env, SetCloexec, "setCloexec"));
}

}  // namespace lr
