// The fault engine core (no Node-API here): worker threads that poll many
// userfaultfds, serve page faults from per-process interval maps, apply
// fork/remap/remove/unmap events in kernel order, run background prefetch
// when no fault is pending, and queue events for JavaScript. The Node-API
// wrapper (init.cc, class NativeFaultEngine) owns one Engine and drains its
// event queue. The Engine's methods live one concern per file:
//   engine.cc       lifecycle, worker threads and their poll loop, liveness probe
//   procs.cc        adopting, finding, releasing, killing processes; snapshots
//   sources.cc      page sources (mapped pages files) and their checksums
//   events.cc       reading uffd messages, applying events, exit/failure, the event queue
//   fault.cc        serving a fault: lookup, UFFDIO_COPY/ZEROPAGE (Fill), errno rules
//   prefetch.cc     background copies: the working set first, then prefetch ranges
//   supply.cc       remote pages handed in (supply() from JS, native link replies)
//   shared.cc       lazily served shared memory objects (kShared spans)
//   remote_link.cc  native page-server links (remote_link.h)
//   pull.cc         native bulk pulls of remote pages (pull.h)
//   fault_log.cc    the fault log ring (fault_log.h)
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

#include "engine/fault_log.h"
#include "engine/intervals.h"
#include "engine/pull.h"
#include "engine/remote_link.h"

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

// Counters of one shared memory object (pages).
struct SharedStats {
  uint64_t copiedPages = 0;    // image data placed with UFFDIO_COPY (each page at most once)
  uint64_t zeroPages = 0;      // holes placed with UFFDIO_ZEROPAGE
  uint64_t refilledPages = 0;  // served pages the program punched out, faulted again: zero page
  uint64_t presentPages = 0;   // found present (EEXIST) when first placed: counted served
  uint64_t poisonedPages = 0;  // discarded before they were served (their processes killed)
  uint64_t servedPages = 0;    // pages whose served bit is set
};

// A shared memory object (MAP_SHARED anonymous memory or a memfd) whose
// pages the restorer left out: every process mapping it has those VMAs
// registered MISSING, and UFFDIO_COPY through any of them fills the one
// page cache for all. `mu` orders every placement of its pages (taken under
// a Proc::mu, never the other way round).
struct SharedObject {
  std::string name;
  uint64_t size = 0;   // bytes, page-rounded
  IntervalMap data;    // object offset -> kFile span; holes are absent (zero)
  std::mutex mu;
  std::vector<uint64_t> served;    // one bit per page: placed (or found present) once
  std::vector<uint64_t> poisoned;  // one bit per page: discarded before it was served
  SharedStats st;
  static bool Bit(const std::vector<uint64_t>& b, uint64_t i) { return (b[i / 64] >> (i % 64)) & 1; }
  static void Set(std::vector<uint64_t>& b, uint64_t i) { b[i / 64] |= 1ull << (i % 64); }
};

enum EventType : uint8_t { kEvFork, kEvRemap, kEvRemove, kEvUnmap, kEvNeed, kEvPrefetched, kEvComplete, kEvExit, kEvError, kEvWarmed, kEvLinkError, kEvPullEnd };

struct Event {
  EventType type;
  uint32_t proc = 0;
  uint32_t child = 0;
  uint64_t a = 0, b = 0, c = 0;  // meaning per type (see NativeFaultEngine::Deliver in init.cc)
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
  uint64_t remoteGets = 0;    // GETs this process sent on a native page-server link
  uint64_t remotePages = 0;   // pages copied from native link replies
  uint64_t hist[kHistBuckets] = {};  // fault service time, bucket i = [2^i, 2^(i+1)) ns
};

struct Fault {
  uint64_t addr;
  uint64_t t0;
};

struct PrefetchReq {
  uint64_t start, end, cur, copied;
  // A window that follows faults (Engine::Prefetch with follow): a served
  // fault inside it moves `cur` to the end of the fault's window (the push
  // goes on ahead of a program reading in order), and at its end the window
  // starts over from `start` while the pass before copied anything (pages
  // skipped by a jump are taken then), so it ends only when nothing local is
  // lazy in it or a whole pass copied nothing.
  bool follow = false;
  uint64_t passCopied = 0;
};

// Which path placed pages (ProcStats counters they add to).
enum class CopyPath : uint8_t {
  kFault,     // a fault and its fault-around: copiedPages
  kPrefetch,  // the working set or background prefetch: pushedPages
  kSupply,    // supply() from JavaScript: suppliedPages
  kLink,      // a reply on the worker's native page-server link: remotePages
};

struct Worker;

