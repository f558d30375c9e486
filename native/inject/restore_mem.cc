// Restore-side remote memory: small writes/reads of scratch data, and the bulk
// page copy from a pages-<id>.img file straight into the target
// (process_vm_writev from a read-only mapping of the file, so page data is
// copied once, page cache -> target).
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "common/errors.h"
#include "engine/crc32c.h"
#include "inject/restore.h"
#include "uffd/uffd_abi.h"

namespace lr {
namespace {

constexpr size_t kIovBatch = 1024;  // UIO_MAXIOV
constexpr uint64_t kPage = 4096;

std::string Where(int pid, uint64_t addr) {
  char b[64];
  snprintf(b, sizeof(b), "(pid %d, address 0x%llx)", pid, static_cast<unsigned long long>(addr));
  return b;
}

// Writes through /proc/PID/mem: the tracer may write read-only private pages
// (FOLL_FORCE), which process_vm_writev refuses with EFAULT.
void WriteProcMem(Napi::Env env, int pid, uint64_t addr, const uint8_t* data, size_t len) {
  std::string path = "/proc/" + std::to_string(pid) + "/mem";
  int fd = open(path.c_str(), O_RDWR | O_CLOEXEC);
  if (fd < 0) ThrowErrno(env, errno, "open", path);
  size_t done = 0;
  while (done < len) {
    ssize_t w = pwrite(fd, data + done, len - done, static_cast<off_t>(addr + done));
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) {
      int e = w < 0 ? errno : EIO;
      close(fd);
      ThrowErrno(env, e, "pwrite", path + " " + Where(pid, addr + done));
    }
    done += static_cast<size_t>(w);
  }
  close(fd);
}

void WriteRemote(Napi::Env env, int pid, uint64_t addr, const uint8_t* data, size_t len) {
  size_t done = 0;
  while (done < len) {
    iovec l{const_cast<uint8_t*>(data + done), len - done};
    iovec r{reinterpret_cast<void*>(addr + done), len - done};
    ssize_t w = process_vm_writev(pid, &l, 1, &r, 1, 0);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) {
      if (w < 0 && errno == EFAULT) return WriteProcMem(env, pid, addr + done, data + done, len - done);
      ThrowErrno(env, w < 0 ? errno : EIO, "process_vm_writev", Where(pid, addr + done));
    }
    done += static_cast<size_t>(w);
  }
}

// restoreWriteMem(pid, addr, data)
Napi::Value WriteMem(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int pid = ArgI32(info, 0, "pid");
  uint64_t addr = ArgU64(info, 1, "addr");
  if (!info[2].IsBuffer()) throw Napi::TypeError::New(env, "data must be a Buffer");
  Napi::Buffer<uint8_t> b = info[2].As<Napi::Buffer<uint8_t>>();
  WriteRemote(env, pid, addr, b.Data(), b.Length());
  return env.Undefined();
}

// restoreReadMem(pid, addr, len) -> Buffer
Napi::Value ReadMem(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int pid = ArgI32(info, 0, "pid");
  uint64_t addr = ArgU64(info, 1, "addr");
  uint64_t len = ArgU64(info, 2, "len");
  if (len > (64u << 20)) throw Napi::RangeError::New(env, "len too large");
  Napi::Buffer<uint8_t> out = Napi::Buffer<uint8_t>::New(env, len);
  size_t done = 0;
  while (done < len) {
    iovec l{out.Data() + done, len - done};
    iovec r{reinterpret_cast<void*>(addr + done), len - done};
    ssize_t n = process_vm_readv(pid, &l, 1, &r, 1, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) ThrowErrno(env, n < 0 ? errno : EIO, "process_vm_readv", Where(pid, addr + done));
    done += static_cast<size_t>(n);
  }
  return out;
}

