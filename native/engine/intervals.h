// Interval map of a process's not-yet-served pages: run-time address ranges
// -> where their bytes come from (also used keyed by object offset for a
// shared object's data runs). Memory is proportional to the number of
// ranges, not pages. Splitting a range keeps `off` consistent: `off` is the
// source position of the range's first byte (file offset, or dump-time
// address for remote sources), so a sub-range [a, b) of [s, e) has
// off + (a - s).
#pragma once

#include <stdint.h>

#include <map>
#include <vector>

namespace lr::engine {

// kShared: a page of a shared memory object (engine.h SharedObject): `source`
// is the object id and `off` the object offset, so fork copies and mremap
// shifts keep it right; what to place is decided per page by the object.
enum Kind : uint8_t { kFile = 0, kZero = 1, kRemote = 2, kShared = 3 };

struct Span {
  uint64_t end;
  uint64_t off;
  uint32_t source;
  Kind kind;
};

struct Piece {
  uint64_t start;
  Span span;
};

class IntervalMap {
 public:
  bool empty() const { return m_.empty(); }
  uint64_t bytes() const { return bytes_; }
  size_t count() const { return m_.size(); }
  const std::map<uint64_t, Span>& raw() const { return m_; }
  void clear() { m_.clear(); bytes_ = 0; }

  // The range containing addr, if any.
  bool Find(uint64_t addr, uint64_t* start, Span* span) const {
    auto it = m_.upper_bound(addr);
    if (it == m_.begin()) return false;
    --it;
    if (addr >= it->second.end) return false;
    *start = it->first;
    *span = it->second;
    return true;
  }

  // First range intersecting [a, b), clipped to it.
  bool FirstIn(uint64_t a, uint64_t b, Piece* out) const {
    auto it = m_.upper_bound(a);
    if (it != m_.begin()) {
      auto p = std::prev(it);
      if (p->second.end > a) it = p;
    }
    if (it == m_.end() || it->first >= b) return false;
    uint64_t s = it->first > a ? it->first : a;
    out->start = s;
    out->span = it->second;
    out->span.off += s - it->first;
    if (out->span.end > b) out->span.end = b;
    return true;
  }

  // Caller guarantees [start, span.end) does not overlap anything.
  void Insert(uint64_t start, const Span& span) {
    if (span.end <= start) return;
    m_.emplace(start, span);
    bytes_ += span.end - start;
  }

  // Removes [a, b), splitting ranges at the edges; removed parts are
  // appended to `removed` when given.
  void Remove(uint64_t a, uint64_t b, std::vector<Piece>* removed = nullptr) {
    if (b <= a) return;
    auto it = m_.upper_bound(a);
    if (it != m_.begin()) {
      auto p = std::prev(it);
      if (p->second.end > a) it = p;
    }
    while (it != m_.end() && it->first < b) {
      uint64_t s = it->first;
      Span sp = it->second;
      it = m_.erase(it);
      bytes_ -= sp.end - s;
      if (s < a) {
        Span left = sp;
        left.end = a;
        Insert(s, left);
      }
      if (sp.end > b) {
        Span right = sp;
        right.off = sp.off + (b - s);
        Insert(b, right);
        // The right part starts at b, so the loop ends here.
      }
      if (removed) {
        uint64_t ps = s > a ? s : a;
        Span mid = sp;
        mid.off = sp.off + (ps - s);
        mid.end = sp.end < b ? sp.end : b;
        removed->push_back({ps, mid});
      }
    }
  }

  // mremap: ranges inside [from, from+len) move to [to, to+len); anything
  // that was at the target is dropped first (the kernel unmapped it).
  void Shift(uint64_t from, uint64_t to, uint64_t len) {
    std::vector<Piece> moved;
    Remove(from, from + len, &moved);
    Remove(to, to + len);
    for (Piece& p : moved) {
      uint64_t ns = p.start - from + to;
      p.span.end = p.span.end - from + to;
      Insert(ns, p.span);
    }
  }

 private:
  std::map<uint64_t, Span> m_;
  uint64_t bytes_ = 0;
};

}  // namespace lr::engine