struct Proc {
  uint32_t handle = 0;
  int32_t remotePid = 0;  // dst_id of its GETs on a native link (0: remote faults go to JS)
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
  uint64_t lastRemoteFault = 0;  // end of the last remote fault window (a bulk pull jumps there)
  uint64_t remaps = 0;           // mremap events applied (a pull's addresses may have moved)
  // Shared by the bulk pulls of this process (pull.cc): one cursor, so
  // several streams ask for different ranges.
  struct PullPass {
    uint64_t cursor = 0;       // next run-time address a pull looks at
    uint64_t seenFault = 0;    // lastRemoteFault last jumped to
    bool wrapped = false;      // a pass started over from the lowest address
    uint64_t lazyAtWrap = 0;   // lazy.bytes() when it did (anything placed since, by anyone, is progress)
    uint64_t pages = 0;        // pages placed by every pull of this process
    uint64_t outstanding = 0;  // GETs of every stream of this process not answered yet
  } pull;
  bool completeSent = false;
  ProcStats st;

  // hasWork from the three queues (call with mu held after changing one).
  void UpdateHasWork() { hasWork = !pending.empty() || !prefetch.empty() || !first.empty(); }
  // Forgets every queued fault and copy (the process is not served any more).
  void DropQueues() {
    pending.clear();
    prefetch.clear();
    first.clear();
    UpdateHasWork();
  }
};

struct Worker {
  unsigned index = 0;
  int ep = -1;
  int evfd = -1;
  std::thread th;
  std::mutex mu;
  std::vector<std::shared_ptr<Proc>> procs;
  RemoteLink link;
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
  // Checks, on a thread of its own, the chunks of `source` that hold the
  // (offset, length) spans, in this order: data about to be needed (a
  // recorded working set, before its process is handed over), so serving it
  // later only copies. A chunk that does not match is left unchecked (the
  // serving path checks it again and fails that process). Stop() stops and
  // joins these threads before the sources go. 0 or -errno.
  int VerifyAhead(uint32_t source, std::vector<std::pair<uint64_t, uint64_t>>&& spans);
  // remotePid > 0: remote faults of this process (and its forked children)
  // are fetched on its worker's native link when one is attached.
  int Adopt(int uffd, int pidfd, std::vector<Piece>&& ranges, uint32_t* handle, const char** what,
            int32_t remotePid = 0);
  // A shared memory object of `size` bytes; `data` are its image runs keyed
  // by object offset (kFile spans of added sources), sorted, disjoint.
  int AddSharedObject(const std::string& name, uint64_t size, std::vector<Piece>&& data, uint32_t* id,
                      const char** what);
  std::vector<std::pair<std::string, SharedStats>> SharedSnapshot();
  std::shared_ptr<Proc> Find(uint32_t handle);
  int Supply(uint32_t handle, uint64_t imageAddr, const uint8_t* data, uint64_t len, uint64_t* copied);
  // Native page-server links, one slot per worker thread. Attach dups `fd`
  // (a connected stream socket; the caller keeps and closes its own fd);
  // replacing a live link fails its unanswered GETs over to 'need' events.
  // stallMs: a link with unanswered GETs and nothing received this long fails
  // (ETIMEDOUT); spinMicros: busy-poll this long for a reply before sleeping.
  int AttachLink(unsigned slot, int fd, uint64_t stallMs, uint64_t spinMicros, const char** what);
  int DetachLink(unsigned slot);
  std::vector<LinkStats> Links();
  unsigned threads() const { return static_cast<unsigned>(workers_.size()); }
  // Bulk pull of a process's remote pages (pull.cc) on its own thread over
  // `fd` (a connected page-server stream; the engine keeps a duplicate):
  // GETs of getPages, at most windowPages outstanding, in address order
  // from the latest remote fault on; ends with a 'pull-end' event (every
  // remote page placed, the process gone, an error, or stopped).
  int StartPull(uint32_t handle, int fd, uint64_t getPages, uint64_t windowPages, uint64_t stallMs, uint32_t* id,
                const char** what);
  // Stops and joins the pull (no event); idempotent.
  int StopPull(uint32_t id);
  // {pages copied, GETs sent} of a running or ended pull; false if unknown.
  bool PullStats(uint32_t id, uint64_t* pages, uint64_t* gets);
  // follow: see PrefetchReq (one window over a whole process, no round trip per piece).
  int Prefetch(uint32_t handle, uint64_t start, uint64_t len, bool follow = false);
  // Queues [start, end) pairs ahead of every prefetch, kept in this order.
  int PrefetchFirst(uint32_t handle, const std::vector<std::pair<uint64_t, uint64_t>>& ranges);
  // Fault log: a bounded ring (capacity 0 = off). When full the oldest entry
  // is dropped and counted; the caller drains in batches.
  void SetLogCapacity(size_t cap) { log_.SetCapacity(cap); }
  void DrainLog(std::vector<LogEntry>* out, uint64_t* dropped) { log_.Drain(out, dropped); }
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
  // kServed also covers a fault ignored (already in flight) or handed to JS.
  enum class ServeResult { kServed, kRetryLater, kGone };
  enum class MmState { kSettled, kChanging, kGone };  // see PendingEvents()

