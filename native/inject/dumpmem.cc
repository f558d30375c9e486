// The dump's memory copier: for each region, pagemap -> selected pages read
// with process_vm_readv (/proc/PID/mem for pages it cannot reach) -> all-zero
// pages dropped -> kept pages appended to the pages file. Reading (calling
// thread) and writing (one helper thread) overlap through a small ring of
// 4 MiB buffers, so the dump costs about max(read, write) instead of their
// sum. The helper thread lives only inside one call: started, fed, told to
// finish through the queue, joined, before returning (also on errors).
#include <errno.h>
#include <fcntl.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <sched.h>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "common/errors.h"
#include "common/fileio.h"
#include "common/hex.h"
#include "engine/crc32c.h"
#include "inject/init.h"
#include "inject/iovec.h"
#include "inject/pagemap_entry.h"

#ifndef LR_CHUNK_PAGES
#define LR_CHUNK_PAGES 128
#endif
#ifndef LR_BUFFERS
#define LR_BUFFERS 4
#endif

namespace lr {
namespace {

constexpr uint64_t kPage = 4096;
constexpr uint64_t kChunkPages = LR_CHUNK_PAGES;
constexpr size_t kBuffers = LR_BUFFERS;
constexpr size_t kIovMax = 1024;


// Argument i: a BigUint64Array of (start, nPages, mode) triples, each start
// page-aligned and each mode at most 2 (TypeError/RangeError otherwise).
std::vector<uint64_t> ArgRegions(const Napi::CallbackInfo& info, size_t i) {
  Napi::Env env = info.Env();
  if (info.Length() < i + 1 || !info[i].IsTypedArray() ||
      info[i].As<Napi::TypedArray>().TypedArrayType() != napi_biguint64_array)
    throw Napi::TypeError::New(env, "regions must be a BigUint64Array of (start, nPages, mode) triples");
  Napi::TypedArrayOf<uint64_t> reg = info[i].As<Napi::TypedArrayOf<uint64_t>>();
  if (reg.ElementLength() % 3) throw Napi::RangeError::New(env, "regions must hold triples");
  std::vector<uint64_t> regions(reg.Data(), reg.Data() + reg.ElementLength());
  for (size_t r = 0; r < regions.size(); r += 3)
    if (regions[r] % kPage || regions[r + 2] > 2) throw Napi::RangeError::New(env, "bad region");
  return regions;
}

bool PageIsZero(const char* p) {
  const uint64_t* w = reinterpret_cast<const uint64_t*>(p);
  for (size_t i = 0; i < kPage / 8; i += 8) {
    if (w[i] | w[i + 1] | w[i + 2] | w[i + 3] | w[i + 4] | w[i + 5] | w[i + 6] | w[i + 7]) return false;
  }
  return true;
}

// CRC32C of each chunkSize bytes of the pages file, computed on the pages as
// they are written (still in cache) instead of a read pass over the file
// afterwards: same function as engine::Crc32c, fed run by run (whole chunks
// with its three chains).
class StreamCrc {
 public:
  explicit StreamCrc(uint64_t chunk) : chunk_(chunk) {}
  void Add(const uint8_t* p, size_t n) {
    while (n > 0) {
      if (have_ == 0 && n >= chunk_) {
        // A whole chunk at hand: three interleaved chains (engine::Crc32c),
        // about three times the speed of the one chain below.
        sums_.push_back(engine::Crc32c(p, static_cast<size_t>(chunk_)));
        p += chunk_;
        n -= static_cast<size_t>(chunk_);
        continue;
      }
      size_t k = static_cast<size_t>(std::min<uint64_t>(n, chunk_ - have_));
      state_ = Update(state_, p, k);
      have_ += k;
      p += k;
      n -= k;
      if (have_ == chunk_) Flush();
    }
  }
  // The sums, the last chunk possibly short.
  std::vector<uint32_t>& Finish() {
    if (have_ > 0) Flush();
    return sums_;
  }

