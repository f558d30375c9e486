// Serving a page fault: the uffd is readable -> read every message (events
// first, events.cc) -> for each queued fault, look the page up (in flight:
// ignore; remote: GET on the native link or a 'need' event; file: source
// bytes checked, sources.cc; shared object: decided per page under the
// object's lock, shared.cc; zero or not lazy: zero page) -> UFFDIO_COPY or
// UFFDIO_ZEROPAGE of the fault-around window, which also wakes the thread.
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
#include <sched.h>

#include <algorithm>

#include "engine/engine.h"
#include "engine/internal.h"

namespace lr::engine {

namespace {

// A page that will not be copied (EEXIST: it is already there; ENOENT: its
// VMA is gone) leaves the maps, and a thread waiting on it is woken.
void DropPage(Proc* p, uint64_t addr) {
  p->lazy.Remove(addr, addr + kPage);
  p->inflight.Remove(addr, addr + kPage);
  UffdWake(p->uffd, addr, kPage);
}

}  // namespace

bool Engine::HandleUffd(Proc* p) {
  std::lock_guard<std::mutex> g(p->mu);
  if (p->state != Proc::kLive) return false;
  if (!ReadMessages(p)) return true;
  return ServePending(p);
}

bool Engine::ServePending(Proc* p) {
  bool any = false;
  while (!p->pending.empty() && p->state == Proc::kLive) {
    Fault f = p->pending.front();
    ServeResult r = ServeFault(p, f);
    if (r == ServeResult::kRetryLater) break;
    if (!p->pending.empty()) p->pending.pop_front();
    any = true;
    if (r == ServeResult::kGone) break;
  }
  p->UpdateHasWork();
  CheckComplete(p);
  return any;
}

// kRetryLater when EAGAIN persisted (the fault stays queued); kGone when the
// process exited or failed meanwhile.
Engine::ServeResult Engine::ServeFault(Proc* p, const Fault& f) {
  const uint64_t page = f.addr & ~(kPage - 1);
  const uint64_t window = opt_.faultAroundPages * kPage;
  bool counted = false;
  for (int attempt = 0; attempt < 64; attempt++) {
    if (attempt > 0) {
      if (!ReadMessages(p)) return ServeResult::kGone;
      if (attempt > 4) sched_yield();
    }
    uint64_t s;
    Span sp;
    if (p->inflight.Find(page, &s, &sp)) {
      p->st.ignored++;  // the supply() for it wakes this thread too
      return ServeResult::kServed;
    }
    uint64_t ws, we, copied = 0;
    FillResult r;
    LogKind logKind = kLogZero;
    if (!p->lazy.Find(page, &s, &sp)) {
      if (!counted) p->st.unexpected++;
      counted = true;
      ws = page;
      r = Fill(p, page, page + kPage, kZero, nullptr, CopyPath::kFault, &copied);
    } else {
      ws = page - ((page / kPage) % opt_.faultAroundPages) * kPage;
      if (ws < s) ws = s;
      we = std::min(sp.end, ws + window);
      if (sp.kind == kRemote) {
        std::vector<Piece> moved;
        p->lazy.Remove(ws, we, &moved);
        for (const Piece& m : moved) p->inflight.Insert(m.start, m.span);
        p->lastRemoteFault = we;
        Log(p, ws, (we - ws) / kPage, kLogFault, page);
        RemoteGet g{p->handle, p->remotePid, ws, sp.off + (ws - s), (we - ws) / kPage, f.t0};
        if (p->remotePid > 0 && SendGet(p->worker, g)) {
          p->st.remoteGets++;
          return ServeResult::kServed;
        }
        Event e{kEvNeed, p->handle};
        e.a = ws;
        e.b = sp.off + (ws - s);
        e.c = we - ws;
        p->st.needs++;
        Emit(std::move(e));
        return ServeResult::kServed;
      }
      logKind = sp.kind == kZero ? kLogZero : kLogFault;
      if (sp.kind == kShared) {
        Span at = sp;
        at.off += ws - s;
        r = FillShared(p, ws, we, at, CopyPath::kFault, page, &copied);
      } else {
        const uint8_t* src = nullptr;
        if (!SourceBytes(p, s, sp, ws, we - ws, &src)) return ServeResult::kGone;
        r = Fill(p, ws, we, sp.kind, src, CopyPath::kFault, &copied);
      }
    }
    if (copied > 0) Log(p, ws, copied / kPage, logKind, page);
    if (r == kFillDead) return ServeResult::kGone;
    if (r == kFillDone || page < ws + copied) {
      if (copied > 0 && logKind == kLogFault) FollowFault(p, ws, ws + copied);
      uint64_t ns = NowNs() - f.t0;
      p->st.hist[HistBucket(ns)]++;
      p->st.served++;
      return ServeResult::kServed;
    }
  }
  return ServeResult::kRetryLater;
}

// kChanging if non-cooperative events are in flight (mmap_changing raised:
// their messages are not read yet or their threads have not resumed), kGone
// if the mm is gone. UFFDIO_COPY checks mmap_changing before anything else;
// the probe copy itself can only fail (unreadable source, top page).
Engine::MmState Engine::PendingEvents(Proc* p) {
  if (guard_ == nullptr) return MmState::kSettled;
  int r = ProbeCopy(p);
  if (r == -EAGAIN) return MmState::kChanging;
  if (r == -ESRCH || r == -ENOSPC) return MmState::kGone;
  return MmState::kSettled;
}

// Copies (or zero-fills) [start, end) and drops what it placed from the maps.
Engine::FillResult Engine::Fill(Proc* p, uint64_t start, uint64_t end, Kind kind, const uint8_t* src, CopyPath path,
                                uint64_t* copied, std::vector<std::pair<uint64_t, uint64_t>>* present) {
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
        switch (path) {
          case CopyPath::kFault: p->st.copiedPages += pages; break;
          case CopyPath::kPrefetch: p->st.pushedPages += pages; break;
          case CopyPath::kSupply: p->st.suppliedPages += pages; break;
          case CopyPath::kLink: p->st.remotePages += pages; break;
        }
      }
      if (present) present->emplace_back(cur, cur + done);
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
        // A page whose data only the page server holds can be present only
        // if something populated it before it was served (a kernel write or
        // a remote read before the uffd was registered): the process would
        // run on those bytes instead of its own. Restore never writes such
        // pages itself (file pages it may write eagerly: those are fine).
        if (kind == kRemote) {
          Fail(p, EEXIST, "ioctl(UFFDIO_COPY)",
               "page " + Hex(cur) + " was populated before its data arrived from the page server: it would hold wrong data");
          return kFillDead;
        }
        DropPage(p, cur);
        if (present) present->emplace_back(cur, cur + kPage);
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
          case MmState::kChanging:
            p->st.eagain++;
            return kFillRetry;
          case MmState::kGone:
            MarkExited(p);
            return kFillDead;
          case MmState::kSettled:
            break;
        }
        // A thread may be waiting there (its VMA went away under it): the
        // wake lets it retry its access.
        DropPage(p, cur);
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

}  // namespace lr::engine