// restoreWritePages(pid, pagesPath, ranges[, sums, chunkSize, verified]) -> bytes written.
// ranges: BigUint64Array of (remote address, file offset, length) triples,
// ascending. The target's mappings must be writable (the restorer maps them
// with PROT_WRITE first); a range that still fails with EFAULT goes through
// /proc/PID/mem.
// With sums (Uint32Array, CRC32C per chunkSize bytes of the file) and
// verified (Uint8Array, one flag per chunk, shared between calls for one
// file): each chunk a range touches is checked (hardware CRC32C) right
// before its data is written, in the same pass, while it is in cache; a
// mismatch throws EBADMSG with `chunk`, `stored` and `computed` set (the
// data of that chunk is never written).
// With uffd (a userfaultfd of the process with every target range registered
// MISSING): the data goes in with UFFDIO_COPY instead, straight into new
// pages (process_vm_writev first faults in a zeroed page for each, then
// copies: ~1/3 more CPU per GiB); a page found already present is written
// the other way.
Napi::Value WritePages(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int pid = ArgI32(info, 0, "pid");
  int uffd = info.Length() > 6 && !info[6].IsUndefined() ? ArgI32(info, 6, "uffd") : -1;
  if (!info[1].IsString()) throw Napi::TypeError::New(env, "pagesPath must be a string");
  std::string path = info[1].As<Napi::String>().Utf8Value();
  if (!info[2].IsTypedArray() || info[2].As<Napi::TypedArray>().TypedArrayType() != napi_biguint64_array)
    throw Napi::TypeError::New(env, "ranges must be a BigUint64Array");
  Napi::BigUint64Array ranges = info[2].As<Napi::BigUint64Array>();
  size_t n = ranges.ElementLength() / 3;
  if (n == 0) return Napi::BigInt::New(env, static_cast<uint64_t>(0));
  const uint64_t* rg = ranges.Data();

  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) ThrowErrno(env, errno, "open", path);
  struct stat sb;
  if (fstat(fd, &sb) != 0) {
    int e = errno;
    close(fd);
    ThrowErrno(env, e, "fstat", path);
  }
  uint64_t fsize = static_cast<uint64_t>(sb.st_size);
  const uint32_t* sums = nullptr;
  size_t nsums = 0;
  uint64_t chunkSize = 0;
  uint8_t* verified = nullptr;
  if (info.Length() > 3 && !info[3].IsUndefined()) {
    if (!info[3].IsTypedArray() || info[3].As<Napi::TypedArray>().TypedArrayType() != napi_uint32_array ||
        !info[5].IsTypedArray() || info[5].As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array) {
      close(fd);
      throw Napi::TypeError::New(env, "sums must be a Uint32Array and verified a Uint8Array");
    }
    Napi::Uint32Array s3 = info[3].As<Napi::Uint32Array>();
    Napi::Uint8Array v5 = info[5].As<Napi::Uint8Array>();
    sums = s3.Data();
    nsums = s3.ElementLength();
    chunkSize = static_cast<uint64_t>(ArgI64(info, 4, "chunkSize"));
    verified = v5.Data();
    if (chunkSize == 0 || v5.ElementLength() != nsums || nsums * chunkSize < fsize) {
      close(fd);
      throw Napi::TypeError::New(env, "chunkSize/sums/verified do not describe the file");
    }
  }
  for (size_t i = 0; i < n; i++) {
    if (rg[3 * i + 1] + rg[3 * i + 2] > fsize || rg[3 * i + 1] + rg[3 * i + 2] < rg[3 * i + 1]) {
      close(fd);
      ThrowErrno(env, EINVAL, "restoreWritePages",
                 path + ": page data at offset " + std::to_string(rg[3 * i + 1]) + " runs past the end of the file (" +
                     std::to_string(fsize) + " bytes)");
    }
  }
  void* map = mmap(nullptr, fsize, PROT_READ, MAP_PRIVATE, fd, 0);
  int e = errno;
  close(fd);
  if (map == MAP_FAILED) ThrowErrno(env, e, "mmap", path);
  madvise(map, fsize, MADV_SEQUENTIAL);
  const uint8_t* base = static_cast<const uint8_t*>(map);

  uint64_t total = 0;
  std::vector<iovec> liov, riov;
  liov.reserve(kIovBatch);
  riov.reserve(kIovBatch);
  // UFFDIO_COPY of every queued piece (uffd mode).
  auto copyIn = [&]() {
    for (size_t k = 0; k < liov.size(); k++) {
      uint64_t dst = reinterpret_cast<uint64_t>(riov[k].iov_base);
      uint64_t src = reinterpret_cast<uint64_t>(liov[k].iov_base);
      uint64_t len = liov[k].iov_len;
      while (len > 0) {
        uint64_t done = 0;
        int r = UffdCopy(uffd, dst, src, len, 0, &done);
        total += done;
        dst += done;
        src += done;
        len -= done;
        if (r == 0 || len == 0) break;
        if (r == -EAGAIN || r == -EINTR) continue;
        if (r == -EEXIST) {
          // This page is already populated (by the kernel or an earlier
          // write): overwrite just it the other way (a present page cannot
          // fault into the userfaultfd, a missing one would wait on it for
          // ever), then go on copying.
          try {
            WriteRemote(env, pid, dst, reinterpret_cast<const uint8_t*>(src), kPage);
          } catch (...) {
            munmap(map, fsize);
            throw;
          }
          total += kPage;
          dst += kPage;
          src += kPage;
          len -= kPage;
          continue;
        }
        munmap(map, fsize);
        ThrowErrno(env, -r, "ioctl(UFFDIO_COPY)", Where(pid, dst));
      }
    }
    liov.clear();
    riov.clear();
  };
  auto flush = [&]() {
    if (uffd >= 0) return copyIn();
    size_t idx = 0;
    while (idx < liov.size()) {
      size_t cnt = liov.size() - idx;
      ssize_t w = process_vm_writev(pid, &liov[idx], cnt, &riov[idx], cnt, 0);
      if (w < 0 && errno == EINTR) continue;
      if (w <= 0) {
        // Fall back for this one iovec (read-only page or odd mapping).
        int err = w < 0 ? errno : EIO;
        if (err != EFAULT) {
          munmap(map, fsize);
          ThrowErrno(env, err, "process_vm_writev", Where(pid, reinterpret_cast<uint64_t>(riov[idx].iov_base)));
        }
        try {
          WriteProcMem(env, pid, reinterpret_cast<uint64_t>(riov[idx].iov_base),
                       static_cast<const uint8_t*>(liov[idx].iov_base), liov[idx].iov_len);
        } catch (...) {
          munmap(map, fsize);
          throw;
        }
        total += liov[idx].iov_len;
        idx++;
        continue;
      }
      total += static_cast<uint64_t>(w);
      size_t left = static_cast<size_t>(w);
      while (left > 0 && idx < liov.size()) {
        if (left >= liov[idx].iov_len) {
          left -= liov[idx].iov_len;
          idx++;
        } else {
          // Partial write of this iovec: advance inside it.
          liov[idx].iov_base = static_cast<uint8_t*>(liov[idx].iov_base) + left;
          liov[idx].iov_len -= left;
          riov[idx].iov_base = static_cast<uint8_t*>(riov[idx].iov_base) + left;
          riov[idx].iov_len -= left;
          left = 0;
        }
      }
    }
    liov.clear();
    riov.clear();
  };
  // Verifies every not yet verified chunk of [off, off + len).
  auto verify = [&](uint64_t off, uint64_t len) {
    uint64_t todo[3];
    size_t ntodo = 0;
    auto check = [&](uint64_t c, uint32_t got) {
      if (got != sums[c]) {
        munmap(map, fsize);
        Napi::Error err = ErrnoError(env, EBADMSG, "crc32c", path + ": chunk " + std::to_string(c) + " at offset " + std::to_string(c * chunkSize));
        err.Set("chunk", Napi::Number::New(env, static_cast<double>(c)));
        err.Set("stored", Napi::Number::New(env, sums[c]));
        err.Set("computed", Napi::Number::New(env, got));
        throw err;
      }
      verified[c] = 1;
    };
    // Full chunks three at a time (independent CRC chains), the rest one by one.
    for (uint64_t c = off / chunkSize; c <= (off + len - 1) / chunkSize && c < nsums; c++) {
      if (verified[c]) continue;
      uint64_t at = c * chunkSize;
      if (at + chunkSize > fsize) {
        check(c, engine::Crc32c(base + at, fsize - at));
        continue;
      }
      todo[ntodo++] = c;
      if (ntodo == 3) {
        uint32_t got[3];
        engine::Crc32c3(base + todo[0] * chunkSize, base + todo[1] * chunkSize, base + todo[2] * chunkSize, chunkSize, got);
        for (int k = 0; k < 3; k++) check(todo[k], got[k]);
        ntodo = 0;
      }
    }
    for (size_t k = 0; k < ntodo; k++) check(todo[k], engine::Crc32c(base + todo[k] * chunkSize, chunkSize));
  };
  // Split each range into iovecs of at most 1 GiB (process_vm_writev caps a
  // single call at MAX_RW_COUNT anyway); with checksums, into pieces of 1 MiB,
  // each verified just before it is written (the data is still in cache).
  const uint64_t kMaxIov = sums ? (1ull << 20) : (1ull << 30);
  uint64_t pending = 0;
  for (size_t i = 0; i < n; i++) {
    uint64_t addr = rg[3 * i], off = rg[3 * i + 1], len = rg[3 * i + 2];
    while (len > 0) {
      uint64_t chunk = len < kMaxIov ? len : kMaxIov;
      if (sums) {
        if (pending + chunk > (1ull << 20)) {
          flush();
          pending = 0;
        }
        verify(off, chunk);
        pending += chunk;
      }
      liov.push_back({const_cast<uint8_t*>(base + off), chunk});
      riov.push_back({reinterpret_cast<void*>(addr), chunk});
      if (liov.size() == kIovBatch) flush();
      addr += chunk;
      off += chunk;
      len -= chunk;
    }
  }
  flush();
  munmap(map, fsize);
  return Napi::BigInt::New(env, total);
}

