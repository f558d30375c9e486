#include "common/fileio.h"

#include <errno.h>
#include <unistd.h>

namespace lr {

bool PreadFull(int fd, void* buf, size_t len, uint64_t off) {
  char* p = static_cast<char*>(buf);
  for (size_t done = 0; done < len;) {
    ssize_t n = pread(fd, p + done, len - done, static_cast<off_t>(off + done));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      if (n == 0) errno = EIO;
      return false;
    }
    done += static_cast<size_t>(n);
  }
  return true;
}

}  // namespace lr
