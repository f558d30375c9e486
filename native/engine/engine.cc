// Fault engine core. Threading: each process (Proc) belongs to one worker
// thread, which is the only thread that polls its uffd. Proc state is
// guarded by Proc::mu; JavaScript calls (supply, prefetch, release, stats)
// take the same lock, so a fault is never served from a map that an event
// or a supply() is changing. Lock order: Proc::mu -> procMu_/Worker::mu ->
// evMu_ (the latter never held while taking a Proc::mu).
//
// Error rules (CRIU's, tightened): EAGAIN = non-cooperative events pending,
// read them, then retry; EEXIST = page already there, wake and drop it from
// the map; ENOENT = no registered VMA at the address *now*, which is not
// proof that the pages are gone: see Fill(); ESRCH/ENOSPC = the mm is gone
// (exit); anything else = 'error' event and the process is no longer served
// (its uffd stays open so nothing silently reads zero; the daemon kills it).
//
// Ordering facts this relies on (fs/userfaultfd.c, mm/userfaultfd.c): every
// operation that raises REMAP/REMOVE/UNMAP/FORK increments the context's
// mmap_changing before it changes the mappings and decrements it only after
// we have read its event; UFFDIO_COPY/ZEROPAGE check mmap_changing on entry
// (EAGAIN) but look the VMA up before their second check, so a copy that
// entered just before an mremap/munmap finds no VMA and fails with ENOENT
// while the event that explains it is still unread.
#include "engine/engine.h"

#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>

#include "engine/crc32c.h"
#include "uffd/uffd_abi.h"

