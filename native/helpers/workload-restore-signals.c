// Test workload: signal state a restore must bring back (protocol:
// workload-common.h).
//   workload-restore-signals CTRL_DIR
// Before the dump: an alternate signal stack (64 KiB, patterned around it);
// SIGUSR2 handled with SA_SIGINFO|SA_ONSTACK and a handler mask of SIGWINCH;
// SIGTERM handled without SA_RESTART; SIGPIPE ignored; SIGHUP and SIGRTMIN+3
// blocked. After "go": sigaltstack, every disposition and flag, the blocked
// mask, then sigqueue(SIGUSR2) with a value: the handler must run on the
// alternate stack, see the value and the handler mask, and an FPU rounding
// modes set before the dump must still be in force.
#include "workload-common.h"

#include <sys/mman.h>

#define ALT_SIZE (64 * 1024)
static unsigned char* alt;
static volatile int handled, on_alt, saw_value, saw_mask;

static void on_usr2(int sig, siginfo_t* si, void* uc) {
  (void)sig;
  (void)uc;
  unsigned char here;
  on_alt = &here >= alt && &here < alt + ALT_SIZE;
  saw_value = si->si_value.sival_int;
  sigset_t cur;
  sigprocmask(SIG_BLOCK, NULL, &cur);
  saw_mask = sigismember(&cur, SIGWINCH) && sigismember(&cur, SIGUSR2);
  handled = 1;
}

static void on_term(int sig) { (void)sig; }

int main(int argc, char** argv) {
  wl_init(argc, argv);
  alt = mmap(NULL, ALT_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (alt == MAP_FAILED) wl_die("mmap");
  memset(alt, 0xa5, ALT_SIZE);
  stack_t ss = {.ss_sp = alt, .ss_size = ALT_SIZE, .ss_flags = 0};
  if (sigaltstack(&ss, NULL) < 0) wl_die("sigaltstack");
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_sigaction = on_usr2;
  sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
  sigaddset(&sa.sa_mask, SIGWINCH);
  if (sigaction(SIGUSR2, &sa, NULL) < 0) wl_die("sigaction USR2");
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_term;
  if (sigaction(SIGTERM, &sa, NULL) < 0) wl_die("sigaction TERM");
  signal(SIGPIPE, SIG_IGN);
  sigset_t b;
  sigemptyset(&b);
  sigaddset(&b, SIGHUP);
  sigaddset(&b, SIGRTMIN + 3);
  sigprocmask(SIG_BLOCK, &b, NULL);
  // Round toward zero in SSE (MXCSR.RC = 11) and x87 (FCW.RC = 11).
  __builtin_ia32_ldmxcsr(__builtin_ia32_stmxcsr() | 0x6000);
  unsigned short cw;
  __asm__ volatile("fnstcw %0" : "=m"(cw));
  cw |= 0x0c00;
  __asm__ volatile("fldcw %0" : : "m"(cw));
  wl_report("alt=%p", (void*)alt);
  wl_ready_and_wait();

  stack_t cur;
  if (sigaltstack(NULL, &cur) < 0) wl_die("sigaltstack get");
  if (cur.ss_sp != alt || cur.ss_size != ALT_SIZE || (cur.ss_flags & SS_DISABLE)) wl_fail("altstack %p/%zu/%d", cur.ss_sp, cur.ss_size, cur.ss_flags);
  struct sigaction q;
  sigaction(SIGUSR2, NULL, &q);
  if (q.sa_sigaction != on_usr2 || !(q.sa_flags & SA_SIGINFO) || !(q.sa_flags & SA_ONSTACK) || !sigismember(&q.sa_mask, SIGWINCH))
    wl_fail("SIGUSR2 action flags 0x%x", q.sa_flags);
  sigaction(SIGTERM, NULL, &q);
  if (q.sa_handler != on_term || (q.sa_flags & SA_RESTART)) wl_fail("SIGTERM action flags 0x%x", q.sa_flags);
  sigaction(SIGPIPE, NULL, &q);
  if (q.sa_handler != SIG_IGN) wl_fail("SIGPIPE not ignored");
  sigaction(SIGINT, NULL, &q);
  if (q.sa_handler != SIG_DFL) wl_fail("SIGINT not default");
  sigset_t m;
  sigprocmask(SIG_BLOCK, NULL, &m);
  if (!sigismember(&m, SIGHUP) || !sigismember(&m, SIGRTMIN + 3) || sigismember(&m, SIGUSR2)) wl_fail("blocked mask");
  unsigned short cw2;
  __asm__ volatile("fnstcw %0" : "=m"(cw2));
  if ((__builtin_ia32_stmxcsr() & 0x6000) != 0x6000) wl_fail("SSE rounding mode lost (mxcsr 0x%x)", __builtin_ia32_stmxcsr());
  if ((cw2 & 0x0c00) != 0x0c00) wl_fail("x87 rounding mode lost (fcw 0x%x)", cw2);
  union sigval v = {.sival_int = 4242};
  if (sigqueue(getpid(), SIGUSR2, v) < 0) wl_die("sigqueue");
  if (!handled) wl_fail("SIGUSR2 handler did not run");
  else if (!on_alt) wl_fail("handler not on the alternate stack");
  else if (saw_value != 4242) wl_fail("handler saw value %d", saw_value);
  else if (!saw_mask) wl_fail("handler mask not in force");
  return wl_finish();
}
