// The dump's memory copier: for each region, pagemap -> selected pages read
// with process_vm_readv (/proc/PID/mem for pages it cannot reach) -> all-zero
// pages dropped -> kept pages checksummed and appended to the pages file.
// Reading (calling thread) and writing (one helper thread) overlap through a
// small ring of ~1 MiB slots, so the dump costs about max(read, write)
// instead of their sum. The helper thread lives only inside one call:
// started, fed, told to finish, joined, before returning (also on errors).
#include <errno.h>
#include <fcntl.h>
#include <linux/futex.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <memory>
#include <mutex>
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
#define LR_BUFFERS 6
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

// CRC32C of each chunk of n bytes at p (the last chunk may be short),
// appended to sums: three chunks at a time in three interleaved chains
// (engine::Crc32c3), the rest with engine::Crc32c.
void ChunkSums(const uint8_t* p, size_t n, size_t chunk, std::vector<uint32_t>& sums) {
  for (; n >= 3 * chunk; p += 3 * chunk, n -= 3 * chunk) {
    uint32_t out[3];
    engine::Crc32c3(p, p + chunk, p + 2 * chunk, chunk, out);
    sums.insert(sums.end(), out, out + 3);
  }
  for (; n > 0; p += std::min(n, chunk), n -= std::min(n, chunk)) sums.push_back(engine::Crc32c(p, std::min(n, chunk)));
}

struct Failure {
  int err = 0;
  std::string syscall, detail;
};

long Futex(std::atomic<uint32_t>* addr, int op, uint32_t val, const timespec* ts) {
  return syscall(SYS_futex, reinterpret_cast<uint32_t*>(addr), op, val, ts, nullptr, 0);
}

// The slots between the reader (the calling thread: process_vm_readv, zero
// pages) and the writer thread. A filled slot has two parts of work: its
// pwrite into the page cache (at the slot's own file offset) and its
// checksums (CRC32C of each chunk, for lr-checksums: computed on the pages
// as they are dumped instead of a read pass over the file afterwards; a
// slot always starts on a chunk boundary and, but for the last, ends on one
// (RunDump's carry), so its chunks are whole). Either thread may do either
// part: the writer thread writes the oldest slot, else checksums one; the
// reader, finding no free slot, checksums one, else writes one itself. So
// the reader never waits for the writer: on two idle CPUs the copy takes
// about the time of its larger half, and on a loaded machine (a sleeping
// thread may wait milliseconds for a CPU after its wake-up) it degrades to
// the inline copy instead of stalling on hand-offs. The idle writer spins
// briefly, then sleeps on a futex. Inline (LR_DUMP_INLINE=1, or one CPU):
// no writer thread.
class Writer {
 public:
  // crc_chunk: 0, or the checksum chunk size (bytes).
  Writer(int fd, uint64_t offset, size_t slot_bytes, uint64_t crc_chunk) : fd_(fd), crc_chunk_(static_cast<size_t>(crc_chunk)), next_off_(offset) {
    for (auto& b : buffers_) b.reset(static_cast<char*>(aligned_alloc(kPage, slot_bytes)));
    const char* e = getenv("LR_DUMP_INLINE");
    const bool inline_copy = e && *e ? *e == '1' : sysconf(_SC_NPROCESSORS_ONLN) < 2;
    if (!inline_copy) thread_ = std::thread([this] { Run(); });
  }
  ~Writer() { Finish(); }

