// Test workload: a parent and a child sharing memory (protocol:
// workload-common.h).
//   workload-shmem CTRL_DIR
// Before the fork the parent maps: a MAP_SHARED anonymous region (64 pages,
// every third page written, the rest never touched), a memfd "lr-shmem"
// (8 pages, sealed F_SEAL_SHRINK|F_SEAL_GROW, its fd closed: only the mapping
// keeps it), and a MAP_PRIVATE mapping of a second memfd with one page
// written privately (copy on write) and the rest as in the memfd. The child
// writes its own pages into both shared areas before the ready report.
// On SIGUSR1 (forwarded to the child) each side checks everything, then the
// child writes a new value into both shared areas and the parent must see
// it, the parent answers and the child must see that; then the parent forks
// a grandchild that writes into both areas, and after reaping it the parent
// must see its writes (one shared copy after a restore), and the seals must
// be as set. The parent also keeps the fd of "lr-shmem" open (O_NONBLOCK,
// offset 4097): after a restore a write through it must show in the mapping;
// and a memfd "lr-fdonly" held only as an fd (never mapped, mode 0642,
// "hello" at offset 0, offset 3). Ready report: pid, child.
#include "workload-common.h"
#include "workload-shmem-common.h"

#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>

#define ANON_PAGES 64
#define MEMFD_PAGES 8

static char* anon;
static char* mfd;
static char* priv;

// The state both sides see before the checkpoint: parent's pages (gen 1),
// child's pages (gen 2), holes zero.
static void check_initial(const char* who) {
  for (size_t p = 1; p < ANON_PAGES; p++) {
    if (p % 3 == 0) {
      if (!check(anon, 1, p, 1)) wl_fail("%s: anon page %zu (parent's)", who, p);
    } else if (p % 3 == 1 && p > 1) {
      if (!check(anon, 1, p, 2)) wl_fail("%s: anon page %zu (child's)", who, p);
    } else if (p > 1 && !zero(anon, p)) {
      wl_fail("%s: anon page %zu not zero", who, p);
    }
  }
  for (size_t p = 1; p < MEMFD_PAGES; p++) {
    uint64_t gen = p == MEMFD_PAGES - 1 ? 2 : 1;
    if (!check(mfd, 2, p, gen)) wl_fail("%s: memfd page %zu", who, p);
  }
  for (size_t p = 0; p < 4; p++) {
    uint64_t gen = p == 1 ? 9 : 1;
    if (!check(priv, 3, p, gen)) wl_fail("%s: private memfd page %zu", who, p);
  }
}

static int seals_of(const char* base, size_t len) {
  char path[128];
  snprintf(path, sizeof path, "/proc/self/map_files/%lx-%lx", (unsigned long)base, (unsigned long)base + len);
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  int s = fcntl(fd, F_GET_SEALS);
  close(fd);
  return s;
}

// The child's own writes before the dump.
static void child_setup(void* arg) {
  (void)arg;
  for (size_t p = 4; p < ANON_PAGES; p += 3) fill(anon, 1, p, 2);
  fill(mfd, 2, MEMFD_PAGES - 1, 2);
}