 private:
  void Flush() {
    sums_.push_back(~state_);
    state_ = ~0u;
    have_ = 0;
  }
  static uint32_t Update(uint32_t c, const uint8_t* p, size_t n) {
#if defined(__x86_64__)
    static const bool hw = __builtin_cpu_supports("sse4.2");
    if (hw) return UpdateHw(c, p, n);
#endif
    static const uint32_t* tab = Table();
    for (size_t i = 0; i < n; i++) c = tab[(c ^ p[i]) & 0xff] ^ (c >> 8);
    return c;
  }
#if defined(__x86_64__)
  __attribute__((target("sse4.2"))) static uint32_t UpdateHw(uint32_t c32, const uint8_t* p, size_t n) {
    uint64_t c = c32;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
      uint64_t v;
      memcpy(&v, p + i, 8);
      c = __builtin_ia32_crc32di(c, v);
    }
    c32 = static_cast<uint32_t>(c);
    for (; i < n; i++) c32 = __builtin_ia32_crc32qi(c32, p[i]);
    return c32;
  }
#endif
  static const uint32_t* Table() {
    static const std::array<uint32_t, 256> t = [] {
      std::array<uint32_t, 256> a{};
      for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++) c = c & 1 ? (c >> 1) ^ 0x82f63b78u : c >> 1;
        a[i] = c;
      }
      return a;
    }();
    return t.data();
  }
  uint64_t chunk_;
  uint64_t have_ = 0;
  uint32_t state_ = ~0u;
  std::vector<uint32_t> sums_;
};

struct Failure {
  int err = 0;
  std::string syscall, detail;
};

// Single-producer/single-consumer ring of buffers between the reader (the
// calling thread) and the writer thread (or, inline, one buffer written by
// the reader itself). Small buffers that stay in the CPU
// cache matter more here than syscall counts: with 2 CPUs the dump is bound
// by memory bandwidth, so the hand-off spins (a condvar wake-up across CPUs
// costs ~75 µs here, longer than filling a buffer) and yields when the peer
// is not running.
class Writer {
 public:
  Writer(int fd, uint64_t offset) : fd_(fd), offset_(offset) {
    for (auto& b : buffers_) b.reset(static_cast<char*>(aligned_alloc(kPage, kChunkPages * kPage)));
    // On two CPUs or fewer (shared with the frozen tree's neighbours) a
    // second thread that spins/yields for its turn loses more than the
    // overlap wins (measured: 512 MiB dump 1.3-2.2 s threaded vs 0.9-1.8 s
    // inline under load): write inline there. LR_DUMP_INLINE=0/1 overrides.
    const char* e = getenv("LR_DUMP_INLINE");
    inline_ = e && *e ? *e == '1' : sysconf(_SC_NPROCESSORS_ONLN) <= 2;
    if (!inline_) thread_ = std::thread([this] { Run(); });
  }
  ~Writer() { Finish(); }

  // Waits for a free buffer; returns its index, or SIZE_MAX once the writer failed.
  size_t AcquireSlot() {
    if (inline_) return failed_.load(std::memory_order_acquire) ? SIZE_MAX : 0;
    for (unsigned spins = 0;; spins++) {
      if (failed_.load(std::memory_order_acquire)) return SIZE_MAX;
      uint64_t h = head_.load(std::memory_order_relaxed);
      if (h - tail_.load(std::memory_order_acquire) < kBuffers) return h % kBuffers;
      Pause(spins);
    }
  }
  // Hands the buffer just acquired to the writer (iov may be empty).
  void Submit(std::vector<iovec> iov) {
    if (inline_) {
      if (!failed_.load(std::memory_order_relaxed) && !WriteAll(iov)) {
        failure_ = {errno, "pwritev", "pages file at offset " + std::to_string(offset_ + written_)};
        failed_.store(true, std::memory_order_release);
      }
      return;
    }
    uint64_t h = head_.load(std::memory_order_relaxed);
    jobs_[h % kBuffers] = std::move(iov);
    head_.store(h + 1, std::memory_order_release);
  }
  void Finish() {
    done_.store(true, std::memory_order_release);
    if (thread_.joinable()) thread_.join();
  }
  bool Failed(Failure* f) {
    if (failed_.load(std::memory_order_acquire)) *f = failure_;
    return failed_.load(std::memory_order_acquire);
  }
  char* Slot(size_t s) { return buffers_[s].get(); }
  uint64_t Written() const { return written_; }