namespace lr::engine {
namespace {

constexpr uint64_t kPage = lr::kPageSize;
constexpr uint64_t kPrefetchChunk = 256 * 1024;  // bounded so a fault waits at most ~0.1 ms behind it
constexpr int kProbeMs = 100;
// Highest page a 47-bit process can map; used only as the destination of a
// liveness probe whose source is unreadable, so it can never install data.
constexpr uint64_t kProbeAddr = 0x7fffffffe000ull;

enum Tag : uint64_t { kTagEventfd = 0, kTagUffd = 1, kTagPidfd = 2, kTagLink = 3 };

// CRIU page-server protocol, only the fixed-size parts the native link needs
// (plugin/pageserver/protocol.ts is the full codec): a 32-byte header
// {u32 cmd, u32 pad, u64 nr_pages, u64 vaddr, u64 dst_id}, host order; a GET
// is answered by ADD_F|PE_PRESENT with the same vaddr and dst_id and
// 1 <= M <= N pages of data.
constexpr uint32_t kPsGet = 7;
constexpr uint32_t kPsReply = 6 | (4u << 16);
constexpr size_t kPsHeader = 32;
constexpr size_t kLinkStage = 64 * 1024;

uint64_t NowNs() {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000000ull + ts.tv_nsec;
}

int Bucket(uint64_t ns) { return 63 - __builtin_clzll(ns | 1); }

std::string Hex(uint64_t v) {
  char b[24];
  snprintf(b, sizeof(b), "0x%llx", (unsigned long long)v);
  return b;
}

}  // namespace

Engine::Engine(const Options& o, std::function<void()> notify) : opt_(o), notify_(std::move(notify)) {
  if (opt_.threads < 1) opt_.threads = 1;
  if (opt_.faultAroundPages < 1) opt_.faultAroundPages = 1;
  // The guard page is the source of the no-op probe copy that tells whether
  // an event is pending (PendingEvents): without it the mremap/ENOENT race
  // handling would silently turn off, so its failure fails the engine.
  guard_ = mmap(nullptr, kPage, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (guard_ == MAP_FAILED) {
    guard_ = nullptr;
    throw std::system_error(errno, std::generic_category(), "mmap(guard page)");
  }
  for (unsigned i = 0; i < opt_.threads; i++) {
    auto w = std::make_unique<Worker>();
    w->index = i;
    w->ep = epoll_create1(EPOLL_CLOEXEC);
    w->evfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (w->ep < 0 || w->evfd < 0) {
      int err = errno;
      if (w->ep >= 0) close(w->ep);
      if (w->evfd >= 0) close(w->evfd);
      Stop();
      throw std::system_error(err, std::generic_category(), "epoll_create1/eventfd");
    }
    struct epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = kTagEventfd;
    epoll_ctl(w->ep, EPOLL_CTL_ADD, w->evfd, &ev);
    workers_.push_back(std::move(w));
  }
  for (auto& w : workers_) {
    Worker* wp = w.get();
    wp->th = std::thread([this, wp] {
      char name[16];
      snprintf(name, sizeof(name), "lr-uffd-%u", wp->index);
      pthread_setname_np(pthread_self(), name);
      if (!opt_.cpus.empty()) {
        cpu_set_t set;
        CPU_ZERO(&set);
        CPU_SET(opt_.cpus[wp->index % opt_.cpus.size()], &set);
        pthread_setaffinity_np(pthread_self(), sizeof(set), &set);  // best effort
      }
      Run(wp);
    });
  }
}

Engine::~Engine() { Stop(); }

void Engine::Stop() {
  if (stopped_) return;
  stop_ = true;
  for (auto& w : workers_) Poke(w.get());
  for (auto& w : workers_)
    if (w->th.joinable()) w->th.join();
  std::map<uint32_t, std::shared_ptr<Proc>> procs;
  {
    std::lock_guard<std::mutex> g(procMu_);
    procs.swap(procs_);
  }
  for (auto& [h, p] : procs) {
    std::lock_guard<std::mutex> g(p->mu);
    if (p->uffd >= 0) close(p->uffd);
    if (p->pidfd >= 0) close(p->pidfd);
    p->uffd = p->pidfd = -1;
    p->state = Proc::kReleased;
    p->lazy.clear();
    p->inflight.clear();
  }
  for (auto& w : workers_) {
    std::lock_guard<std::mutex> g(w->link.mu);
    if (w->link.fd >= 0) close(w->link.fd);
    w->link.fd = -1;
    w->link.out.clear();
  }
  for (auto& w : workers_) {
    w->procs.clear();
    if (w->ep >= 0) close(w->ep);
    if (w->evfd >= 0) close(w->evfd);
    w->ep = w->evfd = -1;
  }
  {
    std::lock_guard<std::mutex> g(srcMu_);
    for (auto& s : sources_)
      if (s && s->base) munmap(const_cast<uint8_t*>(s->base), s->size);
    sources_.clear();
  }
  if (guard_) munmap(guard_, kPage);
  guard_ = nullptr;
  stopped_ = true;
}

void Engine::Poke(Worker* w) {
  uint64_t one = 1;
  if (w->evfd >= 0) (void)!write(w->evfd, &one, sizeof(one));
}

void Engine::Emit(Event&& e) {
  bool wasEmpty;
  {
    std::lock_guard<std::mutex> g(evMu_);
    wasEmpty = events_.empty();
    events_.push_back(std::move(e));
  }
  if (wasEmpty && notify_) notify_();
}

void Engine::TakeEvents(std::vector<Event>* out) {
  std::lock_guard<std::mutex> g(evMu_);
  out->swap(events_);
  events_.clear();
}

int Engine::AddSource(const std::string& path, uint32_t* id, uint64_t* size, const char** what,
                      std::vector<uint32_t>&& sums, uint64_t chunk) {
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) { *what = "open"; return -errno; }
  struct stat st;
  if (fstat(fd, &st) < 0) { int e = errno; close(fd); *what = "fstat"; return -e; }
  if (!S_ISREG(st.st_mode)) { close(fd); *what = "open"; return -EINVAL; }
  auto s = std::make_unique<Source>();
  s->path = path;
  s->fileSize = static_cast<uint64_t>(st.st_size);
  s->size = (s->fileSize + kPage - 1) & ~(kPage - 1);
  if (!sums.empty()) {
    // The checksums must describe exactly this file (TS checks first and names the images).
    if (chunk == 0 || chunk % kPage || sums.size() != (s->fileSize + chunk - 1) / chunk) {
      close(fd);
      *what = "addSource (checksums do not match the file size)";
      return -EINVAL;
    }
    s->sums = std::move(sums);
    s->chunk = chunk;
    size_t words = (s->sums.size() + 63) / 64;
    s->verified = std::make_unique<std::atomic<uint64_t>[]>(words);
    for (size_t i = 0; i < words; i++) s->verified[i].store(0, std::memory_order_relaxed);
  }
  if (s->size > 0) {
    // UFFDIO_COPY reads straight from this mapping inside the kernel; if the
    // file shrinks later the copy fails with EFAULT (no SIGBUS in kernel mode).
    void* m = mmap(nullptr, s->size, PROT_READ, MAP_SHARED, fd, 0);
    if (m == MAP_FAILED) { int e = errno; close(fd); *what = "mmap"; return -e; }
    s->base = static_cast<const uint8_t*>(m);
  }
  close(fd);
  std::lock_guard<std::mutex> g(srcMu_);
  *id = static_cast<uint32_t>(sources_.size());
  *size = s->size;
  sources_.push_back(std::move(s));
  return 0;
}

const Source* Engine::GetSource(uint32_t id) {
  std::lock_guard<std::mutex> g(srcMu_);
  return id < sources_.size() ? sources_[id].get() : nullptr;
}

const uint8_t* Engine::SrcPtr(const Span& s, uint64_t start, uint64_t at) {
  const Source* src = GetSource(s.source);
  if (src == nullptr || src->base == nullptr) return nullptr;
  return src->base + s.off + (at - start);
}

// Checks every chunk of source bytes [off, off+len) not verified before. A
// mismatch fails the process (never served: it stays blocked until the
// daemon kills it). Two workers may verify the same chunk at once: harmless.
bool Engine::Verify(Proc* p, uint32_t source, uint64_t off, uint64_t len) {
  const Source* src = GetSource(source);
  if (src == nullptr || src->sums.empty() || len == 0) return true;
  const uint64_t first = off / src->chunk, last = (off + len - 1) / src->chunk;
  for (uint64_t i = first; i <= last && i < src->sums.size(); i++) {
    std::atomic<uint64_t>& word = src->verified[i / 64];
    const uint64_t bit = 1ull << (i % 64);
    if (word.load(std::memory_order_acquire) & bit) continue;
    const uint64_t at = i * src->chunk;
    const uint64_t n = std::min(src->chunk, src->fileSize - at);
    const uint32_t got = Crc32c(src->base + at, n);
    if (got != src->sums[i]) {
      char b[64];
      snprintf(b, sizeof(b), "(stored 0x%08x, computed 0x%08x)", src->sums[i], got);
      Fail(p, EBADMSG, "verify", src->path + " at offset " + std::to_string(at) + ": CRC32C mismatch in chunk " +
                                     std::to_string(i) + " " + b);
      return false;
    }
    word.fetch_or(bit, std::memory_order_release);
  }
  return true;
}

Worker* Engine::PickWorker() {
  Worker* best = nullptr;
  size_t n = SIZE_MAX;
  for (auto& w : workers_) {
    std::lock_guard<std::mutex> g(w->mu);
    if (w->procs.size() < n) { n = w->procs.size(); best = w.get(); }
  }
  return best;
}

// Makes p visible to its worker; p is fully built (handle set) before.
int Engine::AddProc(std::shared_ptr<Proc> p) {
  Worker* w = PickWorker();
  p->worker = w;
  {
    std::lock_guard<std::mutex> g(procMu_);
    procs_[p->handle] = p;
  }
  {
    std::lock_guard<std::mutex> g(w->mu);
    w->procs.push_back(p);
  }
  struct epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = (static_cast<uint64_t>(p->handle) << 2) | kTagUffd;
  if (epoll_ctl(w->ep, EPOLL_CTL_ADD, p->uffd, &ev) < 0) return -errno;
  if (p->pidfd >= 0) {
    ev.data.u64 = (static_cast<uint64_t>(p->handle) << 2) | kTagPidfd;
    epoll_ctl(w->ep, EPOLL_CTL_ADD, p->pidfd, &ev);
  }
  return 0;
}

int Engine::Adopt(int uffd, int pidfd, std::vector<Piece>&& ranges, uint32_t* handle, const char** what,
                  int32_t remotePid) {
  *what = "adopt";
  char link[64], target[64];
  snprintf(link, sizeof(link), "/proc/self/fd/%d", uffd);
  ssize_t n = readlink(link, target, sizeof(target) - 1);
  if (n < 0) { *what = "fcntl"; return errno == ENOENT ? -EBADF : -errno; }
  target[n] = 0;
  if (strcmp(target, "anon_inode:[userfaultfd]") != 0) { *what = "adopt (not a userfaultfd)"; return -EINVAL; }
  if (pidfd >= 0 && fcntl(pidfd, F_GETFD) < 0) { *what = "fcntl(pidfd)"; return -errno; }
  // userfaultfd's poll reports EPOLLERR unless the fd is non-blocking.
  int fl = fcntl(uffd, F_GETFL);
  if (fl < 0 || fcntl(uffd, F_SETFL, fl | O_NONBLOCK) < 0) { *what = "fcntl"; return -errno; }
  uint64_t prevEnd = 0;
  for (const Piece& r : ranges) {
    if ((r.start | r.span.end) & (kPage - 1) || r.span.end <= r.start || r.start < prevEnd) return -EINVAL;
    prevEnd = r.span.end;
    if (r.span.kind == kFile) {
      const Source* s = GetSource(r.span.source);
      if (s == nullptr || r.span.off & (kPage - 1) || r.span.off + (r.span.end - r.start) > s->size ||
          r.span.off + (r.span.end - r.start) < r.span.off)
        return -EINVAL;
    }
  }
  auto p = std::make_shared<Proc>();
  {
    std::lock_guard<std::mutex> g(procMu_);
    p->handle = nextHandle_++;
  }
  p->uffd = uffd;
  p->pidfd = pidfd;
  p->remotePid = remotePid > 0 ? remotePid : 0;
  for (const Piece& r : ranges) p->lazy.Insert(r.start, r.span);
  if (p->lazy.empty()) {
    p->completeSent = true;
    Emit({kEvComplete, p->handle});
  }
  int added = AddProc(p);
  if (added < 0) {
    int err = -added;
    std::lock_guard<std::mutex> g(procMu_);
    procs_.erase(p->handle);
    std::lock_guard<std::mutex> g2(p->worker->mu);
    auto& v = p->worker->procs;
    v.erase(std::remove(v.begin(), v.end(), p), v.end());
    *what = "epoll_ctl";
    return -err;
  }
  *handle = p->handle;
  return 0;
}

std::shared_ptr<Proc> Engine::Find(uint32_t handle) {
  std::lock_guard<std::mutex> g(procMu_);
  auto it = procs_.find(handle);
  return it == procs_.end() ? nullptr : it->second;
}

void Engine::MarkExited(Proc* p) {
  if (p->state != Proc::kLive && p->state != Proc::kFailed) return;
  Worker* w = p->worker;
  if (p->uffd >= 0) {
    epoll_ctl(w->ep, EPOLL_CTL_DEL, p->uffd, nullptr);
    close(p->uffd);
    p->uffd = -1;
  }
  if (p->pidfd >= 0) {
    epoll_ctl(w->ep, EPOLL_CTL_DEL, p->pidfd, nullptr);
    close(p->pidfd);
    p->pidfd = -1;
  }
  p->state = Proc::kExited;
  p->lazy.clear();
  p->inflight.clear();
  p->pending.clear();
  p->prefetch.clear();
  p->first.clear();
  p->hasWork = false;
  Emit({kEvExit, p->handle});
}

void Engine::Fail(Proc* p, int err, const char* syscall, const std::string& msg) {
  if (p->state != Proc::kLive) return;
  // Stop serving but keep the uffd open: closing it would let the faulting
  // threads run on with zero pages.
  epoll_ctl(p->worker->ep, EPOLL_CTL_DEL, p->uffd, nullptr);
  p->state = Proc::kFailed;
  p->pending.clear();
  p->prefetch.clear();
  p->first.clear();
  p->hasWork = false;
  Event e{kEvError, p->handle};
  e.err = err;
  e.syscall = syscall;
  e.message = msg;
  Emit(std::move(e));
}

void Engine::CheckComplete(Proc* p) {
  if (p->completeSent || p->state != Proc::kLive) return;
  if (p->lazy.empty() && p->inflight.empty()) {
    p->completeSent = true;
    Emit({kEvComplete, p->handle});
  }
}

// Reads every pending message. Events are applied at once, in the order the
// kernel delivered them; faults are queued and served afterwards, so no fault
// is served from a map that an already-read event changes.
bool Engine::ReadMessages(Proc* p, bool /*queueFaults*/) {
  struct uffd_msg msgs[64];
  for (;;) {
    if (p->state != Proc::kLive) return false;
    ssize_t n = read(p->uffd, msgs, sizeof(msgs));
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN) return true;
      Fail(p, errno, "read(userfaultfd)", "reading uffd messages");
      return false;
    }
    uint64_t t0 = NowNs();
    size_t k = static_cast<size_t>(n) / sizeof(struct uffd_msg);
    for (size_t i = 0; i < k && p->state == Proc::kLive; i++) {
      if (msgs[i].event == UFFD_EVENT_PAGEFAULT) {
        p->st.faults++;
        p->pending.push_back({msgs[i].arg.pagefault.address, t0});
      } else {
        ApplyEvent(p, msgs[i]);
      }
    }
    if (k < 64) return p->state == Proc::kLive;
  }
}

