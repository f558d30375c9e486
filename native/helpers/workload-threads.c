// Test workload: a multi-threaded process whose threads sit in different
// blocking syscalls, with register state a restore must bring back exactly.
//   workload-threads CTRL_DIR
// Threads (besides main, which waits for SIGUSR1 in sigsuspend):
//   futex  - FUTEX_WAIT on a word until main flips it;
//   sleep  - clock_nanosleep(1 h), woken by SIGUSR2 (handler without
//            SA_RESTART: it must see EINTR, never garbage);
//   regs   - loads r12..r15 and xmm0 with known values, then loops on a raw
//            futex syscall (asm) so those registers live across the dump;
//            checks them after the wake-up.
// Ready report: tid_<name>=N, fsbase_<name>=0x.., r12..r15 and xmm0 values.
#include "workload-common.h"

#include <linux/futex.h>
#include <pthread.h>
#include <sys/syscall.h>
#include <time.h>

#include <asm/prctl.h>

static volatile uint32_t futex_word;  // 0 = wait, 1 = go
static volatile uint32_t regs_word;
static pthread_barrier_t barrier;

struct tinfo {
  const char* name;
  pid_t tid;
  uint64_t fs_base;
};
static struct tinfo infos[3] = {{"futex", 0, 0}, {"sleep", 0, 0}, {"regs", 0, 0}};

static void record(int i) {
  infos[i].tid = (pid_t)syscall(SYS_gettid);
  syscall(SYS_arch_prctl, ARCH_GET_FS, &infos[i].fs_base);
}

static void on_usr2(int sig) { (void)sig; }

static void* futex_thread(void* a) {
  (void)a;
  record(0);
  pthread_barrier_wait(&barrier);
  while (futex_word == 0) syscall(SYS_futex, &futex_word, FUTEX_WAIT, 0, NULL, NULL, 0);
  return NULL;
}

static volatile int sleep_saw_eintr;
static void* sleep_thread(void* a) {
  (void)a;
  record(1);
  sigset_t s;
  sigemptyset(&s);
  sigaddset(&s, SIGUSR2);
  pthread_sigmask(SIG_UNBLOCK, &s, NULL);
  pthread_barrier_wait(&barrier);
  while (futex_word == 0) {
    struct timespec ts = {3600, 0};
    int r = clock_nanosleep(CLOCK_MONOTONIC, 0, &ts, NULL);
    if (r == EINTR) sleep_saw_eintr = 1;
    else if (r != 0) wl_fail("clock_nanosleep returned %d", r);
  }
  return NULL;
}

#define R12 0x1212121212121212ULL
#define R13 0x1313131313131313ULL
#define R14 0x1414141414141414ULL
#define R15 0x1515151515151515ULL
static const uint64_t xmm0_pattern[2] = {0x0123456789abcdefULL, 0xfedcba9876543210ULL};

