// The receiving end of CRIU's lazy-pages socket (IMAGE-FORMAT.md §5.2-5.3).
// Node's net module cannot receive SCM_RIGHTS and has no SO_PEERCRED, so a
// small native listener owns the socket: one thread polls the listening
// socket, every accepted connection and an eventfd used to stop it, checks
// each peer's uid, parses the restorer's messages per connection and posts
// each one to JavaScript through a ThreadSafeFunction. Policy (what to do with
// a task, when the daemon is done) stays in TypeScript (plugin/lazy/socket.ts).
// With holdAnnounced, an announced pid is posted first ("announce") and its
// uffd is received only once JS called proceed(conn): JS looks the pid up in
// the peer's process tree while the peer, which waits until the daemon holds
// the uffd, still holds that tree (afterwards it may release it and exit).
//
// After a task is adopted (or refused), JS may acknowledge it (ack(conn, pid,
// errno)): a 12-byte message "LRAK", pid, errno (0 = adopted) back to that
// peer, if the peer asked for acknowledgements first (the word "LRAQ" before
// any pid). CRIU's protocol has neither; our restorer asks (only a daemon of
// ours) and waits for each (its daemon then holds the uffd, the watchdog its
// copy, a recorded working set is in) before it lets the tree run. A peer
// that did not ask gets nothing: a CRIU restorer closing with unread bytes
// would make our next read of its connection fail with ECONNRESET.
//
// Unlike CRIU's daemon, which accepts exactly one connection, connections are
// independent and concurrent: a peer that stalls, hangs up mid-message or
// sends garbage ends in an error for that connection only (closed, reported
// with its peer pid and an errno name), and the real restorer still gets in.
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
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <napi.h>

#include "common/errors.h"
#include "common/unix_socket.h"