// Reads one byte of each page with process_vm_readv on a worker thread. For a
// lazily restored process this takes each page through its userfaultfd (a
// remote access that may wait, unlike /proc/PID/mem): it returns once the
// lazy-pages daemon has served every page, and the JS thread stays free
// meanwhile (the daemon may run on it). Used for pages the kernel is about
// to write on the process's behalf (rseq areas): a write before the page is
// served would leave it zero-filled underneath the daemon.
class FaultInWorker : public Napi::AsyncWorker {
 public:
  FaultInWorker(Napi::Env env, int pid, std::vector<uint64_t> pages)
      : Napi::AsyncWorker(env), deferred_(Napi::Promise::Deferred::New(env)), pid_(pid), pages_(std::move(pages)) {}
  Napi::Promise Promise() { return deferred_.Promise(); }

  void Execute() override {
    uint8_t sink = 0;
    for (uint64_t a : pages_) {
      iovec l{&sink, 1};
      iovec r{reinterpret_cast<void*>(a), 1};
      ssize_t n;
      do n = process_vm_readv(pid_, &l, 1, &r, 1, 0); while (n < 0 && errno == EINTR);
      if (n != 1) {
        err_ = n < 0 ? errno : EIO;
        at_ = a;
        return;
      }
    }
  }
  void OnOK() override {
    Napi::Env env = Env();
    if (err_ != 0) {
      deferred_.Reject(ErrnoError(env, err_, "process_vm_readv", Where(pid_, at_)).Value());
      return;
    }
    deferred_.Resolve(env.Undefined());
  }

