// bench-reaper REPORT_FD CMD [ARGS...]: runs CMD as a child subreaper, so everything CMD
// leaves behind (a restored tree after `restore -d`, a detached daemon) is
// re-parented here and reaped at once (PID 1 here reaps orphans slowly, and
// a zombie holding a pid would fail the next restore). When CMD itself exits,
// writes "exit STATUS REALTIME_NS\n" to REPORT_FD (not passed to CMD; the
// other descriptors are, e.g. a --status-fd); then keeps reaping
// until no descendant is left and exits with CMD's status (bench/suites/vs-criu.ts).
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char** argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: %s REPORT_FD CMD [ARGS...]\n", argv[0]);
    return 2;
  }
  int report = atoi(argv[1]);
  fcntl(report, F_SETFD, FD_CLOEXEC);
  if (prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) < 0) {
    perror("bench-reaper: prctl");
    return 2;
  }
  pid_t cmd = fork();
  if (cmd < 0) return 2;
  if (cmd == 0) {
    execvp(argv[2], argv + 2);
    fprintf(stderr, "bench-reaper: exec %s: %s\n", argv[2], strerror(errno));
    _exit(127);
  }
  int cmdStatus = 0;
  for (;;) {
    int st;
    pid_t p = wait(&st);
    if (p < 0) {
      if (errno == EINTR) continue;
      break;
    }
    if (p == cmd) {
      cmdStatus = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
      struct timespec ts;
      clock_gettime(CLOCK_REALTIME, &ts);
      char line[64];
      int n = snprintf(line, sizeof line, "exit %d %lld\n", cmdStatus, (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec);
      if (write(report, line, n) == n) close(report);
    }
  }
  return cmdStatus;
}
