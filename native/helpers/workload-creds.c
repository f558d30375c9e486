// Test workload: creds, rlimits and pending signals a restore must bring back
// (protocol: workload-common.h).
//   workload-creds CTRL_DIR
// Started as root, before the dump it: lowers RLIMIT_NOFILE/CORE/STACK;
// switches to uids 1000/1001/1002 (fsuid 1000), gids 1010/1011/1012 (fsgid
// 1010) and groups 1020 1021 27, keeping a reduced capability set (permitted
// chown kill net_bind_service net_raw, effective kill net_bind_service,
// inheritable chown net_bind_service, ambient net_bind_service, bounding set
// without sys_boot mknod audit_write), securebits KEEP_CAPS|NOROOT|
// NOROOT_LOCKED, no_new_privs, dumpable 1 (a change of ids resets it),
// personality ADDR_NO_RANDOMIZE; then queues blocked signals: in the main
// thread SIGUSR2 (tgkill) and SIGRTMIN+3 (value 500), process-wide SIGHUP
// (kill) and SIGRTMIN (7), SIGRTMIN+1 (42, 43), SIGRTMIN+2 (100); a second
// thread queues its own SIGRTMIN+3 (600, 601) and SIGRTMIN+1 (602).
// After "go" each thread checks all of its creds, the limits, sigpending,
// then unblocks and checks it receives exactly its signals, with their
// codes, values and sender, in the kernel's delivery order.
#include "workload-common.h"

#include <grp.h>
#include <linux/capability.h>
#include <pthread.h>
#include <semaphore.h>
#include <sys/personality.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>

#ifndef PR_CAP_AMBIENT
#define PR_CAP_AMBIENT 47
#define PR_CAP_AMBIENT_IS_SET 1
#define PR_CAP_AMBIENT_RAISE 2
#endif
#define SECBITS_WANT 0x13 /* NOROOT | NOROOT_LOCKED | KEEP_CAPS */

#define C(n) (1ULL << (n))
static const unsigned long long PRM = C(CAP_CHOWN) | C(CAP_KILL) | C(CAP_NET_BIND_SERVICE) | C(CAP_NET_RAW);
static const unsigned long long EFF = C(CAP_KILL) | C(CAP_NET_BIND_SERVICE);
static const unsigned long long INH = C(CAP_CHOWN) | C(CAP_NET_BIND_SERVICE);
static const unsigned long long AMB = C(CAP_NET_BIND_SERVICE);
static const int DROP[] = {CAP_SYS_BOOT, CAP_MKNOD, CAP_AUDIT_WRITE};
static const gid_t GROUPS[] = {1020, 1021, 27};

static int last_cap;
static unsigned long long bnd_want; // the bounding set we started with, minus DROP

struct rlim_want { int res; const char* name; rlim_t cur, max; };
static const struct rlim_want RLIMS[] = {
    {RLIMIT_NOFILE, "NOFILE", 64, 128},
    {RLIMIT_CORE, "CORE", 4096, 1 << 20},
    {RLIMIT_STACK, "STACK", 6 << 20, 32 << 20},
};

// Signals received after the restore, in order (one thread unblocks at a time).
struct got { int signo, code, value, pid, uid; };
static struct got got[32];
static volatile int ngot;

static void on_sig(int sig, siginfo_t* si, void* uc) {
  (void)uc;
  if (ngot < 32) got[ngot] = (struct got){sig, si->si_code, si->si_value.sival_int, si->si_pid, (int)si->si_uid};
  ngot++;
}

static sem_t t_ready, t_go;
static pthread_t t;
static pid_t t_tid;

static unsigned long long cap64(const struct __user_cap_data_struct* d, int which) {
  unsigned long long lo, hi;
  if (which == 0) lo = d[0].effective, hi = d[1].effective;
  else if (which == 1) lo = d[0].permitted, hi = d[1].permitted;
  else lo = d[0].inheritable, hi = d[1].inheritable;
  return lo | hi << 32;
}

