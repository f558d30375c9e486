// Test workload for lazily served shared memory (protocol:
// workload-common.h).
//   workload-shmem-lazy CTRL_DIR [check|discard]
// Before the fork the parent maps a MAP_SHARED anonymous region (ANON_PAGES,
// every page but each fourth written) and a memfd "lr-lazy" (MEMFD_PAGES,
// created without MFD_ALLOW_SEALING, every page but each fifth written, its
// fd closed: only the mappings keep it). The child overwrites some pages of
// both before the ready report. Ready report: pid, child, anon, memfd
// (addresses), anon_pages, memfd_pages.
// On SIGUSR1:
//   check:   the parent verifies every page, discards 16 served pages
//            with MADV_REMOVE (they must read zero, for the child too, which
//            has not touched them) and one with MADV_DONTNEED (it must keep
//            its data); then the child verifies every page, writes into both
//            areas and the parent must see it, the parent answers and the
//            child must see that; a grandchild forked now writes into both
//            areas, must see the zeros, and the parent must see its writes.
//   discard: the parent discards a page it never touched (MADV_DONTNEED;
//            under a lazy restore it was not served yet: the daemon must
//            kill it) and then verifies everything; forwarded to the child
//            (which the test signals itself) it just verifies everything.
#include "workload-common.h"
#include "workload-shmem-common.h"

#include <sys/mman.h>
#include <sys/wait.h>

#define ANON_PAGES 1024
#define MEMFD_PAGES 512
#define DISCARD_PAGE 700

static char* anon;
static char* mfd;

// The generation a page holds at the checkpoint: 0 = a hole (zero).
static uint64_t anon_gen(size_t p) {
  if (p == 0) return 0;  // the handshake page (checked by use)
  if (p % 8 == 1) return 2;
  return p % 4 == 3 ? 0 : 1;
}

static uint64_t mfd_gen(size_t p) {
  if (p % 16 == 2) return 2;
  return p % 5 == 4 ? 0 : 1;
}

// Set in check mode once the parent punched 8 pages of each area from
// anon_punch / mfd_punch: 32 KiB aligned in the address space (a whole
// fault-around window of the daemon's default 8 pages), so the child's next
// fault there lands on a punched page.
static size_t anon_punch, mfd_punch;
#define ANON_PUNCH(p) ((p) >= anon_punch && (p) < anon_punch + 8)
#define MFD_PUNCH(p) ((p) >= mfd_punch && (p) < mfd_punch + 8)

static size_t aligned_from(const char* base, size_t first) {
  size_t p = first;
  while (((uintptr_t)base / PAGE + p) % 8) p++;
  return p;
}
static int punched;

static void check_initial(const char* who) {
  for (size_t p = 1; p < ANON_PAGES; p++) {
    uint64_t g = punched && ANON_PUNCH(p) ? 0 : anon_gen(p);
    if (g ? !check(anon, 1, p, g) : !zero(anon, p)) wl_fail("%s: anon page %zu (gen %lu)", who, p, (unsigned long)g);
  }
  for (size_t p = 0; p < MEMFD_PAGES; p++) {
    uint64_t g = punched && MFD_PUNCH(p) ? 0 : mfd_gen(p);
    if (g ? !check(mfd, 2, p, g) : !zero(mfd, p)) wl_fail("%s: memfd page %zu (gen %lu)", who, p, (unsigned long)g);
  }
}

// The child's own writes before the dump.
static void child_setup(void* arg) {
  (void)arg;
  for (size_t p = 1; p < ANON_PAGES; p += 8) fill(anon, 1, p, 2);
  for (size_t p = 2; p < MEMFD_PAGES; p += 16) fill(mfd, 2, p, 2);
}