static void* regs_thread(void* a) {
  (void)a;
  record(2);
  pthread_barrier_wait(&barrier);
  uint64_t r12, r13, r14, r15, x[2];
  // Raw syscalls only between loading and checking: libc could clobber
  // r12..r15 or xmm0 otherwise.
  __asm__ volatile(
      "movdqu (%[pat]), %%xmm0\n\t"
      "movabs $0x1212121212121212, %%r12\n\t"
      "movabs $0x1313131313131313, %%r13\n\t"
      "movabs $0x1414141414141414, %%r14\n\t"
      "movabs $0x1515151515151515, %%r15\n\t"
      "1:\n\t"
      "movl (%[w]), %%eax\n\t"
      "testl %%eax, %%eax\n\t"
      "jnz 2f\n\t"
      "movq %[w], %%rdi\n\t"
      "xorl %%esi, %%esi\n\t"  // FUTEX_WAIT
      "xorl %%edx, %%edx\n\t"  // expected value 0
      "xorl %%r10d, %%r10d\n\t"
      "movl %[nr], %%eax\n\t"
      "syscall\n\t"
      "jmp 1b\n\t"
      "2:\n\t"
      "movq %%r12, %[o12]\n\t"
      "movq %%r13, %[o13]\n\t"
      "movq %%r14, %[o14]\n\t"
      "movq %%r15, %[o15]\n\t"
      "movdqu %%xmm0, (%[x])\n\t"
      : [o12] "=m"(r12), [o13] "=m"(r13), [o14] "=m"(r14), [o15] "=m"(r15)
      : [pat] "r"(xmm0_pattern), [w] "r"(&regs_word), [nr] "i"(SYS_futex), [x] "r"(x)
      : "rax", "rdi", "rsi", "rdx", "r10", "rcx", "r11", "r12", "r13", "r14", "r15", "xmm0", "memory");
  if (r12 != R12 || r13 != R13 || r14 != R14 || r15 != R15)
    wl_fail("regs thread: r12..r15 = %llx %llx %llx %llx", (unsigned long long)r12, (unsigned long long)r13,
            (unsigned long long)r14, (unsigned long long)r15);
  if (x[0] != xmm0_pattern[0] || x[1] != xmm0_pattern[1])
    wl_fail("regs thread: xmm0 = %016llx%016llx", (unsigned long long)x[1], (unsigned long long)x[0]);
  return NULL;
}

int main(int argc, char** argv) {
  wl_init(argc, argv);
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_usr2;  // no SA_RESTART: the sleeper must see EINTR
  if (sigaction(SIGUSR2, &sa, NULL) < 0) wl_die("sigaction");
  sigset_t s;
  sigemptyset(&s);
  sigaddset(&s, SIGUSR2);
  sigaddset(&s, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &s, NULL);  // threads inherit; the sleeper unblocks SIGUSR2

  pthread_barrier_init(&barrier, NULL, 4);
  pthread_t th[3];
  void* (*fns[3])(void*) = {futex_thread, sleep_thread, regs_thread};
  for (int i = 0; i < 3; i++)
    if (pthread_create(&th[i], NULL, fns[i], NULL) != 0) wl_die("pthread_create");
  pthread_barrier_wait(&barrier);
  for (int i = 0; i < 3; i++) {
    wl_report("tid_%s=%d", infos[i].name, (int)infos[i].tid);
    wl_report("fsbase_%s=0x%llx", infos[i].name, (unsigned long long)infos[i].fs_base);
  }
  uint64_t main_fs;
  syscall(SYS_arch_prctl, ARCH_GET_FS, &main_fs);
  wl_report("fsbase_main=0x%llx", (unsigned long long)main_fs);
  wl_report("r12=0x%llx", R12);
  wl_report("r13=0x%llx", R13);
  wl_report("r14=0x%llx", R14);
  wl_report("r15=0x%llx", R15);
  wl_report("xmm0_lo=0x%llx", (unsigned long long)xmm0_pattern[0]);
  wl_report("xmm0_hi=0x%llx", (unsigned long long)xmm0_pattern[1]);
  wl_ready_and_wait();

  futex_word = 1;
  syscall(SYS_futex, &futex_word, FUTEX_WAKE, 1, NULL, NULL, 0);
  regs_word = 1;
  syscall(SYS_futex, &regs_word, FUTEX_WAKE, 1, NULL, NULL, 0);
  // Resend until the sleeper is gone: a signal that lands just before it
  // enters clock_nanosleep would otherwise leave it sleeping for an hour.
  for (;;) {
    syscall(SYS_tgkill, getpid(), infos[1].tid, SIGUSR2);
    struct timespec dl;
    clock_gettime(CLOCK_REALTIME, &dl);
    dl.tv_nsec += 100 * 1000 * 1000;
    if (dl.tv_nsec >= 1000000000) { dl.tv_sec++; dl.tv_nsec -= 1000000000; }
    if (pthread_timedjoin_np(th[1], NULL, &dl) == 0) break;
  }
  pthread_join(th[0], NULL);
  pthread_join(th[2], NULL);
  if (!sleep_saw_eintr) wl_fail("sleep thread did not see EINTR");
  return wl_finish();
}
