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

enum EventType : uint8_t { kEvFork, kEvRemap, kEvRemove, kEvUnmap, kEvNeed, kEvPrefetched, kEvComplete, kEvExit, kEvError, kEvWarmed, kEvLinkError };

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
  bool completeSent = false;
  ProcStats st;
};

// A GET sent on a native page-server link and not answered yet.
struct RemoteGet {
  uint32_t proc;
  int32_t pid;
  uint64_t addr;       // run-time address of the first page (as requested)
  uint64_t imageAddr;  // dump-time address sent in the GET
  uint64_t pages;
  uint64_t t0;  // when the fault was read (service time)
};

// A connected page-server socket (CRIU page-server protocol, lazy GETs)
// owned by one worker: the worker that reads a remote fault writes the GET
// and reads the reply itself, with no JavaScript hop. Replies come strictly
// in request order (FIFO `out`). Any error, stall or malformed reply fails
// the link: its unanswered GETs become 'need' events (the JS path) and a
// 'link-error' event asks TypeScript for a fresh socket. Guarded by `mu`;
// lock order Proc::mu -> RemoteLink::mu -> evMu_ (a reply is handed to the
// process only after `mu` is released).
struct RemoteLink {
  std::mutex mu;
  int fd = -1;
  std::deque<RemoteGet> out;
  // Reply being assembled: header bytes, then `data` (M pages).
  uint8_t hdr[32];
  size_t hdrGot = 0;
  std::vector<uint8_t> data;
  size_t dataGot = 0;
  bool inData = false;
  std::vector<uint8_t> stage;  // receive buffer for small replies
  uint64_t lastNs = 0;      // last progress (byte received, or first GET sent on an idle link)
  uint64_t lastSendNs = 0;  // busy-poll for the reply until lastSendNs + spinNs
  uint64_t stallNs = 0;
  uint64_t spinNs = 0;
  // Counters (cumulative over every socket attached to this slot).
  uint64_t gets = 0, pages = 0, shortReplies = 0, failures = 0, attached = 0;
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

struct LinkStats {
  bool attached;
  uint64_t outstanding, gets, pages, shortReplies, failures, attaches;
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
  // remotePid > 0: remote faults of this process (and its forked children)
  // are fetched on its worker's native link when one is attached.
  int Adopt(int uffd, int pidfd, std::vector<Piece>&& ranges, uint32_t* handle, const char** what,
            int32_t remotePid = 0);
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
  int PendingEvents(Proc* p);
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
  // 0, or -errno when the uffd could not be watched (p stays in procs_; the caller decides).
  int AddProc(std::shared_ptr<Proc> p);
  const uint8_t* SrcPtr(const Span& s, uint64_t start, uint64_t at);
  bool Verify(Proc* p, uint32_t source, uint64_t off, uint64_t len);
  int SupplyLocked(Proc* p, uint64_t imageAddr, const uint8_t* data, uint64_t len, uint64_t hint, int path,
                   uint64_t* copied);
  bool SendGet(Worker* w, const RemoteGet& g);
  bool SendGetLocked(Worker* w, const RemoteGet& g);
  void FailLinkLocked(Worker* w, int err, const char* syscall, const std::string& msg);
  void ReadLink(Worker* w);
  void CheckLinkStall(Worker* w, uint64_t now);

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
