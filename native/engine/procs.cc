// The processes an engine serves: adopting a uffd with its lazy ranges,
// finding, releasing and killing them, duplicating a uffd for the
// watchdog, and the per-process statistics snapshot.
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>

#include "engine/engine.h"
#include "engine/internal.h"

namespace lr::engine {

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
    if (r.span.kind == kShared) {
      SharedObject* o = GetShared(r.span.source);
      if (o == nullptr || r.span.off & (kPage - 1) || r.span.off + (r.span.end - r.start) > o->size ||
          r.span.off + (r.span.end - r.start) < r.span.off)
        return -EINVAL;
    }
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
  p->DropQueues();
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

}  // namespace lr::engine
