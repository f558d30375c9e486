// Native page-server links, one slot per worker (remote_link.h): GETs are
// written by the worker that read the remote fault, replies are read and
// assembled in FIFO order on the same worker and copied into the process
// (supply.cc) with no JavaScript hop. Any failure hands the unanswered GETs
// back to the JS path as 'need' events.
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>

#include "engine/engine.h"
#include "engine/internal.h"

namespace lr::engine {
namespace {

constexpr size_t kLinkStage = 64 * 1024;  // receive buffer for small replies

}  // namespace

int Engine::AttachLink(unsigned slot, int fd, uint64_t stallMs, uint64_t spinMicros, const char** what) {
  *what = "attachLink";
  if (slot >= workers_.size()) return -EINVAL;
  int type = 0;
  socklen_t tl = sizeof(type);
  if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &tl) < 0) { *what = "getsockopt(SO_TYPE)"; return -errno; }
  if (type != SOCK_STREAM) { *what = "attachLink (not a stream socket)"; return -EINVAL; }
  int nfd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
  if (nfd < 0) { *what = "fcntl(F_DUPFD_CLOEXEC)"; return -errno; }
  int fl = fcntl(nfd, F_GETFL);
  if (fl < 0 || fcntl(nfd, F_SETFL, fl | O_NONBLOCK) < 0) { int e = errno; close(nfd); *what = "fcntl(O_NONBLOCK)"; return -e; }
  int one = 1;
  (void)setsockopt(nfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));  // ENOTSUP on a unix socket: fine
  Worker* w = workers_[slot].get();
  std::lock_guard<std::mutex> g(w->link.mu);
  RemoteLink& L = w->link;
  if (L.fd >= 0) FailLinkLocked(w, ECANCELED, "attachLink", "replaced by a new connection");
  struct epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = kTagLink;
  if (epoll_ctl(w->ep, EPOLL_CTL_ADD, nfd, &ev) < 0) { int e = errno; close(nfd); *what = "epoll_ctl"; return -e; }
  L.fd = nfd;
  L.hdrGot = L.dataGot = 0;
  L.inData = false;
  L.data.clear();
  L.stallNs = (stallMs ? stallMs : 1) * 1000000ull;
  L.spinNs = spinMicros * 1000ull;
  L.attached++;
  return 0;
}

int Engine::DetachLink(unsigned slot) {
  if (slot >= workers_.size()) return -EINVAL;
  Worker* w = workers_[slot].get();
  std::lock_guard<std::mutex> g(w->link.mu);
  if (w->link.fd < 0) return 0;
  RemoteLink& L = w->link;
  // Not a failure: unanswered GETs still go to the JS path, but no event.
  epoll_ctl(w->ep, EPOLL_CTL_DEL, L.fd, nullptr);
  close(L.fd);
  L.fd = -1;
  NeedAgain(L);
  return 0;
}

// Every unanswered GET of L becomes a 'need' event (the JS path asks again
// on its own connection; whatever was received for it is discarded, never
// partly copied), and L forgets them.
void Engine::NeedAgain(RemoteLink& L) {
  for (const RemoteGet& r : L.out) {
    Event e{kEvNeed, r.proc};
    e.a = r.addr;
    e.b = r.imageAddr;
    e.c = r.pages * kPage;
    Emit(std::move(e));
  }
  L.out.clear();
}

std::vector<LinkStats> Engine::Links() {
  std::vector<LinkStats> v;
  for (auto& w : workers_) {
    std::lock_guard<std::mutex> g(w->link.mu);
    const RemoteLink& L = w->link;
    v.push_back({L.fd >= 0, L.out.size(), L.gets, L.pages, L.shortReplies, L.failures, L.attached});
  }
  return v;
}

// Queues g on w's link and sends it. false = no link (the caller takes the JS
// path); true = the link owns g: sent, or failed over to a 'need' event.
bool Engine::SendGet(Worker* w, const RemoteGet& g) {
  std::lock_guard<std::mutex> lk(w->link.mu);
  return SendGetLocked(w, g);
}

bool Engine::SendGetLocked(Worker* w, const RemoteGet& g) {
  RemoteLink& L = w->link;
  if (L.fd < 0) return false;
  uint8_t h[pageserver::kHeaderSize];
  // GET: dst_id is the plain pid, no type byte.
  pageserver::EncodeHeader({pageserver::kCmdGet, g.pages, g.imageAddr, static_cast<uint64_t>(g.pid)}, h);
  const uint64_t now = NowNs();
  if (L.out.empty()) L.lastNs = now;
  L.out.push_back(g);
  L.lastSendNs = now;
  ssize_t n;
  do n = send(L.fd, h, sizeof(h), MSG_DONTWAIT | MSG_NOSIGNAL);
  while (n < 0 && errno == EINTR);
  if (n == static_cast<ssize_t>(sizeof(h))) {
    L.gets++;
    return true;
  }
  // A partial header cannot be taken back: the stream is unusable either way.
  FailLinkLocked(w, n < 0 ? errno : EPIPE, "send", n < 0 ? "sending a GET" : "short write of a GET header");
  return true;
}

void Engine::FailLinkLocked(Worker* w, int err, const char* syscall, const std::string& msg) {
  RemoteLink& L = w->link;
  if (L.fd < 0) return;
  epoll_ctl(w->ep, EPOLL_CTL_DEL, L.fd, nullptr);
  close(L.fd);
  L.fd = -1;
  L.failures++;
  L.hdrGot = L.dataGot = 0;
  L.inData = false;
  L.data.clear();
  const size_t lost = L.out.size();
  NeedAgain(L);
  Event e{kEvLinkError, 0};
  e.a = w->index;
  e.b = lost;
  e.err = err;
  e.syscall = syscall;
  e.message = msg;
  Emit(std::move(e));
}