 private:
  static void Pause(unsigned spins) {
    if (spins < 2000) __builtin_ia32_pause();
    else sched_yield();
  }

  void Run() {
    for (unsigned spins = 0;; spins++) {
      uint64_t t = tail_.load(std::memory_order_relaxed);
      if (t == head_.load(std::memory_order_acquire)) {
        if (done_.load(std::memory_order_acquire) && t == head_.load(std::memory_order_acquire)) return;
        Pause(spins);
        continue;
      }
      spins = 0;
      std::vector<iovec>& iov = jobs_[t % kBuffers];
      if (!failed_.load(std::memory_order_relaxed) && !WriteAll(iov)) {
        failure_ = {errno, "pwritev", "pages file at offset " + std::to_string(offset_ + written_)};
        failed_.store(true, std::memory_order_release);
      }
      tail_.store(t + 1, std::memory_order_release);
    }
  }

  bool WriteAll(std::vector<iovec>& iov) {
    size_t i = 0;
    while (i < iov.size()) {
      int cnt = static_cast<int>(std::min(kIovMax, iov.size() - i));
      ssize_t n = pwritev(fd_, &iov[i], cnt, static_cast<off_t>(offset_ + written_));
      if (n < 0) {
        if (errno == EINTR) continue;
        return false;
      }
      written_ += static_cast<uint64_t>(n);
      size_t left = static_cast<size_t>(n);
      while (left > 0 && i < iov.size()) {
        if (left >= iov[i].iov_len) {
          left -= iov[i].iov_len;
          i++;
        } else {
          iov[i].iov_base = static_cast<char*>(iov[i].iov_base) + left;
          iov[i].iov_len -= left;
          left = 0;
        }
      }
    }
    return true;
  }

  struct FreeDeleter {
    void operator()(char* p) const { free(p); }
  };
  int fd_;
  uint64_t offset_;
  uint64_t written_ = 0;  // writer thread only; read after join
  std::unique_ptr<char, FreeDeleter> buffers_[kBuffers];
  std::vector<iovec> jobs_[kBuffers];
  std::atomic<uint64_t> head_{0}, tail_{0};
  std::atomic<bool> done_{false}, failed_{false};
  Failure failure_;  // written before failed_ is released
  std::thread thread_;
  bool inline_ = false;
};

// What one dumpPages call is asked to do (checked arguments).
struct DumpJob {
  int32_t pid = 0;
  int mem_fd = -1, pm_fd = -1, pages_fd = -1;
  uint64_t pages_off = 0;
  std::vector<uint64_t> regions;
  uint64_t crc_chunk = 0;  // 0: no checksums
};

// What it did: runs (vaddr, nPages, regionIndex) in file order, or a failure.
struct DumpDone {
  std::vector<uint64_t> runs;
  uint64_t written = 0, scanned = 0, zero = 0;
  std::vector<uint32_t> sums;
  bool has_sums = false;
  bool failed = false;
  Failure fail;
};

