// Whole reads from a file position, retried over EINTR and short reads.
#pragma once

#include <stddef.h>
#include <stdint.h>

namespace lr {

// Reads exactly `len` bytes at `off`. false with errno set on failure; an
// end of file before `len` bytes is EIO.
bool PreadFull(int fd, void* buf, size_t len, uint64_t off);

}  // namespace lr