void Engine::ApplyEvent(Proc* p, const struct uffd_msg& m) {
  switch (m.event) {
    case UFFD_EVENT_FORK: {
      int cfd = static_cast<int>(m.arg.fork.ufd);
      int fl = fcntl(cfd, F_GETFL);
      if (fl >= 0) fcntl(cfd, F_SETFL, fl | O_NONBLOCK);
      fcntl(cfd, F_SETFD, FD_CLOEXEC);
      auto c = std::make_shared<Proc>();
      {
        std::lock_guard<std::mutex> g(procMu_);
        c->handle = nextHandle_++;
      }
      c->uffd = cfd;
      c->remotePid = p->remotePid;
      // The child needs every page not yet in the parent, including those
      // the parent is still waiting for (they become plain lazy pages here).
      for (const auto& [s, sp] : p->lazy.raw()) c->lazy.Insert(s, sp);
      for (const auto& [s, sp] : p->inflight.raw()) c->lazy.Insert(s, sp);
      Event e{kEvFork, p->handle};
      e.child = c->handle;
      Emit(std::move(e));
      if (c->lazy.empty()) {
        c->completeSent = true;
        Emit({kEvComplete, c->handle});
      }
      // The child cannot be watched: it must not stay registered as if it were
      // served (its faults would never be read). It fails on its own — its
      // uffd stays open, so it blocks until JS kills it (pid found through
      // /proc) and releases it; the parent goes on being served.
      int added = AddProc(c);
      if (added < 0) Fail(c.get(), -added, "epoll_ctl", "adding the forked child's uffd");
      return;
    }
    case UFFD_EVENT_REMAP: {
      p->lazy.Shift(m.arg.remap.from, m.arg.remap.to, m.arg.remap.len);
      p->inflight.Shift(m.arg.remap.from, m.arg.remap.to, m.arg.remap.len);
      Event e{kEvRemap, p->handle};
      e.a = m.arg.remap.from;
      e.b = m.arg.remap.to;
      e.c = m.arg.remap.len;
      Emit(std::move(e));
      return;
    }
    case UFFD_EVENT_REMOVE:
    case UFFD_EVENT_UNMAP: {
      uint64_t s = m.arg.remove.start, e = m.arg.remove.end;
      p->lazy.Remove(s, e);
      p->inflight.Remove(s, e);
      Event ev{m.event == UFFD_EVENT_REMOVE ? kEvRemove : kEvUnmap, p->handle};
      ev.a = s;
      ev.b = e;
      Emit(std::move(ev));
      // Discarded memory must read back as zero. The range stays registered:
      // a later fault there is not lazy any more and gets a zero page. (An
      // UNREGISTER here would split the program's VMA, so a later mremap of
      // the whole mapping fails with EFAULT, and the kernel wakes waiters
      // before it clears the VMA, so a fault taken under the per-VMA lock in
      // between was left waiting forever: issue 4's DONTNEED hang.)
      CheckComplete(p);
      return;
    }
    default:
      Fail(p, EPROTO, "read(userfaultfd)", "unknown uffd event " + Hex(m.event));
  }
}