// The copy itself: no JavaScript values, so it runs on the calling thread
// (dumpPages) or on a worker thread (dumpPagesAsync) alike.
void RunDump(const DumpJob& job, DumpDone& out) {
  const int32_t pid = job.pid;
  const int mem_fd = job.mem_fd, pm_fd = job.pm_fd, pages_fd = job.pages_fd;
  const uint64_t pages_off = job.pages_off;
  const std::vector<uint64_t>& regions = job.regions;
  std::unique_ptr<StreamCrc> crc;
  if (job.crc_chunk) crc = std::make_unique<StreamCrc>(job.crc_chunk);
  std::vector<uint64_t>& runs = out.runs;
  uint64_t& scanned = out.scanned;
  uint64_t& zero = out.zero;
  Failure& fail = out.fail;
  bool& failed = out.failed;
  auto set_fail = [&](int err, const char* sc, std::string detail) {
    failed = true;
    fail = {err, sc, std::move(detail)};
  };
  uint64_t& written = out.written;
  {
    Writer w(pages_fd, pages_off);
    std::vector<uint64_t> pm(kChunkPages);
    std::vector<iovec> remote;
    for (size_t r = 0; r < regions.size() && !failed; r += 3) {
      const uint64_t start = regions[r], npages = regions[r + 1];
      const int mode = static_cast<int>(regions[r + 2]);
      for (uint64_t first = 0; first < npages && !failed; first += kChunkPages) {
        const uint64_t n = std::min(kChunkPages, npages - first);
        const uint64_t base = start + first * kPage;
        if (!PreadFull(pm_fd, pm.data(), n * 8, base / kPage * 8)) {
          set_fail(errno, "pread", "/proc/" + std::to_string(pid) + "/pagemap at " + Hex(base));
          break;
        }
        remote.clear();
        for (uint64_t i = 0; i < n; i++) {
          uint64_t e = pm[i];
          bool take = PageTaken(e, mode);
          if (!take) continue;
          char* a = reinterpret_cast<char*>(base + i * kPage);
          if (!remote.empty() && static_cast<char*>(remote.back().iov_base) + remote.back().iov_len == a)
            remote.back().iov_len += kPage;
          else
            remote.push_back(iovec{a, kPage});
        }
        if (remote.empty()) continue;
        size_t slot = w.AcquireSlot();
        if (slot == SIZE_MAX) break;  // writer failed; reported below
        char* buf = w.Slot(slot);
        // Read the selected pages packed into the slot.
        size_t total = 0;
        for (const iovec& v : remote) total += v.iov_len;
        size_t done = 0, k = 0, k_off = 0;
        while (done < total) {
          size_t cnt = std::min(kIovMax, remote.size() - k);
          iovec first_iov = remote[k];
          first_iov.iov_base = static_cast<char*>(first_iov.iov_base) + k_off;
          first_iov.iov_len -= k_off;
          std::swap(remote[k], first_iov);
          iovec l{buf + done, total - done};
          ssize_t got;
          do got = process_vm_readv(pid, &l, 1, &remote[k], cnt, 0);
          while (got < 0 && errno == EINTR);
          int rerr = errno;
          std::swap(remote[k], first_iov);
          if (got < 0 && rerr != EFAULT) {
            set_fail(rerr, "process_vm_readv", "pid " + std::to_string(pid) + " at " + Hex(reinterpret_cast<uint64_t>(remote[k].iov_base) + k_off));
            break;
          }
          size_t g = got < 0 ? 0 : static_cast<size_t>(got);
          if (g == 0) {
            // Not reachable this way (PROT_NONE...): one page via /proc/PID/mem (FOLL_FORCE).
            uint64_t a = reinterpret_cast<uint64_t>(remote[k].iov_base) + k_off;
            if (!PreadFull(mem_fd, buf + done, kPage, a)) {
              set_fail(errno, "pread", "/proc/" + std::to_string(pid) + "/mem at " + Hex(a));
              break;
            }
            g = kPage;
          }
          done += g;
          AdvanceIovCursor(remote, k, k_off, g);
        }
        if (failed) {
          w.Submit({});
          break;
        }
        // Keep the non-zero pages (all of them in mode all).
        std::vector<iovec> job;
        size_t src = 0;
        for (const iovec& v : remote) {
          uint64_t va0 = reinterpret_cast<uint64_t>(v.iov_base);
          for (size_t off = 0; off < v.iov_len; off += kPage, src += kPage) {
            scanned++;
            char* p = buf + src;
            if (mode != kModeAll && PageIsZero(p)) {
              zero++;
              continue;
            }
            if (!job.empty() && static_cast<char*>(job.back().iov_base) + job.back().iov_len == p)
              job.back().iov_len += kPage;
            else
              job.push_back(iovec{p, kPage});
            uint64_t va = va0 + off;
            size_t m = runs.size();
            if (m >= 3 && runs[m - 1] == r / 3 && runs[m - 3] + runs[m - 2] * kPage == va)
              runs[m - 2]++;
            else {
              runs.push_back(va);
              runs.push_back(1);
              runs.push_back(r / 3);
            }
          }
        }
        // Checksums over the kept runs (contiguous in the buffer), in file order.
        if (crc)
          for (const iovec& v : job) crc->Add(static_cast<const uint8_t*>(v.iov_base), v.iov_len);
        w.Submit(std::move(job));
      }
    }
    w.Finish();
    Failure wf;
    if (w.Failed(&wf) && !failed) {
      failed = true;
      fail = wf;
    }
    written = w.Written();
  }
  if (crc) {
    out.sums = std::move(crc->Finish());
    out.has_sums = true;
  }
}

