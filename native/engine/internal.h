// Definitions shared by the engine's own .cc files (not by the Node-API
// wrapper): page size, chunk bounds, the worker's epoll tags, the probe
// address, the latency histogram's bucketing.
#pragma once

#include <stdint.h>

#include "common/clock.h"
#include "common/hex.h"
#include "uffd/uffd_abi.h"

namespace lr::engine {

constexpr uint64_t kPage = lr::kPageSize;
// Background copies are cut into chunks this big, so a fault waits at most
// ~0.1 ms behind one (the working set's copies).
constexpr uint64_t kPrefetchChunk = 256 * 1024;
// The push copies this much at a time: a fault that arrives meanwhile waits
// at most one piece (~20 us; a 256 KiB chunk measured slower for the program
// under load: 1 GiB, 1% touched, restore -> answer 304 -> 191 ms median).
constexpr uint64_t kPushPiece = 64 * 1024;
// How long a worker whose push has to wait for another worker's (see
// Engine::maxPushers_) sleeps before it looks again.
constexpr int kPushWaitMs = 1;
// Liveness probe period of an idle worker.
constexpr int kProbeMs = 100;
// Highest page a 47-bit process can map; used only as the destination of a
// probe copy whose source is unreadable, so it can never install data.
constexpr uint64_t kProbeAddr = 0x7fffffffe000ull;

// The low two bits of a worker's epoll data; a process handle sits above
// them for kTagUffd and kTagPidfd.
enum EpollTag : uint64_t { kTagEventfd = 0, kTagUffd = 1, kTagPidfd = 2, kTagLink = 3 };

// ProcStats::hist bucket of a service time: i = floor(log2(ns)).
inline int HistBucket(uint64_t ns) { return 63 - __builtin_clzll(ns | 1); }

}  // namespace lr::engine
