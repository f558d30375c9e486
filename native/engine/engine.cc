// Fault engine lifecycle and worker threads. Threading: each process (Proc)
// belongs to one worker thread, which is the only thread that polls its
// uffd. Proc state is guarded by Proc::mu; JavaScript calls (supply,
// prefetch, release, stats) take the same lock, so a fault is never served
// from a map that an event or a supply() is changing. Lock order: Proc::mu
// -> procMu_/Worker::mu -> evMu_ (the latter never held while taking a
// Proc::mu). What a worker does with a ready fd lives in fault.cc (faults),
// events.cc (uffd events), prefetch.cc (idle time) and remote_link.cc.
#include "engine/engine.h"

#include <pthread.h>
#include <sched.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <system_error>

#include "common/fault_injection.h"
#include "engine/internal.h"

namespace lr::engine {

Engine::Engine(const Options& o, std::function<void()> notify) : opt_(o), notify_(std::move(notify)) {
  if (opt_.threads < 1) opt_.threads = 1;
  if (opt_.faultAroundPages < 1) opt_.faultAroundPages = 1;
  // The guard page is the source of the no-op probe copy that tells whether
  // an event is pending (PendingEvents): without it the mremap/ENOENT race
  // handling would silently turn off, so its failure fails the engine.
  guard_ = FaultInjected("engine-guard-mmap") ? (errno = ENOMEM, MAP_FAILED)
                                             : mmap(nullptr, kPage, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (guard_ == MAP_FAILED) {
    guard_ = nullptr;
    throw std::system_error(errno, std::generic_category(), "mmap(guard page)");
  }
  // Push copies compete with the restored program for the CPU: with two
  // CPUs or fewer, one worker pushes at a time (faults are served by all).
  cpu_set_t online;
  unsigned ncpu = sched_getaffinity(0, sizeof(online), &online) == 0 ? static_cast<unsigned>(CPU_COUNT(&online)) : 2;
  maxPushers_ = std::max(1u, ncpu / 2);
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
  StopAllPulls();  // before any uffd closes: a pull may be copying
  {
    // VerifyAhead threads read the sources: joined before they are unmapped.
    std::vector<std::thread> ahead;
    {
      std::lock_guard<std::mutex> g(aheadMu_);
      ahead.swap(ahead_);
    }
    for (auto& t : ahead)
      if (t.joinable()) t.join();
  }
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
  if (FaultInjected("engine-add-proc")) return -ENOSPC;  // as epoll_ctl at max_user_watches
  if (epoll_ctl(w->ep, EPOLL_CTL_ADD, p->uffd, &ev) < 0) return -errno;
  if (p->pidfd >= 0) {
    ev.data.u64 = (static_cast<uint64_t>(p->handle) << 2) | kTagPidfd;
    epoll_ctl(w->ep, EPOLL_CTL_ADD, p->pidfd, &ev);
  }
  return 0;
}

// A copy from the unreadable guard page to the top page: it can never
// install data, only fail. Its errno tells the state of the mm: EAGAIN =
// non-cooperative events in flight, ESRCH/ENOSPC = the mm is gone.
int Engine::ProbeCopy(Proc* p) {
  uint64_t done = 0;
  return UffdCopy(p->uffd, kProbeAddr, reinterpret_cast<uint64_t>(guard_), kPage, 0, &done);
}

// An idle worker's periodic check that its processes are still there (a
// process that exits without faulting again sends nothing on its uffd).
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
    int r = ProbeCopy(p);
    if (r == -ESRCH || r == -ENOSPC) MarkExited(p);
  }
}

void Engine::Run(Worker* w) {
  const uint64_t spinNs = opt_.spinMicros * 1000;
  uint64_t spinUntil = 0, lastProbe = NowNs();
  bool pushWaits = false;  // another worker held the push: look again in kPushWaitMs
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
    int timeout = now < spinUntil ? 0 : work ? (pushWaits ? kPushWaitMs : 0) : kProbeMs;
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
    pushWaits = false;
    if (!served && n == 0 && work) DoPrefetch(w, &pushWaits);
    if (n == 0 && timeout > 0 && now - lastProbe > kProbeMs * 1000000ull) {
      Probe(w);
      lastProbe = now;
    }
  }
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
