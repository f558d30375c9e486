// The fault log: a bounded ring of what the engine placed where and why
// (working-set recording, stats). Written by the worker threads, drained in
// batches by JavaScript (drainFaultLog). When full the oldest entry is
// dropped and counted. Capacity 0 = off: Add() then costs one relaxed load.
#pragma once

#include <stddef.h>
#include <stdint.h>

#include <atomic>
#include <mutex>
#include <vector>

namespace lr::engine {

// Why pages were placed. `fault` of an entry is the faulting page for
// kLogFault/kLogZero entries of a fault (0 for pushes), so a working set can
// be recorded exactly even with fault-around.
enum LogKind : uint8_t { kLogFault = 0, kLogZero = 1, kLogPush = 2 };

struct LogEntry {
  uint64_t tNs;  // CLOCK_MONOTONIC
  uint64_t start;
  uint64_t fault;
  uint32_t proc;
  uint32_t pages;
  uint8_t kind;
};

class FaultLog {
 public:
  void SetCapacity(size_t cap);
  void Add(uint32_t proc, uint64_t start, uint64_t pages, LogKind kind, uint64_t fault);
  // Moves every entry to *out (oldest first) and the count dropped since
  // the last drain to *dropped.
  void Drain(std::vector<LogEntry>* out, uint64_t* dropped);

 private:
  std::mutex mu_;
  std::vector<LogEntry> ring_;  // size = capacity
  size_t head_ = 0, count_ = 0;
  uint64_t dropped_ = 0;
  std::atomic<bool> on_{false};
};

}  // namespace lr::engine
