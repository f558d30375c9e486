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

#include <atomic>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "common/errors.h"
#include "engine/crc32c.h"
#include "inject/restore.h"
#include "uffd/uffd_abi.h"

namespace lr {
namespace {

constexpr uint64_t kPage = 4096;

std::string Where(int pid, uint64_t addr) {
  char b[64];
  snprintf(b, sizeof(b), "(pid %d, address 0x%llx)", pid, static_cast<unsigned long long>(addr));
  return b;
}

// Writes through /proc/PID/mem: the tracer may write read-only private pages
// (FOLL_FORCE), which process_vm_writev refuses with EFAULT. No Node-API
// (the fill workers call it): 0 or an errno, with `what` naming the call.
int WriteProcMemRaw(int pid, uint64_t addr, const uint8_t* data, size_t len, const char** what) {
  std::string path = "/proc/" + std::to_string(pid) + "/mem";
  int fd = open(path.c_str(), O_RDWR | O_CLOEXEC);
  if (fd < 0) {
    *what = "open";
    return errno;
  }
  size_t done = 0;
  while (done < len) {
    ssize_t w = pwrite(fd, data + done, len - done, static_cast<off_t>(addr + done));
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) {
      int e = w < 0 ? errno : EIO;
      close(fd);
      *what = "pwrite";
      return e;
    }
    done += static_cast<size_t>(w);
  }
  close(fd);
  return 0;
}

// process_vm_writev, through /proc/PID/mem where it faults.
int WriteRemoteRaw(int pid, uint64_t addr, const uint8_t* data, size_t len, const char** what) {
  size_t done = 0;
  while (done < len) {
    iovec l{const_cast<uint8_t*>(data + done), len - done};
    iovec r{reinterpret_cast<void*>(addr + done), len - done};
    ssize_t w = process_vm_writev(pid, &l, 1, &r, 1, 0);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) {
      if (w < 0 && errno == EFAULT) return WriteProcMemRaw(pid, addr + done, data + done, len - done, what);
      *what = "process_vm_writev";
      return w < 0 ? errno : EIO;
    }
    done += static_cast<size_t>(w);
  }
  return 0;
}

