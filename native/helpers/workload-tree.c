// Test workload: a small process tree, parent -> child -> grandchild, each
// with its own patterned memory (protocol: workload-common.h).
//   workload-tree CTRL_DIR [zombie]
// With "zombie" the root instead keeps one exited, unreaped child (reported
// as zombie=PID) until "go": a tree a dump must refuse.
// The grandchild moves to its own process group. On SIGUSR1 the root
// forwards "go" down the tree; every process checks its memory, the
// grandchild exits with 0/1, the child reaps it (after a restore this proves
// the parent/child link) and exits with the combined status, and the root
// reaps the child and writes the result. Ready report: pid, child, grandchild.
#include "workload-common.h"

#include <sys/mman.h>
#include <sys/wait.h>

// Per-process region size; the CRIU-written test fixtures are built smaller.
#ifndef WL_TREE_LEN
#define LEN (1UL << 20)
#else
#define LEN ((unsigned long)(WL_TREE_LEN))
#endif

static char* region(uint64_t seed) {
  char* p = mmap(NULL, LEN, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) wl_die("mmap");
  uint64_t* w = (uint64_t*)p;
  for (size_t i = 0; i < LEN / 8; i += 3) w[i] = seed * 0x9E3779B97F4A7C15ULL + i;
  return p;
}

static int verify(const char* p, uint64_t seed) {
  const uint64_t* w = (const uint64_t*)p;
  for (size_t i = 0; i < LEN / 8; i++) {
    uint64_t want = i % 3 == 0 ? seed * 0x9E3779B97F4A7C15ULL + i : 0;
    if (w[i] != want) return 0;
  }
  return 1;
}

int main(int argc, char** argv) {
  wl_init(argc, argv);
  if (argc > 2 && strcmp(argv[2], "zombie") == 0) {
    pid_t z = fork();
    if (z < 0) wl_die("fork");
    if (z == 0) _exit(0);
    siginfo_t si;
    // Wait for it to be a zombie without reaping it.
    if (waitid(P_PID, (id_t)z, &si, WEXITED | WNOWAIT) < 0) wl_die("waitid");
    wl_report("zombie=%d", (int)z);
    wl_ready_and_wait();
    int st;
    if (waitpid(z, &st, 0) != z) wl_fail("reap zombie: %s", strerror(errno));
    return wl_finish();
  }
  char* mine = region(1);
  int ready[2];
  if (pipe2(ready, O_CLOEXEC) < 0) wl_die("pipe");
  pid_t child = fork();
  if (child < 0) wl_die("fork");
  if (child == 0) {
    char* cm = region(2);
    pid_t grand = fork();
    if (grand < 0) wl_die("fork");
    if (grand == 0) {
      setpgid(0, 0);
      char* gm = region(3);
      close(ready[0]);
      pid_t me = getpid();
      if (write(ready[1], &me, sizeof me) != sizeof me) wl_die("write");
      close(ready[1]);
      wl_wait_go();
      _exit(verify(gm, 3) && verify(mine, 1) ? 0 : 1);
    }
    close(ready[0]);
    if (write(ready[1], &grand, sizeof grand) != sizeof grand) wl_die("write");
    close(ready[1]);
    wl_wait_go();
    kill(grand, SIGUSR1);
    int st = 0;
    if (waitpid(grand, &st, 0) != grand) _exit(3);
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) _exit(2);
    _exit(verify(cm, 2) ? 0 : 1);
  }
  close(ready[1]);
  // Both descendants write the grandchild's pid; EOF means both closed their
  // ends, so no pipe is left open anywhere at dump time.
  pid_t grand = 0, got;
  ssize_t n;
  while ((n = read(ready[0], &got, sizeof got)) == sizeof got) grand = got;
  if (n != 0 || grand == 0) wl_die("read");
  close(ready[0]);
  wl_report("child=%d", (int)child);
  wl_report("grandchild=%d", (int)grand);
  wl_ready_and_wait();
  kill(child, SIGUSR1);
  int st = 0;
  if (waitpid(child, &st, 0) != child) wl_fail("waitpid(child): %s", strerror(errno));
  else if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) wl_fail("child status 0x%x", st);
  if (!verify(mine, 1)) wl_fail("root memory");
  return wl_finish();
}
