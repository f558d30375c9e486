// A cursor over a list of remote iovecs, shared by the batched memory
// readers (memory.cc for the JS API, dumpmem.cc for the dumper): after a
// partial transfer of `n` bytes, (k, off) moves to the first byte not yet done.
#pragma once

#include <sys/uio.h>

#include <cstddef>
#include <vector>

namespace lr {

inline void AdvanceIovCursor(const std::vector<iovec>& v, size_t& k, size_t& off, size_t n) {
  while (n > 0) {
    size_t left = v[k].iov_len - off;
    if (n >= left) {
      n -= left;
      k++;
      off = 0;
    } else {
      off += n;
      n = 0;
    }
  }
}

}  // namespace lr