void WriteRemote(Napi::Env env, int pid, uint64_t addr, const uint8_t* data, size_t len) {
  const char* what = "";
  int e = WriteRemoteRaw(pid, addr, data, len, &what);
  if (e != 0) ThrowErrno(env, e, what, Where(pid, addr));
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

// A failure of one piece of a page fill, thrown as a JS error by the calling
// thread once every worker stopped.
struct FillError {
  int err = 0;
  std::string syscall;
  std::string detail;
  bool crc = false;
  uint64_t chunk = 0;
  uint32_t stored = 0;
  uint32_t computed = 0;
};

// One eager page fill: pieces of the pages file (mapped read-only) go into
// the target, each verified first when there are checksums; shared by
// `threads` workers that take pieces in order from one cursor.
class PageFill {
 public:
  struct Piece {
    uint64_t addr, off, len;
  };

  // pid < 0: verify only (nothing is written).
  PageFill(int pid, int uffd, const uint8_t* base, uint64_t fsize, const uint32_t* sums, size_t nsums, uint64_t chunkSize,
           uint8_t* verified, std::vector<Piece> pieces)
      : pid_(pid), uffd_(uffd), base_(base), fsize_(fsize), sums_(sums), nsums_(nsums), chunk_(chunkSize),
        verified_(verified), pieces_(std::move(pieces)) {}

  // Makes every worker stop after its current piece (Run then returns false with no error set).
  void Cancel() { failed_.store(true); }

  // Runs the fill on `threads` threads (this one included); false after a
  // failure (see error()). Every worker has stopped when it returns.
  bool Run(int threads) {
    std::vector<std::thread> extra;
    for (int i = 1; i < threads && static_cast<size_t>(i) < pieces_.size(); i++) {
      try {
        extra.emplace_back([this] { Work(); });
      } catch (...) {
        break;  // no thread: fewer workers
      }
    }
    Work();
    for (auto& t : extra) t.join();
    return !failed_.load();
  }
  uint64_t total() const { return total_.load(); }
  const FillError& error() const { return error_; }

 private:
  void Fail(FillError e) {
    std::lock_guard<std::mutex> g(mu_);
    if (!failed_.load()) {
      error_ = std::move(e);
      failed_.store(true);
    }
  }
  void FailErrno(int err, const char* syscall, uint64_t addr) {
    FillError e;
    e.err = err;
    e.syscall = syscall;
    e.detail = Where(pid_, addr);
    Fail(std::move(e));
  }

  void Work() {
    for (;;) {
      if (failed_.load(std::memory_order_relaxed)) return;
      size_t i = next_.fetch_add(1);
      if (i >= pieces_.size()) return;
      const Piece& p = pieces_[i];
      if (sums_ && !Verify(p.off, p.len)) return;
      if (pid_ < 0) continue;
      if (!(uffd_ >= 0 ? Copy(p) : Write(p))) return;
    }
  }

  // Every not yet verified chunk of [off, off + len): full chunks three at a
  // time (independent CRC chains), the rest one by one.
  bool Verify(uint64_t off, uint64_t len) {
    uint64_t todo[3];
    size_t ntodo = 0;
    auto check = [&](uint64_t c, uint32_t got) {
      if (got != sums_[c]) {
        FillError e;
        e.err = EBADMSG;
        e.syscall = "crc32c";
        e.crc = true;
        e.chunk = c;
        e.stored = sums_[c];
        e.computed = got;
        Fail(std::move(e));
        return false;
      }
      __atomic_store_n(&verified_[c], 1, __ATOMIC_RELAXED);
      return true;
    };
    for (uint64_t c = off / chunk_; c <= (off + len - 1) / chunk_ && c < nsums_; c++) {
      if (__atomic_load_n(&verified_[c], __ATOMIC_RELAXED)) continue;
      uint64_t at = c * chunk_;
      if (at + chunk_ > fsize_) {
        if (!check(c, engine::Crc32c(base_ + at, fsize_ - at))) return false;
        continue;
      }
      todo[ntodo++] = c;
      if (ntodo == 3) {
        uint32_t got[3];
        engine::Crc32c3(base_ + todo[0] * chunk_, base_ + todo[1] * chunk_, base_ + todo[2] * chunk_, chunk_, got);
        for (int k = 0; k < 3; k++)
          if (!check(todo[k], got[k])) return false;
        ntodo = 0;
      }
    }
    for (size_t k = 0; k < ntodo; k++)
      if (!check(todo[k], engine::Crc32c(base_ + todo[k] * chunk_, chunk_))) return false;
    return true;
  }

  // UFFDIO_COPY of one piece; a page found already present is written the
  // other way (a present page cannot fault into the userfaultfd, a missing
  // one would wait on it for ever), then copying goes on.
  bool Copy(const Piece& p) {
    uint64_t dst = p.addr, src = reinterpret_cast<uint64_t>(base_ + p.off), len = p.len;
    while (len > 0) {
      uint64_t done = 0;
      int r = UffdCopy(uffd_, dst, src, len, 0, &done);
      total_ += done;
      dst += done;
      src += done;
      len -= done;
      if (r == 0 || len == 0) break;
      if (r == -EAGAIN || r == -EINTR) continue;
      if (r == -EEXIST) {
        const char* what = "";
        int e = WriteRemoteRaw(pid_, dst, reinterpret_cast<const uint8_t*>(src), kPage, &what);
        if (e != 0) {
          FailErrno(e, what, dst);
          return false;
        }
        total_ += kPage;
        dst += kPage;
        src += kPage;
        len -= kPage;
        continue;
      }
      FailErrno(-r, "ioctl(UFFDIO_COPY)", dst);
      return false;
    }
    return true;
  }

  // process_vm_writev of one piece (through /proc/PID/mem where it faults:
  // a read-only page or an odd mapping).
  bool Write(const Piece& p) {
    const char* what = "";
    int e = WriteRemoteRaw(pid_, p.addr, base_ + p.off, p.len, &what);
    if (e != 0) {
      FailErrno(e, what, p.addr);
      return false;
    }
    total_ += p.len;
    return true;
  }

  int pid_;
  int uffd_;
  const uint8_t* base_;
  uint64_t fsize_;
  const uint32_t* sums_;
  size_t nsums_;
  uint64_t chunk_;
  uint8_t* verified_;
  std::vector<Piece> pieces_;
  std::atomic<size_t> next_{0};
  std::atomic<uint64_t> total_{0};
  std::atomic<bool> failed_{false};
  std::mutex mu_;
  FillError error_;
};

// The pieces of (address, offset, length) triples: at most 1 MiB, never
// across a 2 MiB boundary of the target (workers rarely share a page table).
std::vector<PageFill::Piece> Pieces(const uint64_t* rg, size_t n) {
  constexpr uint64_t kPiece = 1ull << 20, kTable = 2ull << 20;
  std::vector<PageFill::Piece> pieces;
  for (size_t i = 0; i < n; i++) {
    uint64_t addr = rg[3 * i], off = rg[3 * i + 1], len = rg[3 * i + 2];
    while (len > 0) {
      uint64_t room = kTable - (addr & (kTable - 1));
      uint64_t chunk = len < kPiece ? len : kPiece;
      if (chunk > room) chunk = room;
      pieces.push_back({addr, off, chunk});
      addr += chunk;
      off += chunk;
      len -= chunk;
    }
  }
  return pieces;
}

// The JS error of a failed fill or verification.
[[noreturn]] void ThrowFill(Napi::Env env, const FillError& f, const std::string& path, uint64_t chunkSize) {
  if (f.crc) {
    Napi::Error err = ErrnoError(env, EBADMSG, "crc32c", path + ": chunk " + std::to_string(f.chunk) + " at offset " + std::to_string(f.chunk * chunkSize));
    err.Set("chunk", Napi::Number::New(env, static_cast<double>(f.chunk)));
    err.Set("stored", Napi::Number::New(env, f.stored));
    err.Set("computed", Napi::Number::New(env, f.computed));
    throw err;
  }
  ThrowErrno(env, f.err, f.syscall.c_str(), f.detail);
}

// restoreWritePages(pid, pagesPath, ranges[, sums, chunkSize, verified, uffd, threads]) -> bytes written.
// ranges: BigUint64Array of (remote address, file offset, length) triples,
// ascending. The target's mappings must be writable (the restorer maps them
// with PROT_WRITE first); a range that still fails with EFAULT goes through
// /proc/PID/mem.
// With sums (Uint32Array, CRC32C per chunkSize bytes of the file) and
// verified (Uint8Array, one flag per chunk, shared between calls for one
// file): each chunk a piece touches is checked (hardware CRC32C) right
// before the piece is written, by the same thread, while it is in cache; a
// mismatch throws EBADMSG with `chunk`, `stored` and `computed` set (the
// data of that chunk is never written).
// With uffd (a userfaultfd of the process with every target range registered
// MISSING): the data goes in with UFFDIO_COPY instead, straight into new
// pages (process_vm_writev first faults in a zeroed page for each, then
// copies: ~1/3 more CPU per GiB); a page found already present is written
// the other way.
// threads (default 1): workers sharing the pieces (at most 1 MiB, never
// across a 2 MiB boundary of the target, so workers rarely share a page
// table); all have stopped when this returns or throws.
Napi::Value WritePages(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int pid = ArgI32(info, 0, "pid");
  int uffd = info.Length() > 6 && !info[6].IsUndefined() ? ArgI32(info, 6, "uffd") : -1;
  int threads = info.Length() > 7 && !info[7].IsUndefined() ? ArgI32(info, 7, "threads") : 1;
  if (threads < 1 || threads > 64) throw Napi::RangeError::New(env, "threads must be 1..64");
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

  PageFill fill(pid, uffd, static_cast<const uint8_t*>(map), fsize, sums, nsums, chunkSize, verified, Pieces(rg, n));
  bool ok = fill.Run(threads);
  munmap(map, fsize);
  if (!ok) ThrowFill(env, fill.error(), path, chunkSize);
  return Napi::BigInt::New(env, fill.total());
}

// new RestoreVerifyJob(pagesPath, ranges, sums, chunkSize, verified): checks
// on a thread of its own every not yet verified chunk that the (address,
// offset, length) triples touch, as restoreWritePages does, while the
// restored task copies the same data in itself. join() waits for it and
// throws the same EBADMSG error on a mismatch; cancel() makes it stop
// early. The thread is always joined (by join(), or when the object is
// collected).
class VerifyJob : public Napi::ObjectWrap<VerifyJob> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "RestoreVerifyJob",
                       {InstanceMethod("join", &VerifyJob::Join), InstanceMethod("cancel", &VerifyJob::Cancel)});
  }

  explicit VerifyJob(const Napi::CallbackInfo& info) : Napi::ObjectWrap<VerifyJob>(info) {
    Napi::Env env = info.Env();
    if (!info[0].IsString()) throw Napi::TypeError::New(env, "pagesPath must be a string");
    path_ = info[0].As<Napi::String>().Utf8Value();
    if (!info[1].IsTypedArray() || info[1].As<Napi::TypedArray>().TypedArrayType() != napi_biguint64_array ||
        !info[2].IsTypedArray() || info[2].As<Napi::TypedArray>().TypedArrayType() != napi_uint32_array ||
        !info[4].IsTypedArray() || info[4].As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array)
      throw Napi::TypeError::New(env, "ranges must be a BigUint64Array, sums a Uint32Array and verified a Uint8Array");
    Napi::BigUint64Array ranges = info[1].As<Napi::BigUint64Array>();
    Napi::Uint32Array sums = info[2].As<Napi::Uint32Array>();
    Napi::Uint8Array verified = info[4].As<Napi::Uint8Array>();
    chunk_ = static_cast<uint64_t>(ArgI64(info, 3, "chunkSize"));
    int fd = open(path_.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) ThrowErrno(env, errno, "open", path_);
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
      int e = errno;
      close(fd);
      ThrowErrno(env, e, "fstat", path_);
    }
    size_ = static_cast<uint64_t>(sb.st_size);
    size_t n = ranges.ElementLength() / 3;
    const uint64_t* rg = ranges.Data();
    bool bad = chunk_ == 0 || verified.ElementLength() != sums.ElementLength() || sums.ElementLength() * chunk_ < size_;
    for (size_t i = 0; i < n && !bad; i++) bad = rg[3 * i + 1] + rg[3 * i + 2] > size_ || rg[3 * i + 1] + rg[3 * i + 2] < rg[3 * i + 1];
    if (bad) {
      close(fd);
      throw Napi::TypeError::New(env, "ranges/chunkSize/sums/verified do not describe the file");
    }
    map_ = size_ ? mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0) : nullptr;
    int e = errno;
    close(fd);
    if (map_ == MAP_FAILED) ThrowErrno(env, e, "mmap", path_);
    madvise(map_, size_, MADV_SEQUENTIAL);
    sumsRef_ = Napi::Persistent(static_cast<Napi::Object>(sums));
    verifiedRef_ = Napi::Persistent(static_cast<Napi::Object>(verified));
    fill_ = std::make_unique<PageFill>(-1, -1, static_cast<const uint8_t*>(map_), size_, sums.Data(), sums.ElementLength(),
                                       chunk_, verified.Data(), Pieces(rg, n));
    thread_ = std::thread([this] { ok_ = fill_->Run(1); });
  }

  ~VerifyJob() override { Stop(); }

 private:
  void Stop() {
    if (fill_ && thread_.joinable()) {
      fill_->Cancel();
      thread_.join();
    }
    if (map_ && map_ != MAP_FAILED) munmap(map_, size_);
    map_ = nullptr;
  }

  Napi::Value Join(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (thread_.joinable()) thread_.join();
    if (map_) munmap(map_, size_);
    map_ = nullptr;
    if (!ok_ && !cancelled_) ThrowFill(env, fill_->error(), path_, chunk_);
    return env.Undefined();
  }

  Napi::Value Cancel(const Napi::CallbackInfo& info) {
    cancelled_ = true;
    Stop();
    return info.Env().Undefined();
  }

  std::string path_;
  uint64_t chunk_ = 0;
  uint64_t size_ = 0;
  void* map_ = nullptr;
  Napi::ObjectReference sumsRef_, verifiedRef_;
  std::unique_ptr<PageFill> fill_;
  std::thread thread_;
  bool ok_ = true;
  bool cancelled_ = false;
};

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
  exports.Set("RestoreVerifyJob", VerifyJob::Define(env));
}

}  // namespace lr