// 1 if non-cooperative events are in flight (mmap_changing raised: their
// messages are not read yet or their threads have not resumed), 2 if the mm
// is gone, 0 otherwise. UFFDIO_COPY checks mmap_changing before anything
// else; the copy itself can only fail (unreadable source, top page).
int Engine::PendingEvents(Proc* p) {
  if (guard_ == nullptr) return 0;
  uint64_t done = 0;
  int r = UffdCopy(p->uffd, kProbeAddr, reinterpret_cast<uint64_t>(guard_), kPage, 0, &done);
  if (r == -EAGAIN) return 1;
  if (r == -ESRCH || r == -ENOSPC) return 2;
  return 0;
}

// Copies (or zero-fills) [start, end) and drops what it placed from the maps.
Engine::FillResult Engine::Fill(Proc* p, uint64_t start, uint64_t end, Kind kind, const uint8_t* src, int path,
                                uint64_t* copied) {
  uint64_t cur = start;
  *copied = 0;
  bool onePage = false;  // after ENOENT on a range: it may span two VMAs (an mprotect split it)
  while (cur < end) {
    const uint64_t len = onePage ? kPage : end - cur;
    uint64_t done = 0;
    int r = kind == kZero ? UffdZeropage(p->uffd, cur, len, 0, &done)
                          : UffdCopy(p->uffd, cur, reinterpret_cast<uint64_t>(src + (cur - start)), len, 0, &done);
    if (done > len) done = len;
    if (done > 0) {
      p->lazy.Remove(cur, cur + done);
      p->inflight.Remove(cur, cur + done);
      uint64_t pages = done / kPage;
      if (kind == kZero) p->st.zeroPages += pages;
      else {
        p->st.bytes += done;
        if (path == 0) p->st.copiedPages += pages;
        else if (path == 1) p->st.pushedPages += pages;
        else if (path == 3) p->st.remotePages += pages;
        else p->st.suppliedPages += pages;
      }
      *copied += done;
      cur += done;
    }
    if (r == 0) {
      onePage = false;
      continue;
    }
    switch (-r) {
      case EEXIST:
        p->st.eexist++;
        p->lazy.Remove(cur, cur + kPage);
        p->inflight.Remove(cur, cur + kPage);
        UffdWake(p->uffd, cur, kPage);
        cur += kPage;
        onePage = false;
        continue;
      case EAGAIN:
        p->st.eagain++;
        return kFillRetry;
      case ENOENT:
        p->st.enoent++;
        if (!onePage && end - cur > kPage) {
          onePage = true;
          continue;
        }
        // No registered VMA at cur. If an event is in flight the page may
        // only be moving (mremap): keep it and let the caller read events
        // and look again. Otherwise nothing will bring it back: drop it.
        switch (PendingEvents(p)) {
          case 1:
            p->st.eagain++;
            return kFillRetry;
          case 2:
            MarkExited(p);
            return kFillDead;
        }
        p->lazy.Remove(cur, cur + kPage);
        p->inflight.Remove(cur, cur + kPage);
        // A thread may be waiting there (its VMA went away under it): let
        // it retry its access.
        UffdWake(p->uffd, cur, kPage);
        cur += kPage;
        onePage = false;
        continue;
      case ESRCH:
      case ENOSPC:
        MarkExited(p);
        return kFillDead;
      default:
        Fail(p, -r, kind == kZero ? "ioctl(UFFDIO_ZEROPAGE)" : "ioctl(UFFDIO_COPY)",
             "serving [" + Hex(cur) + ", " + Hex(end) + ")");
        return kFillDead;
    }
  }
  return kFillDone;
}

// 0 = served/ignored, 1 = retry later (EAGAIN persisted), 2 = process gone/failed.
int Engine::ServeFault(Proc* p, const Fault& f) {
  const uint64_t page = f.addr & ~(kPage - 1);
  const uint64_t window = opt_.faultAroundPages * kPage;
  bool counted = false;
  for (int attempt = 0; attempt < 64; attempt++) {
    if (attempt > 0) {
      if (!ReadMessages(p, true)) return 2;
      if (attempt > 4) sched_yield();
    }
    uint64_t s;
    Span sp;
    if (p->inflight.Find(page, &s, &sp)) {
      p->st.ignored++;  // the supply() for it wakes this thread too
      return 0;
    }
    uint64_t ws, we, copied = 0;
    FillResult r;
    uint8_t logKind = kLogZero;
    if (!p->lazy.Find(page, &s, &sp)) {
      if (!counted) p->st.unexpected++;
      counted = true;
      ws = page;
      r = Fill(p, page, page + kPage, kZero, nullptr, 0, &copied);
    } else {
      ws = page - ((page / kPage) % opt_.faultAroundPages) * kPage;
      if (ws < s) ws = s;
      we = std::min(sp.end, ws + window);
      if (sp.kind == kRemote) {
        std::vector<Piece> moved;
        p->lazy.Remove(ws, we, &moved);
        for (const Piece& m : moved) p->inflight.Insert(m.start, m.span);
        Log(p, ws, (we - ws) / kPage, kLogFault, page);
        RemoteGet g{p->handle, p->remotePid, ws, sp.off + (ws - s), (we - ws) / kPage, f.t0};
        if (p->remotePid > 0 && SendGet(p->worker, g)) {
          p->st.remoteGets++;
          return 0;
        }
        Event e{kEvNeed, p->handle};
        e.a = ws;
        e.b = sp.off + (ws - s);
        e.c = we - ws;
        p->st.needs++;
        Emit(std::move(e));
        return 0;
      }
      logKind = sp.kind == kZero ? kLogZero : kLogFault;
      const uint8_t* src = nullptr;
      if (sp.kind == kFile) {
        src = SrcPtr(sp, s, ws);
        if (src == nullptr) {
          Fail(p, EINVAL, "ioctl(UFFDIO_COPY)", "range " + Hex(s) + " has no mapped source");
          return 2;
        }
        if (!Verify(p, sp.source, sp.off + (ws - s), we - ws)) return 2;
      }
      r = Fill(p, ws, we, sp.kind, src, 0, &copied);
    }
    if (copied > 0) Log(p, ws, copied / kPage, logKind, page);
    if (r == kFillDead) return 2;
    if (r == kFillDone || page < ws + copied) {
      uint64_t ns = NowNs() - f.t0;
      p->st.hist[Bucket(ns)]++;
      p->st.served++;
      return 0;
    }
  }
  return 1;
}

bool Engine::ServePending(Proc* p) {
  bool any = false;
  while (!p->pending.empty() && p->state == Proc::kLive) {
    Fault f = p->pending.front();
    int r = ServeFault(p, f);
    if (r == 1) break;
    if (!p->pending.empty()) p->pending.pop_front();
    any = true;
    if (r == 2) break;
  }
  p->hasWork = !p->pending.empty() || !p->prefetch.empty() || !p->first.empty();
  CheckComplete(p);
  return any;
}

