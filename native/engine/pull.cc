// Native bulk pulls (pull.h): the background transfer of post-copy. One
// thread per pull owns a duplicate of a page-server connection that carries
// nothing else, keeps up to windowPages of GETs outstanding (getPages each)
// and copies every reply into the process as it arrives, under the
// process's lock (a fault waits at most one reply's UFFDIO_COPY). What it
// asks for comes from the process's lazy map at the time of asking, in
// address order, jumping to just after the latest remote fault (so a
// program reading its memory in order finds the stream ahead of it); pages
// a fault or an earlier reply placed are not asked for again. A pass that
// reaches the end starts over from the lowest address once the replies of
// every stream of the process are in (a stream with none of its own out
// ends there; the last one carries on), until no remote page is lazy; so
// no stream asks again for pages another one's reply is bringing. Faults never wait for the pull: they
// keep their own GETs (native link or JS); whichever copy comes second
// finds the pages gone from the maps and is dropped, never copied twice.
//
// Replies are checked against the oldest GET (command, address, pid,
// 1 <= M <= N pages) before any byte is copied. Any error (connection
// lost, stall, bad reply) ends the pull with a 'pull-end' event carrying
// the errno: TypeScript then carries on through its own page-server client,
// which reconnects or, when the server is gone for good, kills the process.
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>

#include "engine/engine.h"
#include "engine/internal.h"

namespace lr::engine {
int Engine::StartPull(uint32_t handle, int fd, uint64_t getPages, uint64_t windowPages, uint64_t stallMs, uint32_t* id,
                      const char** what) {
  *what = "startPull";
  std::shared_ptr<Proc> sp = Find(handle);
  if (!sp) return -ESRCH;
  {
    std::lock_guard<std::mutex> g(sp->mu);
    if (sp->state != Proc::kLive) return -ESRCH;
    if (sp->remotePid <= 0) { *what = "startPull (the process has no remote pages)"; return -EINVAL; }
  }
  int type = 0;
  socklen_t tl = sizeof(type);
  if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &tl) < 0) { *what = "getsockopt(SO_TYPE)"; return -errno; }
  if (type != SOCK_STREAM) { *what = "startPull (not a stream socket)"; return -EINVAL; }
  auto pl = std::make_unique<Pull>();
  pl->proc = sp;
  pl->getPages = std::max<uint64_t>(1, getPages);
  pl->windowPages = std::max(pl->getPages, windowPages);
  pl->stallNs = (stallMs ? stallMs : 1) * 1000000ull;
  pl->fd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
  if (pl->fd < 0) { *what = "fcntl(F_DUPFD_CLOEXEC)"; return -errno; }
  int one = 1;
  (void)setsockopt(pl->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));  // ENOTSUP on a unix socket: fine
  pl->stopfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (pl->stopfd < 0) {
    int e = errno;
    close(pl->fd);
    *what = "eventfd";
    return -e;
  }
  Pull* raw = pl.get();
  {
    std::lock_guard<std::mutex> g(pullMu_);
    if (stop_) {
      close(pl->fd);
      close(pl->stopfd);
      return -ECANCELED;
    }
    pl->id = nextPull_++;
    *id = pl->id;
    pulls_[pl->id] = std::move(pl);
    raw->th = std::thread([this, raw] {
      pthread_setname_np(pthread_self(), "lr-pull");
      RunPull(raw);
    });
  }
  return 0;
}

int Engine::StopPull(uint32_t id) {
  std::unique_ptr<Pull> pl;
  {
    std::lock_guard<std::mutex> g(pullMu_);
    auto it = pulls_.find(id);
    if (it == pulls_.end()) return 0;
    pl = std::move(it->second);
    pulls_.erase(it);
  }
  pl->stop = true;
  uint64_t one = 1;
  (void)!write(pl->stopfd, &one, sizeof(one));
  if (pl->th.joinable()) pl->th.join();
  if (pl->fd >= 0) close(pl->fd);
  close(pl->stopfd);
  return 0;
}

bool Engine::PullStats(uint32_t id, uint64_t* pages, uint64_t* gets) {
  std::lock_guard<std::mutex> g(pullMu_);
  auto it = pulls_.find(id);
  if (it == pulls_.end()) return false;
  *pages = it->second->pages;
  *gets = it->second->gets;
  return true;
}

void Engine::StopAllPulls() {
  std::vector<uint32_t> ids;
  {
    std::lock_guard<std::mutex> g(pullMu_);
    for (auto& [id, pl] : pulls_) ids.push_back(id);
  }
  for (uint32_t id : ids) StopPull(id);
}