static void check_creds(const char* who) {
  uid_t r, e, s;
  gid_t gr, ge, gs;
  getresuid(&r, &e, &s);
  getresgid(&gr, &ge, &gs);
  if (r != 1000 || e != 1001 || s != 1002) wl_fail("%s: uids %d/%d/%d", who, r, e, s);
  if (gr != 1010 || ge != 1011 || gs != 1012) wl_fail("%s: gids %d/%d/%d", who, gr, ge, gs);
  int fsuid = (int)syscall(SYS_setfsuid, -1), fsgid = (int)syscall(SYS_setfsgid, -1);
  if (fsuid != 1000 || fsgid != 1010) wl_fail("%s: fsuid/fsgid %d/%d", who, fsuid, fsgid);
  gid_t g[16];
  int n = getgroups(16, g);
  // The kernel keeps groups sorted.
  if (n != 3 || g[0] != 27 || g[1] != 1020 || g[2] != 1021) wl_fail("%s: %d groups (%d %d %d)", who, n, n > 0 ? (int)g[0] : -1, n > 1 ? (int)g[1] : -1, n > 2 ? (int)g[2] : -1);
  struct __user_cap_header_struct h = {_LINUX_CAPABILITY_VERSION_3, 0};
  struct __user_cap_data_struct d[2];
  if (syscall(SYS_capget, &h, d) < 0) wl_die("capget");
  if (cap64(d, 0) != EFF || cap64(d, 1) != PRM || cap64(d, 2) != INH)
    wl_fail("%s: caps eff %llx prm %llx inh %llx", who, cap64(d, 0), cap64(d, 1), cap64(d, 2));
  unsigned long long bnd = 0, amb = 0;
  for (int c = 0; c <= last_cap; c++) {
    if (prctl(PR_CAPBSET_READ, c, 0, 0, 0) == 1) bnd |= C(c);
    if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_IS_SET, c, 0, 0) == 1) amb |= C(c);
  }
  if (bnd != bnd_want) wl_fail("%s: bounding set %llx, want %llx", who, bnd, bnd_want);
  if (amb != AMB) wl_fail("%s: ambient set %llx", who, amb);
  int sb = prctl(PR_GET_SECUREBITS, 0, 0, 0, 0);
  if (sb != SECBITS_WANT) wl_fail("%s: securebits 0x%x", who, sb);
  if (prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) != 1) wl_fail("%s: no_new_privs lost", who);
  int pers = personality(0xffffffff);
  if (pers != ADDR_NO_RANDOMIZE) wl_fail("%s: personality 0x%x", who, pers);
}

// sigpending must be exactly `want` (signals 1..64 but the go signal).
static void check_pending(const char* who, const int* want, int nwant) {
  sigset_t p;
  sigpending(&p);
  for (int s = 1; s <= 64; s++) {
    if (s == SIGUSR1 || s == SIGKILL || s == SIGSTOP) continue;
    int expect = 0;
    for (int i = 0; i < nwant; i++) expect |= want[i] == s;
    if (sigismember(&p, s) != expect) wl_fail("%s: signal %d %s pending", who, s, expect ? "not" : "unexpectedly");
  }
}

// Unblocks every signal of the test and checks what arrives, in order.
static void receive(const char* who, const struct got* want, int nwant) {
  ngot = 0;
  sigset_t u;
  sigemptyset(&u);
  sigaddset(&u, SIGHUP);
  sigaddset(&u, SIGUSR2);
  for (int i = 0; i < 4; i++) sigaddset(&u, SIGRTMIN + i);
  pthread_sigmask(SIG_UNBLOCK, &u, NULL);
  pthread_sigmask(SIG_BLOCK, &u, NULL);
  if (ngot != nwant) wl_fail("%s: received %d signals, want %d", who, ngot, nwant);
  for (int i = 0; i < nwant && i < ngot; i++) {
    const struct got* g = &got[i];
    const struct got* w = &want[i];
    if (g->signo != w->signo || g->code != w->code || (w->code == SI_QUEUE && g->value != w->value) || g->pid != w->pid || g->uid != w->uid)
      wl_fail("%s: signal #%d is %d code %d value %d pid %d uid %d, want %d code %d value %d pid %d uid %d", who, i, g->signo, g->code, g->value,
              g->pid, g->uid, w->signo, w->code, w->value, w->pid, w->uid);
  }
}

