// The fault engine core (no Node-API here): worker threads that poll many
// userfaultfds, serve page faults from per-process interval maps, apply
// fork/remap/remove/unmap events in kernel order, run background prefetch
// when no fault is pending, and queue events for JavaScript. The Node-API
// wrapper (engine_wrap.cc) owns one Engine and drains its event queue.
#pragma once

#include <stdint.h>

#include <atomic>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "engine/intervals.h"

struct uffd_msg;

namespace lr::engine {

struct Source {
  std::string path;
  const uint8_t* base = nullptr;  // read-only shared mapping (nullptr if empty)
  uint64_t size = 0;              // mapped length (file size rounded up to pages)
  uint64_t fileSize = 0;
  // Page checksums (issue 9): CRC32C of each `chunk` bytes of the file; a
  // chunk is checked the first time anything is served from it, then its bit
  // in `verified` is set (shared by every process served from this source).
  std::vector<uint32_t> sums;
  uint64_t chunk = 0;
  std::unique_ptr<std::atomic<uint64_t>[]> verified;
};

enum EventType : uint8_t { kEvFork, kEvRemap, kEvRemove, kEvUnmap, kEvNeed, kEvPrefetched, kEvComplete, kEvExit, kEvError, kEvWarmed };

struct Event {
  EventType type;
  uint32_t proc = 0;
  uint32_t child = 0;
  uint64_t a = 0, b = 0, c = 0;  // meaning per type (see engine_wrap.cc)
  int err = 0;
  std::string syscall, message;
};

constexpr int kHistBuckets = 64;

struct ProcStats {
  uint64_t faults = 0;        // fault messages read
  uint64_t served = 0;        // faults resolved by a copy/zeropage we issued
  uint64_t ignored = 0;       // faults on pages already in flight (remote)
  uint64_t unexpected = 0;    // faults outside every lazy range (zero page)
  uint64_t zeroPages = 0;     // pages placed with UFFDIO_ZEROPAGE
  uint64_t copiedPages = 0;   // pages copied because of a fault (incl. fault-around)
  uint64_t pushedPages = 0;   // pages copied by prefetch
  uint64_t suppliedPages = 0; // pages copied by supply() (remote)
  uint64_t bytes = 0;         // bytes copied (all paths)
  uint64_t eagain = 0, eexist = 0, enoent = 0;
  uint64_t needs = 0;
  uint64_t hist[kHistBuckets] = {};  // fault service time, bucket i = [2^i, 2^(i+1)) ns
};

struct Fault {
  uint64_t addr;
  uint64_t t0;
};

struct PrefetchReq {
  uint64_t start, end, cur, copied;
};

// One entry of the fault log: what was placed where and why. `fault` is the
// faulting page for fault entries (0 for pushes), so a working set can be
// recorded exactly even with fault-around.
enum LogKind : uint8_t { kLogFault = 0, kLogZero = 1, kLogPush = 2 };
struct LogEntry {
  uint64_t tNs;   // CLOCK_MONOTONIC
  uint64_t start;
  uint64_t fault;
  uint32_t proc;
  uint32_t pages;
  uint8_t kind;
};

struct Worker;

struct Proc {
  uint32_t handle = 0;
  int uffd = -1;
  int pidfd = -1;
  Worker* worker = nullptr;
  std::mutex mu;
  enum State { kLive, kExited, kFailed, kReleased } state = kLive;
  IntervalMap lazy;
  IntervalMap inflight;  // remote pages announced with a 'need' event
  std::deque<Fault> pending;
  std::deque<PrefetchReq> prefetch;
  // Working-set ranges copied before any background prefetch, in order
  // (faults still go first); one 'warmed' event when the queue drains.
  std::deque<PrefetchReq> first;
  uint64_t firstCopied = 0;
  std::atomic<bool> hasWork{false};  // pending faults, working set or prefetch (read without mu)
  bool completeSent = false;
  ProcStats st;
};

struct Worker {
  unsigned index = 0;
  int ep = -1;
  int evfd = -1;
  std::thread th;
  std::mutex mu;
  std::vector<std::shared_ptr<Proc>> procs;
};

struct ProcSnapshot {
  uint32_t handle;
  int state;
  uint64_t lazyBytes;
  ProcStats st;
};

class Engine {
 public:
  struct Options {
    unsigned threads = 1;
    uint64_t faultAroundPages = 1;
    uint64_t spinMicros = 100;
    std::vector<int> cpus;  // worker i runs on cpus[i % size] when not empty
  };
  // `notify` is called (from any thread) when the event queue goes from
  // empty to non-empty; the wrapper then drains with TakeEvents().
  Engine(const Options& o, std::function<void()> notify);
  ~Engine();