// The next GET of this pass (p->mu held): the first remote range still lazy
// at or after the cursor; false at the end of the pass while any stream of
// the process still has replies out (a stream with none of its own then
// ends: the others finish the pass, and the last one starts the next, so no
// page a stream has asked for is asked for again while its reply is on the
// way), or when nothing remote is lazy any more (or the process is not
// served).
bool Engine::PullNext(Pull* pl, Pull::Get* g) {
  Proc* p = pl->proc.get();
  if (p->state != Proc::kLive) return false;
  Proc::PullPass& ps = p->pull;
  if (p->lastRemoteFault != ps.seenFault) {
    ps.seenFault = p->lastRemoteFault;
    if (ps.seenFault > ps.cursor) ps.cursor = ps.seenFault;
  }
  for (int pass = 0; pass < 2; pass++) {
    uint64_t cur = ps.cursor;
    Piece pc;
    while (p->lazy.FirstIn(cur, UINT64_MAX, &pc)) {
      if (pc.span.kind != kRemote) {
        cur = pc.span.end;
        continue;
      }
      uint64_t pages = std::min((pc.span.end - pc.start) / kPage, pl->getPages);
      *g = {pc.start, pc.span.off, pages, p->remaps};
      ps.cursor = pc.start + pages * kPage;
      ps.outstanding++;
      return true;
    }
    // End of the pass: the next starts from the lowest address once every
    // reply of every stream is in (they may still place what is lazy there).
    if (ps.outstanding > 0) return false;
    if (ps.cursor == 0) return false;  // nothing lazy from the lowest address on: done
    // A whole pass while nothing was placed (by a pull, a fault or JS) and
    // remote pages stay lazy: no progress (TypeScript's path takes over).
    if (ps.wrapped && p->lazy.bytes() >= ps.lazyAtWrap) {
      pl->stuck = true;
      return false;
    }
    ps.wrapped = true;
    ps.lazyAtWrap = p->lazy.bytes();
    ps.cursor = 0;
  }
  return false;
}

// Copies a reply into the process (p->mu held): the parts of the requested
// run-time range still lazy or in flight whose dump-time address matches;
// after an mremap since the GET, by dump-time address wherever they are.
void Engine::PullSupply(Pull* pl, const Pull::Get& g, const uint8_t* data, uint64_t len) {
  Proc* p = pl->proc.get();
  if (p->state != Proc::kLive) return;
  uint64_t total = 0;
  bool moved = p->remaps != g.remaps;
  const uint64_t end = g.addr + len;
  int retries = 0;
  for (uint64_t cur = g.addr; !moved && cur < end && p->state == Proc::kLive;) {
    Piece a, b;
    bool fa = p->lazy.FirstIn(cur, end, &a), fb = p->inflight.FirstIn(cur, end, &b);
    if (!fa && !fb) break;
    const Piece& pc = fa && (!fb || a.start <= b.start) ? a : b;
    if (pc.span.kind != kRemote || pc.span.off != g.imageAddr + (pc.start - g.addr)) {
      cur = pc.span.end;
      continue;
    }
    uint64_t c = 0;
    FillResult r = Fill(p, pc.start, pc.span.end, kRemote, data + (pc.start - g.addr), CopyPath::kPrefetch, &c);
    if (c > 0) Log(p, pc.start, c / kPage, kLogPush, 0);
    total += c;
    if (r == kFillDead) return;
    if (r == kFillRetry) {
      // Events in flight: read them and try again a few times; what stays
      // lazy is asked for again by the next pass.
      if (!ReadMessages(p) || ++retries > 64) break;
      moved = p->remaps != g.remaps;
      continue;  // the same place again
    }
    cur = pc.span.end;
  }
  if (moved) {
    uint64_t c = 0;
    SupplyLocked(p, g.imageAddr, data, len, 0, CopyPath::kPrefetch, &c);  // also wakes and checks completion
    total += c;
  } else if (p->state == Proc::kLive) {
    if (!p->pending.empty()) {
      p->UpdateHasWork();
      Poke(p->worker);
    }
    CheckComplete(p);
  }
  pl->pages += total / kPage;
  p->pull.pages += total / kPage;
}