namespace lr {
namespace {

constexpr uint32_t kRestoreFinished = 0x52535446;  // "RSTF"
constexpr uint32_t kAdoptedAck = 0x4b41524c;  // "LRAK" (little-endian), our extension
constexpr uint32_t kAskAcks = 0x5141524c;     // "LRAQ": the peer wants kAdoptedAck messages
// Bounds what a crowd of stray peers can hold open.
constexpr size_t kMaxConns = 64;
// Room for more fds than a message may carry, so extra ones are seen (and closed).
constexpr size_t kMaxFds = 8;

// One message from the listener thread to JS. `fd` is owned by the message
// until JS has received it; undelivered messages close it.
struct SockEvent {
  std::string type;  // connected | refused | announce | task | zombie | finished | eof | protocol | error
  uint32_t conn = 0;  // connection number (from 1), 0 = the listener itself
  int32_t peer = 0;   // the peer's pid (SO_PEERCRED, as seen here; 0 = unknown)
  int32_t pid = 0;
  int64_t uid = -1;
  int fd = -1;
  int err = 0;
  std::string syscall;
  std::string detail;
};

// One accepted connection and where its parser stands.
struct Conn {
  int fd = -1;
  uint32_t id = 0;
  int32_t peer = 0;
  uint8_t word[4] = {0, 0, 0, 0};
  size_t have = 0;    // bytes of the current 4-byte word received
  int32_t pid = 0;    // > 0: announced, its 1 byte + SCM_RIGHTS fd is next
  bool spoke = false;  // sent at least one byte
  // An announced pid waits for JS (proceed) before its uffd is received: the
  // peer (our restorer waits until the daemon holds the uffd) keeps its tree
  // as it is until the pid has been looked up.
  bool held = false;
  bool wantsAcks = false;  // sent kAskAcks
};

class LazySocketListener : public Napi::ObjectWrap<LazySocketListener> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "LazySocketListener",
                       {InstanceMethod("close", &LazySocketListener::Close),
                        InstanceMethod("proceed", &LazySocketListener::Proceed),
                        InstanceMethod("ack", &LazySocketListener::Ack),
                        InstanceAccessor("path", &LazySocketListener::Path, nullptr)});
  }

  explicit LazySocketListener(const Napi::CallbackInfo& info) : Napi::ObjectWrap<LazySocketListener>(info) {
    Napi::Env env = info.Env();
    if (info.Length() < 3 || !info[0].IsString() || !info[2].IsFunction())
      throw Napi::TypeError::New(env, "LazySocketListener(path: string, allowUid: number, onEvent: function, holdAnnounced?: boolean)");
    path_ = info[0].As<Napi::String>().Utf8Value();
    allow_uid_ = ArgI64(info, 1, "allowUid");
    hold_ = info.Length() > 3 && info[3].IsBoolean() && info[3].As<Napi::Boolean>().Value();
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
    // Room for a burst of peers while the listener thread is not scheduled (CRIU uses 10 for its one).
    if (listen(listen_fd_, 64) < 0) {
      int e = errno;
      CloseFds();
      ThrowErrno(env, e, "listen", path_);
    }
    stop_fd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    wake_fd_ = stop_fd_ < 0 ? -1 : eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (stop_fd_ < 0 || wake_fd_ < 0) {
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

  // proceed(conn): the pid announced on `conn` was looked up; receive its uffd.
  Napi::Value Proceed(const Napi::CallbackInfo& info) {
    uint32_t id = static_cast<uint32_t>(ArgI64(info, 0, "conn"));
    if (!running_) return info.Env().Undefined();
    {
      std::lock_guard<std::mutex> lock(proceed_mu_);
      proceed_.push_back(id);
    }
    uint64_t one = 1;
    ssize_t w = write(wake_fd_, &one, sizeof(one));
    (void)w;
    return info.Env().Undefined();
  }

  // ack(conn, pid, errno): tell the peer on `conn` that `pid` was adopted (0) or refused (errno).
  Napi::Value Ack(const Napi::CallbackInfo& info) {
    uint32_t id = static_cast<uint32_t>(ArgI64(info, 0, "conn"));
    int32_t pid = ArgI32(info, 1, "pid");
    int32_t err = ArgI32(info, 2, "errno");
    if (!running_) return info.Env().Undefined();
    {
      std::lock_guard<std::mutex> lock(proceed_mu_);
      acks_.push_back({id, pid, err});
    }
    uint64_t one = 1;
    ssize_t w = write(wake_fd_, &one, sizeof(one));
    (void)w;
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
    // Stalled peers see EOF now.
    for (auto& [fd, c] : conns_) close(fd);
    conns_.clear();
    if (stop_fd_ >= 0) close(stop_fd_);
    stop_fd_ = -1;
    if (wake_fd_ >= 0) close(wake_fd_);
    wake_fd_ = -1;
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
      if (e->conn != 0) {
        o.Set("conn", e->conn);
        o.Set("peer", e->peer);
      }
      if (e->type == "task" || e->type == "announce" || e->type == "zombie" || e->type == "connected" || e->type == "refused" ||
          (e->type == "protocol" && e->pid > 0))
        o.Set("pid", e->pid);
      if (e->uid >= 0) o.Set("uid", Napi::Number::New(env, static_cast<double>(e->uid)));
      if (e->fd >= 0) o.Set("fd", e->fd);
      if (e->type == "error") {
        o.Set("error", ErrnoError(env, e->err, e->syscall.c_str(), e->detail).Value());
      }
      if (e->type == "protocol") {
        o.Set("detail", e->detail);
        o.Set("code", ErrnoName(e->err));
      }
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

  void PostConn(const Conn& c, SockEvent* ev) {
    ev->conn = c.id;
    ev->peer = c.peer;
    Post(ev);
  }

  // A connection ends in an error: reported with its peer, then closed.
  void ConnError(Conn& c, int err, const std::string& what) {
    auto* ev = new SockEvent();
    ev->type = "protocol";
    ev->err = err;
    ev->pid = c.pid;
    ev->detail = what;
    PostConn(c, ev);
  }

  static void CloseAll(const std::vector<int>& fds) {
    for (int f : fds) close(f);
  }

  // Reads what is there for `c`; false = the connection is finished (closed by the caller).
  bool ReadConn(Conn& c) {
    for (;;) {
      const bool wantFd = c.pid > 0;
      uint8_t byte = 0;
      void* at = wantFd ? static_cast<void*>(&byte) : static_cast<void*>(c.word + c.have);
      size_t room = wantFd ? 1 : sizeof(c.word) - c.have;
      // Every fd that arrived is ours to pass on or close: none may leak.
      std::vector<int> fds;
      int msgFlags = 0;
      ssize_t n = RecvWithFds(c.fd, at, room, MSG_DONTWAIT, kMaxFds, &fds, &msgFlags);
      if (n < 0) {
        if (errno == EAGAIN) return true;
        int e = errno;
        ConnError(c, e, std::string("recvmsg: ") + strerror(e));
        return false;
      }
      if (msgFlags & MSG_CTRUNC) {
        CloseAll(fds);
        ConnError(c, EPROTO, "more file descriptors than a message carries (control data truncated)");
        return false;
      }
      if (n > 0) c.spoke = true;
      if (n == 0) {
        CloseAll(fds);
        if (wantFd) {
          ConnError(c, ECONNRESET, "connection closed between pid " + std::to_string(c.pid) + " and its userfaultfd");
        } else if (c.have > 0) {
          ConnError(c, ECONNRESET, "connection closed after " + std::to_string(c.have) + " of the 4 bytes of a message");
        } else {
          auto* ev = new SockEvent();
          ev->type = "eof";
          PostConn(c, ev);
        }
        return false;
      }
      if (wantFd) {
        int32_t pid = c.pid;
        if (fds.size() != 1) {
          CloseAll(fds);
          ConnError(c, EPROTO, fds.empty() ? "pid " + std::to_string(pid) + " was announced without a userfaultfd (no SCM_RIGHTS)"
                                           : "pid " + std::to_string(pid) + " was announced with " + std::to_string(fds.size()) + " file descriptors instead of one userfaultfd");
          return false;
        }
        if (byte != 0) {
          CloseAll(fds);
          ConnError(c, EPROTO, "pid " + std::to_string(pid) + ": the userfaultfd message carries byte " + std::to_string(byte) + ", not 0");
          return false;
        }
        c.pid = 0;
        auto* ev = new SockEvent();
        ev->type = "task";
        ev->pid = pid;
        ev->fd = fds[0];
        PostConn(c, ev);
        continue;
      }
      if (!fds.empty()) {
        CloseAll(fds);
        ConnError(c, EPROTO, "file descriptors sent with a pid/command word (they travel with the 1-byte message after a pid)");
        return false;
      }
      c.have += static_cast<size_t>(n);
      if (c.have < sizeof(c.word)) continue;
      c.have = 0;
      int32_t word;
      memcpy(&word, c.word, sizeof(word));
      auto* ev = new SockEvent();
      if (static_cast<uint32_t>(word) == kRestoreFinished) {
        ev->type = "finished";
        PostConn(c, ev);
      } else if (static_cast<uint32_t>(word) == kAskAcks) {
        delete ev;
        c.wantsAcks = true;
      } else if (word < 0 && word != INT32_MIN) {
        ev->type = "zombie";
        ev->pid = -word;
        PostConn(c, ev);
      } else if (word <= 0) {
        delete ev;
        ConnError(c, EPROTO, "invalid pid " + std::to_string(word) + " announced");
        return false;
      } else {
        delete ev;
        c.pid = word;
        if (hold_) {
          auto* an = new SockEvent();
          an->type = "announce";
          an->pid = word;
          PostConn(c, an);
          c.held = true;
          return true;
        }
      }
    }
  }

  void Accept() {
    for (;;) {
      int fd = accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
      if (fd < 0) {
        if (errno == EINTR || errno == ECONNABORTED) continue;
        if (errno != EAGAIN) PostError(errno, "accept4");  // e.g. EMFILE: reported, the listener goes on
        return;
      }
      Conn c;
      c.fd = fd;
      c.id = ++next_conn_;
      ucred cred{};
      socklen_t clen = sizeof(cred);
      if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &clen) < 0) {
        ConnError(c, errno, "getsockopt(SO_PEERCRED) failed");
        close(fd);
        continue;
      }
      c.peer = cred.pid;
      auto* ev = new SockEvent();
      ev->pid = cred.pid;
      ev->uid = cred.uid;
      if (cred.uid != 0 && static_cast<int64_t>(cred.uid) != allow_uid_) {
        close(fd);
        ev->type = "refused";
        PostConn(c, ev);
        continue;
      }
      if (conns_.size() >= kMaxConns) {
        // Make room by dropping the oldest peer that has never sent a byte:
        // a restorer speaks at once, and refusing it instead would drop the
        // uffds it is about to send (there is no ack: it then runs on zeros).
        auto idle = conns_.end();
        for (auto it = conns_.begin(); it != conns_.end(); ++it)
          if (!it->second.spoke && (idle == conns_.end() || it->second.id < idle->second.id)) idle = it;
        if (idle == conns_.end()) {
          delete ev;
          ConnError(c, EMFILE, "too many connections at once (" + std::to_string(kMaxConns) + "): refused");
          close(fd);
          continue;
        }
        ConnError(idle->second, EMFILE, "too many connections at once (" + std::to_string(kMaxConns) + "): the oldest one that never sent anything is dropped");
        close(idle->first);
        conns_.erase(idle);
      }
      ev->type = "connected";
      PostConn(c, ev);
      conns_.emplace(fd, c);
    }
  }

  // Connections JS let go on (proceed): polled again from the next round.
  void Released() {
    uint64_t n;
    ssize_t r = read(wake_fd_, &n, sizeof(n));
    (void)r;
    std::vector<uint32_t> ids;
    std::vector<AckMsg> acks;
    {
      std::lock_guard<std::mutex> lock(proceed_mu_);
      ids.swap(proceed_);
      acks.swap(acks_);
    }
    for (uint32_t id : ids)
      for (auto& [fd, c] : conns_)
        if (c.id == id) c.held = false;
    // 12 bytes fit any socket buffer a restorer keeps reading; a peer that
    // is gone (or never reads) is not our concern here: its EOF comes by poll.
    for (const AckMsg& a : acks)
      for (auto& [fd, c] : conns_) {
        if (c.id != a.conn || !c.wantsAcks) continue;
        int32_t msg[3] = {static_cast<int32_t>(kAdoptedAck), a.pid, a.err};
        ssize_t w = send(fd, msg, sizeof(msg), MSG_DONTWAIT | MSG_NOSIGNAL);
        (void)w;
      }
  }

  void Run() {
    std::vector<pollfd> pfds;
    while (!stop_.load()) {
      pfds.clear();
      pfds.push_back({stop_fd_, POLLIN, 0});
      pfds.push_back({listen_fd_, POLLIN, 0});
      pfds.push_back({wake_fd_, POLLIN, 0});
      for (auto& [fd, c] : conns_)
        if (!c.held) pfds.push_back({fd, POLLIN, 0});
      int n = poll(pfds.data(), pfds.size(), -1);
      if (n < 0) {
        if (errno == EINTR) continue;
        PostError(errno, "poll");
        return;
      }
      if (pfds[0].revents || stop_.load()) return;
      if (pfds[1].revents) Accept();
      if (pfds[2].revents) Released();
      for (size_t i = 3; i < pfds.size(); i++) {
        if (!pfds[i].revents) continue;
        auto it = conns_.find(pfds[i].fd);
        if (it == conns_.end()) continue;
        if (!ReadConn(it->second)) {
          close(it->first);
          conns_.erase(it);
        }
      }
    }
  }

  std::string path_;
  int64_t allow_uid_ = 0;
  int listen_fd_ = -1;
  std::map<int, Conn> conns_;  // by fd; only the listener thread touches it while running
  uint32_t next_conn_ = 0;
  int stop_fd_ = -1;
  int wake_fd_ = -1;   // proceed() -> listener thread
  bool hold_ = false;  // announce pids and hold their connection until proceed()
  std::mutex proceed_mu_;
  std::vector<uint32_t> proceed_;
  struct AckMsg {
    uint32_t conn;
    int32_t pid;
    int32_t err;
  };
  std::vector<AckMsg> acks_;
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
