// lr-check: probes the kernel features lazy-restore relies on and prints one
// line per probe: "<name>\t<ok|missing|info>\t<detail>". It runs in its own
// process so a probe that misbehaves (ptrace, clone3) can never disturb the
// caller; `lazy-restore check` formats the result.
#define _GNU_SOURCE
#include <errno.h>
#include <stdarg.h>
#include <fcntl.h>
#include <linux/sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/ioctl.h>
#include <sys/timerfd.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>

// Constants newer than the distro headers.
#ifndef __NR_pidfd_open
#define __NR_pidfd_open 434
#endif
#ifndef __NR_pidfd_getfd
#define __NR_pidfd_getfd 438
#endif
#ifndef __NR_clone3
#define __NR_clone3 435
#endif
#define UFFD_API_VERSION 0xAAULL
#define UFFDIO_API_IOCTL _IOWR(0xAA, 0x3F, struct uffdio_api_s)
#ifndef PR_SET_MM
#define PR_SET_MM 35
#endif
#define PR_SET_MM_MAP_SIZE 15
#ifndef PTRACE_GET_RSEQ_CONFIGURATION
#define PTRACE_GET_RSEQ_CONFIGURATION 0x420f
#endif
#ifndef PTRACE_SECCOMP_GET_FILTER
#define PTRACE_SECCOMP_GET_FILTER 0x420c
#endif
#ifndef PTRACE_O_SUSPEND_SECCOMP
#define PTRACE_O_SUSPEND_SECCOMP (1 << 21)
#endif
#ifndef SO_BUF_LOCK
#define SO_BUF_LOCK 72
#endif
#define PAGEMAP_SCAN_IOCTL _IOWR('f', 16, struct pm_scan_arg_s)

struct uffdio_api_s {
  uint64_t api;
  uint64_t features;
  uint64_t ioctls;
};

struct pm_scan_arg_s {
  uint64_t size, flags, start, end, walk_end, vec, vec_len, max_pages, category_inverted, category_mask,
      category_anyof_mask, return_mask;
};

struct clone_args_s {
  uint64_t flags, pidfd, child_tid, parent_tid, exit_signal, stack, stack_size, tls, set_tid, set_tid_size,
      cgroup;
};

