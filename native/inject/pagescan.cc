// PAGEMAP_SCAN (Linux 6.7+) on /proc/PID/pagemap: the write-tracking read of
// incremental dumps. With PM_SCAN_WP_MATCHING the kernel re-protects the
// pages it reports as written in the same walk, so one call per range both
// reads the dirty set and arms the next round. The distro headers predate
// the ioctl, so its ABI is spelled out here.
#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <sys/ioctl.h>

#include <string>
#include <vector>

#include "common/errors.h"
#include "inject/init.h"

namespace lr {
namespace {

struct PageRegion {
  uint64_t start, end, categories;
};

struct PmScanArg {
  uint64_t size, flags, start, end, walk_end, vec, vec_len, max_pages;
  uint64_t category_inverted, category_mask, category_anyof_mask, return_mask;
};
static_assert(sizeof(PmScanArg) == 96, "struct pm_scan_arg");

constexpr unsigned long kPagemapScan = _IOWR('f', 0x10, PmScanArg);
constexpr size_t kVecLen = 4096;

// pagemapScan(pagemapFd, start, end, flags, categoryMask, returnMask)
//   -> BigUint64Array of (start, end, categories) triples, ascending.
// Walks the whole range, resuming at walk_end whenever the vector filled up.
Napi::Value PagemapScan(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = ArgFd(info, 0, "pagemapFd");
  uint64_t start = ArgU64(info, 1, "start");
  uint64_t end = ArgU64(info, 2, "end");
  uint64_t flags = ArgU64(info, 3, "flags");
  uint64_t cat_mask = ArgU64(info, 4, "categoryMask");
  uint64_t ret_mask = ArgU64(info, 5, "returnMask");
  if (start % 4096 || end % 4096 || end < start) throw Napi::RangeError::New(env, "pagemapScan: bad range");
  std::vector<PageRegion> vec(kVecLen);
  std::vector<uint64_t> out;
  uint64_t at = start;
  while (at < end) {
    PmScanArg a{};
    a.size = sizeof a;
    a.flags = flags;
    a.start = at;
    a.end = end;
    a.vec = reinterpret_cast<uint64_t>(vec.data());
    a.vec_len = vec.size();
    a.category_mask = cat_mask;
    a.return_mask = ret_mask;
    long n = ioctl(fd, kPagemapScan, &a);
    if (n < 0) {
      if (errno == EINTR) continue;
      char b[64];
      snprintf(b, sizeof b, "range 0x%llx-0x%llx", static_cast<unsigned long long>(at), static_cast<unsigned long long>(end));
      ThrowErrno(env, errno, "ioctl(PAGEMAP_SCAN)", b);
    }
    for (long i = 0; i < n; i++) {
      size_t m = out.size();
      // The kernel may split one run at a vector refill: join it again.
      if (m >= 3 && out[m - 2] == vec[i].start && out[m - 1] == vec[i].categories) {
        out[m - 2] = vec[i].end;
      } else {
        out.push_back(vec[i].start);
        out.push_back(vec[i].end);
        out.push_back(vec[i].categories);
      }
    }
    if (a.walk_end <= at) break;  // no progress: nothing more to walk
    at = a.walk_end;
  }
  Napi::BigUint64Array r = Napi::BigUint64Array::New(env, out.size());
  if (!out.empty()) memcpy(r.Data(), out.data(), out.size() * 8);
  return r;
}

}  // namespace

void InitInjectPageScan(Napi::Env env, Napi::Object exports) {
  exports.Set("pagemapScan", Napi::Function::New(env, PagemapScan, "pagemapScan"));
}

}  // namespace lr
