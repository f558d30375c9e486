// lr-tracker: keeps the write-tracking userfaultfds of an incremental dump
// open between two dump commands.
//
// Closing the last copy of a userfaultfd unregisters its ranges and drops
// every write-protection, so the dirty information of uffd-wp (WP_ASYNC)
// tracking lives exactly as long as some process holds the fd. `pre-dump`
// creates the uffds inside the target, then starts this helper, which takes
// its own copies from the pre-dump command with pidfd_getfd and reports
// their fd numbers; later dumps take copies back from here the same way.
//
// Usage: lr-tracker TIMEOUT_S TARGET_PID FROM_PID FD...
// Prints "OK <fd> <fd>..." (its own numbers, in argument order) or
// "ERR <errno> <what>" on stdout, then closes stdout. Exits 0 on SIGTERM/
// SIGINT (the next final dump retires it), when TARGET_PID exits, or after
// TIMEOUT_S seconds (0 = never).
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#ifndef __NR_pidfd_open
#define __NR_pidfd_open 434
#endif
#ifndef __NR_pidfd_getfd
#define __NR_pidfd_getfd 438
#endif

static int fail(const char* what) {
  printf("ERR %d %s\n", errno, what);
  fflush(stdout);
  return 1;
}

int main(int argc, char** argv) {
  if (argc < 5) {
    fprintf(stderr, "usage: lr-tracker TIMEOUT_S TARGET_PID FROM_PID FD...\n");
    return 2;
  }
  long timeout_s = strtol(argv[1], NULL, 10);
  pid_t target = (pid_t)strtol(argv[2], NULL, 10);
  pid_t from = (pid_t)strtol(argv[3], NULL, 10);

  // Signals first: a SIGTERM that arrives right after "OK" must not be lost.
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGHUP);
  sigprocmask(SIG_BLOCK, &set, NULL);
  signal(SIGPIPE, SIG_IGN);
  int sfd = signalfd(-1, &set, SFD_CLOEXEC);
  if (sfd < 0) return fail("signalfd");

  int target_fd = (int)syscall(__NR_pidfd_open, target, 0);
  if (target_fd < 0) return fail("pidfd_open(target)");
  int from_fd = (int)syscall(__NR_pidfd_open, from, 0);
  if (from_fd < 0) return fail("pidfd_open(from)");
  char line[4096];
  size_t len = (size_t)snprintf(line, sizeof line, "OK");
  for (int i = 4; i < argc; i++) {
    int fd = (int)syscall(__NR_pidfd_getfd, from_fd, (int)strtol(argv[i], NULL, 10), 0);
    if (fd < 0) return fail("pidfd_getfd");
    if (len < sizeof line) len += (size_t)snprintf(line + len, sizeof line - len, " %d", fd);
  }
  close(from_fd);
  printf("%s\n", line);
  fflush(stdout);
  // Nothing more to say: the starter may exit without us getting SIGPIPE.
  int devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
  if (devnull >= 0) {
    dup2(devnull, 0);
    dup2(devnull, 1);
    close(devnull);
  }

  struct timespec t0;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  for (;;) {
    int wait_ms = -1;
    if (timeout_s > 0) {
      struct timespec now;
      clock_gettime(CLOCK_MONOTONIC, &now);
      long long left = timeout_s * 1000LL - ((now.tv_sec - t0.tv_sec) * 1000LL + (now.tv_nsec - t0.tv_nsec) / 1000000);
      if (left <= 0) return 0;
      wait_ms = left > 1000000 ? 1000000 : (int)left;
    }
    struct pollfd p[2] = {{sfd, POLLIN, 0}, {target_fd, POLLIN, 0}};
    int n = poll(p, 2, wait_ms);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return fail("poll");
    if (p[0].revents || p[1].revents) return 0;
  }
}