// Reads what the link has, assembles replies in FIFO order, and copies each
// complete one into its process (after releasing the link lock). A reply
// whose header does not match the oldest GET fails the link: its data is
// never copied.
void Engine::ReadLink(Worker* w) {
  struct Done {
    RemoteGet g;
    std::vector<uint8_t> data;
  };
  std::vector<Done> done;
  {
    std::lock_guard<std::mutex> lk(w->link.mu);
    RemoteLink& L = w->link;
    // One recv usually brings a whole small reply (header + pages) into the
    // staging buffer; a large one is received straight into its data.
    if (L.stage.empty()) L.stage.resize(kLinkStage);
    for (int rounds = 0; rounds < 256 && L.fd >= 0; rounds++) {
      const bool direct = L.inData && L.data.size() - L.dataGot >= L.stage.size();
      uint8_t* dst = direct ? L.data.data() + L.dataGot : L.stage.data();
      size_t cap = direct ? L.data.size() - L.dataGot : L.stage.size();
      ssize_t n = recv(L.fd, dst, cap, MSG_DONTWAIT);
      if (n < 0) {
        if (errno == EINTR) continue;
        if (errno != EAGAIN) FailLinkLocked(w, errno, "recv", "reading a page-server reply");
        break;
      }
      if (n == 0) {
        FailLinkLocked(w, ECONNRESET, "recv", "the page server closed the connection");
        break;
      }
      L.lastNs = NowNs();
      size_t at = 0, got = static_cast<size_t>(n);
      if (direct) {
        L.dataGot += got;
        at = got;
      }
      // Walk the bytes: header, then data, reply after reply.
      while (L.fd >= 0 && (at < got || (L.inData && L.dataGot == L.data.size()))) {
        if (!L.inData) {
          size_t k = std::min(pageserver::kHeaderSize - L.hdrGot, got - at);
          memcpy(L.hdr + L.hdrGot, dst + at, k);
          L.hdrGot += k;
          at += k;
          if (L.hdrGot < pageserver::kHeaderSize) break;
          const pageserver::Header h = pageserver::DecodeHeader(L.hdr);
          if (L.out.empty()) {
            FailLinkLocked(w, EPROTO, "recv", "reply with no GET outstanding");
            break;
          }
          const RemoteGet& g = L.out.front();
          if (h.cmd != pageserver::kCmdPresentReply || h.vaddr != g.imageAddr ||
              h.dstId != static_cast<uint64_t>(g.pid) || h.pages == 0 || h.pages > g.pages) {
            char b[160];
            snprintf(b, sizeof(b), "bad reply (cmd 0x%x, %llu pages at 0x%llx for pid %llu) to GET of %llu pages at 0x%llx",
                     h.cmd, (unsigned long long)h.pages, (unsigned long long)h.vaddr, (unsigned long long)h.dstId,
                     (unsigned long long)g.pages, (unsigned long long)g.imageAddr);
            FailLinkLocked(w, EPROTO, "recv", b);
            break;
          }
          L.data.resize(h.pages * kPage);
          L.dataGot = 0;
          L.inData = true;
          continue;
        }
        if (L.dataGot < L.data.size()) {
          size_t k = std::min(L.data.size() - L.dataGot, got - at);
          memcpy(L.data.data() + L.dataGot, dst + at, k);
          L.dataGot += k;
          at += k;
          if (L.dataGot < L.data.size()) break;
        }
        RemoteGet g = L.out.front();
        L.out.pop_front();
        const uint64_t m = L.data.size() / kPage;
        L.pages += m;
        L.inData = false;
        L.hdrGot = 0;
        done.push_back({g, std::move(L.data)});
        L.data = {};
        L.dataGot = 0;
        if (m < g.pages) {
          // The server stopped at the end of a stored run: ask for the rest.
          L.shortReplies++;
          RemoteGet rest{g.proc, g.pid, g.addr + m * kPage, g.imageAddr + m * kPage, g.pages - m, g.t0};
          SendGetLocked(w, rest);
        }
      }
      if (static_cast<size_t>(n) < cap) break;  // drained for now
    }
  }
  for (Done& d : done) {
    std::shared_ptr<Proc> sp = Find(d.g.proc);
    if (!sp) continue;
    std::lock_guard<std::mutex> g(sp->mu);
    Proc* p = sp.get();
    if (p->state != Proc::kLive) continue;
    uint64_t c = 0;
    SupplyLocked(p, d.g.imageAddr, d.data.data(), d.data.size(), d.g.addr, CopyPath::kLink, &c);
    if (c > 0) {
      p->st.hist[HistBucket(NowNs() - d.g.t0)]++;
      p->st.served++;
    }
  }
}

void Engine::CheckLinkStall(Worker* w, uint64_t now) {
  std::lock_guard<std::mutex> lk(w->link.mu);
  RemoteLink& L = w->link;
  if (L.fd < 0 || L.out.empty() || now < L.lastNs + L.stallNs) return;
  FailLinkLocked(w, ETIMEDOUT, "recv", "no reply from the page server for " + std::to_string(L.stallNs / 1000000) + " ms");
}

}  // namespace lr::engine
