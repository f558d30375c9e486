// Test-only fault injection for failure paths that the kernel cannot be made
// to take on demand (a one-page mmap, an epoll_ctl on a fresh fd). A point
// fires when its name is listed in the environment variable
// LR_INJECT_FAULT (comma-separated), read at the moment the point is
// reached, so a test can set it around one call. Unset in normal use: each
// check is one getenv on a path that is already rare (construction, fork).
#pragma once

#include <cstdlib>
#include <cstring>

namespace lr {

inline bool FaultInjected(const char* point) {
  const char* list = std::getenv("LR_INJECT_FAULT");
  if (list == nullptr || *list == '\0') return false;
  const size_t n = std::strlen(point);
  for (const char* p = list; *p != '\0';) {
    const char* end = std::strchr(p, ',');
    const size_t len = end ? static_cast<size_t>(end - p) : std::strlen(p);
    if (len == n && std::strncmp(p, point, n) == 0) return true;
    if (end == nullptr) break;
    p = end + 1;
  }
  return false;
}

}  // namespace lr
