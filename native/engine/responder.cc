// NativePageResponder: the page server's fast path for lazy GETs. The TS
// PageServer (plugin/pageserver/server.ts) keeps every protocol decision:
// it accepts a plain TCP connection paused (nothing read by Node), gives the
// responder the run table of its store (pid -> [start, end) at a file offset
// of an fd the store owns) and the socket. A thread per connection then
// answers well-formed GETs it can serve: reads the 32-byte header, preads
// the pages, writes header + data with one send, and busy-polls briefly for
// the next GET before sleeping in poll(). Anything else (CLOSE, an unknown
// range or pid, a malformed header, EOF, an error) is handed back: the
// thread closes its duplicate of the socket first, then reports the bytes
// it consumed, and TypeScript resumes the socket and carries on from there.
//
// Threads stop with a flag + eventfd + join (stop(), close(), env cleanup);
// they never touch Node's fd (only a duplicate) and never change its flags
// (non-blocking I/O through MSG_DONTWAIT and poll()).
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "common/clock.h"
#include "common/errors.h"
#include "common/fileio.h"
#include "engine/pageserver_wire.h"

namespace lr {
namespace {

constexpr uint64_t kPage = 4096;
constexpr size_t kHdr = pageserver::kHeaderSize;
// Larger replies go to the JS path (bounded memory per connection).
constexpr uint64_t kMaxReplyPages = 4096;
// Only a small reply (a fault, with its fault-around) is followed by a
// busy-poll: after bulk transfer the client needs the CPU to take the data.
constexpr uint64_t kSpinMaxPages = 16;

struct Run {
  uint64_t start, end;
  int fd;
  uint64_t off;
  // Read-only mapping of the whole file when it is a regular file that can
  // be mapped (pages files): replies are sent straight from it, no pread.
  const uint8_t* base = nullptr;
  uint64_t size = 0;
  // The process whose memory the fd is (/proc/PID/mem, offset = address):
  // replies are read with process_vm_readv, one copy straight from the
  // frozen tree (a /proc/PID/mem read copies each page twice).
  pid_t pid = 0;
};

// PID when fd is /proc/PID/mem, else 0.
pid_t ProcMemPid(int fd) {
  char link[64], target[128];
  snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
  ssize_t n = readlink(link, target, sizeof(target) - 1);
  if (n <= 0) return 0;
  target[n] = 0;
  int pid = 0, end = 0;
  if (sscanf(target, "/proc/%d/mem%n", &pid, &end) == 1 && target[end] == 0 && pid > 0) return pid;
  return 0;
}

// Exactly n bytes of pid's memory at addr (process_vm_readv, then /proc/PID/mem
// for what it cannot reach, e.g. PROT_NONE pages): false on failure.
bool ReadProcessMemory(pid_t pid, int memFd, uint8_t* buf, size_t n, uint64_t addr) {
  size_t done = 0;
  while (done < n) {
    struct iovec l{buf + done, n - done}, r{reinterpret_cast<void*>(addr + done), n - done};
    ssize_t k = process_vm_readv(pid, &l, 1, &r, 1, 0);
    if (k < 0 && errno == EINTR) continue;
    if (k > 0) {
      done += static_cast<size_t>(k);
      continue;
    }
    // Not readable this way: one page through /proc/PID/mem (FOLL_FORCE).
    size_t one = std::min<size_t>(4096 - (addr + done) % 4096, n - done);
    if (!PreadFull(memFd, buf + done, one, addr + done)) return false;
    done += one;
  }
  return true;
}

struct Handback {
  uint32_t conn;
  std::string reason;  // "eof", "error", "command"
  int err = 0;
  std::vector<uint8_t> bytes;
};

class Responder;

struct Conn {
  uint32_t id = 0;
  int fd = -1;
  int stopfd = -1;
  std::atomic<bool> stop{false};
  std::atomic<bool> finished{false};
  std::thread th;
};

class Responder {
 public:
  Responder(uint64_t spinNs, std::function<void(Handback&&)> report) : spinNs_(spinNs), report_(std::move(report)) {}
  ~Responder() {
    StopAll();
    for (auto& [fd, m] : maps_)
      if (m.first) munmap(const_cast<uint8_t*>(m.first), m.second);
  }