static void* thread_main(void* arg) {
  (void)arg;
  t_tid = (pid_t)syscall(SYS_gettid);
  union sigval v;
  v.sival_int = 600;
  pthread_sigqueue(pthread_self(), SIGRTMIN + 3, v);
  v.sival_int = 601;
  pthread_sigqueue(pthread_self(), SIGRTMIN + 3, v);
  v.sival_int = 602;
  pthread_sigqueue(pthread_self(), SIGRTMIN + 1, v);
  sem_post(&t_ready);
  while (sem_wait(&t_go) < 0 && errno == EINTR) {}
  check_creds("thread");
  const int pend[] = {SIGRTMIN + 1, SIGRTMIN + 3};
  check_pending("thread", pend, 2);
  pid_t me = getpid();
  const struct got want[] = {
      {SIGRTMIN + 1, SI_QUEUE, 602, me, 1000},
      {SIGRTMIN + 3, SI_QUEUE, 600, me, 1000},
      {SIGRTMIN + 3, SI_QUEUE, 601, me, 1000},
  };
  receive("thread", want, 3);
  return NULL;
}

int main(int argc, char** argv) {
  wl_init(argc, argv);
  // The result is written after the switch to uid 1000.
  if (chmod(argv[1], 0777) < 0) wl_die("chmod ctrl dir");
  last_cap = 40;
  FILE* f = fopen("/proc/sys/kernel/cap_last_cap", "r");
  if (f) {
    if (fscanf(f, "%d", &last_cap) != 1) wl_die("cap_last_cap");
    fclose(f);
  }
  for (int c = 0; c <= last_cap; c++)
    if (prctl(PR_CAPBSET_READ, c, 0, 0, 0) == 1) bnd_want |= C(c);
  for (size_t i = 0; i < sizeof DROP / sizeof DROP[0]; i++) bnd_want &= ~C(DROP[i]);

  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_sigaction = on_sig;
  sa.sa_flags = SA_SIGINFO;
  sigfillset(&sa.sa_mask); // one signal at a time, in dequeue order
  sigset_t b;
  sigemptyset(&b);
  const int sigs[] = {SIGHUP, SIGUSR2, SIGRTMIN, SIGRTMIN + 1, SIGRTMIN + 2, SIGRTMIN + 3};
  for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++) {
    if (sigaction(sigs[i], &sa, NULL) < 0) wl_die("sigaction");
    sigaddset(&b, sigs[i]);
  }
  sigprocmask(SIG_BLOCK, &b, NULL);

  for (size_t i = 0; i < sizeof RLIMS / sizeof RLIMS[0]; i++) {
    struct rlimit rl = {RLIMS[i].cur, RLIMS[i].max};
    if (setrlimit(RLIMS[i].res, &rl) < 0) wl_die("setrlimit");
  }

  if (setgroups(3, GROUPS) < 0) wl_die("setgroups");
  if (prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0) < 0) wl_die("PR_SET_KEEPCAPS");
  if (setresgid(1010, 1011, 1012) < 0) wl_die("setresgid");
  if (setresuid(1000, 1001, 1002) < 0) wl_die("setresuid");
  syscall(SYS_setfsuid, 1000);
  syscall(SYS_setfsgid, 1010);
  struct __user_cap_header_struct h = {_LINUX_CAPABILITY_VERSION_3, 0};
  struct __user_cap_data_struct d[2];
  if (syscall(SYS_capget, &h, d) < 0) wl_die("capget");
  // Keep CAP_SETPCAP effective while the inheritable, ambient and bounding sets are set.
  unsigned long long eff = EFF | C(CAP_SETPCAP);
  for (int i = 0; i < 2; i++) {
    d[i].effective = (unsigned)(eff >> (32 * i));
    d[i].inheritable = (unsigned)(INH >> (32 * i));
  }
  if (syscall(SYS_capset, &h, d) < 0) wl_die("capset 1");
  if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, CAP_NET_BIND_SERVICE, 0, 0) < 0) wl_die("ambient raise");
  for (size_t i = 0; i < sizeof DROP / sizeof DROP[0]; i++)
    if (prctl(PR_CAPBSET_DROP, DROP[i], 0, 0, 0) < 0) wl_die("PR_CAPBSET_DROP");
  if (prctl(PR_SET_SECUREBITS, SECBITS_WANT, 0, 0, 0) < 0) wl_die("PR_SET_SECUREBITS");
  for (int i = 0; i < 2; i++) {
    d[i].effective = (unsigned)(EFF >> (32 * i));
    d[i].permitted = (unsigned)(PRM >> (32 * i));
    d[i].inheritable = (unsigned)(INH >> (32 * i));
  }
  if (syscall(SYS_capset, &h, d) < 0) wl_die("capset 2");
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0) wl_die("PR_SET_NO_NEW_PRIVS");
  if (prctl(PR_SET_DUMPABLE, 1, 0, 0, 0) < 0) wl_die("PR_SET_DUMPABLE");
  if (personality(ADDR_NO_RANDOMIZE) < 0) wl_die("personality");
  check_creds("before the dump");

  sem_init(&t_ready, 0, 0);
  sem_init(&t_go, 0, 0);
  if (pthread_create(&t, NULL, thread_main, NULL) != 0) wl_die("pthread_create");
  while (sem_wait(&t_ready) < 0 && errno == EINTR) {}

  pthread_kill(pthread_self(), SIGUSR2);
  union sigval v;
  v.sival_int = 500;
  pthread_sigqueue(pthread_self(), SIGRTMIN + 3, v);
  kill(getpid(), SIGHUP);
  v.sival_int = 7;
  sigqueue(getpid(), SIGRTMIN, v);
  v.sival_int = 42;
  sigqueue(getpid(), SIGRTMIN + 1, v);
  v.sival_int = 43;
  sigqueue(getpid(), SIGRTMIN + 1, v);
  v.sival_int = 100;
  sigqueue(getpid(), SIGRTMIN + 2, v);

  wl_report("tid_thread=%d", (int)t_tid);
  if (wl_fail_buf[0]) wl_report("early_fail=%s", wl_fail_buf);
  wl_ready_and_wait();

  check_creds("main");
  if (prctl(PR_GET_DUMPABLE, 0, 0, 0, 0) != 1) wl_fail("dumpable %d", prctl(PR_GET_DUMPABLE, 0, 0, 0, 0));
  for (size_t i = 0; i < sizeof RLIMS / sizeof RLIMS[0]; i++) {
    struct rlimit rl;
    getrlimit(RLIMS[i].res, &rl);
    if (rl.rlim_cur != RLIMS[i].cur || rl.rlim_max != RLIMS[i].max)
      wl_fail("RLIMIT_%s is %llu/%llu", RLIMS[i].name, (unsigned long long)rl.rlim_cur, (unsigned long long)rl.rlim_max);
  }
  const int pend[] = {SIGHUP, SIGUSR2, SIGRTMIN, SIGRTMIN + 1, SIGRTMIN + 2, SIGRTMIN + 3};
  check_pending("main", pend, 6);
  pid_t me = getpid();
  // Kernel order: the thread's own queue first, then the process queue;
  // lowest signal number first, real-time signals of one number in queue order.
  const struct got want[] = {
      {SIGUSR2, SI_TKILL, 0, me, 1000},
      {SIGRTMIN + 3, SI_QUEUE, 500, me, 1000},
      {SIGHUP, SI_USER, 0, me, 1000},
      {SIGRTMIN, SI_QUEUE, 7, me, 1000},
      {SIGRTMIN + 1, SI_QUEUE, 42, me, 1000},
      {SIGRTMIN + 1, SI_QUEUE, 43, me, 1000},
      {SIGRTMIN + 2, SI_QUEUE, 100, me, 1000},
  };
  receive("main", want, 7);
  sem_post(&t_go);
  pthread_join(t, NULL);
  return wl_finish();
}
