// Test workload: a process holding one file lock of each kind (protocol:
// workload-common.h), and a forked child sharing the descriptions.
//   workload-locks CTRL_DIR FILE
// Opens FILE three times: fd `flock` holds flock(LOCK_EX), fd `posix` a
// POSIX write lock (fcntl F_SETLK) on bytes 100-109 and a POSIX read lock
// on bytes 300-EOF, fd `ofd` an OFD write lock (F_OFD_SETLK) on bytes
// 200-209. Then it forks a child that inherits the three descriptions (so
// its fdinfo shows the flock and OFD lock again, not the POSIX ones) and
// waits for the parent's SIGUSR1 forward. Ready report: pid, child, flock,
// posix, ofd (fd numbers).
// On SIGUSR1 (forwarded to the child) the parent releases every lock
// (flock LOCK_UN, F_UNLCK of each range) checking each call succeeds, reaps
// the child, writes "ok" and exits. The test checks from another process
// that each lock is held before "go" and free after.
#include "workload-common.h"

#include <sys/file.h>
#include <sys/wait.h>

static int set_lock(int fd, int cmd, short type, off_t start, off_t len) {
  struct flock fl;
  memset(&fl, 0, sizeof fl);
  fl.l_type = type;
  fl.l_whence = SEEK_SET;
  fl.l_start = start;
  fl.l_len = len;
  return fcntl(fd, cmd, &fl);
}

int main(int argc, char** argv) {
  wl_init(argc, argv);
  if (argc < 3) {
    fprintf(stderr, "usage: %s CTRL_DIR FILE\n", argv[0]);
    return 2;
  }
  int a = open(argv[2], O_RDWR);
  int b = open(argv[2], O_RDWR);
  int c = open(argv[2], O_RDWR);
  if (a < 0 || b < 0 || c < 0) wl_die("open");
  if (flock(a, LOCK_EX | LOCK_NB) < 0) wl_die("flock");
  if (set_lock(b, F_SETLK, F_WRLCK, 100, 10) < 0) wl_die("posix write lock");
  if (set_lock(b, F_SETLK, F_RDLCK, 300, 0) < 0) wl_die("posix read lock");
  if (set_lock(c, F_OFD_SETLK, F_WRLCK, 200, 10) < 0) wl_die("ofd lock");
  pid_t child = fork();
  if (child < 0) wl_die("fork");
  if (child == 0) {
    wl_wait_go();
    _exit(0);
  }
  wl_report("child=%d", (int)child);
  wl_report("flock=%d", a);
  wl_report("posix=%d", b);
  wl_report("ofd=%d", c);
  wl_ready_and_wait();
  kill(child, SIGUSR1);
  if (flock(a, LOCK_UN) < 0) wl_fail("flock LOCK_UN: %s", strerror(errno));
  if (set_lock(b, F_SETLK, F_UNLCK, 100, 10) < 0) wl_fail("posix unlock 100-109: %s", strerror(errno));
  if (set_lock(b, F_SETLK, F_UNLCK, 300, 0) < 0) wl_fail("posix unlock 300-EOF: %s", strerror(errno));
  if (set_lock(c, F_OFD_SETLK, F_UNLCK, 200, 10) < 0) wl_fail("ofd unlock: %s", strerror(errno));
  int st = 0;
  if (waitpid(child, &st, 0) != child) wl_fail("waitpid: %s", strerror(errno));
  else if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) wl_fail("child status 0x%x", st);
  return wl_finish();
}