bool Engine::HandleUffd(Proc* p) {
  std::lock_guard<std::mutex> g(p->mu);
  if (p->state != Proc::kLive) return false;
  if (!ReadMessages(p, true)) return true;
  return ServePending(p);
}

bool Engine::DoPrefetch(Worker* w) {
  std::vector<std::shared_ptr<Proc>> procs;
  {
    std::lock_guard<std::mutex> g(w->mu);
    procs = w->procs;
  }
  for (auto& sp : procs) {
    if (!sp->hasWork) continue;
    Proc* p = sp.get();
    std::lock_guard<std::mutex> g(p->mu);
    if (p->state != Proc::kLive || !p->pending.empty()) continue;
    if (!p->first.empty()) return DoFirst(p);
    if (p->prefetch.empty()) continue;
    PrefetchReq& req = p->prefetch.front();
    Piece pc;
    bool found = false;
    while (p->lazy.FirstIn(req.cur, req.end, &pc)) {
      if (pc.span.kind != kRemote) { found = true; break; }
      req.cur = pc.span.end;  // remote pages come only through supply()
    }
    if (!found) {
      Event e{kEvPrefetched, p->handle};
      e.a = req.start;
      e.b = req.end - req.start;
      e.c = req.copied;
      Emit(std::move(e));
      p->prefetch.pop_front();
      p->hasWork = !p->pending.empty() || !p->prefetch.empty() || !p->first.empty();
      CheckComplete(p);
      return true;
    }
    uint64_t end = std::min(pc.span.end, pc.start + kPrefetchChunk);
    const uint8_t* src = nullptr;
    if (pc.span.kind == kFile) {
      const Source* s = GetSource(pc.span.source);
      src = s && s->base ? s->base + pc.span.off : nullptr;
      if (src == nullptr) {
        Fail(p, EINVAL, "ioctl(UFFDIO_COPY)", "range " + Hex(pc.start) + " has no mapped source");
        return true;
      }
      if (!Verify(p, pc.span.source, pc.span.off, end - pc.start)) return true;
    }
    uint64_t copied = 0;
    FillResult r = Fill(p, pc.start, end, pc.span.kind, src, 1, &copied);
    if (copied > 0) Log(p, pc.start, copied / kPage, kLogPush, 0);
    if (p->state == Proc::kLive && !p->prefetch.empty()) {
      p->prefetch.front().copied += copied;
      if (r == kFillDone) p->prefetch.front().cur = end;
      else if (r == kFillRetry) ReadMessages(p, true);
    }
    if (p->state == Proc::kLive) {
      ServePending(p);
      CheckComplete(p);
    }
    return true;
  }
  return false;
}

// Copies the head of the working-set queue: up to kPrefetchChunk bytes or
// kFirstCalls copies per call, so a fault that arrives meanwhile waits at
// most that long (the worker polls the uffds between calls). Pages already
// present or no longer lazy are skipped; remote pages are left to the
// background push (they come only through supply()).
bool Engine::DoFirst(Proc* p) {
  constexpr int kFirstCalls = 32;
  uint64_t budget = kPrefetchChunk;
  int calls = 0;
  while (!p->first.empty() && budget > 0 && calls < kFirstCalls && p->state == Proc::kLive && p->pending.empty()) {
    PrefetchReq& req = p->first.front();
    Piece pc;
    if (!p->lazy.FirstIn(req.cur, req.end, &pc)) {
      p->first.pop_front();
      continue;
    }
    if (pc.span.kind == kRemote) {
      req.cur = pc.span.end;
      continue;
    }
    uint64_t end = std::min(pc.span.end, pc.start + budget);
    const uint8_t* src = nullptr;
    if (pc.span.kind == kFile) {
      const Source* s = GetSource(pc.span.source);
      src = s && s->base ? s->base + pc.span.off : nullptr;
      if (src == nullptr) {
        Fail(p, EINVAL, "ioctl(UFFDIO_COPY)", "range " + Hex(pc.start) + " has no mapped source");
        return true;
      }
      // Working-set pages are checked like faults and pushes: first use of a chunk.
      if (!Verify(p, pc.span.source, pc.span.off, end - pc.start)) return true;
    }
    uint64_t copied = 0;
    FillResult r = Fill(p, pc.start, end, pc.span.kind, src, 1, &copied);
    calls++;
    if (copied > 0) Log(p, pc.start, copied / kPage, pc.span.kind == kZero ? kLogZero : kLogPush, 0);
    if (pc.span.kind != kZero) p->firstCopied += copied;
    if (r == kFillDead) return true;
    if (r == kFillRetry) {
      ReadMessages(p, true);
      break;
    }
    if (!p->first.empty()) p->first.front().cur = end;
    budget -= std::min(budget, end - pc.start);
  }
  if (p->state != Proc::kLive) return true;
  if (p->first.empty()) {
    Event e{kEvWarmed, p->handle};
    e.c = p->firstCopied;
    Emit(std::move(e));
  }
  p->hasWork = !p->pending.empty() || !p->prefetch.empty() || !p->first.empty();
  ServePending(p);
  CheckComplete(p);
  return true;
}

void Engine::Log(Proc* p, uint64_t start, uint64_t pages, uint8_t kind, uint64_t fault) {
  if (!logOn_.load(std::memory_order_relaxed) || pages == 0) return;
  LogEntry e{NowNs(), start, fault, p->handle, static_cast<uint32_t>(pages), kind};
  std::lock_guard<std::mutex> g(logMu_);
  if (log_.empty()) return;
  size_t cap = log_.size();
  if (logCount_ == cap) {
    logHead_ = (logHead_ + 1) % cap;  // drop the oldest
    logCount_--;
    logDropped_++;
  }
  log_[(logHead_ + logCount_) % cap] = e;
  logCount_++;
}

void Engine::SetLogCapacity(size_t cap) {
  std::lock_guard<std::mutex> g(logMu_);
  log_.assign(cap, LogEntry{});
  logHead_ = logCount_ = 0;
  logOn_ = cap > 0;
}

void Engine::DrainLog(std::vector<LogEntry>* out, uint64_t* dropped) {
  std::lock_guard<std::mutex> g(logMu_);
  out->clear();
  out->reserve(logCount_);
  for (size_t i = 0; i < logCount_; i++) out->push_back(log_[(logHead_ + i) % log_.size()]);
  logHead_ = logCount_ = 0;
  *dropped = logDropped_;
  logDropped_ = 0;
}

void Engine::Probe(Worker* w) {
  std::vector<std::shared_ptr<Proc>> procs;
  {
    std::lock_guard<std::mutex> g(w->mu);
    procs = w->procs;
  }
  for (auto& sp : procs) {
    Proc* p = sp.get();
    std::lock_guard<std::mutex> g(p->mu);
    if (p->state != Proc::kLive || guard_ == nullptr) continue;
    // Copies from an unreadable page: can only fail. ESRCH means the mm is gone.
    uint64_t done = 0;
    int r = UffdCopy(p->uffd, kProbeAddr, reinterpret_cast<uint64_t>(guard_), kPage, 0, &done);
    if (r == -ESRCH || r == -ENOSPC) MarkExited(p);
  }
}

