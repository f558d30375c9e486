#include "engine/fault_log.h"

#include "common/clock.h"

namespace lr::engine {

void FaultLog::Add(uint32_t proc, uint64_t start, uint64_t pages, LogKind kind, uint64_t fault) {
  if (!on_.load(std::memory_order_relaxed) || pages == 0) return;
  LogEntry e{NowNs(), start, fault, proc, static_cast<uint32_t>(pages), kind};
  std::lock_guard<std::mutex> g(mu_);
  if (ring_.empty()) return;
  const size_t cap = ring_.size();
  if (count_ == cap) {
    head_ = (head_ + 1) % cap;  // drop the oldest
    count_--;
    dropped_++;
  }
  ring_[(head_ + count_) % cap] = e;
  count_++;
}

void FaultLog::SetCapacity(size_t cap) {
  std::lock_guard<std::mutex> g(mu_);
  ring_.assign(cap, LogEntry{});
  head_ = count_ = 0;
  on_ = cap > 0;
}

void FaultLog::Drain(std::vector<LogEntry>* out, uint64_t* dropped) {
  std::lock_guard<std::mutex> g(mu_);
  out->clear();
  out->reserve(count_);
  for (size_t i = 0; i < count_; i++) out->push_back(ring_[(head_ + i) % ring_.size()]);
  head_ = count_ = 0;
  *dropped = dropped_;
  dropped_ = 0;
}

}  // namespace lr::engine