  // engine.cc: the worker loop and what it shares
  void Run(Worker* w);
  void Probe(Worker* w);
  int ProbeCopy(Proc* p);
  void Poke(Worker* w);
  Worker* PickWorker();
  // 0, or -errno when the uffd could not be watched (p stays in procs_; the caller decides).
  int AddProc(std::shared_ptr<Proc> p);
  // events.cc
  bool ReadMessages(Proc* p);
  void ApplyEvent(Proc* p, const ::uffd_msg& m);
  void MarkExited(Proc* p);
  void Fail(Proc* p, int err, const char* syscall, const std::string& msg);
  void CheckComplete(Proc* p);
  void Emit(Event&& e);
  // fault.cc
  bool HandleUffd(Proc* p);
  bool ServePending(Proc* p);
  ServeResult ServeFault(Proc* p, const Fault& f);
  // `present` (optional) collects the ranges placed or found there (EEXIST).
  FillResult Fill(Proc* p, uint64_t start, uint64_t end, Kind kind, const uint8_t* src, CopyPath path,
                  uint64_t* copied, std::vector<std::pair<uint64_t, uint64_t>>* present = nullptr);
  MmState PendingEvents(Proc* p);
  // A fault's window [ws, we) was placed: a following push window goes on from there.
  static void FollowFault(Proc* p, uint64_t ws, uint64_t we);
  bool SourceBytes(Proc* p, uint64_t start, const Span& sp, uint64_t at, uint64_t len, const uint8_t** src);
  bool Verify(Proc* p, uint32_t source, uint64_t off, uint64_t len);
  // Chunk i of src: true when it was checked before or matches now (its bit is then set); *got = the CRC computed.
  static bool CheckChunk(const Source* src, uint64_t i, uint32_t* got);
  void Log(Proc* p, uint64_t start, uint64_t pages, LogKind kind, uint64_t fault) {
    log_.Add(p->handle, start, pages, kind, fault);
  }
  // prefetch.cc
  // True if it copied (or finished) something; *waited: a push piece was left for later because
  // maxPushers_ workers were pushing already.
  bool DoPrefetch(Worker* w, bool* waited);
  bool DoFirst(Proc* p);
  FillResult CopyPiece(Proc* p, const Piece& pc, uint64_t end, uint64_t* copied);
  // shared.cc
  SharedObject* GetShared(uint32_t id);
  // Places the kShared range [start, end) (sp.off = object offset of start);
  // faultPage: the page a thread waits on (0 for background copies).
  FillResult FillShared(Proc* p, uint64_t start, uint64_t end, const Span& sp, CopyPath path, uint64_t faultPage,
                        uint64_t* copied);
  // UFFD_EVENT_REMOVE took this kShared piece out of p's map.
  void SharedRemoved(Proc* p, const Piece& pc);
  // supply.cc
  int SupplyLocked(Proc* p, uint64_t imageAddr, const uint8_t* data, uint64_t len, uint64_t hint, CopyPath path,
                   uint64_t* copied);
  // remote_link.cc
  bool SendGet(Worker* w, const RemoteGet& g);
  bool SendGetLocked(Worker* w, const RemoteGet& g);
  void FailLinkLocked(Worker* w, int err, const char* syscall, const std::string& msg);
  void NeedAgain(RemoteLink& L);
  void ReadLink(Worker* w);
  void CheckLinkStall(Worker* w, uint64_t now);
  // pull.cc
  void RunPull(Pull* pl);
  int PullStep(Pull* pl, std::vector<uint8_t>& buf, std::string* why, const char** syscall);
  bool PullNext(Pull* pl, Pull::Get* g);
  void PullSupply(Pull* pl, const Pull::Get& g, const uint8_t* data, uint64_t len);
  void StopAllPulls();

  Options opt_;
  std::function<void()> notify_;
  std::vector<std::unique_ptr<Worker>> workers_;
  std::atomic<bool> stop_{false};
  // Workers copying a push piece right now, and how many may (half the CPUs, at least one).
  std::atomic<unsigned> pushers_{0};
  unsigned maxPushers_ = 1;
  bool stopped_ = false;
  std::mutex srcMu_;
  std::vector<std::unique_ptr<Source>> sources_;
  std::vector<std::unique_ptr<SharedObject>> shared_;  // guarded by srcMu_ (the vector, not the objects)
  std::mutex procMu_;
  std::map<uint32_t, std::shared_ptr<Proc>> procs_;
  uint32_t nextHandle_ = 1;
  std::mutex evMu_;
  std::vector<Event> events_;
  void* guard_ = nullptr;  // PROT_NONE page: source of the liveness probe copy
  FaultLog log_;
  std::mutex aheadMu_;
  std::vector<std::thread> ahead_;  // VerifyAhead threads, joined by Stop()
  std::mutex pullMu_;
  std::map<uint32_t, std::unique_ptr<Pull>> pulls_;
  uint32_t nextPull_ = 1;
};

}  // namespace lr::engine
