// Test workload: the event objects a restore must bring back, checked from
// inside the process (protocol: workload-common.h).
//   workload-events CTRL_DIR WATCH_DIR
// Before the dump it sets up
//   efd   eventfd, counter 5, EFD_NONBLOCK|EFD_CLOEXEC
//   efd2  eventfd, counter 0x100000007 (beyond 32 bits), blocking, inheritable
//   sfd   signalfd for SIGUSR2 and SIGRTMIN+4 (both blocked), SFD_NONBLOCK;
//         one SIGUSR2 left pending
//   tfd1  timerfd CLOCK_MONOTONIC, every 20 ms (expirations left unread)
//   tfd2  timerfd CLOCK_REALTIME, one-shot in 1000 s, absolute (TFD_TIMER_ABSTIME)
//   tfd3  timerfd CLOCK_BOOTTIME, 500 s then every 3 s
//   ino   inotify (IN_NONBLOCK) watching WATCH_DIR for IN_CREATE
//   ep    epoll (EPOLL_CLOEXEC) watching efd (IN, data 0x1122334455667788),
//         sfd (IN|ET, 2), tfd1 (IN, 3), ino (IN, 4), efd2 (OUT, 5)
//   ep2   epoll watching efd2 (OUT, 6) through a dup (fd 900) closed since
//         (zdtm epoll: the watch is only reachable through efd2)
// After "go" everything is checked: flags, counters, the pending signal read
// through sfd, a new signal routed to sfd, timer settings and expirations,
// the epoll watches (ready set, data words, the fd numbers they are keyed
// by) and an inotify event for a file created in WATCH_DIR.
#include "workload-common.h"

#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <sys/signalfd.h>
#include <sys/timerfd.h>
#include <time.h>

#define check(ok, ...) \
  do {                    \
    if (!(ok)) wl_fail(__VA_ARGS__); \
  } while (0)

static void add(int ep, int fd, uint32_t events, uint64_t data) {
  struct epoll_event ev = {.events = events, .data.u64 = data};
  if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0) wl_die("epoll_ctl");
}

