// Test workload for lazy restore: right after "go" it changes its address
// space before touching the memory, so the lazy-pages daemon must follow
// (protocol: workload-common.h).
//   workload-restore-post CTRL_DIR [MIB=16]
// Four patterned regions of MIB/4 each (every 8th page never touched):
//   A: fork() at once; the child checks all of A and exits 0/1, the parent
//      checks A too and reaps the child;
//   B: mremap()ed to a new address (MREMAP_MAYMOVE|MREMAP_FIXED), then checked there;
//   C: first half MADV_DONTNEED (must read zeros), second half checked;
//   D: first half munmap()ed, second half checked.
#include "workload-common.h"

#include <sys/mman.h>
#include <sys/wait.h>

#define PAGE 4096UL

static unsigned char* region[4];
static size_t rlen;

static unsigned char pattern(int r, size_t page, size_t off) {
  if (page % 8 == 7) return 0;
  return (unsigned char)(r * 31 + page * 7 + off / 512 + 1);
}

static void fill(int r) {
  for (size_t p = 0; p < rlen / PAGE; p++) {
    if (p % 8 == 7) continue;
    for (size_t o = 0; o < PAGE; o += 512) memset(region[r] + p * PAGE + o, pattern(r, p, o), 512);
  }
}

// Returns the number of bad pages of region r found at `base`, pages [from, to).
static size_t check(int r, const unsigned char* base, size_t from, size_t to) {
  size_t bad = 0;
  for (size_t p = from; p < to; p++) {
    for (size_t o = 0; o < PAGE; o += 512) {
      unsigned char want = pattern(r, p, o);
      const unsigned char* q = base + p * PAGE + o;
      for (size_t i = 0; i < 512; i++) {
        if (q[i] != want) {
          bad++;
          o = PAGE;
          break;
        }
      }
    }
  }
  return bad;
}

int main(int argc, char** argv) {
  wl_init(argc, argv);
  size_t mib = argc > 2 ? strtoul(argv[2], NULL, 10) : 16;
  rlen = (mib << 20) / 4;
  for (int r = 0; r < 4; r++) {
    region[r] = mmap(NULL, rlen, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (region[r] == MAP_FAILED) wl_die("mmap");
    fill(r);
    wl_report("region%d=%p:%zu", r, (void*)region[r], rlen);
  }
  // A target for B's move, reserved now so the address is free and known.
  unsigned char* target = mmap(NULL, rlen, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (target == MAP_FAILED) wl_die("mmap target");
  wl_ready_and_wait();

  size_t pages = rlen / PAGE;
  pid_t child = fork();
  if (child < 0) wl_die("fork");
  if (child == 0) _exit(check(0, region[0], 0, pages) ? 1 : 0);
  unsigned char* moved = mremap(region[1], rlen, rlen, MREMAP_MAYMOVE | MREMAP_FIXED, target);
  if (moved == MAP_FAILED) wl_die("mremap");
  if (madvise(region[2], rlen / 2, MADV_DONTNEED) < 0) wl_die("madvise");
  if (munmap(region[3], rlen / 2) < 0) wl_die("munmap");

  size_t bad;
  if ((bad = check(0, region[0], 0, pages))) wl_fail("A: %zu bad pages in the parent after fork", bad);
  if ((bad = check(1, moved, 0, pages))) wl_fail("B: %zu bad pages after mremap", bad);
  for (size_t i = 0; i < rlen / 2; i++) {
    if (region[2][i]) {
      wl_fail("C: byte %zu not zero after MADV_DONTNEED", i);
      break;
    }
  }
  if ((bad = check(2, region[2], pages / 2, pages))) wl_fail("C: %zu bad pages in the kept half", bad);
  if ((bad = check(3, region[3], pages / 2, pages))) wl_fail("D: %zu bad pages in the kept half", bad);
  int st = 0;
  if (waitpid(child, &st, 0) != child) wl_die("waitpid");
  if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) wl_fail("A: the forked child saw bad memory (status 0x%x)", st);
  return wl_finish();
}