  // A slot to fill (the reader's until Submit); SIZE_MAX once a write failed.
  size_t AcquireSlot() {
    for (;;) {
      if (failed_.load(std::memory_order_acquire)) return SIZE_MAX;
      for (size_t i = 0; i < kBuffers; i++) {
        uint32_t f = kFree;
        if (state_[i].compare_exchange_strong(f, kFilling, std::memory_order_acq_rel)) return i;
      }
      // None free: help.
      if (!Help(kSum) && !Help(kWrite)) WaitFreed();
    }
  }
  // Hands `len` bytes of the slot `i` (from AcquireSlot) over.
  void Submit(size_t i, size_t len) {
    off_[i] = next_off_;
    len_[i] = len;
    seq_[i] = next_seq_++;
    next_off_ += len;
    parts_[i].store(crc_chunk_ ? 2 : 1, std::memory_order_seq_cst);
    claim_[i][kWrite].store(0, std::memory_order_seq_cst);
    claim_[i][kSum].store(crc_chunk_ ? 0 : 1, std::memory_order_seq_cst);
    if (!thread_.joinable()) {
      state_[i].store(kFilled, std::memory_order_release);
      while (Help(kWrite) || Help(kSum)) {
      }
      return;
    }
    state_[i].store(kFilled, std::memory_order_seq_cst);
    WakeWriter();
  }
  // Every part of every filled slot done (the reader helps), then the writer joined.
  void Finish() {
    if (finished_) return;
    finished_ = true;
    for (;;) {
      while (Help(kWrite) || Help(kSum)) {
      }
      bool busy = false;
      for (size_t i = 0; i < kBuffers; i++) busy |= state_[i].load(std::memory_order_seq_cst) == kFilled;
      if (!busy) break;
      WaitFreed();  // a part the writer is doing
    }
    if (thread_.joinable()) {
      done_.store(1, std::memory_order_seq_cst);
      WakeWriter();
      thread_.join();
    }
  }
  bool Failed(Failure* f) {
    if (failed_.load(std::memory_order_acquire)) *f = failure_;
    return failed_.load(std::memory_order_acquire);
  }
  char* Slot(size_t s) { return buffers_[s].get(); }
  uint64_t Written() const { return written_.load(std::memory_order_acquire); }
  // The checksums of every slot, in file order (after Finish).
  std::vector<uint32_t> Sums() {
    std::vector<uint32_t> out;
    for (auto& v : sums_) out.insert(out.end(), v.begin(), v.end());
    return out;
  }

 private:
  enum : uint32_t { kFree, kFilling, kFilled };
  enum Part : size_t { kWrite, kSum };
  static constexpr unsigned kSpins = 256;                  // ~10-20 µs of pause (~140 cycles each)
  static constexpr timespec kNap = {0, 50 * 1000 * 1000};  // re-check now and then, whatever happens

  // Claims part `part` of the oldest filled slot that still needs it, does
  // it, and frees the slot when it was its last part. False when none.
  bool Help(Part part) {
    for (;;) {
      size_t best = SIZE_MAX;
      for (size_t i = 0; i < kBuffers; i++)
        if (state_[i].load(std::memory_order_acquire) == kFilled && claim_[i][part].load(std::memory_order_acquire) == 0 &&
            (best == SIZE_MAX || seq_[i] < seq_[best]))
          best = i;
      if (best == SIZE_MAX) return false;
      uint32_t z = 0;
      if (!claim_[best][part].compare_exchange_strong(z, 1, std::memory_order_seq_cst)) continue;
      // A stale look may have claimed a slot being handed over again (its
      // claims reset, not yet kFilled): give the claim back.
      if (state_[best].load(std::memory_order_seq_cst) != kFilled) {
        claim_[best][part].store(0, std::memory_order_seq_cst);
        continue;
      }
      if (part == kWrite) Write(best);
      else Sum(best);
      if (parts_[best].fetch_sub(1, std::memory_order_acq_rel) == 1) {
        state_[best].store(kFree, std::memory_order_seq_cst);
        freed_.fetch_add(1, std::memory_order_seq_cst);
        if (reader_waits_.load(std::memory_order_seq_cst)) Futex(&freed_, FUTEX_WAKE_PRIVATE, 1, nullptr);
      }
      return true;
    }
  }
  void WaitFreed() {
    const uint32_t v = freed_.load(std::memory_order_seq_cst);
    reader_waits_.store(1, std::memory_order_seq_cst);
    bool any_free = false;
    for (size_t i = 0; i < kBuffers; i++) any_free |= state_[i].load(std::memory_order_seq_cst) == kFree;
    if (!any_free && freed_.load(std::memory_order_seq_cst) == v) Futex(&freed_, FUTEX_WAIT_PRIVATE, v, &kNap);
    reader_waits_.store(0, std::memory_order_relaxed);
  }
  // Every event the writer may sleep through changes writer_seq_ (its futex word).
  void WakeWriter() {
    writer_seq_.fetch_add(1, std::memory_order_seq_cst);
    if (writer_waits_.load(std::memory_order_seq_cst)) Futex(&writer_seq_, FUTEX_WAKE_PRIVATE, 1, nullptr);
  }