static void report(const char* name, const char* status, const char* fmt, ...) {
  char buf[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  printf("%s\t%s\t%s\n", name, status, buf);
  fflush(stdout);
}

static const char* errname(int e) {
  const char* n = strerrorname_np(e);
  return n ? n : "E?";
}

static void check_kernel(void) {
  struct utsname u;
  uname(&u);
  int major = 0, minor = 0;
  sscanf(u.release, "%d.%d", &major, &minor);
  report("kernel", major >= 6 ? "ok" : "missing", "%s %s", u.release, u.machine);
}

static const struct {
  int bit;
  const char* name;
} uffd_features[] = {
    {0, "PAGEFAULT_FLAG_WP"}, {1, "EVENT_FORK"},        {2, "EVENT_REMAP"},       {3, "EVENT_REMOVE"},
    {4, "MISSING_HUGETLBFS"}, {5, "MISSING_SHMEM"},     {6, "EVENT_UNMAP"},       {7, "SIGBUS"},
    {8, "THREAD_ID"},         {9, "MINOR_HUGETLBFS"},   {10, "MINOR_SHMEM"},      {11, "EXACT_ADDRESS"},
    {12, "WP_HUGETLBFS_SHMEM"}, {13, "WP_UNPOPULATED"}, {14, "POISON"},           {15, "WP_ASYNC"},
    {16, "MOVE"},
};

static void check_uffd(void) {
  int fd = syscall(__NR_userfaultfd, O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) {
    report("userfaultfd", "missing", "userfaultfd(): %s", errname(errno));
  } else {
    report("userfaultfd", "ok", "userfaultfd() syscall works");
  }
  int dev = open("/dev/userfaultfd", O_RDWR | O_CLOEXEC);
  report("/dev/userfaultfd", dev >= 0 ? "ok" : "info", dev >= 0 ? "present" : "not usable: %s", errname(errno));
  if (dev >= 0) close(dev);
  if (fd < 0) return;
  struct uffdio_api_s api = {UFFD_API_VERSION, 0, 0};
  if (ioctl(fd, UFFDIO_API_IOCTL, &api) != 0) {
    report("uffd-api", "missing", "UFFDIO_API: %s", errname(errno));
    close(fd);
    return;
  }
  report("uffd-api", "ok", "features 0x%llx", (unsigned long long)api.features);
  for (size_t i = 0; i < sizeof uffd_features / sizeof uffd_features[0]; i++) {
    int on = (api.features >> uffd_features[i].bit) & 1;
    char name[64];
    snprintf(name, sizeof name, "uffd:%s", uffd_features[i].name);
    report(name, on ? "ok" : "missing", on ? "offered" : "not offered by this kernel");
  }
  close(fd);
}

// Probes on a child in a ptrace stop: what dump reads of a thread with ptrace.
static void check_ptrace_stopped(pid_t child) {
  // rseq registration (dump records it; a thread inside a critical section is refused).
  uint64_t rseq[4] = {0};
  long r = ptrace(PTRACE_GET_RSEQ_CONFIGURATION, child, sizeof(rseq), rseq);
  report("ptrace-rseq-config", r > 0 ? "ok" : "missing", r > 0 ? "PTRACE_GET_RSEQ_CONFIGURATION works" : "PTRACE_GET_RSEQ_CONFIGURATION: %s",
         errname(errno));
  // Seccomp filters are read with PTRACE_SECCOMP_GET_FILTER; a thread without
  // one answers EINVAL (EIO: the request does not exist in this kernel).
  r = ptrace(PTRACE_SECCOMP_GET_FILTER, child, 0, NULL);
  int e = errno;
  report("ptrace-seccomp-filter", r >= 0 || e == EINVAL || e == ENOENT ? "ok" : "missing",
         r >= 0 || e == EINVAL || e == ENOENT ? "PTRACE_SECCOMP_GET_FILTER works" : "PTRACE_SECCOMP_GET_FILTER: %s", errname(e));
  // A thread in seccomp mode is dumped with its seccomp suspended.
  r = ptrace(PTRACE_SETOPTIONS, child, 0, PTRACE_O_SUSPEND_SECCOMP);
  report("ptrace-suspend-seccomp", r == 0 ? "ok" : "missing", r == 0 ? "PTRACE_O_SUSPEND_SECCOMP works" : "PTRACE_O_SUSPEND_SECCOMP: %s",
         errname(errno));
}

static void check_ptrace(void) {
  pid_t child = fork();
  if (child == 0) {
    for (;;) pause();
  }
  if (ptrace(PTRACE_SEIZE, child, 0, 0) != 0) {
    report("ptrace", "missing", "PTRACE_SEIZE: %s", errname(errno));
  } else if (ptrace(PTRACE_INTERRUPT, child, 0, 0) != 0) {
    report("ptrace", "missing", "PTRACE_INTERRUPT: %s", errname(errno));
  } else {
    int st;
    if (waitpid(child, &st, __WALL) == child && WIFSTOPPED(st)) {
      report("ptrace", "ok", "seize + interrupt of a child works");
      check_ptrace_stopped(child);
    } else {
      report("ptrace", "missing", "no ptrace stop");
    }
  }
  kill(child, SIGKILL);
  waitpid(child, NULL, __WALL);
}

static void check_clone3_set_tid(void) {
  // Pick a free pid well above the last one used.
  FILE* f = fopen("/proc/sys/kernel/ns_last_pid", "r");
  long last = 0, max = 32768;
  if (f) { if (fscanf(f, "%ld", &last) != 1) last = 0; fclose(f); }
  f = fopen("/proc/sys/kernel/pid_max", "r");
  if (f) { if (fscanf(f, "%ld", &max) != 1) max = 32768; fclose(f); }
  // Candidates well above the last pid used, wrapping past pid_max; a pid
  // taken between the look and clone3 (EEXIST) just moves on to the next.
  long p = last + 5000;
  for (int tries = 0; tries < 64; tries++, p += 7) {
    if (p >= max) p = 300 + p % 97;
    char path[64];
    snprintf(path, sizeof path, "/proc/%ld", p);
    if (access(path, F_OK) == 0) continue;
    pid_t want = (pid_t)p, tid = want;
    struct clone_args_s args;
    memset(&args, 0, sizeof args);
    args.exit_signal = SIGCHLD;
    args.set_tid = (uint64_t)(uintptr_t)&tid;
    args.set_tid_size = 1;
    long r = syscall(__NR_clone3, &args, sizeof args);
    if (r == 0) _exit(0);
    if (r < 0 && errno == EEXIST) continue;
    if (r < 0) { report("clone3-set_tid", "missing", "clone3(set_tid): %s", errname(errno)); return; }
    waitpid((pid_t)r, NULL, 0);
    report("clone3-set_tid", r == want ? "ok" : "missing", "asked for pid %d, got %ld", want, r);
    return;
  }
  report("clone3-set_tid", "info", "no free pid found to test with");
}

static void check_pidfd(void) {
  pid_t child = fork();
  if (child == 0) { for (;;) pause(); }
  int pfd = syscall(__NR_pidfd_open, child, 0);
  if (pfd < 0) {
    report("pidfd_open", "missing", "%s", errname(errno));
  } else {
    report("pidfd_open", "ok", "works");
    int got = syscall(__NR_pidfd_getfd, pfd, 1, 0);
    report("pidfd_getfd", got >= 0 ? "ok" : "missing", got >= 0 ? "took an fd from a child" : "%s", errname(errno));
    if (got >= 0) close(got);
    close(pfd);
  }
  kill(child, SIGKILL);
  waitpid(child, NULL, 0);
}

static void check_mm_map(void) {
  unsigned int size = 0;
  if (prctl(PR_SET_MM, PR_SET_MM_MAP_SIZE, (unsigned long)&size, 0, 0) != 0)
    report("prctl-mm-map", "missing", "PR_SET_MM_MAP_SIZE: %s", errname(errno));
  else
    report("prctl-mm-map", "ok", "struct prctl_mm_map is %u bytes", size);
}

static void check_vdso(void) {
  FILE* f = fopen("/proc/self/maps", "r");
  char line[512];
  unsigned long vvar = 0, vclock = 0, vdso = 0;
  while (f && fgets(line, sizeof line, f)) {
    unsigned long s, e;
    if (sscanf(line, "%lx-%lx", &s, &e) != 2) continue;
    unsigned long pages = (e - s) / 4096;
    if (strstr(line, "[vvar]")) vvar = pages;
    else if (strstr(line, "[vvar_vclock]")) vclock = pages;
    else if (strstr(line, "[vdso]")) vdso = pages;
  }
  if (f) fclose(f);
  report("vdso", vdso ? "ok" : "missing", "[vvar] %lu pages, [vvar_vclock] %lu pages, [vdso] %lu pages (moved as one block)",
         vvar, vclock, vdso);
}

static void check_pagemap_scan(void) {
  int fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
  if (fd < 0) { report("pagemap-scan", "missing", "open pagemap: %s", errname(errno)); return; }
  char* p = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  p[0] = 1;
  struct pm_scan_arg_s a;
  memset(&a, 0, sizeof a);
  a.size = sizeof a;
  a.start = (uint64_t)(uintptr_t)p;
  a.end = a.start + 4096;
  long r = ioctl(fd, PAGEMAP_SCAN_IOCTL, &a);
  report("pagemap-scan", r >= 0 ? "ok" : "missing", r >= 0 ? "PAGEMAP_SCAN ioctl works" : "PAGEMAP_SCAN: %s",
         errname(errno));
  munmap(p, 4096);
  // Soft-dirty: a page just written has pagemap bit 55 set when the kernel
  // tracks it; without CONFIG_MEM_SOFT_DIRTY the bit is always clear.
  char* q = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  q[0] = 1;
  uint64_t ent = 0;
  int sd = pread(fd, &ent, sizeof ent, ((uintptr_t)q / 4096) * 8) == sizeof ent && ((ent >> 55) & 1);
  munmap(q, 4096);
  close(fd);
  report("soft-dirty", sd ? "ok" : "info",
         sd ? "available" : "not available (incremental dumps use userfaultfd write-protect instead)");
}

// timerfd state can be set back: TFD_IOC_SET_TICKS exists (EFAULT on a NULL
// argument; ENOTTY without CONFIG_CHECKPOINT_RESTORE), as CRIU's check_timerfd.
static void check_timerfd(void) {
  int fd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC);
  if (fd < 0) { report("timerfd", "missing", "timerfd_create: %s", errname(errno)); return; }
  int r = ioctl(fd, _IOW('T', 0, uint64_t), NULL);
  int e = errno;
  close(fd);
  report("timerfd", r < 0 && e == EFAULT ? "ok" : "missing",
         r < 0 && e == EFAULT ? "TFD_IOC_SET_TICKS works" : "TFD_IOC_SET_TICKS: %s", errname(r < 0 ? e : 0));
}