void Engine::Run(Worker* w) {
  const uint64_t spinNs = opt_.spinMicros * 1000;
  uint64_t spinUntil = 0, lastProbe = NowNs();
  struct epoll_event evs[64];
  std::vector<std::shared_ptr<Proc>> procs;
  while (!stop_) {
    bool work = false;
    {
      std::lock_guard<std::mutex> g(w->mu);
      for (auto& p : w->procs)
        if (p->hasWork) { work = true; break; }
    }
    uint64_t now = NowNs();
    int timeout = work || now < spinUntil ? 0 : kProbeMs;
    {
      // A GET is out: busy-poll for its reply for a while (a sleeping
      // worker costs a cross-CPU wake-up), then sleep no longer than its
      // stall deadline.
      std::lock_guard<std::mutex> lk(w->link.mu);
      const RemoteLink& L = w->link;
      if (L.fd >= 0 && !L.out.empty()) {
        if (now < L.lastSendNs + L.spinNs) timeout = 0;
        else if (timeout > 0) {
          uint64_t left = L.lastNs + L.stallNs > now ? L.lastNs + L.stallNs - now : 0;
          timeout = std::min<int>(timeout, static_cast<int>(left / 1000000) + 1);
        }
      }
    }
    int n = epoll_wait(w->ep, evs, 64, timeout);
    if (stop_) break;
    if (n < 0) {
      if (errno == EINTR) continue;
      n = 0;
    }
    bool served = false;
    for (int i = 0; i < n; i++) {
      uint64_t tag = evs[i].data.u64;
      if ((tag & 3) == kTagEventfd) {
        uint64_t v;
        (void)!read(w->evfd, &v, sizeof(v));
        continue;
      }
      if ((tag & 3) == kTagLink) {
        ReadLink(w);
        served = true;
        continue;
      }
      std::shared_ptr<Proc> p = Find(static_cast<uint32_t>(tag >> 2));
      if (!p) continue;
      if ((tag & 3) == kTagUffd) {
        served |= HandleUffd(p.get());
      } else {
        std::lock_guard<std::mutex> g(p->mu);
        if (p->state == Proc::kLive) MarkExited(p.get());
      }
    }
    // Faults queued by an EAGAIN retry or read by supply() on the JS thread.
    if (work) {
      {
        std::lock_guard<std::mutex> g(w->mu);
        procs = w->procs;
      }
      for (auto& p : procs) {
        if (!p->hasWork) continue;
        std::lock_guard<std::mutex> g(p->mu);
        if (p->state == Proc::kLive && !p->pending.empty()) served |= ServePending(p.get());
      }
      procs.clear();
    }
    now = NowNs();
    CheckLinkStall(w, now);
    // While spinning, give the CPU to anything runnable here: the thread we
    // just woke is often placed on this CPU and would otherwise wait for us.
    if (n == 0 && !work && timeout == 0) sched_yield();
    if (served) spinUntil = now + spinNs;
    else if (n == 0 && work) DoPrefetch(w);
    if (n == 0 && timeout > 0 && now - lastProbe > kProbeMs * 1000000ull) {
      Probe(w);
      lastProbe = now;
    }
  }
}

int Engine::Supply(uint32_t handle, uint64_t imageAddr, const uint8_t* data, uint64_t len, uint64_t* copied) {
  *copied = 0;
  std::shared_ptr<Proc> sp = Find(handle);
  if (!sp) return -ENOENT;
  std::lock_guard<std::mutex> g(sp->mu);
  return SupplyLocked(sp.get(), imageAddr, data, len, 0, 2, copied);
}

// Copies remote pages dumped at [imageAddr, imageAddr+len) wherever they are
// still lazy or in flight. `hint` (0: none) is the run-time address they were
// requested for: tried first, so the usual case needs no map scan.
int Engine::SupplyLocked(Proc* p, uint64_t imageAddr, const uint8_t* data, uint64_t len, uint64_t hint, int path,
                         uint64_t* copied) {
  *copied = 0;
  if (p->state != Proc::kLive) return 0;  // gone meanwhile: discard the data
  const uint64_t iaEnd = imageAddr + len;
  if (hint != 0) {
    uint64_t s;
    Span span;
    if (p->inflight.Find(hint, &s, &span) && span.kind == kRemote && span.off + (hint - s) == imageAddr) {
      uint64_t re = std::min(span.end, hint + len), c = 0;
      FillResult r = Fill(p, hint, re, kRemote, data, path, &c);
      *copied += c;
      if (r == kFillRetry) ReadMessages(p, true);
    }
  }
  for (int guard = 0; guard < 100000 && p->state == Proc::kLive; guard++) {
    // The pages keep their dump-time address across mremap, so match on it.
    bool found = false;
    uint64_t rs = 0, re = 0, ia = 0;
    for (const IntervalMap* m : {&p->inflight, &p->lazy}) {
      for (const auto& [s, span] : m->raw()) {
        if (span.kind != kRemote) continue;
        uint64_t is = span.off, ie = span.off + (span.end - s);
        uint64_t a = std::max(is, imageAddr), b = std::min(ie, iaEnd);
        if (a >= b) continue;
        rs = s + (a - is);
        re = s + (b - is);
        ia = a;
        found = true;
        break;
      }
      if (found) break;
    }
    if (!found) break;
    uint64_t c = 0;
    FillResult r = Fill(p, rs, re, kRemote, data + (ia - imageAddr), path, &c);
    *copied += c;
    if (r == kFillDead) break;
    if (r == kFillRetry && !ReadMessages(p, true)) break;
  }
  if (p->state == Proc::kLive) {
    if (!p->pending.empty()) {
      p->hasWork = true;
      Poke(p->worker);
    }
    CheckComplete(p);
  }
  return 0;
}

// ---- native page-server links ------------------------------------------------

int Engine::AttachLink(unsigned slot, int fd, uint64_t stallMs, uint64_t spinMicros, const char** what) {
  *what = "attachLink";
  if (slot >= workers_.size()) return -EINVAL;
  int type = 0;
  socklen_t tl = sizeof(type);
  if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &tl) < 0) { *what = "getsockopt(SO_TYPE)"; return -errno; }
  if (type != SOCK_STREAM) { *what = "attachLink (not a stream socket)"; return -EINVAL; }
  int nfd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
  if (nfd < 0) { *what = "fcntl(F_DUPFD_CLOEXEC)"; return -errno; }
  int fl = fcntl(nfd, F_GETFL);
  if (fl < 0 || fcntl(nfd, F_SETFL, fl | O_NONBLOCK) < 0) { int e = errno; close(nfd); *what = "fcntl(O_NONBLOCK)"; return -e; }
  int one = 1;
  (void)setsockopt(nfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));  // ENOTSUP on a unix socket: fine
  Worker* w = workers_[slot].get();
  std::lock_guard<std::mutex> g(w->link.mu);
  RemoteLink& L = w->link;
  if (L.fd >= 0) FailLinkLocked(w, ECANCELED, "attachLink", "replaced by a new connection");
  struct epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = kTagLink;
  if (epoll_ctl(w->ep, EPOLL_CTL_ADD, nfd, &ev) < 0) { int e = errno; close(nfd); *what = "epoll_ctl"; return -e; }
  L.fd = nfd;
  L.hdrGot = L.dataGot = 0;
  L.inData = false;
  L.data.clear();
  L.stallNs = (stallMs ? stallMs : 1) * 1000000ull;
  L.spinNs = spinMicros * 1000ull;
  L.attached++;
  return 0;
}