DumpJob ArgDumpJob(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  DumpJob job;
  job.pid = ArgI32(info, 0, "pid");
  job.mem_fd = ArgFd(info, 1, "memFd");
  job.pm_fd = ArgFd(info, 2, "pagemapFd");
  job.pages_fd = ArgFd(info, 3, "pagesFd");
  job.pages_off = ArgU64(info, 4, "pagesOffset");
  job.regions = ArgRegions(info, 5);
  if (info.Length() > 6 && !info[6].IsUndefined()) {
    int64_t c = ArgI64(info, 6, "checksumChunk");
    if (c <= 0 || c % static_cast<int64_t>(kPage) || job.pages_off % static_cast<uint64_t>(c))
      throw Napi::RangeError::New(env, "checksumChunk must be a positive multiple of 4096 that divides pagesOffset");
    job.crc_chunk = static_cast<uint64_t>(c);
  }
  return job;
}

Napi::Object DumpResult(Napi::Env env, const DumpDone& d) {
  Napi::BigUint64Array ra = Napi::BigUint64Array::New(env, d.runs.size());
  if (!d.runs.empty()) memcpy(ra.Data(), d.runs.data(), d.runs.size() * 8);
  Napi::Object o = Napi::Object::New(env);
  o.Set("runs", ra);
  o.Set("bytes", Napi::Number::New(env, static_cast<double>(d.written)));
  o.Set("scanned", Napi::Number::New(env, static_cast<double>(d.scanned)));
  o.Set("zero", Napi::Number::New(env, static_cast<double>(d.zero)));
  if (d.has_sums) {
    Napi::Uint32Array ca = Napi::Uint32Array::New(env, d.sums.size());
    if (!d.sums.empty()) memcpy(ca.Data(), d.sums.data(), d.sums.size() * 4);
    o.Set("checksums", ca);
  }
  return o;
}

// dumpPages(pid, memFd, pagemapFd, pagesFd, pagesOffset, regions[, checksumChunk])
// where regions is a BigUint64Array of (start, nPages, mode) triples.
// Returns { runs: BigUint64Array of (vaddr, nPages, regionIndex), bytes,
//           scanned, zero[, checksums] }. Pages land in the pages file in run
// order. With checksumChunk (a multiple of 4096 dividing pagesOffset),
// checksums is a Uint32Array: CRC32C of each checksumChunk bytes written
// (the file's chunks when this call writes it from pagesOffset to its end).
Napi::Value DumpPages(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  DumpJob job = ArgDumpJob(info);
  DumpDone d;
  RunDump(job, d);
  if (d.failed) ThrowErrno(env, d.fail.err, d.fail.syscall.c_str(), d.fail.detail);
  return DumpResult(env, d);
}

