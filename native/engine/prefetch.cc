// Background copies, done by a worker only while no fault is pending: the
// working set first (prefetchFirst, in order, one 'warmed' event when it
// drains), then prefetch ranges (one 'prefetched' event each). Both are cut
// into bounded chunks so a fault waits at most one chunk. Remote pages are
// skipped here: they come only through supply() or the native link.
#include <algorithm>

#include "engine/engine.h"
#include "engine/internal.h"

namespace lr::engine {

int Engine::Prefetch(uint32_t handle, uint64_t start, uint64_t len, bool follow) {
  std::shared_ptr<Proc> p = Find(handle);
  if (!p) return -ENOENT;
  std::lock_guard<std::mutex> g(p->mu);
  if (p->state != Proc::kLive) return 0;
  PrefetchReq req{start, start + len, start, 0};
  req.follow = follow;
  p->prefetch.push_back(req);
  p->UpdateHasWork();
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
  p->UpdateHasWork();
  Poke(p->worker);
  return 0;
}

// Copies [pc.start, end) of a file or zero piece on the background path.
// File bytes are checked like a fault's (first use of each chunk); a missing
// source or a mismatch fails the process (kFillDead, nothing copied).
Engine::FillResult Engine::CopyPiece(Proc* p, const Piece& pc, uint64_t end, uint64_t* copied) {
  *copied = 0;
  if (pc.span.kind == kShared) return FillShared(p, pc.start, end, pc.span, CopyPath::kPrefetch, 0, copied);
  const uint8_t* src = nullptr;
  if (!SourceBytes(p, pc.start, pc.span, pc.start, end - pc.start, &src)) return kFillDead;
  return Fill(p, pc.start, end, pc.span.kind, src, CopyPath::kPrefetch, copied);
}

bool Engine::DoPrefetch(Worker* w, bool* waited) {
  *waited = false;
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
    for (;;) {
      while (p->lazy.FirstIn(req.cur, req.end, &pc)) {
        if (pc.span.kind != kRemote) { found = true; break; }
        req.cur = pc.span.end;  // remote pages come only through supply()
      }
      // A following window starts over while its last pass placed anything.
      if (found || !req.follow || req.passCopied == 0) break;
      req.cur = req.start;
      req.passCopied = 0;
    }
    if (!found) {
      Event e{kEvPrefetched, p->handle};
      e.a = req.start;
      e.b = req.end - req.start;
      e.c = req.copied;
      Emit(std::move(e));
      p->prefetch.pop_front();
      p->UpdateHasWork();
      CheckComplete(p);
      return true;
    }
    // One pusher at a time on a small machine: the other CPU is the program's.
    if (pushers_.fetch_add(1) >= maxPushers_) {
      pushers_.fetch_sub(1);
      *waited = true;
      continue;
    }
    uint64_t end = std::min(pc.span.end, pc.start + kPushPiece);
    uint64_t copied = 0;
    FillResult r = CopyPiece(p, pc, end, &copied);
    pushers_.fetch_sub(1);
    if (copied > 0) Log(p, pc.start, copied / kPage, kLogPush, 0);
    if (p->state == Proc::kLive && !p->prefetch.empty()) {
      p->prefetch.front().copied += copied;
      p->prefetch.front().passCopied += copied;
      if (r == kFillDone) p->prefetch.front().cur = end;
      else if (r == kFillRetry) ReadMessages(p);
    }
    if (p->state == Proc::kLive) {
      ServePending(p);
      CheckComplete(p);
    }
    return true;
  }
  return false;
}

void Engine::FollowFault(Proc* p, uint64_t ws, uint64_t we) {
  if (p->prefetch.empty()) return;
  PrefetchReq& req = p->prefetch.front();
  if (!req.follow || ws < req.start || ws >= req.end) return;
  req.cur = std::min(we, req.end);
  // Whatever the jump skipped is taken by the next pass.
  req.passCopied += we - ws;
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
    uint64_t copied = 0;
    FillResult r = CopyPiece(p, pc, end, &copied);
    calls++;
    if (copied > 0) Log(p, pc.start, copied / kPage, pc.span.kind == kZero ? kLogZero : kLogPush, 0);
    if (pc.span.kind != kZero) p->firstCopied += copied;
    if (r == kFillDead) return true;
    if (r == kFillRetry) {
      ReadMessages(p);
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
  p->UpdateHasWork();
  ServePending(p);
  CheckComplete(p);
  return true;
}

}  // namespace lr::engine