  void SetRuns(int32_t pid, std::vector<Run>&& runs) {
    std::sort(runs.begin(), runs.end(), [](const Run& a, const Run& b) { return a.start < b.start; });
    std::lock_guard<std::mutex> g(runsMu_);
    for (Run& r : runs) {
      auto it = maps_.find(r.fd);
      if (it == maps_.end()) {
        // /proc/PID/mem reports size 0 and cannot be mapped: pread then.
        struct stat st;
        const uint8_t* base = nullptr;
        uint64_t size = 0;
        if (fstat(r.fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_size > 0) {
          void* m = mmap(nullptr, static_cast<size_t>(st.st_size), PROT_READ, MAP_SHARED, r.fd, 0);
          if (m != MAP_FAILED) {
            base = static_cast<const uint8_t*>(m);
            size = static_cast<uint64_t>(st.st_size);
          }
        }
        it = maps_.emplace(r.fd, std::make_pair(base, size)).first;
      }
      r.base = it->second.first;
      r.size = it->second.second;
      if (!r.base) {
        auto pit = pids_.find(r.fd);
        if (pit == pids_.end()) pit = pids_.emplace(r.fd, ProcMemPid(r.fd)).first;
        r.pid = pit->second;
      }
    }
    runs_[pid] = std::move(runs);
  }

  // 0 or -errno; *what names the failing call.
  int Serve(int fd, uint32_t* id, const char** what) {
    auto c = std::make_shared<Conn>();
    c->fd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    if (c->fd < 0) { *what = "fcntl(F_DUPFD_CLOEXEC)"; return -errno; }
    c->stopfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (c->stopfd < 0) { int e = errno; close(c->fd); *what = "eventfd"; return -e; }
    {
      std::lock_guard<std::mutex> g(connMu_);
      c->id = nextId_++;
      conns_[c->id] = c;
    }
    *id = c->id;
    Conn* cp = c.get();
    c->th = std::thread([this, cp] {
      pthread_setname_np(pthread_self(), "lr-ps-reply");
      Loop(cp);
    });
    return 0;
  }

  // Stops (if still running) and joins the connection's thread; its
  // duplicate fd is closed. Idempotent.
  void Stop(uint32_t id) {
    std::shared_ptr<Conn> c;
    {
      std::lock_guard<std::mutex> g(connMu_);
      auto it = conns_.find(id);
      if (it == conns_.end()) return;
      c = it->second;
      conns_.erase(it);
    }
    Join(c.get());
  }

  void StopAll() {
    std::map<uint32_t, std::shared_ptr<Conn>> all;
    {
      std::lock_guard<std::mutex> g(connMu_);
      all.swap(conns_);
    }
    for (auto& [id, c] : all) Join(c.get());
  }

  uint64_t gets() const { return gets_.load(); }
  uint64_t pages() const { return pages_.load(); }
  uint64_t lastNs() const { return lastNs_.load(); }

 private:
  static void Join(Conn* c) {
    c->stop = true;
    uint64_t one = 1;
    if (c->stopfd >= 0) (void)!write(c->stopfd, &one, sizeof(one));
    if (c->th.joinable()) c->th.join();
    if (c->fd >= 0) close(c->fd);
    if (c->stopfd >= 0) close(c->stopfd);
    c->fd = c->stopfd = -1;
  }

  // Waits until fd is ready for `events` or stop; false = stop requested.
  static bool Wait(Conn* c, short events) {
    for (;;) {
      if (c->stop) return false;
      struct pollfd p[2] = {{c->fd, events, 0}, {c->stopfd, POLLIN, 0}};
      int r = poll(p, 2, -1);
      if (r < 0 && errno != EINTR) return true;  // let the I/O call report it
      if (c->stop || (r > 0 && p[1].revents)) return false;
      if (r > 0 && p[0].revents) return true;
    }
  }

  bool Lookup(int32_t pid, uint64_t vaddr, Run* out) {
    std::lock_guard<std::mutex> g(runsMu_);
    auto it = runs_.find(pid);
    if (it == runs_.end()) return false;
    const auto& v = it->second;
    auto r = std::upper_bound(v.begin(), v.end(), vaddr, [](uint64_t a, const Run& x) { return a < x.start; });
    if (r == v.begin()) return false;
    --r;
    if (vaddr >= r->end) return false;
    *out = *r;
    return true;
  }

  void HandBack(Conn* c, const char* reason, int err, const uint8_t* bytes, size_t n) {
    // Close our duplicate first: Node may read the socket as soon as it hears.
    close(c->fd);
    c->fd = -1;
    c->finished = true;
    Handback h{c->id, reason, err, std::vector<uint8_t>(bytes, bytes + n)};
    report_(std::move(h));
  }

  void Loop(Conn* c) {
    uint8_t hdr[kHdr];
    std::vector<uint8_t> buf;
    uint64_t spinUntil = 0;
    for (;;) {
      size_t got = 0;
      while (got < kHdr) {
        ssize_t n = recv(c->fd, hdr + got, kHdr - got, MSG_DONTWAIT);
        if (n > 0) {
          got += static_cast<size_t>(n);
          continue;
        }
        if (n == 0) return HandBack(c, "eof", 0, hdr, got);
        if (errno == EINTR) continue;
        if (errno != EAGAIN) return HandBack(c, "error", errno, hdr, got);
        if (c->stop) return;
        if (got == 0 && NowNs() < spinUntil) {
          // Busy-poll for the next GET for a short while after a reply: a
          // client faulting page after page gets no sleep/wake-up here.
          sched_yield();
          continue;
        }
        if (!Wait(c, POLLIN)) return;
      }
      lastNs_ = NowNs();
      const pageserver::Header get = pageserver::DecodeHeader(hdr);
      const uint64_t nr = get.pages, vaddr = get.vaddr, dst = get.dstId;
      Run run;
      if (get.cmd != pageserver::kCmdGet || nr == 0 || vaddr % kPage || dst == 0 || dst > 0x7fffffffull ||
          !Lookup(static_cast<int32_t>(dst), vaddr, &run))
        return HandBack(c, "command", 0, hdr, kHdr);
      uint64_t pages = std::min<uint64_t>((run.end - vaddr) / kPage, nr);
      if (pages > kMaxReplyPages) return HandBack(c, "command", 0, hdr, kHdr);
      uint8_t h[kHdr];
      pageserver::EncodeHeader({pageserver::kCmdPresentReply, pages, vaddr, dst}, h);
      const uint64_t pos = run.off + (vaddr - run.start);
      const size_t want = pages * kPage;
      const uint8_t* data;
      if (run.base && pos + want <= run.size && pos + want > pos) {
        data = run.base + pos;  // a file shrunk under us makes send() fail with EFAULT, not SIGBUS
      } else {
        if (buf.size() < want) buf.resize(want);
        // Nothing of this reply was sent yet: the JS path reads again and
        // reports the short or failed read with the file's name.
        if (run.pid ? !ReadProcessMemory(run.pid, run.fd, buf.data(), want, pos) : !PreadFull(run.fd, buf.data(), want, pos))
          return HandBack(c, "command", 0, hdr, kHdr);
        data = buf.data();
      }
      // Header and pages in one sendmsg (one segment for a small reply).
      const size_t len = kHdr + want;
      size_t sent = 0;
      while (sent < len) {
        struct iovec iov[2];
        int cnt = 0;
        if (sent < kHdr) iov[cnt++] = {h + sent, kHdr - sent};
        size_t doff = sent > kHdr ? sent - kHdr : 0;
        iov[cnt++] = {const_cast<uint8_t*>(data) + doff, want - doff};
        struct msghdr mh{};
        mh.msg_iov = iov;
        mh.msg_iovlen = cnt;
        ssize_t n = sendmsg(c->fd, &mh, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n > 0) {
          sent += static_cast<size_t>(n);
          continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && errno == EAGAIN) {
          if (!Wait(c, POLLOUT)) return;
          continue;
        }
        // The reply is cut: the connection is unusable. Node sees the error
        // (or EOF) when it resumes and ends the connection.
        return HandBack(c, "error", n < 0 ? errno : EPIPE, nullptr, 0);
      }
      gets_++;
      pages_ += pages;
      lastNs_ = NowNs();
      spinUntil = pages <= kSpinMaxPages ? lastNs_ + spinNs_ : 0;
    }
  }

  const uint64_t spinNs_;
  std::function<void(Handback&&)> report_;
  std::mutex runsMu_;
  std::map<int32_t, std::vector<Run>> runs_;
  std::map<int, std::pair<const uint8_t*, uint64_t>> maps_;  // fd -> mapping (nullptr: pread)
  std::map<int, pid_t> pids_;  // fd -> pid when the fd is /proc/PID/mem
  std::mutex connMu_;
  std::map<uint32_t, std::shared_ptr<Conn>> conns_;
  uint32_t nextId_ = 1;
  std::atomic<uint64_t> gets_{0}, pages_{0}, lastNs_{0};
};

class NativePageResponder : public Napi::ObjectWrap<NativePageResponder> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "NativePageResponder",
                       {InstanceMethod("setRuns", &NativePageResponder::SetRuns),
                        InstanceMethod("serve", &NativePageResponder::Serve),
                        InstanceMethod("stop", &NativePageResponder::Stop),
                        InstanceMethod("stats", &NativePageResponder::Stats),
                        InstanceMethod("close", &NativePageResponder::Close)});
  }

