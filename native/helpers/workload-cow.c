// Test workload: copy-on-write sharing between a parent and its child
// (protocol: workload-common.h).
//   workload-cow CTRL_DIR
// The parent fills 32 private anonymous pages, then forks. After the fork
// the child rewrites pages 8..11 and the parent pages 16..19; all other
// pages are still shared copy on write (the test compares both processes'
// /proc/PID/pagemap frames). On SIGUSR1 (forwarded to the child) each side
// checks every page. Ready report: pid, child, region=ADDR.
#include "workload-common.h"

#include <sys/mman.h>
#include <sys/wait.h>

#define PAGE 4096UL
#define PAGES 32

static uint64_t pat(size_t page, size_t word, uint64_t gen) {
  return (page * 0x9E3779B97F4A7C15ULL) ^ (word * 131) ^ (gen << 48);
}

static void fill(char* base, size_t page, uint64_t gen) {
  uint64_t* w = (uint64_t*)(base + page * PAGE);
  for (size_t i = 0; i < PAGE / 8; i++) w[i] = pat(page, i, gen);
}

static int check_all(const char* base, size_t from, size_t to, uint64_t gen_there) {
  for (size_t p = 0; p < PAGES; p++) {
    uint64_t gen = p >= from && p < to ? gen_there : 1;
    const uint64_t* w = (const uint64_t*)(base + p * PAGE);
    for (size_t i = 0; i < PAGE / 8; i++)
      if (w[i] != pat(p, i, gen)) return (int)p + 1;
  }
  return 0;
}

// The child's own writes before the dump: pages 8-11 of the region.
static void child_setup(void* arg) {
  for (size_t p = 8; p < 12; p++) fill(arg, p, 2);
}

int main(int argc, char** argv) {
  wl_init(argc, argv);
  char* r = mmap(NULL, PAGES * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (r == MAP_FAILED) wl_die("mmap");
  for (size_t p = 0; p < PAGES; p++) fill(r, p, 1);
  pid_t child = wl_fork_ready(child_setup, r);
  if (child == 0) _exit(check_all(r, 8, 12, 2) ? 1 : 0);
  for (size_t p = 16; p < 20; p++) fill(r, p, 3);
  wl_report("child=%d", (int)child);
  wl_report("region=%p", r);
  wl_ready_and_wait();
  kill(child, SIGUSR1);
  int bad = check_all(r, 16, 20, 3);
  if (bad) wl_fail("parent: page %d", bad - 1);
  int st;
  if (waitpid(child, &st, 0) != child) wl_fail("reap child: %s", strerror(errno));
  else if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) wl_fail("child: a page differs (status 0x%x)", st);
  return wl_finish();
}
