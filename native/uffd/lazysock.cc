// The receiving end of CRIU's lazy-pages socket (IMAGE-FORMAT.md §5.2-5.3).
// Node's net module cannot receive SCM_RIGHTS and has no SO_PEERCRED, so a
// small native listener owns the socket: one thread polls the listening
// socket (and then the accepted connection) together with an eventfd used to
// stop it, checks the peer's uid, parses the restorer's messages and posts
// each one to JavaScript through a ThreadSafeFunction. Policy (what to do with
// a task, when the daemon is done) stays in TypeScript (plugin/lazy/socket.ts).
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stddef.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <string>
#include <thread>

#include <napi.h>

#include "common/errors.h"

namespace lr {
namespace {

constexpr uint32_t kRestoreFinished = 0x52535446;  // "RSTF"

// One message from the listener thread to JS. `fd` is owned by the message
// until JS has received it; undelivered messages close it.
struct SockEvent {
  std::string type;  // connected | refused | task | zombie | finished | eof | error
  int32_t pid = 0;
  int64_t uid = -1;
  int fd = -1;
  int err = 0;
  std::string syscall;
  std::string detail;
};

class LazySocketListener : public Napi::ObjectWrap<LazySocketListener> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "LazySocketListener",
                       {InstanceMethod("close", &LazySocketListener::Close),
                        InstanceAccessor("path", &LazySocketListener::Path, nullptr)});
  }

  explicit LazySocketListener(const Napi::CallbackInfo& info) : Napi::ObjectWrap<LazySocketListener>(info) {
    Napi::Env env = info.Env();
    if (info.Length() < 3 || !info[0].IsString() || !info[2].IsFunction())
      throw Napi::TypeError::New(env, "LazySocketListener(path: string, allowUid: number, onEvent: function)");
    path_ = info[0].As<Napi::String>().Utf8Value();
    allow_uid_ = ArgI64(info, 1, "allowUid");
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    if (path_.empty() || path_.size() >= sizeof(addr.sun_path))
      ThrowErrno(env, ENAMETOOLONG, "bind", path_);
    memcpy(addr.sun_path, path_.data(), path_.size());
    // A stale socket file from an earlier daemon would make bind fail with
    // EADDRINUSE; CRIU unlinks it too. Only a socket is removed, never a file.
    struct stat st;
    if (lstat(path_.c_str(), &st) == 0 && S_ISSOCK(st.st_mode)) unlink(path_.c_str());
    listen_fd_ = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (listen_fd_ < 0) ThrowErrno(env, errno, "socket", path_);
    socklen_t len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + path_.size());
    if (bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), len) < 0) {
      int e = errno;
      CloseFds();
      ThrowErrno(env, e, "bind", path_);
    }
    bound_ = true;
    if (listen(listen_fd_, 10) < 0) {
      int e = errno;
      CloseFds();
      ThrowErrno(env, e, "listen", path_);
    }
    stop_fd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (stop_fd_ < 0) {
      int e = errno;
      CloseFds();
      ThrowErrno(env, e, "eventfd");
    }
    tsfn_ = Napi::ThreadSafeFunction::New(env, info[2].As<Napi::Function>(), "lazy-pages socket", 0, 1);
    running_ = true;
    thread_ = std::thread([this] { Run(); });
  }

  ~LazySocketListener() override { Stop(); }

 private:
  Napi::Value Path(const Napi::CallbackInfo& info) { return Napi::String::New(info.Env(), path_); }

  Napi::Value Close(const Napi::CallbackInfo& info) {
    Stop();
    return info.Env().Undefined();
  }

  // Flag, wake, join; then the fds and the TSFN go. Safe to call twice.
  void Stop() {
    if (!running_) return;
    stop_.store(true);
    uint64_t one = 1;
    ssize_t w = write(stop_fd_, &one, sizeof(one));
    (void)w;
    thread_.join();
    running_ = false;
    CloseFds();
    tsfn_.Release();
  }

  void CloseFds() {
    if (listen_fd_ >= 0) close(listen_fd_);
    listen_fd_ = -1;
    if (conn_fd_ >= 0) close(conn_fd_);
    conn_fd_ = -1;
    if (stop_fd_ >= 0) close(stop_fd_);
    stop_fd_ = -1;
    Unlink();
  }

  void Unlink() {
    if (bound_) unlink(path_.c_str());
    bound_ = false;
  }

  void Post(SockEvent* ev) {
    napi_status st = tsfn_.BlockingCall(ev, [](Napi::Env env, Napi::Function cb, SockEvent* e) {
      if (env == nullptr) {  // environment going away: nobody will own the fd
        if (e->fd >= 0) close(e->fd);
        delete e;
        return;
      }
      Napi::Object o = Napi::Object::New(env);
      o.Set("type", e->type);
      if (e->type == "task" || e->type == "zombie" || e->type == "connected" || e->type == "refused")
        o.Set("pid", e->pid);
      if (e->uid >= 0) o.Set("uid", Napi::Number::New(env, static_cast<double>(e->uid)));
      if (e->fd >= 0) o.Set("fd", e->fd);
      if (e->type == "error") {
        o.Set("error", ErrnoError(env, e->err, e->syscall.c_str(), e->detail).Value());
      }
      if (e->type == "protocol") o.Set("detail", e->detail);
      delete e;
      cb.Call({o});
    });
    if (st != napi_ok) {
      if (ev->fd >= 0) close(ev->fd);
      delete ev;
    }
  }

  void PostError(int err, const char* syscall) {
    auto* ev = new SockEvent();
    ev->type = "error";
    ev->err = err;
    ev->syscall = syscall;
    ev->detail = path_;
    Post(ev);
  }

  // Waits until `fd` is readable. false = stop requested (or poll failed, posted).
  bool WaitReadable(int fd) {
    for (;;) {
      if (stop_.load()) return false;
      pollfd p[2] = {{fd, POLLIN, 0}, {stop_fd_, POLLIN, 0}};
      int n = poll(p, 2, -1);
      if (n < 0) {
        if (errno == EINTR) continue;
        PostError(errno, "poll");
        return false;
      }
      if (p[1].revents) return false;
      if (p[0].revents) return true;
    }
  }

  // Receives exactly `len` bytes; with `want_fd`, the one fd riding on them.
  // Returns 1 = ok, 0 = EOF before anything, -1 = error/stop (posted if error).
  int RecvExact(void* buf, size_t len, int* fd_out) {
    size_t got = 0;
    while (got < len) {
      if (!WaitReadable(conn_fd_)) return -1;
      iovec iov{static_cast<char*>(buf) + got, len - got};
      alignas(cmsghdr) char cbuf[CMSG_SPACE(sizeof(int) * 4)];
      msghdr msg{};
      msg.msg_iov = &iov;
      msg.msg_iovlen = 1;
      msg.msg_control = cbuf;
      msg.msg_controllen = sizeof(cbuf);
      ssize_t n = recvmsg(conn_fd_, &msg, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
      if (n < 0) {
        if (errno == EAGAIN || errno == EINTR) continue;
        PostError(errno, "recvmsg");
        return -1;
      }
      // Collect every fd that arrived so none leaks, keep at most one.
      for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
        size_t nfds = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        int fds[4];
        memcpy(fds, CMSG_DATA(c), nfds * sizeof(int));
        for (size_t i = 0; i < nfds; i++) {
          if (fd_out != nullptr && *fd_out < 0) *fd_out = fds[i];
          else close(fds[i]);
        }
      }
      if (n == 0) {
        if (got == 0) return 0;
        PostProtocol("connection closed in the middle of a message");
        return -1;
      }
      got += static_cast<size_t>(n);
    }
    return 1;
  }

  void PostProtocol(const std::string& what) {
    auto* ev = new SockEvent();
    ev->type = "protocol";
    ev->detail = what;
    Post(ev);
  }

  void Run() {
    // Accept until a peer with an allowed uid connects; refused peers are
    // reported and dropped, the socket stays open for the real restorer.
    while (conn_fd_ < 0) {
      if (!WaitReadable(listen_fd_)) return;
      int c = accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (c < 0) {
        if (errno == EAGAIN || errno == EINTR || errno == ECONNABORTED) continue;
        PostError(errno, "accept4");
        return;
      }
      ucred cred{};
      socklen_t clen = sizeof(cred);
      if (getsockopt(c, SOL_SOCKET, SO_PEERCRED, &cred, &clen) < 0) {
        int e = errno;
        close(c);
        PostError(e, "getsockopt(SO_PEERCRED)");
        return;
      }
      auto* ev = new SockEvent();
      ev->pid = cred.pid;
      ev->uid = cred.uid;
      if (cred.uid != 0 && static_cast<int64_t>(cred.uid) != allow_uid_) {
        close(c);
        ev->type = "refused";
        Post(ev);
        continue;
      }
      ev->type = "connected";
      Post(ev);
      conn_fd_ = c;
    }
    // Like CRIU: exactly one restorer connection; nobody else may connect.
    close(listen_fd_);
    listen_fd_ = -1;
    Unlink();
    for (;;) {
      int32_t word = 0;
      int r = RecvExact(&word, sizeof(word), nullptr);
      if (r < 0) return;
      if (r == 0) {
        auto* ev = new SockEvent();
        ev->type = "eof";
        Post(ev);
        return;
      }
      auto* ev = new SockEvent();
      if (static_cast<uint32_t>(word) == kRestoreFinished) {
        ev->type = "finished";
        Post(ev);
        continue;
      }
      if (word < 0) {
        ev->type = "zombie";
        ev->pid = -word;
        Post(ev);
        continue;
      }
      if (word == 0) {
        delete ev;
        PostProtocol("pid 0 announced");
        return;
      }
      uint8_t byte = 0;
      int fd = -1;
      r = RecvExact(&byte, 1, &fd);
      if (r <= 0) {
        if (fd >= 0) close(fd);
        delete ev;
        if (r == 0) PostProtocol("connection closed between a pid and its userfaultfd");
        return;
      }
      if (fd < 0) {
        delete ev;
        PostProtocol("pid " + std::to_string(word) + " was announced without a userfaultfd (no SCM_RIGHTS)");
        return;
      }
      ev->type = "task";
      ev->pid = word;
      ev->fd = fd;
      Post(ev);
    }
  }

  std::string path_;
  int64_t allow_uid_ = 0;
  int listen_fd_ = -1;
  int conn_fd_ = -1;
  int stop_fd_ = -1;
  bool bound_ = false;
  bool running_ = false;
  std::atomic<bool> stop_{false};
  std::thread thread_;
  Napi::ThreadSafeFunction tsfn_;
};

}  // namespace

void InitLazySocket(Napi::Env env, Napi::Object exports) {
  exports.Set("LazySocketListener", LazySocketListener::Define(env));
}

}  // namespace lr
