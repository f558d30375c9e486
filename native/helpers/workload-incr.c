// workload-incr: a process that keeps writing, for incremental dumps.
//   workload-incr CTRL_DIR SIZE_MIB
// Fills a SIZE_MIB anonymous buffer (THP off: write tracking then works per
// 4 KiB page) with a verifiable pattern, leaving every 7th page untouched,
// then reports ready. Each SIGUSR2 runs one round k = 1, 2, ...: it rewrites
// 5% of the pages (page % 20 == k % 20) with generation k+1; round 1 also
// MADV_DONTNEEDs the first 8 pages, round 2 maps and fills a new region.
// After a round it writes CTRL_DIR/round-k ("written=", "populated=", "buf=",
// "pages="). SIGUSR1 (workload-common.h) verifies every page against the
// generation table, writes CTRL_DIR/result and exits.
// Also a 2-page MAP_PRIVATE writable mapping of CTRL_DIR/pf.dat: page 0
// written (a private copy), page 1 never touched. At the end page 0 must keep
// its private bytes and page 1 must still be the file's: a write to the file
// through an fd shows in it (a pre-dump must not copy it as a private page).
#define _GNU_SOURCE
#include <sys/mman.h>

#include "workload-common.h"

// Rounds replace workload-common.h's single wait.
__attribute__((unused)) static void (*const unused_wait)(void) = wl_ready_and_wait;

#define UNPOP 0xffffffffu  // never written: must read as zeros
#define ZERO 0xfffffffeu   // discarded (MADV_DONTNEED): must read as zeros
#define PAGE 4096
#define EXTRA_PAGES 32

static volatile sig_atomic_t rounds_asked;

static void on_usr2(int sig) {
  (void)sig;
  rounds_asked++;
}

static uint64_t word(size_t page, uint32_t gen, size_t i) {
  return 0x5a5a000000000000ull ^ ((uint64_t)page << 24) ^ ((uint64_t)gen << 12) ^ (uint64_t)i;
}

// Page `page` of `buf`; `id` names it in the pattern.
static void fill_id(char* buf, size_t page, size_t id, uint32_t gen) {
  uint64_t* w = (uint64_t*)(buf + page * PAGE);
  for (size_t i = 0; i < PAGE / 8; i++) w[i] = word(id, gen, i);
}

static void fill(char* buf, size_t page, uint32_t gen) {
  uint64_t* w = (uint64_t*)(buf + page * PAGE);
  for (size_t i = 0; i < PAGE / 8; i++) w[i] = word(page, gen, i);
}

static int check_id(const char* buf, size_t page, size_t id, uint32_t gen) {
  const uint64_t* w = (const uint64_t*)(buf + page * PAGE);
  for (size_t i = 0; i < PAGE / 8; i++) {
    uint64_t want = (gen == UNPOP || gen == ZERO) ? 0 : word(id, gen, i);
    if (w[i] != want) return 0;
  }
  return 1;
}

static int check(const char* buf, size_t page, uint32_t gen) {
  return check_id(buf, page, page, gen);
}

int main(int argc, char** argv) {
  wl_init(argc, argv);
  size_t mib = argc > 2 ? strtoul(argv[2], NULL, 10) : 16;
  size_t pages = mib * 256;
  char* buf = mmap(NULL, pages * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  uint32_t* gen = mmap(NULL, pages * 4, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (buf == MAP_FAILED || gen == MAP_FAILED) wl_die("mmap");
  madvise(buf, pages * PAGE, MADV_NOHUGEPAGE);
  for (size_t p = 0; p < pages; p++) {
    gen[p] = p % 7 == 3 ? UNPOP : 1;
    if (gen[p] != UNPOP) fill(buf, p, 1);
  }
  char* extra = NULL;
  char pfpath[4200];
  snprintf(pfpath, sizeof pfpath, "%s/pf.dat", wl_ctrl_dir);
  int pf = open(pfpath, O_RDWR | O_CREAT | O_TRUNC, 0644);
  if (pf < 0 || ftruncate(pf, 2 * PAGE) < 0 || pwrite(pf, "file", 4, PAGE) != 4) wl_die("pf.dat");
  char* pfmap = mmap(NULL, 2 * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE, pf, 0);
  if (pfmap == MAP_FAILED) wl_die("mmap pf.dat");
  memcpy(pfmap, "private", 7);

  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_usr2;
  sa.sa_flags = SA_RESTART;
  if (sigaction(SIGUSR2, &sa, NULL) < 0) wl_die("sigaction");
  sigset_t s, waitmask;
  sigemptyset(&s);
  sigaddset(&s, SIGUSR2);
  sigprocmask(SIG_BLOCK, &s, NULL);
  wl_report("buf=%lx", (unsigned long)buf);
  wl_report("pages=%zu", pages);
  wl_report("round=0");
  // Ready, then serve rounds until "go".
  wl_report("pid=%d", (int)getpid());
  wl_write_file("ready", wl_ready_buf, wl_ready_len);
  sigprocmask(SIG_BLOCK, NULL, &waitmask);
  sigdelset(&waitmask, SIGUSR1);
  sigdelset(&waitmask, SIGUSR2);
  int done = 0;
  while (!wl_go) {
    while (done < rounds_asked) {
      int k = ++done;
      size_t written = 0;
      for (size_t p = 0; p < pages; p++) {
        if (p % 20 != (size_t)k % 20) continue;
        gen[p] = (uint32_t)k + 1;
        fill(buf, p, gen[p]);
        written++;
      }
      if (k == 1) {
        madvise(buf, 8 * PAGE, MADV_DONTNEED);
        for (size_t p = 0; p < 8; p++) {
          if (gen[p] != UNPOP && gen[p] != ZERO && p % 20 == 1) written--;
          gen[p] = ZERO;
        }
      }
      if (k == 2 && !extra) {
        extra = mmap(NULL, EXTRA_PAGES * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (extra == MAP_FAILED) wl_die("mmap extra");
        for (size_t p = 0; p < EXTRA_PAGES; p++) fill_id(extra, p, p + 1000000, 7);
      }
      size_t populated = 0;
      for (size_t p = 0; p < pages; p++) populated += gen[p] != UNPOP && gen[p] != ZERO;
      char out[256], name[32];
      int n = snprintf(out, sizeof out, "written=%zu\npopulated=%zu\nbuf=%lx\npages=%zu\n", written, populated, (unsigned long)buf, pages);
      snprintf(name, sizeof name, "round-%d", k);
      wl_write_file(name, out, (size_t)n);
    }
    if (!wl_go && done >= rounds_asked) sigsuspend(&waitmask);
  }
  size_t bad = 0, first = 0;
  for (size_t p = 0; p < pages; p++) {
    if (!check(buf, p, gen[p])) {
      if (!bad) first = p;
      bad++;
    }
  }
  if (bad) wl_fail("%zu pages differ, first page %zu (gen %u)", bad, first, gen[first]);
  if (memcmp(pfmap, "private", 7) != 0) wl_fail("pf.dat page 0 lost its private bytes");
  if (pwrite(pf, "FILE", 4, PAGE) != 4) wl_fail("pwrite pf.dat: %s", strerror(errno));
  if (memcmp(pfmap + PAGE, "FILE", 4) != 0)
    wl_fail("pf.dat page 1 is not the file's page any more (reads \"%.4s\"): it was copied as a private page", pfmap + PAGE);
  if (extra) {
    for (size_t p = 0; p < EXTRA_PAGES; p++)
      if (!check_id(extra, p, p + 1000000, 7)) wl_fail("extra page %zu differs", p);
  }
  return wl_finish();
}
