// What happens to a process besides faults: reading its uffd messages
// (events applied at once, in kernel order; faults queued), fork / remap /
// remove / unmap applied to its maps, its exit or failure, and the event
// queue that carries all of it to JavaScript (drained by init.cc).
#include <fcntl.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "engine/engine.h"
#include "engine/internal.h"

namespace lr::engine {

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
  p->DropQueues();
  Emit({kEvExit, p->handle});
}

void Engine::Fail(Proc* p, int err, const char* syscall, const std::string& msg) {
  if (p->state != Proc::kLive) return;
  // Stop serving but keep the uffd open: closing it would let the faulting
  // threads run on with zero pages.
  epoll_ctl(p->worker->ep, EPOLL_CTL_DEL, p->uffd, nullptr);
  p->state = Proc::kFailed;
  p->DropQueues();
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
bool Engine::ReadMessages(Proc* p) {
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
      p->remaps++;
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
      std::vector<Piece> removed;
      p->lazy.Remove(s, e, &removed);
      p->inflight.Remove(s, e);
      Event ev{m.event == UFFD_EVENT_REMOVE ? kEvRemove : kEvUnmap, p->handle};
      ev.a = s;
      ev.b = e;
      Emit(std::move(ev));
      // Shared memory discarded before it was served: MADV_DONTNEED (keep
      // the data) and MADV_REMOVE (zero it) look the same here (shared.cc).
      if (m.event == UFFD_EVENT_REMOVE)
        for (const Piece& pc : removed)
          if (pc.span.kind == kShared) SharedRemoved(p, pc);
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

}  // namespace lr::engine
