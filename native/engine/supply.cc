// Remote pages handed to the engine: supply() from JavaScript (the page
// server's replies read in TS) and complete replies of a worker's native
// link (remote_link.cc). Pages are matched on their dump-time address, so
// they land wherever they are still lazy or in flight, even after mremap.
#include <algorithm>

#include "engine/engine.h"
#include "engine/internal.h"

namespace lr::engine {

int Engine::Supply(uint32_t handle, uint64_t imageAddr, const uint8_t* data, uint64_t len, uint64_t* copied) {
  *copied = 0;
  std::shared_ptr<Proc> sp = Find(handle);
  if (!sp) return -ENOENT;
  std::lock_guard<std::mutex> g(sp->mu);
  return SupplyLocked(sp.get(), imageAddr, data, len, 0, CopyPath::kSupply, copied);
}

// Copies remote pages dumped at [imageAddr, imageAddr+len) wherever they are
// still lazy or in flight. `hint` (0: none) is the run-time address they were
// requested for: tried first, so the usual case needs no map scan.
int Engine::SupplyLocked(Proc* p, uint64_t imageAddr, const uint8_t* data, uint64_t len, uint64_t hint,
                         CopyPath path, uint64_t* copied) {
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
      if (r == kFillRetry) ReadMessages(p);
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
    if (r == kFillRetry && !ReadMessages(p)) break;
  }
  if (p->state == Proc::kLive) {
    if (!p->pending.empty()) {
      p->UpdateHasWork();
      Poke(p->worker);
    }
    CheckComplete(p);
  }
  return 0;
}

}  // namespace lr::engine