int Engine::DetachLink(unsigned slot) {
  if (slot >= workers_.size()) return -EINVAL;
  Worker* w = workers_[slot].get();
  std::lock_guard<std::mutex> g(w->link.mu);
  if (w->link.fd < 0) return 0;
  RemoteLink& L = w->link;
  // Not a failure: unanswered GETs still go to the JS path, but no event.
  epoll_ctl(w->ep, EPOLL_CTL_DEL, L.fd, nullptr);
  close(L.fd);
  L.fd = -1;
  for (const RemoteGet& r : L.out) {
    Event e{kEvNeed, r.proc};
    e.a = r.addr;
    e.b = r.imageAddr;
    e.c = r.pages * kPage;
    Emit(std::move(e));
  }
  L.out.clear();
  return 0;
}

std::vector<LinkStats> Engine::Links() {
  std::vector<LinkStats> v;
  for (auto& w : workers_) {
    std::lock_guard<std::mutex> g(w->link.mu);
    const RemoteLink& L = w->link;
    v.push_back({L.fd >= 0, L.out.size(), L.gets, L.pages, L.shortReplies, L.failures, L.attached});
  }
  return v;
}

// Queues g on w's link and sends it. false = no link (the caller takes the JS
// path); true = the link owns g: sent, or failed over to a 'need' event.
bool Engine::SendGet(Worker* w, const RemoteGet& g) {
  std::lock_guard<std::mutex> lk(w->link.mu);
  return SendGetLocked(w, g);
}

bool Engine::SendGetLocked(Worker* w, const RemoteGet& g) {
  RemoteLink& L = w->link;
  if (L.fd < 0) return false;
  uint8_t h[kPsHeader] = {};
  memcpy(h, &kPsGet, 4);
  memcpy(h + 8, &g.pages, 8);
  memcpy(h + 16, &g.imageAddr, 8);
  uint64_t dst = static_cast<uint64_t>(g.pid);  // GET: the plain pid, no type byte
  memcpy(h + 24, &dst, 8);
  const uint64_t now = NowNs();
  if (L.out.empty()) L.lastNs = now;
  L.out.push_back(g);
  L.lastSendNs = now;
  ssize_t n;
  do n = send(L.fd, h, sizeof(h), MSG_DONTWAIT | MSG_NOSIGNAL);
  while (n < 0 && errno == EINTR);
  if (n == static_cast<ssize_t>(sizeof(h))) {
    L.gets++;
    return true;
  }
  // A partial header cannot be taken back: the stream is unusable either way.
  FailLinkLocked(w, n < 0 ? errno : EPIPE, "send", n < 0 ? "sending a GET" : "short write of a GET header");
  return true;
}

void Engine::FailLinkLocked(Worker* w, int err, const char* syscall, const std::string& msg) {
  RemoteLink& L = w->link;
  if (L.fd < 0) return;
  epoll_ctl(w->ep, EPOLL_CTL_DEL, L.fd, nullptr);
  close(L.fd);
  L.fd = -1;
  L.failures++;
  L.hdrGot = L.dataGot = 0;
  L.inData = false;
  L.data.clear();
  // Whatever was received for these is discarded: each is asked again on the
  // JS path, which re-requests on its own connection (never a partial copy).
  for (const RemoteGet& r : L.out) {
    Event e{kEvNeed, r.proc};
    e.a = r.addr;
    e.b = r.imageAddr;
    e.c = r.pages * kPage;
    Emit(std::move(e));
  }
  size_t lost = L.out.size();
  L.out.clear();
  Event e{kEvLinkError, 0};
  e.a = w->index;
  e.b = lost;
  e.err = err;
  e.syscall = syscall;
  e.message = msg;
  Emit(std::move(e));
}

// Reads what the link has, assembles replies in FIFO order, and copies each
// complete one into its process (after releasing the link lock). A reply
// whose header does not match the oldest GET fails the link: its data is
// never copied.
void Engine::ReadLink(Worker* w) {
  struct Done {
    RemoteGet g;
    std::vector<uint8_t> data;
  };
  std::vector<Done> done;
  {
    std::lock_guard<std::mutex> lk(w->link.mu);
    RemoteLink& L = w->link;
    // One recv usually brings a whole small reply (header + pages) into the
    // staging buffer; a large one is received straight into its data.
    if (L.stage.empty()) L.stage.resize(kLinkStage);
    for (int rounds = 0; rounds < 256 && L.fd >= 0; rounds++) {
      const bool direct = L.inData && L.data.size() - L.dataGot >= L.stage.size();
      uint8_t* dst = direct ? L.data.data() + L.dataGot : L.stage.data();
      size_t cap = direct ? L.data.size() - L.dataGot : L.stage.size();
      ssize_t n = recv(L.fd, dst, cap, MSG_DONTWAIT);
      if (n < 0) {
        if (errno == EINTR) continue;
        if (errno != EAGAIN) FailLinkLocked(w, errno, "recv", "reading a page-server reply");
        break;
      }
      if (n == 0) {
        FailLinkLocked(w, ECONNRESET, "recv", "the page server closed the connection");
        break;
      }
      L.lastNs = NowNs();
      size_t at = 0, got = static_cast<size_t>(n);
      if (direct) {
        L.dataGot += got;
        at = got;
      }
      // Walk the bytes: header, then data, reply after reply.
      while (L.fd >= 0 && (at < got || (L.inData && L.dataGot == L.data.size()))) {
        if (!L.inData) {
          size_t k = std::min(kPsHeader - L.hdrGot, got - at);
          memcpy(L.hdr + L.hdrGot, dst + at, k);
          L.hdrGot += k;
          at += k;
          if (L.hdrGot < kPsHeader) break;
          uint32_t cmd;
          uint64_t nr, vaddr, dstId;
          memcpy(&cmd, L.hdr, 4);
          memcpy(&nr, L.hdr + 8, 8);
          memcpy(&vaddr, L.hdr + 16, 8);
          memcpy(&dstId, L.hdr + 24, 8);
          if (L.out.empty()) {
            FailLinkLocked(w, EPROTO, "recv", "reply with no GET outstanding");
            break;
          }
          const RemoteGet& g = L.out.front();
          if (cmd != kPsReply || vaddr != g.imageAddr || dstId != static_cast<uint64_t>(g.pid) || nr == 0 ||
              nr > g.pages) {
            char b[160];
            snprintf(b, sizeof(b), "bad reply (cmd 0x%x, %llu pages at 0x%llx for pid %llu) to GET of %llu pages at 0x%llx",
                     cmd, (unsigned long long)nr, (unsigned long long)vaddr, (unsigned long long)dstId,
                     (unsigned long long)g.pages, (unsigned long long)g.imageAddr);
            FailLinkLocked(w, EPROTO, "recv", b);
            break;
          }
          L.data.resize(nr * kPage);
          L.dataGot = 0;
          L.inData = true;
          continue;
        }
        if (L.dataGot < L.data.size()) {
          size_t k = std::min(L.data.size() - L.dataGot, got - at);
          memcpy(L.data.data() + L.dataGot, dst + at, k);
          L.dataGot += k;
          at += k;
          if (L.dataGot < L.data.size()) break;
        }
        RemoteGet g = L.out.front();
        L.out.pop_front();
        const uint64_t m = L.data.size() / kPage;
        L.pages += m;
        L.inData = false;
        L.hdrGot = 0;
        done.push_back({g, std::move(L.data)});
        L.data = {};
        L.dataGot = 0;
        if (m < g.pages) {
          // The server stopped at the end of a stored run: ask for the rest.
          L.shortReplies++;
          RemoteGet rest{g.proc, g.pid, g.addr + m * kPage, g.imageAddr + m * kPage, g.pages - m, g.t0};
          SendGetLocked(w, rest);
        }
      }
      if (static_cast<size_t>(n) < cap) break;  // drained for now
    }
  }
  for (Done& d : done) {
    std::shared_ptr<Proc> sp = Find(d.g.proc);
    if (!sp) continue;
    std::lock_guard<std::mutex> g(sp->mu);
    Proc* p = sp.get();
    if (p->state != Proc::kLive) continue;
    uint64_t c = 0;
    SupplyLocked(p, d.g.imageAddr, d.data.data(), d.data.size(), d.g.addr, 3, &c);
    if (c > 0) {
      p->st.hist[Bucket(NowNs() - d.g.t0)]++;
      p->st.served++;
    }
  }
}