// dumpPages on a worker thread (the libuv pool): the calling thread goes on
// meanwhile (the dump collects the frozen task's registers and encodes its
// images while its memory is copied). The caller keeps the fds open and the
// task frozen, its memory unchanged, until the promise settles.
class DumpWorker : public Napi::AsyncWorker {
 public:
  DumpWorker(Napi::Env env, DumpJob job)
      : Napi::AsyncWorker(env), deferred_(Napi::Promise::Deferred::New(env)), job_(std::move(job)) {}
  Napi::Promise Promise() { return deferred_.Promise(); }
  void Execute() override { RunDump(job_, done_); }
  void OnOK() override {
    Napi::Env env = Env();
    if (done_.failed) {
      deferred_.Reject(ErrnoError(env, done_.fail.err, done_.fail.syscall.c_str(), done_.fail.detail).Value());
      return;
    }
    deferred_.Resolve(DumpResult(env, done_));
  }

 private:
  Napi::Promise::Deferred deferred_;
  DumpJob job_;
  DumpDone done_;
};

// dumpPagesAsync(same arguments as dumpPages) -> Promise of its result.
Napi::Value DumpPagesAsync(const Napi::CallbackInfo& info) {
  DumpJob job = ArgDumpJob(info);
  auto* w = new DumpWorker(info.Env(), std::move(job));
  Napi::Promise p = w->Promise();
  w->Queue();
  return p;
}

// The kernel's shared zero page as pagemap reports it (its PFN), or 0 when
// PFNs are hidden from us: a page that reads as zero without being written
// maps it, and such a page holds nothing worth sending.
uint64_t ZeroPagePfn() {
  static const uint64_t pfn = [] {
    uint64_t out = 0;
    void* m = mmap(nullptr, kPage, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) return out;
    (void)*static_cast<volatile const char*>(m);
    int fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
    uint64_t e = 0;
    if (fd >= 0 && PreadFull(fd, &e, 8, reinterpret_cast<uint64_t>(m) / kPage * 8) && (e & kPmPresent))
      out = e & ((1ULL << 55) - 1);
    if (fd >= 0) close(fd);
    munmap(m, kPage);
    return out;
  }();
  return pfn;
}

// PAGEMAP_SCAN (Linux 6.7+; the structures of <linux/fs.h>, which this
// build's headers may predate): the kernel reports runs of pages by
// category instead of 8 bytes of pagemap per page.
struct PmPageRegion {
  uint64_t start, end, categories;
};
struct PmScanArg {
  uint64_t size, flags, start, end, walk_end, vec, vec_len, max_pages;
  uint64_t category_inverted, category_mask, category_anyof_mask, return_mask;
};
constexpr unsigned long kPagemapScan = _IOWR('f', 16, PmScanArg);
constexpr uint64_t kPageIsFile = 1 << 2, kPageIsPresent = 1 << 3, kPageIsSwapped = 1 << 4, kPageIsPfnZero = 1 << 5;