namespace {

// Waits until fd is ready for `events`: 1 ready, 0 stop requested, -ETIMEDOUT
// after deadlineNs (0: no deadline).
int WaitFd(const Pull* pl, short events, uint64_t deadlineNs) {
  for (;;) {
    if (pl->stop) return 0;
    int timeout = -1;
    if (deadlineNs) {
      uint64_t now = NowNs();
      if (now >= deadlineNs) return -ETIMEDOUT;
      timeout = static_cast<int>((deadlineNs - now) / 1000000) + 1;
    }
    struct pollfd f[2] = {{pl->fd, events, 0}, {pl->stopfd, POLLIN, 0}};
    int r = poll(f, 2, timeout);
    if (r < 0 && errno != EINTR) return -errno;
    if (pl->stop || (r > 0 && f[1].revents)) return 0;
    if (r > 0 && f[0].revents) return 1;
  }
}

// Exactly n bytes (1 done, 0 stopped, -errno; ECONNRESET at EOF).
int RecvAll(const Pull* pl, uint8_t* buf, size_t n) {
  size_t got = 0;
  uint64_t last = NowNs();
  while (got < n) {
    ssize_t k = recv(pl->fd, buf + got, n - got, MSG_DONTWAIT);
    if (k > 0) {
      got += static_cast<size_t>(k);
      last = NowNs();
      continue;
    }
    if (k == 0) return -ECONNRESET;
    if (errno == EINTR) continue;
    if (errno != EAGAIN) return -errno;
    int w = WaitFd(pl, POLLIN, last + pl->stallNs);
    if (w <= 0) return w;
  }
  return 1;
}

int SendAll(const Pull* pl, const uint8_t* buf, size_t n) {
  size_t sent = 0;
  while (sent < n) {
    ssize_t k = send(pl->fd, buf + sent, n - sent, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (k > 0) {
      sent += static_cast<size_t>(k);
      continue;
    }
    if (k < 0 && errno == EINTR) continue;
    if (k < 0 && errno != EAGAIN) return -errno;
    int w = WaitFd(pl, POLLOUT, NowNs() + pl->stallNs);
    if (w <= 0) return w;
  }
  return 1;
}

}  // namespace

// One round: fill the window with GETs, then take one reply. 1 = go on,
// 0 = ended (done or stopped), -errno = failed (*why says what).
int Engine::PullStep(Pull* pl, std::vector<uint8_t>& buf, std::string* why, const char** syscall) {
  Proc* p = pl->proc.get();
  while (pl->outPages < pl->windowPages) {
    Pull::Get g;
    bool more;
    {
      std::lock_guard<std::mutex> lk(p->mu);
      more = PullNext(pl, &g);
    }
    if (!more) break;
    // Counted in Proc::pull.outstanding from here until answered or the stream ends.
    pl->out.push_back(g);
    pl->outPages += g.pages;
    uint8_t h[pageserver::kHeaderSize];
    pageserver::EncodeHeader({pageserver::kCmdGet, g.pages, g.imageAddr, static_cast<uint64_t>(p->remotePid)}, h);
    int r = SendAll(pl, h, sizeof(h));
    if (r <= 0) {
      *syscall = "send";
      *why = "sending a GET";
      return r;
    }
    pl->gets++;
  }
  if (pl->out.empty()) {
    if (!pl->stuck) return 0;  // nothing remote is lazy any more
    *syscall = "ioctl(UFFDIO_COPY)";
    *why = "a whole pass over the remote pages placed none";
    return -EAGAIN;
  }
  uint8_t h[pageserver::kHeaderSize];
  int r = RecvAll(pl, h, sizeof(h));
  if (r <= 0) {
    *syscall = "recv";
    *why = r == -ETIMEDOUT ? "no reply from the page server for " + std::to_string(pl->stallNs / 1000000) + " ms"
                           : "reading a page-server reply";
    return r;
  }
  const Pull::Get g = pl->out.front();
  const pageserver::Header rh = pageserver::DecodeHeader(h);
  if (rh.cmd != pageserver::kCmdPresentReply || rh.vaddr != g.imageAddr ||
      rh.dstId != static_cast<uint64_t>(p->remotePid) || rh.pages == 0 || rh.pages > g.pages) {
    char b[160];
    snprintf(b, sizeof(b), "bad reply (cmd 0x%x, %llu pages at 0x%llx for pid %llu) to GET of %llu pages at 0x%llx",
             rh.cmd, (unsigned long long)rh.pages, (unsigned long long)rh.vaddr, (unsigned long long)rh.dstId,
             (unsigned long long)g.pages, (unsigned long long)g.imageAddr);
    *syscall = "recv";
    *why = b;
    return -EPROTO;
  }
  const size_t len = rh.pages * kPage;
  if (buf.size() < len) buf.resize(len);
  r = RecvAll(pl, buf.data(), len);
  if (r <= 0) {
    *syscall = "recv";
    *why = "reading a page-server reply";
    return r;
  }
  pl->out.pop_front();
  pl->outPages -= g.pages;
  // A short reply (the server stopped at the end of a stored run): the rest
  // stays lazy and is asked for again by a later pass.
  std::lock_guard<std::mutex> lk(p->mu);
  p->pull.outstanding--;
  PullSupply(pl, g, buf.data(), len);
  return p->state == Proc::kLive ? 1 : 0;
}

void Engine::RunPull(Pull* pl) {
  std::vector<uint8_t> buf(pl->getPages * kPage);
  std::string why;
  const char* syscall = "";
  int r;
  do r = PullStep(pl, buf, &why, &syscall);
  while (r == 1 && !pl->stop && !stop_);
  {
    // Its unanswered GETs stay lazy: the other streams' next pass (or a new pull) asks for them.
    std::lock_guard<std::mutex> lk(pl->proc->mu);
    pl->proc->pull.outstanding -= std::min<uint64_t>(pl->proc->pull.outstanding, pl->out.size());
    pl->out.clear();
    pl->outPages = 0;
  }
  // The server sees the stream end at once (StopPull only joins).
  close(pl->fd);
  pl->fd = -1;
  if (pl->stop || stop_) return;
  Event e{kEvPullEnd, pl->proc->handle};
  e.a = pl->id;
  e.b = pl->pages;
  if (r < 0) {
    e.err = -r;
    e.syscall = syscall;
    e.message = why;
  }
  Emit(std::move(e));
}

}  // namespace lr::engine