// An epoll watch can be matched to the file it watches: kcmp(KCMP_EPOLL_TFD),
// as CRIU's kcmp_epoll check.
static void check_kcmp_epoll(void) {
  int efd = epoll_create1(EPOLL_CLOEXEC), p[2];
  if (efd < 0 || pipe2(p, O_CLOEXEC) != 0) { report("kcmp-epoll-tfd", "missing", "epoll/pipe: %s", errname(errno)); return; }
  struct epoll_event ev = {.events = EPOLLIN};
  struct { uint32_t efd, tfd, toff; } slot = {(uint32_t)efd, (uint32_t)p[0], 0};
  long r = epoll_ctl(efd, EPOLL_CTL_ADD, p[0], &ev) == 0 ? syscall(SYS_kcmp, getpid(), getpid(), 7 /* KCMP_EPOLL_TFD */, p[0], &slot) : -1;
  int e = errno;
  close(p[0]);
  close(p[1]);
  close(efd);
  report("kcmp-epoll-tfd", r == 0 ? "ok" : "missing", r == 0 ? "kcmp(KCMP_EPOLL_TFD) works" : "kcmp(KCMP_EPOLL_TFD): %s", errname(e));
}

// /proc/PID/status names a task's pids in every pid namespace (NSpid): dump reads them.
static void check_ns_pid(void) {
  FILE* f = fopen("/proc/self/status", "r");
  if (!f) { report("ns-pid", "missing", "open /proc/self/status: %s", errname(errno)); return; }
  char line[256];
  int found = 0;
  while (fgets(line, sizeof(line), f)) {
    if (strncmp(line, "NSpid:", 6) == 0) found = 1;
  }
  fclose(f);
  report("ns-pid", found ? "ok" : "missing", found ? "/proc/PID/status has NSpid" : "/proc/PID/status has no NSpid");
}

