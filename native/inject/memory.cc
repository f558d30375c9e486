// JS bindings for remote memory: process_vm_readv/writev with batched
// iovecs, pread/pwrite on /proc/PID/mem, /proc/PID/pagemap ranges, the
// dump's per-chunk page collector (pagemap -> read -> drop zero pages in one
// call, so no JS runs per page), and pidfd_open/pidfd_getfd.
#include <errno.h>
#include <fcntl.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#include <climits>
#include <cstring>
#include <string>
#include <vector>

#include "common/errors.h"
#include "common/fileio.h"
#include "common/hex.h"
#include "inject/init.h"
#include "inject/iovec.h"
#include "inject/pagemap_entry.h"

#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif
#ifndef SYS_pidfd_getfd
#define SYS_pidfd_getfd 438
#endif

namespace lr {
namespace {

constexpr uint64_t kPage = 4096;
constexpr size_t kIovBatch = 1024;  // UIO_MAXIOV

// Remote ranges come as a BigUint64Array of (addr, len) pairs.
std::vector<iovec> RemoteIovecs(const Napi::CallbackInfo& info, size_t i) {
  Napi::Env env = info.Env();
  if (info.Length() <= i || !info[i].IsTypedArray() ||
      info[i].As<Napi::TypedArray>().TypedArrayType() != napi_biguint64_array)
    throw Napi::TypeError::New(env, "remote must be a BigUint64Array of (addr, len) pairs");
  Napi::TypedArrayOf<uint64_t> a = info[i].As<Napi::TypedArrayOf<uint64_t>>();
  if (a.ElementLength() % 2) throw Napi::RangeError::New(env, "remote must hold (addr, len) pairs");
  std::vector<iovec> v(a.ElementLength() / 2);
  for (size_t k = 0; k < v.size(); k++) {
    v[k].iov_base = reinterpret_cast<void*>(a[2 * k]);
    v[k].iov_len = static_cast<size_t>(a[2 * k + 1]);
  }
  return v;
}

Napi::Buffer<char> ArgBuffer(const Napi::CallbackInfo& info, size_t i, const char* name) {
  if (info.Length() <= i || !info[i].IsBuffer())
    throw Napi::TypeError::New(info.Env(), std::string(name) + " must be a Buffer");
  return info[i].As<Napi::Buffer<char>>();
}

// Moves bytes between `local` (contiguous) and the remote ranges in batches
// of UIO_MAXIOV. Returns bytes transferred; stops at the first short call
// (the kernel stops at the first inaccessible page).
template <bool Write>
Napi::Value VmRw(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int32_t pid = ArgI32(info, 0, "pid");
  Napi::Buffer<char> local = ArgBuffer(info, 1, "local");
  std::vector<iovec> remote = RemoteIovecs(info, 2);
  size_t want = 0;
  for (const iovec& r : remote) want += r.iov_len;
  if (want > local.Length()) throw Napi::RangeError::New(env, "local buffer smaller than the remote ranges");
  size_t done = 0;
  for (size_t k = 0; k < remote.size(); k += kIovBatch) {
    size_t n = std::min(kIovBatch, remote.size() - k);
    size_t batch = 0;
    for (size_t j = 0; j < n; j++) batch += remote[k + j].iov_len;
    iovec l{local.Data() + done, batch};
    ssize_t got;
    do {
      got = Write ? process_vm_writev(pid, &l, 1, &remote[k], n, 0)
                  : process_vm_readv(pid, &l, 1, &remote[k], n, 0);
    } while (got < 0 && errno == EINTR);
    if (got < 0) {
      if (done > 0 && errno == EFAULT) break;
      ThrowErrno(env, errno, Write ? "process_vm_writev" : "process_vm_readv",
                 "pid " + std::to_string(pid) + " at " + Hex(reinterpret_cast<uint64_t>(remote[k].iov_base)));
    }
    done += static_cast<size_t>(got);
    if (static_cast<size_t>(got) < batch) break;
  }
  return Napi::Number::New(env, static_cast<double>(done));
}

// Full-length pread/pwrite at a 64-bit offset (remote address for
// /proc/PID/mem). Returns bytes done; short only at EOF/EIO of the target.
template <bool Write>
Napi::Value PRw(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = ArgFd(info, 0, "fd");
  Napi::Buffer<char> buf = ArgBuffer(info, 1, "buffer");
  uint64_t off = ArgU64(info, 2, "offset");
  size_t len = buf.Length();
  if (info.Length() > 3 && !info[3].IsUndefined()) {
    uint64_t l = ArgU64(info, 3, "length");
    if (l > len) throw Napi::RangeError::New(env, "length exceeds the buffer");
    len = static_cast<size_t>(l);
  }
  size_t done = 0;
  while (done < len) {
    ssize_t n = Write ? pwrite(fd, buf.Data() + done, len - done, static_cast<off_t>(off + done))
                      : pread(fd, buf.Data() + done, len - done, static_cast<off_t>(off + done));
    if (n < 0) {
      if (errno == EINTR) continue;
      if (done > 0 && (errno == EIO || errno == EFAULT)) break;
      ThrowErrno(env, errno, Write ? "pwrite" : "pread", "fd " + std::to_string(fd) + " at " + Hex(off + done));
    }
    if (n == 0) break;
    done += static_cast<size_t>(n);
  }
  return Napi::Number::New(env, static_cast<double>(done));
}

// readPagemap(pagemapFd, startAddr, nPages) -> BigUint64Array of raw entries.
Napi::Value ReadPagemap(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = ArgFd(info, 0, "pagemapFd");
  uint64_t start = ArgU64(info, 1, "start");
  uint64_t n = ArgU64(info, 2, "nPages");
  if (start % kPage) throw Napi::RangeError::New(env, "start must be page-aligned");
  Napi::BigUint64Array out = Napi::BigUint64Array::New(env, static_cast<size_t>(n));
  if (n > 0 && !PreadFull(fd, out.Data(), n * 8, start / kPage * 8))
    ThrowErrno(env, errno, "pread", "/proc/PID/pagemap at " + Hex(start));
  return out;
}

bool PageIsZero(const char* p) {
  const uint64_t* w = reinterpret_cast<const uint64_t*>(p);
  uint64_t acc = 0;
  // Branch every 64 bytes: vectorises and still leaves early on data pages.
  for (size_t i = 0; i < kPage / 8; i += 8) {
    acc |= w[i] | w[i + 1] | w[i + 2] | w[i + 3] | w[i + 4] | w[i + 5] | w[i + 6] | w[i + 7];
    if (acc) return false;
  }
  return true;
}

// collectPages(pid, memFd, pagemapFd, start, nPages, mode, out) ->
//   { runs: BigUint64Array [vaddr, count]*, bytes, scanned, zero }
// Reads the pagemap of [start, start + nPages*4K), reads the selected pages
// into `out` (process_vm_readv; /proc/PID/mem for pages it cannot read, e.g.
// PROT_NONE), drops all-zero pages unless mode is kModeAll, and packs the
// kept pages at the front of `out` in address order, described by runs.
Napi::Value CollectPages(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int32_t pid = ArgI32(info, 0, "pid");
  int mem_fd = ArgFd(info, 1, "memFd");
  int pm_fd = ArgFd(info, 2, "pagemapFd");
  uint64_t start = ArgU64(info, 3, "start");
  uint64_t n = ArgU64(info, 4, "nPages");
  int mode = ArgI32(info, 5, "mode");
  Napi::Buffer<char> out = ArgBuffer(info, 6, "out");
  if (start % kPage) throw Napi::RangeError::New(env, "start must be page-aligned");
  if (n * kPage > out.Length()) throw Napi::RangeError::New(env, "out is smaller than nPages pages");

  std::vector<uint64_t> pm(static_cast<size_t>(n));
  if (n > 0 && !PreadFull(pm_fd, pm.data(), n * 8, start / kPage * 8))
    ThrowErrno(env, errno, "pread", "/proc/" + std::to_string(pid) + "/pagemap at " + Hex(start));

  // Selected pages as runs of consecutive addresses.
  std::vector<iovec> remote;
  for (uint64_t i = 0; i < n; i++) {
    uint64_t e = pm[i];
    bool take = PageTaken(e, mode);
    if (!take) continue;
    char* addr = reinterpret_cast<char*>(start + i * kPage);
    if (!remote.empty() && static_cast<char*>(remote.back().iov_base) + remote.back().iov_len == addr)
      remote.back().iov_len += kPage;
    else
      remote.push_back(iovec{addr, kPage});
  }

  // Read them, packed in order, into out.
  size_t total = 0;
  for (const iovec& r : remote) total += r.iov_len;
  size_t done = 0, k = 0, k_off = 0;  // k/k_off: current remote run and offset in it
  while (done < total) {
    size_t cnt = std::min(kIovBatch, remote.size() - k);
    std::vector<iovec> batch(remote.begin() + static_cast<long>(k), remote.begin() + static_cast<long>(k + cnt));
    batch[0].iov_base = static_cast<char*>(batch[0].iov_base) + k_off;
    batch[0].iov_len -= k_off;
    size_t blen = 0;
    for (const iovec& b : batch) blen += b.iov_len;
    iovec l{out.Data() + done, blen};
    ssize_t got;
    do got = process_vm_readv(pid, &l, 1, batch.data(), cnt, 0);
    while (got < 0 && errno == EINTR);
    if (got < 0 && errno != EFAULT)
      ThrowErrno(env, errno, "process_vm_readv", "pid " + std::to_string(pid) + " at " + Hex(reinterpret_cast<uint64_t>(batch[0].iov_base)));
    size_t g = got < 0 ? 0 : static_cast<size_t>(got);
    if (g < kPage && g < blen) {
      // The page at the cursor is not readable this way (PROT_NONE, guard
      // page...): /proc/PID/mem reads with FOLL_FORCE.
      uint64_t a = reinterpret_cast<uint64_t>(batch[0].iov_base) + g;
      size_t take = kPage - (g % kPage);
      if (!PreadFull(mem_fd, out.Data() + done + g, take, a))
        ThrowErrno(env, errno, "pread", "/proc/" + std::to_string(pid) + "/mem at " + Hex(a));
      g += take;
    }
    done += g;
    AdvanceIovCursor(remote, k, k_off, g);
  }

  // Drop zero pages, compacting in place, and describe what is kept.
  std::vector<uint64_t> runs;
  size_t src = 0, dst = 0;
  uint64_t zero = 0;
  for (const iovec& r : remote) {
    uint64_t base = reinterpret_cast<uint64_t>(r.iov_base);
    for (size_t off = 0; off < r.iov_len; off += kPage, src += kPage) {
      const char* p = out.Data() + src;
      if (mode != kModeAll && PageIsZero(p)) {
        zero++;
        continue;
      }
      if (dst != src) memmove(out.Data() + dst, p, kPage);
      dst += kPage;
      uint64_t va = base + off;
      if (!runs.empty() && runs[runs.size() - 2] + runs.back() * kPage == va)
        runs.back()++;
      else {
        runs.push_back(va);
        runs.push_back(1);
      }
    }
  }
  Napi::BigUint64Array ra = Napi::BigUint64Array::New(env, runs.size());
  if (!runs.empty()) memcpy(ra.Data(), runs.data(), runs.size() * 8);
  Napi::Object o = Napi::Object::New(env);
  o.Set("runs", ra);
  o.Set("bytes", Napi::Number::New(env, static_cast<double>(dst)));
  o.Set("scanned", Napi::Number::New(env, static_cast<double>(total / kPage)));
  o.Set("zero", Napi::Number::New(env, static_cast<double>(zero)));
  return o;
}

Napi::Value PidfdOpen(const Napi::CallbackInfo& info) {
  int32_t pid = ArgI32(info, 0, "pid");
  uint32_t flags = info.Length() > 1 && !info[1].IsUndefined() ? static_cast<uint32_t>(ArgI32(info, 1, "flags")) : 0;
  long fd = syscall(SYS_pidfd_open, pid, flags);
  if (fd < 0) ThrowErrno(info.Env(), errno, "pidfd_open", "pid " + std::to_string(pid));
  return Napi::Number::New(info.Env(), static_cast<double>(fd));
}

Napi::Value PidfdGetfd(const Napi::CallbackInfo& info) {
  int pidfd = ArgFd(info, 0, "pidfd");
  int target = ArgFd(info, 1, "targetFd");
  long fd = syscall(SYS_pidfd_getfd, pidfd, target, 0);
  if (fd < 0) ThrowErrno(info.Env(), errno, "pidfd_getfd", "fd " + std::to_string(target));
  return Napi::Number::New(info.Env(), static_cast<double>(fd));
}

// kcmp(pid1, pid2, type, idx1, idx2): 0 equal, 1/2 ordered, 3 different.
Napi::Value Kcmp(const Napi::CallbackInfo& info) {
  int32_t pid1 = ArgI32(info, 0, "pid1");
  int32_t pid2 = ArgI32(info, 1, "pid2");
  int32_t type = ArgI32(info, 2, "type");
  uint64_t idx1 = ArgU64(info, 3, "idx1");
  uint64_t idx2 = ArgU64(info, 4, "idx2");
  long r = syscall(SYS_kcmp, pid1, pid2, type, idx1, idx2);
  if (r < 0) ThrowErrno(info.Env(), errno, "kcmp", "pids " + std::to_string(pid1) + "/" + std::to_string(pid2));
  return Napi::Number::New(info.Env(), static_cast<double>(r));
}

}  // namespace

void InitInjectMemory(Napi::Env env, Napi::Object exports) {
  exports.Set("processVmReadv", Napi::Function::New(env, VmRw<false>, "processVmReadv"));
  exports.Set("processVmWritev", Napi::Function::New(env, VmRw<true>, "processVmWritev"));
  exports.Set("preadAt", Napi::Function::New(env, PRw<false>, "preadAt"));
  exports.Set("pwriteAt", Napi::Function::New(env, PRw<true>, "pwriteAt"));
  exports.Set("readPagemap", Napi::Function::New(env, ReadPagemap, "readPagemap"));
  exports.Set("collectPages", Napi::Function::New(env, CollectPages, "collectPages"));
  exports.Set("pidfdOpen", Napi::Function::New(env, PidfdOpen, "pidfdOpen"));
  exports.Set("kcmp", Napi::Function::New(env, Kcmp, "kcmp"));
  exports.Set("pidfdGetfd", Napi::Function::New(env, PidfdGetfd, "pidfdGetfd"));
}

}  // namespace lr