int main(int argc, char** argv) {
  wl_init(argc, argv);
  if (argc < 3) {
    fprintf(stderr, "usage: %s CTRL_DIR WATCH_DIR\n", argv[0]);
    return 2;
  }
  const char* watch_dir = argv[2];
  const int sig_rt = SIGRTMIN + 4;

  int efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  int efd2 = eventfd(0, 0);
  if (efd < 0 || efd2 < 0) wl_die("eventfd");
  uint64_t v = 5;
  if (write(efd, &v, 8) != 8) wl_die("write efd");
  v = 0x100000007ULL;
  if (write(efd2, &v, 8) != 8) wl_die("write efd2");

  sigset_t ss;
  sigemptyset(&ss);
  sigaddset(&ss, SIGUSR2);
  sigaddset(&ss, sig_rt);
  if (sigprocmask(SIG_BLOCK, &ss, NULL) < 0) wl_die("sigprocmask");
  int sfd = signalfd(-1, &ss, SFD_NONBLOCK);
  if (sfd < 0) wl_die("signalfd");
  kill(getpid(), SIGUSR2);

  int tfd1 = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK);
  int tfd2 = timerfd_create(CLOCK_REALTIME, 0);
  int tfd3 = timerfd_create(CLOCK_BOOTTIME, TFD_NONBLOCK | TFD_CLOEXEC);
  if (tfd1 < 0 || tfd2 < 0 || tfd3 < 0) wl_die("timerfd_create");
  struct itimerspec its = {.it_interval = {0, 20000000}, .it_value = {0, 20000000}};
  if (timerfd_settime(tfd1, 0, &its, NULL) < 0) wl_die("timerfd_settime 1");
  struct timespec now;
  clock_gettime(CLOCK_REALTIME, &now);
  struct itimerspec abs = {.it_interval = {0, 0}, .it_value = {now.tv_sec + 1000, now.tv_nsec}};
  if (timerfd_settime(tfd2, TFD_TIMER_ABSTIME, &abs, NULL) < 0) wl_die("timerfd_settime 2");
  struct itimerspec per = {.it_interval = {3, 0}, .it_value = {500, 0}};
  if (timerfd_settime(tfd3, 0, &per, NULL) < 0) wl_die("timerfd_settime 3");

  int ino = inotify_init1(IN_NONBLOCK);
  if (ino < 0) wl_die("inotify_init1");
  // Burn one wd so the restored one must be 2, not the first a fresh instance hands out.
  int wd0 = inotify_add_watch(ino, watch_dir, IN_DELETE);
  if (wd0 < 0 || inotify_rm_watch(ino, wd0) < 0) wl_die("inotify wd0");
  char drain[4096] __attribute__((aligned(8)));
  while (read(ino, drain, sizeof drain) > 0) {
  }  // the IN_IGNORED event of wd0
  int wd = inotify_add_watch(ino, watch_dir, IN_CREATE);
  if (wd < 0) wl_die("inotify_add_watch");

  int ep = epoll_create1(EPOLL_CLOEXEC);
  if (ep < 0) wl_die("epoll_create1");
  add(ep, efd, EPOLLIN, 0x1122334455667788ULL);
  add(ep, sfd, EPOLLIN | EPOLLET, 2);
  add(ep, tfd1, EPOLLIN, 3);
  add(ep, ino, EPOLLIN, 4);
  add(ep, efd2, EPOLLOUT, 5);
  int ep2 = epoll_create1(EPOLL_CLOEXEC);
  if (ep2 < 0 || dup2(efd2, 900) != 900) wl_die("ep2");
  add(ep2, 900, EPOLLOUT, 6);
  close(900);

  wl_report("efd=%d", efd);
  wl_report("ep=%d", ep);
  wl_report("wd=%d", wd);
  wl_ready_and_wait();

  // Flags.
  check((fcntl(efd, F_GETFL) & O_NONBLOCK) != 0, "efd lost O_NONBLOCK");
  check(fcntl(efd, F_GETFD) == FD_CLOEXEC, "efd lost FD_CLOEXEC");
  check((fcntl(efd2, F_GETFL) & O_NONBLOCK) == 0, "efd2 became non-blocking");
  check(fcntl(efd2, F_GETFD) == 0, "efd2 became close-on-exec");
  check(fcntl(ep, F_GETFD) == FD_CLOEXEC, "ep lost FD_CLOEXEC");
  check(fcntl(tfd3, F_GETFD) == FD_CLOEXEC && (fcntl(tfd3, F_GETFL) & O_NONBLOCK), "tfd3 flags");
  check((fcntl(sfd, F_GETFL) & O_NONBLOCK) != 0, "sfd lost O_NONBLOCK");

  // The epoll ready set, before anything is read.
  struct epoll_event evs[16];
  int n = epoll_wait(ep, evs, 16, 2000);
  int seen = 0;
  for (int i = 0; i < n; i++) {
    uint64_t d = evs[i].data.u64;
    if (d == 0x1122334455667788ULL) {
      seen |= 1;
      check(evs[i].events == EPOLLIN, "efd events %x", evs[i].events);
    }
    else if (d == 2)
      seen |= 2;
    else if (d == 3)
      seen |= 4;
    else if (d == 5) {
      seen |= 8;
      check(evs[i].events == EPOLLOUT, "efd2 events %x", evs[i].events);
    }
    else check(0, "unexpected epoll data %llx (events %x)", (unsigned long long)d, evs[i].events);
  }
  // The timer may not have expired yet (efd2 is always writable, so each
  // wait returns at once): poll for it for up to 2 s.
  for (int round = 0; round < 200 && !(seen & 4); round++) {
    usleep(10000);
    n = epoll_wait(ep, evs, 16, 0);
    for (int i = 0; i < n; i++) if (evs[i].data.u64 == 3) seen |= 4;
  }
  check(seen == 15, "epoll ready set %x, expected f", seen);
  // The watch added through the closed dup still reports efd2.
  n = epoll_wait(ep2, evs, 16, 2000);
  check(n == 1 && evs[0].data.u64 == 6 && evs[0].events == EPOLLOUT, "ep2: %d events, data %llx", n,
        n > 0 ? (unsigned long long)evs[0].data.u64 : 0ULL);
  // Watches are keyed by these fd numbers: MOD works, ADD says EEXIST.
  struct epoll_event ev = {.events = EPOLLIN, .data.u64 = 0x1122334455667788ULL};
  check(epoll_ctl(ep, EPOLL_CTL_MOD, efd, &ev) == 0, "epoll MOD efd: %s", strerror(errno));
  check(epoll_ctl(ep, EPOLL_CTL_ADD, tfd1, &ev) < 0 && errno == EEXIST, "epoll ADD tfd1 again did not say EEXIST");
  check(epoll_ctl(ep, EPOLL_CTL_ADD, tfd2, &ev) == 0, "epoll ADD tfd2 (not watched): %s", strerror(errno));

  // eventfd counters.
  uint64_t c = 0;
  check(read(efd, &c, 8) == 8 && c == 5, "efd counter %llu", (unsigned long long)c);
  check(read(efd, &c, 8) < 0 && errno == EAGAIN, "efd readable twice");
  c = 0;
  check(read(efd2, &c, 8) == 8 && c == 0x100000007ULL, "efd2 counter %llx", (unsigned long long)c);

  // signalfd: the pending SIGUSR2, then a new real-time signal.
  struct signalfd_siginfo si;
  memset(&si, 0, sizeof si);
  check(read(sfd, &si, sizeof si) == sizeof si && si.ssi_signo == SIGUSR2, "sfd did not deliver the pending SIGUSR2 (%u)", si.ssi_signo);
  kill(getpid(), sig_rt);
  memset(&si, 0, sizeof si);
  check(read(sfd, &si, sizeof si) == sizeof si && (int)si.ssi_signo == sig_rt, "sfd mask lost SIGRTMIN+4 (%u)", si.ssi_signo);

  // timerfds.
  uint64_t ticks = 0;
  check(read(tfd1, &ticks, 8) == 8 && ticks >= 1, "tfd1 ticks %llu", (unsigned long long)ticks);
  struct itimerspec cur;
  check(timerfd_gettime(tfd1, &cur) == 0 && cur.it_interval.tv_sec == 0 && cur.it_interval.tv_nsec == 20000000, "tfd1 interval");
  check(timerfd_gettime(tfd2, &cur) == 0 && cur.it_interval.tv_sec == 0 && cur.it_interval.tv_nsec == 0 &&
            cur.it_value.tv_sec > 700 && cur.it_value.tv_sec <= 1000, "tfd2 remaining %lld s", (long long)cur.it_value.tv_sec);
  check(timerfd_gettime(tfd3, &cur) == 0 && cur.it_interval.tv_sec == 3 && cur.it_interval.tv_nsec == 0 &&
            cur.it_value.tv_sec > 200 && cur.it_value.tv_sec <= 500, "tfd3 %lld/%lld", (long long)cur.it_value.tv_sec, (long long)cur.it_interval.tv_sec);
  // The periodic timer keeps firing, through epoll.
  // (efd2 is always writable, so each wait returns at once: poll for up to 2 s.)
  int tick = 0;
  for (int round = 0; round < 200 && !tick; round++) {
    n = epoll_wait(ep, evs, 16, 10);
    for (int i = 0; i < n; i++) if (evs[i].data.u64 == 3) tick = 1;
    if (!tick) usleep(10000);
  }
  check(tick, "tfd1 did not fire again through epoll");

  // inotify: a file created in WATCH_DIR.
  char path[4096];
  snprintf(path, sizeof path, "%s/created-after-restore", watch_dir);
  int f = open(path, O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
  if (f >= 0) close(f);
  n = epoll_wait(ep, evs, 16, 2000);
  int got = 0;
  for (int i = 0; i < n; i++) if (evs[i].data.u64 == 4) got = 1;
  check(got, "no epoll event for inotify");
  char buf[4096] __attribute__((aligned(8)));
  ssize_t r = read(ino, buf, sizeof buf);
  struct inotify_event* ie = (struct inotify_event*)buf;
  check(r > 0 && ie->wd == wd && (ie->mask & IN_CREATE) && strcmp(ie->name, "created-after-restore") == 0,
        "inotify event wd %d mask %x name %s", r > 0 ? ie->wd : -1, r > 0 ? ie->mask : 0, r > 0 ? ie->name : "");

  return wl_finish();
}
