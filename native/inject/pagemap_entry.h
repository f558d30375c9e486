// /proc/PID/pagemap entry bits, and which pages a dump copies
// (memory.cc collectPages, dumpmem.cc dumpPages/scanPages).
#pragma once

#include <cstdint>

namespace lr {

constexpr uint64_t kPmPresent = 1ULL << 63;
constexpr uint64_t kPmSwapped = 1ULL << 62;
constexpr uint64_t kPmFile = 1ULL << 61;

// Selection modes.
constexpr int kModeAnon = 0;  // present or swapped
constexpr int kModeFile = 1;  // (present or swapped) and not a page-cache page (COW copies)
constexpr int kModeAll = 2;   // every page (vDSO), zero pages kept

// A pte marker (no page; e.g. the uffd write-protect marker the pre-dump's
// WP_UNPOPULATED tracking leaves on a page never touched) is reported as
// "swapped" with swap type 31 (SWP_PTE_MARKER, the last of the 5-bit types).
// It is not a page: reading it would fault in the file's page (or a zero
// page) and copy it as if it were the process's own.
inline bool IsPteMarker(uint64_t e) {
  return (e & kPmPresent) == 0 && (e & kPmSwapped) != 0 && (e & 0x1f) == 31;
}

inline bool PageTaken(uint64_t e, int mode) {
  if (mode == kModeAll) return true;
  if ((e & (kPmPresent | kPmSwapped)) == 0 || IsPteMarker(e)) return false;
  return !(mode == kModeFile && (e & kPmFile));
}

}  // namespace lr