int main(int argc, char** argv) {
  wl_init(argc, argv);
  const int discard = argc > 2 && strcmp(argv[2], "discard") == 0;
  anon = mmap(NULL, ANON_PAGES * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (anon == MAP_FAILED) wl_die("mmap anon");
  for (size_t p = 1; p < ANON_PAGES; p++)
    if (p % 4 != 3) fill(anon, 1, p, 1);
  struct handshake* hs = (struct handshake*)anon;  // page 0

  int fd = memfd_create("lr-lazy", MFD_CLOEXEC);
  if (fd < 0) wl_die("memfd_create");
  if (ftruncate(fd, MEMFD_PAGES * PAGE) < 0) wl_die("ftruncate");
  mfd = mmap(NULL, MEMFD_PAGES * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (mfd == MAP_FAILED) wl_die("mmap memfd");
  close(fd);
  for (size_t p = 0; p < MEMFD_PAGES; p++)
    if (p % 5 != 4) fill(mfd, 2, p, 1);

  anon_punch = aligned_from(anon, 16);
  mfd_punch = aligned_from(mfd, 8);
  pid_t child = wl_fork_ready(child_setup, NULL);
  if (child == 0) {
    punched = !discard;
    check_initial("child");
    if (!discard) {
      fill(anon, 1, 2, 5);
      fill(mfd, 2, 0, 5);
      set_flag(&hs->child_wrote, 1);
      if (!wait_flag(&hs->parent_answered, 1)) wl_fail("child: no answer from the parent");
      else if (!check(anon, 1, 5, 6)) wl_fail("child: parent's answer not seen in the shared anon page");
    }
    _exit(wl_fail_buf[0] ? 1 : 0);
  }
  wl_report("child=%d", (int)child);
  wl_report("anon=0x%lx", (unsigned long)anon);
  wl_report("memfd=0x%lx", (unsigned long)mfd);
  wl_report("anon_pages=%d", ANON_PAGES);
  wl_report("memfd_pages=%d", MEMFD_PAGES);
  wl_ready_and_wait();

  if (discard) {
    // Never touched since the restore: its data may not be in yet.
    if (madvise(anon + DISCARD_PAGE * PAGE, PAGE, MADV_DONTNEED) < 0) wl_fail("madvise(MADV_DONTNEED): %s", strerror(errno));
    check_initial("parent");
    return wl_finish();
  }
  check_initial("parent");
  // Served pages punched out read zero (also for the child, which has not
  // touched them since the restore); one dropped with DONTNEED keeps its data.
  if (madvise(anon + anon_punch * PAGE, 8 * PAGE, MADV_REMOVE) < 0) wl_fail("madvise(MADV_REMOVE) anon: %s", strerror(errno));
  if (madvise(mfd + mfd_punch * PAGE, 8 * PAGE, MADV_REMOVE) < 0) wl_fail("madvise(MADV_REMOVE) memfd: %s", strerror(errno));
  if (madvise(anon + 40 * PAGE, PAGE, MADV_DONTNEED) < 0) wl_fail("madvise(MADV_DONTNEED): %s", strerror(errno));
  if (!check(anon, 1, 40, anon_gen(40))) wl_fail("parent: anon page 40 lost its data after MADV_DONTNEED");
  kill(child, SIGUSR1);
  if (!wait_flag(&hs->child_wrote, 1)) {
    wl_fail("parent: the child never wrote");
  } else {
    if (!check(anon, 1, 2, 5)) wl_fail("parent: child's write not seen in the shared anon page");
    if (!check(mfd, 2, 0, 5)) wl_fail("parent: child's write not seen in the memfd");
  }
  fill(anon, 1, 5, 6);
  set_flag(&hs->parent_answered, 1);
  int st;
  if (waitpid(child, &st, 0) != child) wl_fail("reap child: %s", strerror(errno));
  else if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) wl_fail("child failed (status 0x%x)", st);
  // Read only now, so that the child was the first to touch them after the punch.
  for (size_t p = anon_punch; p < anon_punch + 8; p++)
    if (!zero(anon, p)) wl_fail("parent: anon page %zu not zero after MADV_REMOVE", p);
  for (size_t p = mfd_punch; p < mfd_punch + 8; p++)
    if (!zero(mfd, p)) wl_fail("parent: memfd page %zu not zero after MADV_REMOVE", p);


  // A fork now (after a restore) must still share the one copy.
  pid_t g = fork();
  if (g < 0) wl_die("fork");
  if (g == 0) {
    int bad = !zero(anon, anon_punch) || !zero(anon, anon_punch + 7) || !zero(mfd, mfd_punch) || !zero(mfd, mfd_punch + 7) ||
              !check(anon, 1, 40, anon_gen(40));
    fill(anon, 1, 8, 7);
    fill(mfd, 2, 3, 7);
    _exit(bad ? 3 : 0);
  }
  if (waitpid(g, &st, 0) != g || !WIFEXITED(st) || WEXITSTATUS(st) != 0) wl_fail("grandchild failed (status 0x%x)", st);
  if (!check(anon, 1, 8, 7)) wl_fail("parent: a forked child's write not seen in the shared anon page");
  if (!check(mfd, 2, 3, 7)) wl_fail("parent: a forked child's write not seen in the memfd");
  return wl_finish();
}
