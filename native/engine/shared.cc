// Shared memory objects served lazily (MAP_SHARED anonymous memory and
// memfds the restorer created empty). Every process mapping one has its
// VMAs registered MISSING; a kShared span names the object and the object
// offset. Kernel facts this rests on (uffd-shmem-facts.test.ts): a
// UFFDIO_COPY through any registered mapping fills the object's page cache
// for every mapping, and placing a page that is there already fails with
// EEXIST, so no page is ever placed twice; a fault on a shared mapping
// means the page cache has no page there.
//
// Per page, under the object's lock:
//   poisoned       -> the process fails (never served wrong data)
//   not served     -> UFFDIO_COPY of the image bytes, or ZEROPAGE for a hole;
//                     placed or EEXIST = served
//   served         -> the page is in the page cache unless the program
//                     punched it out (MADV_REMOVE): the faulting page gets a
//                     zero page (EEXIST: it is there, wake); other pages just
//                     leave this process's map.
// UFFD_EVENT_REMOVE over pages not served yet cannot be classified
// (MADV_DONTNEED keeps the data, MADV_REMOVE zeroes it, both raise the same
// message): they are poisoned and the discarding process fails; any sharer
// faulting on them later fails too.
#include <algorithm>

#include "engine/engine.h"
#include "engine/internal.h"

