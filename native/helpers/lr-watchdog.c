// lr-watchdog: guards lazily restored processes against the death of the
// lazy-pages daemon.
//
// When the last copy of a userfaultfd is closed the kernel silently turns
// every still-lazy page into a zero page, so a daemon that crashes would leave
// its processes running on wrong memory. The watchdog holds a duplicate of
// each userfaultfd (so faults keep blocking instead of reading zeros), taken
// from the daemon with pidfd_getfd, and reads commands from the daemon on its
// stdin. If stdin ends without a goodbye, the daemon is gone: the watchdog
// SIGKILLs every process not reported complete, with its descendants, logs
// why, and exits 1.
//
// Usage: lr-watchdog DAEMON_PID [LOGFILE]   (commands on stdin, one per line)
//   ADOPT <pid> <fd>  take a duplicate of the daemon's fd <fd> (the uffd of <pid>)
//   WATCH <pid>       a process to kill too (e.g. a forked child), no fd
//   DONE <pid>        <pid> is fully restored (or exited): forget it
//   BYE               the daemon is exiting normally
// Each command is answered with one line on stdout: "OK" or "ERR <errno name>",
// so the daemon knows the duplicate is held before the process may run.
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#define MAX_WATCHED 4096
#ifndef __NR_pidfd_open
#define __NR_pidfd_open 434
#endif
#ifndef __NR_pidfd_getfd
#define __NR_pidfd_getfd 438
#endif

struct watched {
  pid_t pid;
  int uffd;  // -1 when none
};

static struct watched table[MAX_WATCHED];
static int nwatched;
static FILE* logf;

static void logmsg(const char* fmt, ...) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  va_list ap;
  va_start(ap, fmt);
  fprintf(logf, "lr-watchdog[%d] %ld.%03ld: ", getpid(), (long)ts.tv_sec, ts.tv_nsec / 1000000);
  vfprintf(logf, fmt, ap);
  fputc('\n', logf);
  fflush(logf);
  va_end(ap);
}

static void forget(pid_t pid) {
  for (int i = 0; i < nwatched; i++) {
    if (table[i].pid != pid) continue;
    if (table[i].uffd >= 0) close(table[i].uffd);
    table[i] = table[--nwatched];
    return;
  }
}

static void add(pid_t pid, int uffd) {
  for (int i = 0; i < nwatched; i++) {
    if (table[i].pid == pid) {
      if (uffd >= 0) {
        if (table[i].uffd >= 0) close(table[i].uffd);
        table[i].uffd = uffd;
      }
      return;
    }
  }
  if (nwatched == MAX_WATCHED) {
    logmsg("too many processes to watch; killing pid %d at once", pid);
    kill(pid, SIGKILL);
    if (uffd >= 0) close(uffd);
    return;
  }
  table[nwatched].pid = pid;
  table[nwatched].uffd = uffd;
  nwatched++;
}

static pid_t parent_of(pid_t pid) {
  char path[64], buf[512];
  snprintf(path, sizeof path, "/proc/%d/stat", pid);
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  ssize_t n = read(fd, buf, sizeof buf - 1);
  close(fd);
  if (n <= 0) return -1;
  buf[n] = 0;
  char* rp = strrchr(buf, ')');  // comm may contain spaces and parentheses
  if (!rp) return -1;
  char state;
  int ppid;
  if (sscanf(rp + 2, "%c %d", &state, &ppid) != 2) return -1;
  return ppid;
}

// Stops pid first so it cannot fork while we look for its children, then
// kills its descendants and itself.
static void kill_tree(pid_t root) {
  if (kill(root, SIGSTOP) != 0 && errno == ESRCH) return;
  DIR* d = opendir("/proc");
  struct dirent* e;
  while (d && (e = readdir(d)) != NULL) {
    char* end;
    long p = strtol(e->d_name, &end, 10);
    if (*end != 0 || p <= 0 || p == root) continue;
    // Walk up from p; if we reach root, p is a descendant.
    pid_t cur = (pid_t)p;
    for (int depth = 0; depth < 64 && cur > 1; depth++) {
      pid_t pp = parent_of(cur);
      if (pp == root) {
        kill((pid_t)p, SIGKILL);
        logmsg("killed pid %ld (descendant of %d)", p, root);
        break;
      }
      cur = pp;
    }
  }
  if (d) closedir(d);
  kill(root, SIGKILL);
}

static void reply(const char* status, int err) {
  char line[64];
  int n = err ? snprintf(line, sizeof line, "ERR %s\n", strerrorname_np(err) ? strerrorname_np(err) : "E?")
              : snprintf(line, sizeof line, "%s\n", status);
  if (write(1, line, n) < 0) { /* the daemon is gone; stdin EOF follows */ }
}

int main(int argc, char** argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: lr-watchdog DAEMON_PID [LOGFILE]\n");
    return 2;
  }
  pid_t daemon_pid = atoi(argv[1]);
  logf = stderr;
  if (argc > 2) {
    FILE* f = fopen(argv[2], "a");
    if (f) logf = f;
  }
  // Survive signals sent to the daemon's terminal or process group.
  signal(SIGHUP, SIG_IGN);
  signal(SIGINT, SIG_IGN);
  signal(SIGTERM, SIG_IGN);
  signal(SIGPIPE, SIG_IGN);
  int pidfd = syscall(__NR_pidfd_open, daemon_pid, 0);
  if (pidfd < 0) {
    fprintf(logf, "lr-watchdog: pidfd_open(%d): %s\n", daemon_pid, strerror(errno));
    return 2;
  }
  FILE* in = fdopen(0, "r");
  char line[256];
  reply("READY", 0);
  while (fgets(line, sizeof line, in) != NULL) {
    int pid = 0, fd = -1;
    if (sscanf(line, "ADOPT %d %d", &pid, &fd) == 2 && pid > 0 && fd >= 0) {
      int dup = syscall(__NR_pidfd_getfd, pidfd, fd, 0);
      if (dup < 0) {
        reply(NULL, errno);
        continue;
      }
      fcntl(dup, F_SETFD, FD_CLOEXEC);
      add(pid, dup);
    } else if (sscanf(line, "WATCH %d", &pid) == 1 && pid > 0) {
      add(pid, -1);
    } else if (sscanf(line, "DONE %d", &pid) == 1 && pid > 0) {
      forget(pid);
    } else if (strncmp(line, "BYE", 3) == 0) {
      for (int i = 0; i < nwatched; i++)
        if (table[i].uffd >= 0) close(table[i].uffd);
      reply("OK", 0);
      return 0;
    } else {
      reply(NULL, EINVAL);
      continue;
    }
    reply("OK", 0);
  }
  // stdin ended without BYE: the daemon is gone.
  if (nwatched > 0)
    logmsg("lazy-pages daemon (pid %d) died with %d process(es) not fully restored: killing them so that no lazy "
           "page is ever read as zero",
           daemon_pid, nwatched);
  int killed = nwatched;
  for (int i = 0; i < nwatched; i++) {
    logmsg("killing pid %d (memory not fully restored)", table[i].pid);
    kill_tree(table[i].pid);
  }
  return killed > 0 ? 1 : 0;
}