// scanPages(pid, pagemapFd, regions, usePagemapScan) -> { runs, scanned, zero }:
// the pages dumpPages would select (same region triples and modes), from the
// pagemap alone: nothing is read from the process. For `dump --lazy-pages`,
// whose lazy memory is served later from the frozen tree: the tree's downtime
// before the page server listens then does not grow with its memory. Pages
// that map the kernel's zero page are left out (zero); other all-zero pages
// are kept (they are sent). With usePagemapScan (when the kernel has it) the
// kernel hands over runs of present / swapped / zero-page / page-cache pages
// (~10x faster than reading the pagemap: 2 GiB resident in ~3 ms instead of
// ~30), as CRIU 4.2 does; swapped runs are read from the pagemap page by page
// all the same (a pte marker reads as swapped there and is no page). A zero
// huge page (huge zero PMD) counts as a zero page then, as the kernel
// reports it; read page by page it is kept (its PFN is not the zero page's).
Napi::Value ScanPages(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int32_t pid = ArgI32(info, 0, "pid");
  int pm_fd = ArgFd(info, 1, "pagemapFd");
  std::vector<uint64_t> regions = ArgRegions(info, 2);
  bool use_scan = info.Length() > 3 && info[3].IsBoolean() && info[3].As<Napi::Boolean>().Value();
  const uint64_t zpfn = ZeroPagePfn();
  constexpr uint64_t kScanPages = 8192;  // 64 KiB of pagemap per pread
  std::vector<uint64_t> pm(kScanPages), runs;
  uint64_t scanned = 0, zero = 0;
  auto add = [&runs](uint64_t va, uint64_t n, uint64_t region) {
    size_t m = runs.size();
    if (m >= 3 && runs[m - 1] == region && runs[m - 3] + runs[m - 2] * kPage == va)
      runs[m - 2] += n;
    else {
      runs.push_back(va);
      runs.push_back(n);
      runs.push_back(region);
    }
  };
  // Pages [start, start + npages * 4096) of region `region`, from the pagemap page by page.
  auto read_pagemap = [&](uint64_t start, uint64_t npages, int mode, uint64_t region) {
    for (uint64_t first = 0; first < npages; first += kScanPages) {
      const uint64_t n = std::min(kScanPages, npages - first);
      const uint64_t base = start + first * kPage;
      if (!PreadFull(pm_fd, pm.data(), n * 8, base / kPage * 8))
        ThrowErrno(env, errno, "pread", "/proc/" + std::to_string(pid) + "/pagemap at " + Hex(base));
      for (uint64_t i = 0; i < n; i++) {
        const uint64_t e = pm[i];
        if (!PageTaken(e, mode)) continue;
        scanned++;
        if (mode != kModeAll && zpfn && (e & kPmPresent) && (e & ((1ULL << 55) - 1)) == zpfn) {
          zero++;
          continue;
        }
        add(base + i * kPage, 1, region);
      }
    }
  };
  std::vector<PmPageRegion> vec(use_scan ? 512 : 0);
  bool scan_works = false;  // one PAGEMAP_SCAN call succeeded
  for (size_t r = 0; r < regions.size(); r += 3) {
    const uint64_t start = regions[r], npages = regions[r + 1], region = r / 3;
    const int mode = static_cast<int>(regions[r + 2]);
    if (mode == kModeAll || !use_scan) {
      read_pagemap(start, npages, mode, region);
      continue;
    }
    const uint64_t end = start + npages * kPage;
    for (uint64_t at = start; at < end;) {
      PmScanArg a{};
      a.size = sizeof a;
      a.start = at;
      a.end = end;
      a.vec = reinterpret_cast<uint64_t>(vec.data());
      a.vec_len = vec.size();
      a.category_anyof_mask = kPageIsPresent | kPageIsSwapped;
      a.return_mask = kPageIsPresent | kPageIsSwapped | kPageIsPfnZero | (mode == kModeFile ? kPageIsFile : 0);
      long got = ioctl(pm_fd, kPagemapScan, &a);
      if (got < 0 && errno == EINTR) continue;
      if (got < 0 && (errno == ENOTTY || errno == EINVAL) && !scan_works) {
        // No PAGEMAP_SCAN in this kernel: page by page from here on.
        use_scan = false;
        read_pagemap(start, npages, mode, region);
        break;
      }
      if (got < 0) ThrowErrno(env, errno, "ioctl(PAGEMAP_SCAN)", "/proc/" + std::to_string(pid) + "/pagemap at " + Hex(at));
      scan_works = true;
      for (long k = 0; k < got; k++) {
        const PmPageRegion& g = vec[k];
        const uint64_t n = (g.end - g.start) / kPage;
        if (mode == kModeFile && (g.categories & kPageIsFile)) continue;  // page-cache pages: the file has them
        if (g.categories & kPageIsSwapped) {
          read_pagemap(g.start, n, mode, region);
          continue;
        }
        scanned += n;
        if (g.categories & kPageIsPfnZero) {
          zero += n;
          continue;
        }
        add(g.start, n, region);
      }
      if (a.walk_end <= at) ThrowErrno(env, EIO, "ioctl(PAGEMAP_SCAN)", "/proc/" + std::to_string(pid) + "/pagemap: no progress at " + Hex(at));
      at = a.walk_end;
    }
  }
  Napi::BigUint64Array ra = Napi::BigUint64Array::New(env, runs.size());
  if (!runs.empty()) memcpy(ra.Data(), runs.data(), runs.size() * 8);
  Napi::Object o = Napi::Object::New(env);
  o.Set("runs", ra);
  o.Set("scanned", Napi::Number::New(env, static_cast<double>(scanned)));
  o.Set("zero", Napi::Number::New(env, static_cast<double>(zero)));
  return o;
}