  // new NativePageResponder(spinMicros, onHandback)
  explicit NativePageResponder(const Napi::CallbackInfo& info) : Napi::ObjectWrap<NativePageResponder>(info) {
    Napi::Env env = info.Env();
    uint64_t spin = ArgU64(info, 0, "spinMicros");
    if (spin > 100000) throw Napi::RangeError::New(env, "spinMicros must be <= 100000");
    if (info.Length() < 2 || !info[1].IsFunction()) throw Napi::TypeError::New(env, "onHandback must be a function");
    tsfn_ = Napi::ThreadSafeFunction::New(env, info[1].As<Napi::Function>(), "lr-page-responder", 0, 1);
    tsfn_.Unref(env);  // the server's sockets keep the loop alive, not this
    alive_ = std::make_shared<bool>(true);
    std::shared_ptr<bool> alive = alive_;
    r_ = std::make_unique<Responder>(spin * 1000, [this, alive](Handback&& h) {
      auto* hb = new Handback(std::move(h));
      napi_status st = tsfn_.NonBlockingCall(hb, [alive](Napi::Env env, Napi::Function fn, Handback* h) {
        std::unique_ptr<Handback> own(h);
        if (!*alive) return;
        Napi::Object o = Napi::Object::New(env);
        o.Set("conn", Napi::Number::New(env, h->conn));
        o.Set("reason", h->reason);
        o.Set("code", h->err ? Napi::Value(Napi::String::New(env, ErrnoName(h->err))) : env.Undefined());
        o.Set("errno", Napi::Number::New(env, h->err));
        o.Set("bytes", Napi::Buffer<uint8_t>::Copy(env, h->bytes.data(), h->bytes.size()));
        fn.Call({o});
      });
      if (st != napi_ok) delete hb;
    });
    env_ = env;
    napi_add_env_cleanup_hook(env, &NativePageResponder::CleanupHook, this);
  }