namespace lr::engine {

int Engine::AddSharedObject(const std::string& name, uint64_t size, std::vector<Piece>&& data, uint32_t* id,
                            const char** what) {
  *what = "addSharedObject";
  if (size == 0 || size & (kPage - 1)) return -EINVAL;
  auto o = std::make_unique<SharedObject>();
  o->name = name;
  o->size = size;
  uint64_t prevEnd = 0;
  for (const Piece& r : data) {
    if ((r.start | r.span.end | r.span.off) & (kPage - 1) || r.span.end <= r.start || r.start < prevEnd ||
        r.span.end > size || r.span.kind != kFile)
      return -EINVAL;
    const Source* s = GetSource(r.span.source);
    const uint64_t len = r.span.end - r.start;
    if (s == nullptr || r.span.off + len > s->size || r.span.off + len < r.span.off) return -EINVAL;
    prevEnd = r.span.end;
    o->data.Insert(r.start, r.span);
  }
  const size_t words = (size / kPage + 63) / 64;
  o->served.assign(words, 0);
  o->poisoned.assign(words, 0);
  std::lock_guard<std::mutex> g(srcMu_);
  *id = static_cast<uint32_t>(shared_.size());
  shared_.push_back(std::move(o));
  return 0;
}

SharedObject* Engine::GetShared(uint32_t id) {
  std::lock_guard<std::mutex> g(srcMu_);
  return id < shared_.size() ? shared_[id].get() : nullptr;
}

std::vector<std::pair<std::string, SharedStats>> Engine::SharedSnapshot() {
  std::vector<SharedObject*> objs;
  {
    std::lock_guard<std::mutex> g(srcMu_);
    for (auto& o : shared_) objs.push_back(o.get());
  }
  std::vector<std::pair<std::string, SharedStats>> out;
  for (SharedObject* o : objs) {
    std::lock_guard<std::mutex> g(o->mu);
    out.emplace_back(o->name, o->st);
  }
  return out;
}

Engine::FillResult Engine::FillShared(Proc* p, uint64_t start, uint64_t end, const Span& sp, CopyPath path,
                                      uint64_t faultPage, uint64_t* copied) {
  *copied = 0;
  SharedObject* o = GetShared(sp.source);
  if (o == nullptr) {
    Fail(p, EINVAL, "ioctl(UFFDIO_COPY)", "range " + Hex(start) + " names no shared memory object");
    return kFillDead;
  }
  std::lock_guard<std::mutex> g(o->mu);
  uint64_t cur = start;
  std::vector<std::pair<uint64_t, uint64_t>> present;
  while (cur < end) {
    const uint64_t off = sp.off + (cur - start);
    const uint64_t pg = off / kPage;
    if (SharedObject::Bit(o->poisoned, pg)) {
      Fail(p, ENODATA, "UFFD_EVENT_REMOVE",
           "shared memory " + o->name + " page at " + Hex(cur) + " (object offset " + Hex(off) +
               ") was discarded by a process before it was restored: it cannot be served right, never served wrong data");
      return kFillDead;
    }
    if (SharedObject::Bit(o->served, pg)) {
      if (cur == faultPage) {
        // Faulting although served: the program punched it out (MADV_REMOVE).
        uint64_t c = 0;
        FillResult r = Fill(p, cur, cur + kPage, kZero, nullptr, path, &c);
        o->st.refilledPages += c / kPage;
        *copied += c;
        if (r != kFillDone) return r;
      } else {
        p->lazy.Remove(cur, cur + kPage);
      }
      cur += kPage;
      continue;
    }
    // A run of pages not served yet with one kind of source.
    uint64_t s;
    Span d;
    const bool isData = o->data.Find(off, &s, &d);
    uint64_t limit = end;
    if (isData) {
      limit = std::min(limit, cur + (d.end - off));
    } else {
      Piece next;
      if (o->data.FirstIn(off, off + (end - cur), &next)) limit = std::min(limit, cur + (next.start - off));
    }
    uint64_t runEnd = cur + kPage;
    while (runEnd < limit) {
      const uint64_t q = (sp.off + (runEnd - start)) / kPage;
      if (SharedObject::Bit(o->served, q) || SharedObject::Bit(o->poisoned, q)) break;
      runEnd += kPage;
    }
    const uint8_t* src = nullptr;
    if (isData) {
      Span fsp = d;
      fsp.off = d.off + (off - s);
      if (!SourceBytes(p, cur, fsp, cur, runEnd - cur, &src)) return kFillDead;
    }
    present.clear();
    uint64_t c = 0;
    FillResult r = Fill(p, cur, runEnd, isData ? kFile : kZero, src, path, &c, &present);
    *copied += c;
    for (const auto& [a, b] : present) {
      for (uint64_t x = a; x < b; x += kPage) {
        const uint64_t q = (sp.off + (x - start)) / kPage;
        if (!SharedObject::Bit(o->served, q)) {
          SharedObject::Set(o->served, q);
          o->st.servedPages++;
        }
      }
    }
    const uint64_t presentPages = [&] {
      uint64_t n = 0;
      for (const auto& [a, b] : present) n += (b - a) / kPage;
      return n;
    }();
    if (isData) o->st.copiedPages += c / kPage;
    else o->st.zeroPages += c / kPage;
    o->st.presentPages += presentPages - c / kPage;
    if (r != kFillDone) return r;
    cur = runEnd;
  }
  return kFillDone;
}

void Engine::SharedRemoved(Proc* p, const Piece& pc) {
  SharedObject* o = GetShared(pc.span.source);
  if (o == nullptr) return;
  uint64_t first = 0, last = 0;
  bool any = false;
  {
    std::lock_guard<std::mutex> g(o->mu);
    for (uint64_t x = pc.start; x < pc.span.end; x += kPage) {
      const uint64_t q = (pc.span.off + (x - pc.start)) / kPage;
      if (SharedObject::Bit(o->served, q)) continue;
      if (!SharedObject::Bit(o->poisoned, q)) {
        SharedObject::Set(o->poisoned, q);
        o->st.poisonedPages++;
      }
      if (!any) first = x;
      last = x + kPage;
      any = true;
    }
  }
  if (!any) return;
  Fail(p, ENODATA, "UFFD_EVENT_REMOVE",
       "discarded shared memory " + o->name + " pages " + Hex(first) + "-" + Hex(last) + " (object offset " +
           Hex(pc.span.off + (first - pc.start)) +
           ") that were not restored yet (MADV_DONTNEED and MADV_REMOVE cannot be told apart): killed, never served wrong data");
}

}  // namespace lr::engine