// checksumFile(path, chunkSize) -> Uint32Array: CRC32C of each chunkSize
// bytes of the file (the last chunk may be short), for lr-checksums images.
// Hardware CRC32C, three chunks at a time, reading 3 MiB-ish blocks.
Napi::Value ChecksumFile(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsString()) throw Napi::TypeError::New(env, "path must be a string");
  std::string path = info[0].As<Napi::String>().Utf8Value();
  int64_t chunk = ArgI64(info, 1, "chunkSize");
  if (chunk <= 0 || chunk % static_cast<int64_t>(kPage)) throw Napi::RangeError::New(env, "chunkSize must be a positive multiple of 4096");
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) ThrowErrno(env, errno, "open", path);
  struct stat st;
  if (fstat(fd, &st) != 0) {
    int e = errno;
    close(fd);
    ThrowErrno(env, e, "fstat", path);
  }
  const uint64_t size = static_cast<uint64_t>(st.st_size), c = static_cast<uint64_t>(chunk);
  const uint64_t n = (size + c - 1) / c;
  const uint64_t per = std::max<uint64_t>(3, (4u << 20) / c / 3 * 3);  // chunks per read, a multiple of 3
  posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
  std::unique_ptr<uint8_t[]> buf(new uint8_t[per * c]);
  std::vector<uint32_t> sums(n);
  for (uint64_t first = 0; first < n; first += per) {
    uint64_t off = first * c, want = std::min(per * c, size - off), got = 0;
    while (got < want) {
      ssize_t k = pread(fd, buf.get() + got, want - got, off + got);
      if (k < 0 && errno == EINTR) continue;
      if (k <= 0) {
        int e = k < 0 ? errno : EIO;
        close(fd);
        ThrowErrno(env, e, "pread", path + " at offset " + std::to_string(off + got) + (k == 0 ? " (file shrank)" : ""));
      }
      got += static_cast<uint64_t>(k);
    }
    uint64_t cnt = (want + c - 1) / c, i = 0;
    for (; i + 3 <= cnt && (i + 3) * c <= want; i += 3) {
      uint32_t out[3];
      engine::Crc32c3(buf.get() + i * c, buf.get() + (i + 1) * c, buf.get() + (i + 2) * c, c, out);
      sums[first + i] = out[0];
      sums[first + i + 1] = out[1];
      sums[first + i + 2] = out[2];
    }
    for (; i < cnt; i++) sums[first + i] = engine::Crc32c(buf.get() + i * c, std::min(c, want - i * c));
  }
  close(fd);
  Napi::Uint32Array out = Napi::Uint32Array::New(env, n);
  if (n) memcpy(out.Data(), sums.data(), n * 4);
  return out;
}

}  // namespace

void InitInjectDumpMem(Napi::Env env, Napi::Object exports) {
  exports.Set("dumpPages", Napi::Function::New(env, DumpPages, "dumpPages"));
  exports.Set("dumpPagesAsync", Napi::Function::New(env, DumpPagesAsync, "dumpPagesAsync"));
  exports.Set("scanPages", Napi::Function::New(env, ScanPages, "scanPages"));
  exports.Set("checksumFile", Napi::Function::New(env, ChecksumFile, "checksumFile"));
}

}  // namespace lr
