// Test workload: interval and POSIX timers a restore must bring back
// (protocol: workload-common.h).
//   workload-timers CTRL_DIR
// Before the dump it arms
//   ITIMER_REAL   600 s, interval 7 s        (only its remaining time is checked)
//   ITIMER_PROF   150 ms of CPU, one-shot    (must fire after the restore)
//   timer A  CPU-time clock, SIGEV_SIGNAL SIGRTMIN+1, 64-bit sival, 200 ms one-shot
//   timer B  CPU-time clock, SIGEV_SIGNAL SIGRTMIN+2, sival 77, 250 ms then every 40 ms
//   timer C  CLOCK_MONOTONIC, SIGEV_THREAD_ID (main thread) SIGRTMIN+3, 600 s
// with gaps in the id space (timers created and deleted in between), so the
// ids are only right if the restore recreates them exactly. The timers that
// must fire count process CPU time: they cannot expire while the workload
// idles waiting for "go", is frozen, dumped or restored, whatever the load.
// After "go": intervals exact, remaining times within generous bounds, then
// it burns CPU until PROF, A and three ticks of B arrive (bounded: 30 s of
// wall time), checking each signal's code, value and timer id.
#include "workload-common.h"

#include <sys/time.h>
#include <time.h>

#define MAGIC_A 0x5eed0000cafe1234ULL
#define MS 1000000LL

static int mk_timer(clockid_t clock, int notify, int sig, uint64_t val) {
  struct sigevent ev;
  memset(&ev, 0, sizeof ev);
  ev.sigev_notify = notify;
  ev.sigev_signo = sig;
  ev.sigev_value.sival_ptr = (void*)(uintptr_t)val;
  if (notify == SIGEV_THREAD_ID) ev._sigev_un._tid = (int)syscall(SYS_gettid);
  int id = -1;
  if (syscall(SYS_timer_create, clock, &ev, &id) < 0) wl_die("timer_create");
  return id;
}

static void arm(int id, long long value_ns, long long interval_ns) {
  struct itimerspec its = {
      .it_interval = {interval_ns / 1000000000LL, interval_ns % 1000000000LL},
      .it_value = {value_ns / 1000000000LL, value_ns % 1000000000LL},
  };
  if (syscall(SYS_timer_settime, id, 0, &its, NULL) < 0) wl_die("timer_settime");
}

static long long ts_ns(struct timespec t) { return t.tv_sec * 1000000000LL + t.tv_nsec; }
static long long tv_ns(struct timeval t) { return t.tv_sec * 1000000000LL + t.tv_usec * 1000LL; }

static long long now_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return ts_ns(t);
}