  // Each returns 0 or -errno; `what` names the failing call.
  // `sums` (may be empty: no verification) are CRC32C per `chunk` bytes.
  int AddSource(const std::string& path, uint32_t* id, uint64_t* size, const char** what,
                std::vector<uint32_t>&& sums = {}, uint64_t chunk = 0);
  const Source* GetSource(uint32_t id);
  int Adopt(int uffd, int pidfd, std::vector<Piece>&& ranges, uint32_t* handle, const char** what);
  std::shared_ptr<Proc> Find(uint32_t handle);
  int Supply(uint32_t handle, uint64_t imageAddr, const uint8_t* data, uint64_t len, uint64_t* copied);
  int Prefetch(uint32_t handle, uint64_t start, uint64_t len);
  // Queues [start, end) pairs ahead of every prefetch, kept in this order.
  int PrefetchFirst(uint32_t handle, const std::vector<std::pair<uint64_t, uint64_t>>& ranges);
  // Fault log: a bounded ring (capacity 0 = off). When full the oldest entry
  // is dropped and counted; the caller drains in batches.
  void SetLogCapacity(size_t cap);
  void DrainLog(std::vector<LogEntry>* out, uint64_t* dropped);
  int Release(uint32_t handle);
  int Kill(uint32_t handle);
  // A duplicate of the process's uffd for the caller (the daemon-death
  // watchdog takes its own copy from it); -ESRCH once the uffd is closed.
  int DupUffd(uint32_t handle, int* fd);
  std::vector<ProcSnapshot> Snapshot();
  std::vector<uint64_t> ThreadCpuNs();
  void TakeEvents(std::vector<Event>* out);
  void Stop();  // flag, wake, join, close every fd; idempotent
  bool stopped() const { return stopped_; }

 private:
  enum FillResult { kFillDone, kFillRetry, kFillDead };
  void Run(Worker* w);
  bool HandleUffd(Proc* p);
  bool ReadMessages(Proc* p, bool queueFaults);
  void ApplyEvent(Proc* p, const ::uffd_msg& m);
  bool ServePending(Proc* p);
  int ServeFault(Proc* p, const Fault& f);
  FillResult Fill(Proc* p, uint64_t start, uint64_t end, Kind kind, const uint8_t* src, int path, uint64_t* copied);
  bool DoPrefetch(Worker* w);
  bool DoFirst(Proc* p);
  void Log(Proc* p, uint64_t start, uint64_t pages, uint8_t kind, uint64_t fault);
  void Probe(Worker* w);
  void MarkExited(Proc* p);
  void Fail(Proc* p, int err, const char* syscall, const std::string& msg);
  void CheckComplete(Proc* p);
  void Emit(Event&& e);
  void Poke(Worker* w);
  Worker* PickWorker();
  uint32_t AddProc(std::shared_ptr<Proc> p);
  const uint8_t* SrcPtr(const Span& s, uint64_t start, uint64_t at);
  bool Verify(Proc* p, uint32_t source, uint64_t off, uint64_t len);

  Options opt_;
  std::function<void()> notify_;
  std::vector<std::unique_ptr<Worker>> workers_;
  std::atomic<bool> stop_{false};
  bool stopped_ = false;
  std::mutex srcMu_;
  std::vector<std::unique_ptr<Source>> sources_;
  std::mutex procMu_;
  std::map<uint32_t, std::shared_ptr<Proc>> procs_;
  uint32_t nextHandle_ = 1;
  std::mutex evMu_;
  std::vector<Event> events_;
  void* guard_ = nullptr;  // PROT_NONE page: source of the liveness probe copy
  std::mutex logMu_;
  std::vector<LogEntry> log_;  // ring storage, size = capacity
  size_t logHead_ = 0, logCount_ = 0;
  uint64_t logDropped_ = 0;
  std::atomic<bool> logOn_{false};
};

}  // namespace lr::engine
