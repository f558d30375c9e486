// Monotonic time in nanoseconds (CLOCK_MONOTONIC): deadlines, service
// times and fault-log stamps everywhere in the addon.
#pragma once

#include <stdint.h>
#include <time.h>

namespace lr {

inline uint64_t NowNs() {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000000ull + static_cast<uint64_t>(ts.tv_nsec);
}

}  // namespace lr