// File locks are read from the "lock:" lines of /proc/PID/fdinfo/FD.
static void check_fdinfo_lock(void) {
  char path[] = "/tmp/lr-check-lock.XXXXXX";
  int fd = mkstemp(path);
  if (fd < 0) { report("fdinfo-lock", "missing", "mkstemp: %s", errname(errno)); return; }
  unlink(path);
  int found = 0;
  if (flock(fd, LOCK_SH) == 0) {
    char p[64];
    snprintf(p, sizeof(p), "/proc/self/fdinfo/%d", fd);
    FILE* f = fopen(p, "r");
    char line[256];
    while (f && fgets(line, sizeof(line), f)) {
      if (strncmp(line, "lock:", 5) == 0) found = 1;
    }
    if (f) fclose(f);
  }
  close(fd);
  report("fdinfo-lock", found ? "ok" : "missing", found ? "/proc/PID/fdinfo lists file locks" : "no lock: line in /proc/PID/fdinfo");
}

// SO_BUF_LOCK is read and set on inet sockets.
static void check_so_buf_lock(void) {
  int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (s < 0) { report("so-buf-lock", "missing", "socket: %s", errname(errno)); return; }
  int v = 0;
  socklen_t len = sizeof(v);
  int r = getsockopt(s, SOL_SOCKET, SO_BUF_LOCK, &v, &len);
  int e = errno;
  close(s);
  report("so-buf-lock", r == 0 ? "ok" : "missing", r == 0 ? "getsockopt(SO_BUF_LOCK) works" : "getsockopt(SO_BUF_LOCK): %s", errname(e));
}

static void check_caps(void) {
  FILE* f = fopen("/proc/self/status", "r");
  char line[256];
  unsigned long long eff = 0;
  while (f && fgets(line, sizeof line, f))
    if (sscanf(line, "CapEff: %llx", &eff) == 1) break;
  if (f) fclose(f);
  int admin = (eff >> 21) & 1, ptrace_cap = (eff >> 19) & 1, cr = (eff >> 40) & 1, res = (eff >> 24) & 1;
  report("capabilities", (admin || cr) && ptrace_cap ? "ok" : "missing",
         "CAP_SYS_ADMIN=%d CAP_CHECKPOINT_RESTORE=%d CAP_SYS_PTRACE=%d CAP_SYS_RESOURCE=%d", admin, cr, ptrace_cap, res);
}

int main(void) {
  check_kernel();
  check_caps();
  check_uffd();
  check_ptrace();
  check_clone3_set_tid();
  check_pidfd();
  check_mm_map();
  check_vdso();
  check_pagemap_scan();
  check_timerfd();
  check_kcmp_epoll();
  check_ns_pid();
  check_fdinfo_lock();
  check_so_buf_lock();
  return 0;
}
