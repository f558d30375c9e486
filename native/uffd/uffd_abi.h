// userfaultfd ABI constants and structures, including the ones the distro
// header (Debian 12, older than the 6.18 kernel) lacks: MOVE, POISON,
// WP_UNPOPULATED, WP_ASYNC and the CONTINUE_MODE_WP flag. Values are the
// kernel's uapi/linux/userfaultfd.h. Also tiny inline wrappers shared by the
// ABI functions (native/uffd) and the fault engine (native/engine).
#pragma once

#include <errno.h>
#include <linux/userfaultfd.h>
#include <stdint.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifndef UFFD_USER_MODE_ONLY
#define UFFD_USER_MODE_ONLY 1
#endif
#ifndef USERFAULTFD_IOC
#define USERFAULTFD_IOC 0xAA
#define USERFAULTFD_IOC_NEW _IO(USERFAULTFD_IOC, 0x00)
#endif

#ifndef UFFD_FEATURE_WP_UNPOPULATED
#define UFFD_FEATURE_WP_UNPOPULATED (1 << 13)
#endif
#ifndef UFFD_FEATURE_POISON
#define UFFD_FEATURE_POISON (1 << 14)
#endif
#ifndef UFFD_FEATURE_WP_ASYNC
#define UFFD_FEATURE_WP_ASYNC (1 << 15)
#endif
#ifndef UFFD_FEATURE_MOVE
#define UFFD_FEATURE_MOVE (1 << 16)
#endif

#ifndef _UFFDIO_MOVE
#define _UFFDIO_MOVE (0x05)
#endif
#ifndef _UFFDIO_POISON
#define _UFFDIO_POISON (0x08)
#endif

#ifndef UFFDIO_CONTINUE_MODE_WP
#define UFFDIO_CONTINUE_MODE_WP ((__u64)1 << 1)
#endif

namespace lr {

// Same layout as the kernel's struct uffdio_move / uffdio_poison.
struct UffdioMove {
  uint64_t dst;
  uint64_t src;
  uint64_t len;
  uint64_t mode;
  int64_t move;
};
struct UffdioPoison {
  struct uffdio_range range;
  uint64_t mode;
  int64_t updated;
};

constexpr uint64_t kUffdioMoveModeDontwake = 1ull << 0;
constexpr uint64_t kUffdioMoveModeAllowSrcHoles = 1ull << 1;
constexpr uint64_t kUffdioPoisonModeDontwake = 1ull << 0;

constexpr unsigned long kUffdioMove = _IOWR(UFFDIO, _UFFDIO_MOVE, UffdioMove);
constexpr unsigned long kUffdioPoison = _IOWR(UFFDIO, _UFFDIO_POISON, UffdioPoison);

static_assert(sizeof(struct uffd_msg) == 32, "uffd_msg is 32 bytes");
static_assert(sizeof(UffdioMove) == 40, "uffdio_move layout");
static_assert(sizeof(UffdioPoison) == 32, "uffdio_poison layout");

constexpr uint64_t kPageSize = 4096;

// The userfaultfd syscall; errno set on failure.
inline int SysUserfaultfd(int flags) { return static_cast<int>(syscall(SYS_userfaultfd, flags)); }

// UFFDIO_COPY with partial progress: returns 0 or -errno; *done = bytes copied.
inline int UffdCopy(int fd, uint64_t dst, uint64_t src, uint64_t len, uint64_t mode, uint64_t* done) {
  struct uffdio_copy c{};
  c.dst = dst;
  c.src = src;
  c.len = len;
  c.mode = mode;
  int r = ioctl(fd, UFFDIO_COPY, &c);
  int err = r < 0 ? errno : 0;
  *done = c.copy > 0 ? static_cast<uint64_t>(c.copy) : 0;
  if (err == 0) *done = len;
  return -err;
}

inline int UffdZeropage(int fd, uint64_t start, uint64_t len, uint64_t mode, uint64_t* done) {
  struct uffdio_zeropage z{};
  z.range.start = start;
  z.range.len = len;
  z.mode = mode;
  int r = ioctl(fd, UFFDIO_ZEROPAGE, &z);
  int err = r < 0 ? errno : 0;
  *done = z.zeropage > 0 ? static_cast<uint64_t>(z.zeropage) : 0;
  if (err == 0) *done = len;
  return -err;
}

inline int UffdWake(int fd, uint64_t start, uint64_t len) {
  struct uffdio_range r{start, len};
  return ioctl(fd, UFFDIO_WAKE, &r) < 0 ? -errno : 0;
}

inline int UffdUnregister(int fd, uint64_t start, uint64_t len) {
  struct uffdio_range r{start, len};
  return ioctl(fd, UFFDIO_UNREGISTER, &r) < 0 ? -errno : 0;
}

}  // namespace lr