void Engine::CheckLinkStall(Worker* w, uint64_t now) {
  std::lock_guard<std::mutex> lk(w->link.mu);
  RemoteLink& L = w->link;
  if (L.fd < 0 || L.out.empty() || now < L.lastNs + L.stallNs) return;
  FailLinkLocked(w, ETIMEDOUT, "recv", "no reply from the page server for " + std::to_string(L.stallNs / 1000000) + " ms");
}

int Engine::Prefetch(uint32_t handle, uint64_t start, uint64_t len) {
  std::shared_ptr<Proc> p = Find(handle);
  if (!p) return -ENOENT;
  std::lock_guard<std::mutex> g(p->mu);
  if (p->state != Proc::kLive) return 0;
  p->prefetch.push_back({start, start + len, start, 0});
  p->hasWork = true;
  Poke(p->worker);
  return 0;
}

int Engine::PrefetchFirst(uint32_t handle, const std::vector<std::pair<uint64_t, uint64_t>>& ranges) {
  std::shared_ptr<Proc> p = Find(handle);
  if (!p) return -ENOENT;
  std::lock_guard<std::mutex> g(p->mu);
  if (p->state != Proc::kLive) return 0;
  for (const auto& [s, e] : ranges)
    if (e > s) p->first.push_back({s, e, s, 0});
  if (p->first.empty()) {
    Event ev{kEvWarmed, p->handle};
    ev.c = p->firstCopied;
    Emit(std::move(ev));
    return 0;
  }
  p->hasWork = true;
  Poke(p->worker);
  return 0;
}

int Engine::Release(uint32_t handle) {
  std::shared_ptr<Proc> p;
  {
    std::lock_guard<std::mutex> g(procMu_);
    auto it = procs_.find(handle);
    if (it == procs_.end()) return -ENOENT;
    p = it->second;
    procs_.erase(it);
  }
  Worker* w = p->worker;
  {
    std::lock_guard<std::mutex> g(w->mu);
    auto& v = w->procs;
    v.erase(std::remove(v.begin(), v.end(), p), v.end());
  }
  std::lock_guard<std::mutex> g(p->mu);
  if (p->uffd >= 0) {
    epoll_ctl(w->ep, EPOLL_CTL_DEL, p->uffd, nullptr);
    close(p->uffd);
  }
  if (p->pidfd >= 0) {
    epoll_ctl(w->ep, EPOLL_CTL_DEL, p->pidfd, nullptr);
    close(p->pidfd);
  }
  p->uffd = p->pidfd = -1;
  p->state = Proc::kReleased;
  p->lazy.clear();
  p->inflight.clear();
  p->pending.clear();
  p->prefetch.clear();
  p->first.clear();
  p->hasWork = false;
  return 0;
}

int Engine::DupUffd(uint32_t handle, int* fd) {
  std::shared_ptr<Proc> p = Find(handle);
  if (!p) return -ENOENT;
  std::lock_guard<std::mutex> g(p->mu);
  if (p->uffd < 0) return -ESRCH;  // the mm is gone (or released): nothing left to guard
  int d = fcntl(p->uffd, F_DUPFD_CLOEXEC, 3);
  if (d < 0) return -errno;
  *fd = d;
  return 0;
}

int Engine::Kill(uint32_t handle) {
  std::shared_ptr<Proc> p = Find(handle);
  if (!p) return -ENOENT;
  std::lock_guard<std::mutex> g(p->mu);
  if (p->pidfd < 0) return -ESRCH;
  if (syscall(SYS_pidfd_send_signal, p->pidfd, SIGKILL, nullptr, 0) < 0) return -errno;
  return 0;
}

std::vector<ProcSnapshot> Engine::Snapshot() {
  std::vector<std::shared_ptr<Proc>> procs;
  {
    std::lock_guard<std::mutex> g(procMu_);
    for (auto& [h, p] : procs_) procs.push_back(p);
  }
  std::vector<ProcSnapshot> out;
  for (auto& p : procs) {
    std::lock_guard<std::mutex> g(p->mu);
    out.push_back({p->handle, static_cast<int>(p->state), p->lazy.bytes() + p->inflight.bytes(), p->st});
  }
  return out;
}

std::vector<uint64_t> Engine::ThreadCpuNs() {
  std::vector<uint64_t> out;
  for (auto& w : workers_) {
    clockid_t cid;
    struct timespec ts{};
    if (w->th.joinable() && pthread_getcpuclockid(w->th.native_handle(), &cid) == 0 && clock_gettime(cid, &ts) == 0)
      out.push_back(static_cast<uint64_t>(ts.tv_sec) * 1000000000ull + ts.tv_nsec);
    else
      out.push_back(0);
  }
  return out;
}

}  // namespace lr::engine