 private:
  Napi::Promise::Deferred deferred_;
  int pid_;
  std::vector<uint64_t> pages_;
  int err_ = 0;
  uint64_t at_ = 0;
};

// restoreFaultIn(pid, pages: BigUint64Array): Promise<void>.
Napi::Value FaultIn(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int32_t pid = ArgI32(info, 0, "pid");
  if (info.Length() < 2 || !info[1].IsTypedArray() || info[1].As<Napi::TypedArray>().TypedArrayType() != napi_biguint64_array)
    throw Napi::TypeError::New(env, "pages must be a BigUint64Array");
  Napi::BigUint64Array a = info[1].As<Napi::BigUint64Array>();
  std::vector<uint64_t> pages(a.Data(), a.Data() + a.ElementLength());
  auto* w = new FaultInWorker(env, pid, std::move(pages));
  Napi::Promise p = w->Promise();
  w->Queue();
  return p;
}

}  // namespace

void InitRestoreMem(Napi::Env env, Napi::Object exports) {
  exports.Set("restoreWriteMem", Napi::Function::New(env, WriteMem, "restoreWriteMem"));
  exports.Set("restoreReadMem", Napi::Function::New(env, ReadMem, "restoreReadMem"));
  exports.Set("restoreWritePages", Napi::Function::New(env, WritePages, "restoreWritePages"));
  exports.Set("restoreFaultIn", Napi::Function::New(env, FaultIn, "restoreFaultIn"));
}

}  // namespace lr