  ~NativePageResponder() override {
    napi_remove_env_cleanup_hook(env_, &NativePageResponder::CleanupHook, this);
    Shutdown();
  }

 private:
  static void CleanupHook(void* self) { static_cast<NativePageResponder*>(self)->Shutdown(); }

  void Shutdown() {
    if (closed_) return;
    closed_ = true;
    r_->StopAll();
    *alive_ = false;
    tsfn_.Release();
  }

  Responder& R(Napi::Env env) {
    if (closed_) ThrowErrno(env, EBADF, "NativePageResponder", "(closed)");
    return *r_;
  }

  // setRuns(pid, BigUint64Array [start, end, fd, fileOffset]*): the fds stay the caller's.
  Napi::Value SetRuns(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Responder& r = R(env);
    int32_t pid = ArgI32(info, 0, "pid");
    if (pid <= 0) throw Napi::RangeError::New(env, "pid must be positive");
    if (info.Length() < 2 || !info[1].IsTypedArray() ||
        info[1].As<Napi::TypedArray>().TypedArrayType() != napi_biguint64_array)
      throw Napi::TypeError::New(env, "runs must be a BigUint64Array");
    auto a = info[1].As<Napi::TypedArrayOf<uint64_t>>();
    if (a.ElementLength() % 4) throw Napi::RangeError::New(env, "runs length must be a multiple of 4");
    std::vector<Run> runs;
    for (size_t i = 0; i < a.ElementLength(); i += 4) {
      Run x{a[i], a[i + 1], static_cast<int>(a[i + 2]), a[i + 3]};
      if (x.end <= x.start || (x.start | x.end) % kPage || a[i + 2] > 0x7fffffff)
        throw Napi::RangeError::New(env, "bad run");
      runs.push_back(x);
    }
    r.SetRuns(pid, std::move(runs));
    return env.Undefined();
  }

  // serve(fd) -> connection id; the responder works on a duplicate of fd.
  Napi::Value Serve(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Responder& r = R(env);
    int fd = ArgFd(info, 0, "fd");
    uint32_t id = 0;
    const char* what = "serve";
    int e = r.Serve(fd, &id, &what);
    if (e < 0) ThrowErrno(env, -e, what, "(fd " + std::to_string(fd) + ")");
    return Napi::Number::New(env, id);
  }

  Napi::Value Stop(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    int32_t id = ArgI32(info, 0, "conn");
    if (!closed_ && id > 0) r_->Stop(static_cast<uint32_t>(id));
    return env.Undefined();
  }

  // stats() -> { gets, pages, idleMs } (idleMs: since the last GET read or reply sent; -1 if none)
  Napi::Value Stats(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Napi::Object o = Napi::Object::New(env);
    o.Set("gets", Napi::Number::New(env, static_cast<double>(r_->gets())));
    o.Set("pages", Napi::Number::New(env, static_cast<double>(r_->pages())));
    uint64_t last = r_->lastNs();
    o.Set("idleMs", Napi::Number::New(env, last ? static_cast<double>(NowNs() - last) / 1e6 : -1));
    return o;
  }

  Napi::Value Close(const Napi::CallbackInfo& info) {
    Shutdown();
    return info.Env().Undefined();
  }

  std::unique_ptr<Responder> r_;
  Napi::ThreadSafeFunction tsfn_;
  std::shared_ptr<bool> alive_;
  bool closed_ = false;
  napi_env env_ = nullptr;
};

}  // namespace

void InitPageResponder(Napi::Env env, Napi::Object exports) {
  exports.Set("NativePageResponder", NativePageResponder::Define(env));
}

}  // namespace lr