  void Run() {
    for (unsigned spins = 0;; spins++) {
      const uint32_t seq = writer_seq_.load(std::memory_order_seq_cst);
      if (Help(kWrite) || Help(kSum)) {
        spins = 0;
        continue;
      }
      if (done_.load(std::memory_order_seq_cst)) return;
      if (spins < kSpins) {
        __builtin_ia32_pause();
        continue;
      }
      writer_waits_.store(1, std::memory_order_seq_cst);
      if (writer_seq_.load(std::memory_order_seq_cst) == seq) Futex(&writer_seq_, FUTEX_WAIT_PRIVATE, seq, &kNap);
      writer_waits_.store(0, std::memory_order_relaxed);
    }
  }

  // Writes slot i at its offset; the first failure is kept, later writes are skipped.
  void Write(size_t i) {
    const char* p = buffers_[i].get();
    size_t len = len_[i];
    uint64_t off = off_[i];
    while (len > 0 && !failed_.load(std::memory_order_relaxed)) {
      ssize_t n = pwrite(fd_, p, len, static_cast<off_t>(off));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        std::lock_guard<std::mutex> g(mu_);
        if (!failed_.load(std::memory_order_relaxed)) {
          failure_ = {n < 0 ? errno : EIO, "pwrite", "pages file at offset " + std::to_string(off)};
          failed_.store(true, std::memory_order_release);
        }
        return;
      }
      written_.fetch_add(static_cast<uint64_t>(n), std::memory_order_acq_rel);
      p += n;
      off += static_cast<uint64_t>(n);
      len -= static_cast<size_t>(n);
    }
  }
  void Sum(size_t i) {
    if (failed_.load(std::memory_order_relaxed)) return;
    std::vector<uint32_t> sums;
    ChunkSums(reinterpret_cast<const uint8_t*>(buffers_[i].get()), len_[i], crc_chunk_, sums);
    std::lock_guard<std::mutex> g(mu_);
    if (sums_.size() <= seq_[i]) sums_.resize(seq_[i] + 1);
    sums_[seq_[i]] = std::move(sums);
  }

  struct FreeDeleter {
    void operator()(char* p) const { free(p); }
  };
  int fd_;
  size_t crc_chunk_;
  uint64_t next_off_, next_seq_ = 0;  // reader only
  std::unique_ptr<char, FreeDeleter> buffers_[kBuffers];
  // Set by the reader before the slot's kFilled store (release), read after seeing kFilled.
  uint64_t off_[kBuffers] = {}, seq_[kBuffers] = {};
  size_t len_[kBuffers] = {};
  std::atomic<uint32_t> state_[kBuffers] = {};
  std::atomic<uint32_t> claim_[kBuffers][2] = {};  // per part: 0 to do, 1 claimed or not needed
  std::atomic<uint32_t> parts_[kBuffers] = {};     // parts not yet done
  std::atomic<uint32_t> done_{0}, freed_{0}, writer_seq_{0}, reader_waits_{0}, writer_waits_{0};
  std::atomic<uint64_t> written_{0};
  std::atomic<bool> failed_{false};
  std::mutex mu_;
  std::vector<std::vector<uint32_t>> sums_;  // by slot sequence number (mu_)
  Failure failure_;                          // written before failed_ is released (mu_)
  std::thread thread_;
  bool finished_ = false;
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
// (dumpPages) or on a worker thread (dumpPagesAsync) alike. Each pagemap
// window's selected pages are read into the current slot, all-zero pages
// squeezed out in place, and the slot handed to the writer once it holds a
// window's worth. With checksums, a slot is handed over only up to its last
// chunk boundary: the pages after it (the carry, less than a chunk) start
// the next slot, so every chunk is checksummed whole, in one place.
void RunDump(const DumpJob& job, DumpDone& out) {
  const int32_t pid = job.pid;
  const int mem_fd = job.mem_fd, pm_fd = job.pm_fd, pages_fd = job.pages_fd;
  const std::vector<uint64_t>& regions = job.regions;
  const uint64_t unit = job.crc_chunk ? job.crc_chunk / kPage : 1;                    // pages per chunk
  const uint64_t threshold = (std::max(kChunkPages, unit) + unit - 1) / unit * unit;  // hand over at this fill
  const uint64_t capacity = threshold + kChunkPages;                                  // + one window
  std::vector<uint64_t>& runs = out.runs;
  Failure& fail = out.fail;
  bool& failed = out.failed;
  auto set_fail = [&](int err, const char* sc, std::string detail) {
    failed = true;
    fail = {err, sc, std::move(detail)};
  };
  Writer w(pages_fd, job.pages_off, capacity * kPage, job.crc_chunk);
  size_t slot = w.AcquireSlot();
  char* buf = slot == SIZE_MAX ? nullptr : w.Slot(slot);
  uint64_t fill = 0;  // pages in the current slot
  // Hands the slot over (up to its last chunk boundary unless `last`) and
  // starts the next one with the rest.
  auto hand_over = [&](bool last) -> bool {
    const uint64_t keep = last ? fill : fill - fill % unit;
    w.Submit(slot, keep * kPage);
    if (last) return true;
    const uint64_t rest = fill - keep;
    slot = w.AcquireSlot();
    if (slot == SIZE_MAX) {
      buf = nullptr;
      return false;
    }
    char* next = w.Slot(slot);  // the same buffer when inline
    if (rest) memmove(next, buf + keep * kPage, rest * kPage);
    buf = next;
    fill = rest;
    return true;
  };
  std::vector<uint64_t> pm(kChunkPages);
  std::vector<iovec> remote;
  for (size_t r = 0; r < regions.size() && !failed && buf; r += 3) {
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
        if (!PageTaken(pm[i], mode)) continue;
        char* a = reinterpret_cast<char*>(base + i * kPage);
        if (!remote.empty() && static_cast<char*>(remote.back().iov_base) + remote.back().iov_len == a)
          remote.back().iov_len += kPage;
        else
          remote.push_back(iovec{a, kPage});
      }
      if (remote.empty()) continue;
      // Read the selected pages packed into the slot after its fill.
      char* dst = buf + fill * kPage;
      size_t total = 0;
      for (const iovec& v : remote) total += v.iov_len;
      size_t done = 0, k = 0, k_off = 0;
      while (done < total) {
        size_t cnt = std::min(kIovMax, remote.size() - k);
        iovec first_iov = remote[k];
        first_iov.iov_base = static_cast<char*>(first_iov.iov_base) + k_off;
        first_iov.iov_len -= k_off;
        std::swap(remote[k], first_iov);
        iovec l{dst + done, total - done};
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
          if (!PreadFull(mem_fd, dst + done, kPage, a)) {
            set_fail(errno, "pread", "/proc/" + std::to_string(pid) + "/mem at " + Hex(a));
            break;
          }
          g = kPage;
        }
        done += g;
        AdvanceIovCursor(remote, k, k_off, g);
      }
      if (failed) break;
      // Keep the non-zero pages (all of them in mode all), squeezed together.
      char* to = dst;
      const char* from = dst;
      for (const iovec& v : remote) {
        const uint64_t va0 = reinterpret_cast<uint64_t>(v.iov_base);
        for (size_t off = 0; off < v.iov_len; off += kPage, from += kPage) {
          out.scanned++;
          if (mode != kModeAll && PageIsZero(from)) {
            out.zero++;
            continue;
          }
          if (to != from) memcpy(to, from, kPage);
          to += kPage;
          const uint64_t va = va0 + off;
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
      fill += static_cast<uint64_t>(to - dst) / kPage;
      if (fill >= threshold && !hand_over(false)) break;  // writer failed; reported below
    }
  }
  if (buf && !failed) hand_over(true);
  w.Finish();
  Failure wf;
  if (w.Failed(&wf) && !failed) {
    failed = true;
    fail = wf;
  }
  out.written = w.Written();
  if (job.crc_chunk) {
    out.sums = w.Sums();
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