int main(int argc, char** argv) {
  wl_init(argc, argv);
  const int sig_a = SIGRTMIN + 1, sig_b = SIGRTMIN + 2, sig_c = SIGRTMIN + 3;
  sigset_t s;
  sigemptyset(&s);
  sigaddset(&s, SIGALRM);
  sigaddset(&s, SIGPROF);
  sigaddset(&s, sig_a);
  sigaddset(&s, sig_b);
  sigaddset(&s, sig_c);
  if (sigprocmask(SIG_BLOCK, &s, NULL) < 0) wl_die("sigprocmask");

  int gap0 = mk_timer(CLOCK_MONOTONIC, SIGEV_NONE, 0, 0);
  int id_a = mk_timer(CLOCK_PROCESS_CPUTIME_ID, SIGEV_SIGNAL, sig_a, MAGIC_A);
  int gap1 = mk_timer(CLOCK_REALTIME, SIGEV_NONE, 0, 0);
  int id_b = mk_timer(CLOCK_PROCESS_CPUTIME_ID, SIGEV_SIGNAL, sig_b, 77);
  int id_c = mk_timer(CLOCK_MONOTONIC, SIGEV_THREAD_ID, sig_c, 99);
  syscall(SYS_timer_delete, gap0);
  syscall(SYS_timer_delete, gap1);
  arm(id_a, 200 * MS, 0);
  arm(id_b, 250 * MS, 40 * MS);
  arm(id_c, 600000 * MS, 0);
  struct itimerval real = {.it_interval = {7, 0}, .it_value = {600, 0}};
  struct itimerval prof = {.it_interval = {0, 0}, .it_value = {0, 150000}};
  if (setitimer(ITIMER_REAL, &real, NULL) < 0) wl_die("setitimer REAL");
  if (setitimer(ITIMER_PROF, &prof, NULL) < 0) wl_die("setitimer PROF");
  wl_report("id_a=%d", id_a);
  wl_report("id_b=%d", id_b);
  wl_report("id_c=%d", id_c);
  wl_report("sig_a=%d", sig_a);
  wl_ready_and_wait();

  struct itimerval g;
  if (getitimer(ITIMER_REAL, &g) < 0) wl_die("getitimer REAL");
  if (tv_ns(g.it_interval) != 7000 * MS) wl_fail("ITIMER_REAL interval %lld ns", tv_ns(g.it_interval));
  else if (tv_ns(g.it_value) <= 300000 * MS || tv_ns(g.it_value) > 600000 * MS) wl_fail("ITIMER_REAL remaining %lld ns", tv_ns(g.it_value));
  if (getitimer(ITIMER_PROF, &g) < 0) wl_die("getitimer PROF");
  if (tv_ns(g.it_interval) != 0) wl_fail("ITIMER_PROF interval %lld ns", tv_ns(g.it_interval));
  // setitimer adds a tick (<= 10 ms) to a CPU-time value, at arming and at restore.
  else if (tv_ns(g.it_value) <= 0 || tv_ns(g.it_value) > 170 * MS) wl_fail("ITIMER_PROF remaining %lld ns", tv_ns(g.it_value));
  struct {
    int id;
    long long interval, max, min;
  } want[] = {{id_a, 0, 200 * MS, 1}, {id_b, 40 * MS, 250 * MS, 1}, {id_c, 0, 600000 * MS, 300000 * MS}};
  for (unsigned i = 0; i < sizeof want / sizeof want[0]; i++) {
    struct itimerspec its;
    if (syscall(SYS_timer_gettime, want[i].id, &its) < 0) {
      wl_fail("timer_gettime(%d): %s", want[i].id, strerror(errno));
      continue;
    }
    if (ts_ns(its.it_interval) != want[i].interval) wl_fail("timer %d interval %lld ns", want[i].id, ts_ns(its.it_interval));
    long long v = ts_ns(its.it_value);
    if (v < want[i].min || v > want[i].max) wl_fail("timer %d remaining %lld ns", want[i].id, v);
  }

  // Burn CPU until the CPU-time timers have fired, taking their signals.
  int got_prof = 0, got_a = 0, got_b = 0;
  const long long deadline = now_ns() + 30000 * MS;
  volatile unsigned long spin = 0;
  while ((!got_prof || !got_a || got_b < 3) && now_ns() < deadline) {
    for (int i = 0; i < 100000; i++) spin++;
    siginfo_t si;
    struct timespec zero = {0, 0};
    int sig = sigtimedwait(&s, &si, &zero);
    if (sig < 0) continue;
    if (sig == SIGPROF) {
      got_prof++;
    } else if (sig == sig_a) {
      if (si.si_code != SI_TIMER || (uint64_t)(uintptr_t)si.si_value.sival_ptr != MAGIC_A || si.si_timerid != id_a)
        wl_fail("timer A signal: code %d value %p timer %d", si.si_code, si.si_value.sival_ptr, si.si_timerid);
      got_a++;
    } else if (sig == sig_b) {
      if (si.si_code != SI_TIMER || si.si_value.sival_int != 77 || si.si_timerid != id_b)
        wl_fail("timer B signal: code %d value %d timer %d", si.si_code, si.si_value.sival_int, si.si_timerid);
      got_b++;
    } else {
      wl_fail("unexpected signal %d (code %d)", sig, si.si_code);
    }
  }
  if (!got_prof) wl_fail("ITIMER_PROF never fired");
  if (got_a != 1) wl_fail("timer A fired %d times", got_a);
  if (got_b < 3) wl_fail("timer B fired %d times", got_b);
  wl_report("spin=%lu", spin);
  return wl_finish();
}