int main(int argc, char** argv) {
  wl_init(argc, argv);
  anon = mmap(NULL, ANON_PAGES * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (anon == MAP_FAILED) wl_die("mmap anon");
  for (size_t p = 3; p < ANON_PAGES; p += 3) fill(anon, 1, p, 1);
  struct handshake* hs = (struct handshake*)anon;  // page 0

  int fd = memfd_create("lr-shmem", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (fd < 0) wl_die("memfd_create");
  if (ftruncate(fd, MEMFD_PAGES * PAGE) < 0) wl_die("ftruncate");
  mfd = mmap(NULL, MEMFD_PAGES * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (mfd == MAP_FAILED) wl_die("mmap memfd");
  for (size_t p = 1; p < MEMFD_PAGES; p++) fill(mfd, 2, p, 1);
  if (fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW) < 0) wl_die("F_ADD_SEALS");
  if (fcntl(fd, F_SETFL, O_NONBLOCK) < 0) wl_die("F_SETFL");
  if (lseek(fd, 4097, SEEK_SET) != 4097) wl_die("lseek");
  int fdonly = memfd_create("lr-fdonly", MFD_CLOEXEC);
  if (fdonly < 0) wl_die("memfd_create fdonly");
  if (write(fdonly, "hello", 5) != 5) wl_die("write fdonly");
  if (lseek(fdonly, 3, SEEK_SET) != 3) wl_die("lseek fdonly");
  if (fchmod(fdonly, 0642) < 0) wl_die("fchmod");

  int pfd = memfd_create("lr-private", MFD_CLOEXEC);
  if (pfd < 0) wl_die("memfd_create private");
  if (ftruncate(pfd, 4 * PAGE) < 0) wl_die("ftruncate private");
  char* pinit = mmap(NULL, 4 * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, pfd, 0);
  if (pinit == MAP_FAILED) wl_die("mmap private init");
  for (size_t p = 0; p < 4; p++) fill(pinit, 3, p, 1);
  munmap(pinit, 4 * PAGE);
  priv = mmap(NULL, 4 * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE, pfd, 0);
  if (priv == MAP_FAILED) wl_die("mmap private");
  close(pfd);
  fill(priv, 3, 1, 9);  // copied on write: this process's own page

  pid_t child = wl_fork_ready(child_setup, NULL);
  if (child == 0) {
    check_initial("child");
    fill(anon, 1, 2, 5);
    fill(mfd, 2, 0, 5);
    set_flag(&hs->child_wrote, 1);
    if (!wait_flag(&hs->parent_answered, 1)) wl_fail("child: no answer from the parent");
    else if (!check(anon, 1, 5, 6)) wl_fail("child: parent's answer not seen in the shared anon page");
    _exit(wl_fail_buf[0] ? 1 : 0);
  }
  wl_report("child=%d", (int)child);
  wl_ready_and_wait();

  check_initial("parent");  // before the child writes its new values
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
  // The kept memfd fd is the mapped object: a write through it shows in the mapping.
  if (!(fcntl(fd, F_GETFL) & O_NONBLOCK)) wl_fail("memfd fd lost O_NONBLOCK");
  if (lseek(fd, 0, SEEK_CUR) != 4097) wl_fail("memfd fd offset is %ld, want 4097", (long)lseek(fd, 0, SEEK_CUR));
  {
    static uint64_t page[PAGE / 8];
    for (size_t i = 0; i < PAGE / 8; i++) page[i] = pat(2, 4, i, 8);
    if (pwrite(fd, page, PAGE, 4 * PAGE) != (ssize_t)PAGE) wl_fail("pwrite memfd: %s", strerror(errno));
    else if (!check(mfd, 2, 4, 8)) wl_fail("a write through the memfd fd is not in its mapping");
  }
  {
    char b[8] = {0};
    struct stat sb;
    if (pread(fdonly, b, 5, 0) != 5 || memcmp(b, "hello", 5) != 0) wl_fail("fd-only memfd contents");
    if (lseek(fdonly, 0, SEEK_CUR) != 3) wl_fail("fd-only memfd offset");
    if (fstat(fdonly, &sb) < 0 || (sb.st_mode & 07777) != 0642 || sb.st_size != 5) wl_fail("fd-only memfd mode/size");
  }
  if (waitpid(child, &st, 0) != child) wl_fail("reap child: %s", strerror(errno));
  else if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) wl_fail("child failed (status 0x%x)", st);

  // A fork now (after a restore) must still share the one copy.
  pid_t g = fork();
  if (g < 0) wl_die("fork");
  if (g == 0) {
    fill(anon, 1, 8, 7);
    fill(mfd, 2, 3, 7);
    fill(priv, 3, 2, 7);  // private: the parent must not see this one
    _exit(0);
  }
  if (waitpid(g, &st, 0) != g || !WIFEXITED(st) || WEXITSTATUS(st) != 0) wl_fail("grandchild failed");
  if (!check(anon, 1, 8, 7)) wl_fail("parent: a forked child's write not seen in the shared anon page");
  if (!check(mfd, 2, 3, 7)) wl_fail("parent: a forked child's write not seen in the memfd");
  if (!check(priv, 3, 2, 1)) wl_fail("parent: a forked child's private write leaked");
  int s = seals_of(mfd, MEMFD_PAGES * PAGE);
  if (s != (F_SEAL_SHRINK | F_SEAL_GROW)) wl_fail("memfd seals are 0x%x, want 0x%x", s, F_SEAL_SHRINK | F_SEAL_GROW);
  return wl_finish();
}
