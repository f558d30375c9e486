// Test workload: private anonymous regions with VMA flags a restore must
// keep (protocol: workload-common.h).
//   workload-vmaflags CTRL_DIR
// Regions (64 KiB, patterned): mlock()ed, MAP_LOCKED, MAP_NORESERVE,
// MAP_GROWSDOWN (at the top of a 4 MiB hole so it can grow), MAP_DROPPABLE
// (when the kernel has it) and one per madvise advice CRIU keeps
// (SEQUENTIAL, RANDOM, DONTFORK, DONTDUMP, MERGEABLE, HUGEPAGE, NOHUGEPAGE,
// WIPEONFORK; an advice the kernel refuses is skipped and reported).
// Reported: name=ADDRESS:FLAGS per region, FLAGS being the VmFlags of
// /proc/self/smaps among "gd lo nr dp sr rr dc dd mg hg nh wf io".
// On go each region must have the same flags and contents; the growsdown
// region must grow by two pages when written below its start; a forked
// child must see the WIPEONFORK region zeroed and no DONTFORK region.
#include "workload-common.h"

#include <sys/mman.h>
#include <sys/wait.h>

#ifndef MAP_DROPPABLE
#define MAP_DROPPABLE 0x08
#endif

#define LEN (64UL << 10)
#define NREG 14

struct region {
  const char* name;
  char* at;
  char flags[64];
};

static struct region regs[NREG];
static int nreg;

static const char* const WATCH[] = {"gd", "lo", "nr", "dp", "sr", "rr", "dc", "dd", "mg", "hg", "nh", "wf", "io"};

// The watched VmFlags of the VMA containing `addr`, space separated.
static int vmflags(const void* addr, char* out, size_t cap) {
  FILE* f = fopen("/proc/self/smaps", "re");
  if (!f) return -1;
  char line[1024];
  int in = 0, found = -1;
  unsigned long a = (unsigned long)addr;
  while (fgets(line, sizeof line, f)) {
    unsigned long s, e;
    if (sscanf(line, "%lx-%lx ", &s, &e) == 2 && strchr(line, '-') == line + strspn(line, "0123456789abcdef")) {
      in = a >= s && a < e;
      continue;
    }
    if (in && strncmp(line, "VmFlags:", 8) == 0) {
      out[0] = 0;
      size_t n = 0;
      for (size_t w = 0; w < sizeof WATCH / sizeof *WATCH; w++) {
        char tok[5] = {' ', WATCH[w][0], WATCH[w][1], 0, 0};
        char* p = strstr(line + 8, tok);
        if (p && (p[3] == ' ' || p[3] == '\n' || p[3] == 0)) n += (size_t)snprintf(out + n, cap - n, "%s%s", n ? "," : "", WATCH[w]);
      }
      if (n == 0) snprintf(out, cap, "-");
      found = 0;
      break;
    }
  }
  fclose(f);
  return found;
}

static void fill(char* p, size_t len, int seed) {
  for (size_t i = 0; i < len; i += 512) p[i] = (char)(seed * 31 + i / 512 + 1);
}

static int check(const char* p, size_t len, int seed) {
  for (size_t i = 0; i < len; i += 512)
    if (p[i] != (char)(seed * 31 + i / 512 + 1)) return 0;
  return 1;
}

static void add(const char* name, char* at) {
  if (at == MAP_FAILED || at == NULL) return;
  fill(at, LEN, nreg);
  regs[nreg].name = name;
  regs[nreg].at = at;
  nreg++;
}

static char* anon(int extra) {
  return mmap(NULL, LEN, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | extra, -1, 0);
}

static char* advised(int advice, const char* name) {
  char* p = anon(0);
  if (p == MAP_FAILED) wl_die("mmap");
  if (madvise(p, LEN, advice) != 0) {
    wl_report("skipped_%s=%s", name, strerror(errno));
    munmap(p, LEN);
    return NULL;
  }
  return p;
}

int main(int argc, char** argv) {
  wl_init(argc, argv);
  char* m = anon(0);
  if (m == MAP_FAILED || mlock(m, LEN) != 0) wl_die("mlock");
  add("mlock", m);
  add("locked", anon(MAP_LOCKED));
  add("noreserve", anon(MAP_NORESERVE));
  char* dp = mmap(NULL, LEN, PROT_READ | PROT_WRITE, MAP_DROPPABLE | MAP_ANONYMOUS, -1, 0);
  if (dp == MAP_FAILED) wl_report("skipped_droppable=%s", strerror(errno));
  else add("droppable", dp);
  add("sequential", advised(MADV_SEQUENTIAL, "sequential"));
  add("random", advised(MADV_RANDOM, "random"));
  add("dontfork", advised(MADV_DONTFORK, "dontfork"));
  add("dontdump", advised(MADV_DONTDUMP, "dontdump"));
  add("mergeable", advised(MADV_MERGEABLE, "mergeable"));
  add("hugepage", advised(MADV_HUGEPAGE, "hugepage"));
  add("nohugepage", advised(MADV_NOHUGEPAGE, "nohugepage"));
  add("wipeonfork", advised(MADV_WIPEONFORK, "wipeonfork"));
  // Last (nothing is mapped after it): a 4 MiB hole, then the growsdown
  // region at its top, so the hole stays free for it to grow into.
  char* hole = mmap(NULL, 4UL << 20, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (hole == MAP_FAILED) wl_die("mmap hole");
  munmap(hole, 4UL << 20);
  char* gd = mmap(hole + (4UL << 20) - LEN, LEN, PROT_READ | PROT_WRITE,
                  MAP_PRIVATE | MAP_ANONYMOUS | MAP_GROWSDOWN | MAP_FIXED_NOREPLACE, -1, 0);
  if (gd == MAP_FAILED) wl_die("mmap growsdown");
  add("growsdown", gd);
  for (int i = 0; i < nreg; i++) {
    if (vmflags(regs[i].at, regs[i].flags, sizeof regs[i].flags) != 0) wl_die("smaps");
    wl_report("%s=%lx:%s", regs[i].name, (unsigned long)regs[i].at, regs[i].flags);
  }
  wl_ready_and_wait();

  char now[64];
  for (int i = 0; i < nreg; i++) {
    if (vmflags(regs[i].at, now, sizeof now) != 0) wl_fail("%s: no VMA at %p", regs[i].name, regs[i].at);
    else if (strcmp(now, regs[i].flags) != 0) wl_fail("%s: VmFlags %s, were %s", regs[i].name, now, regs[i].flags);
    // A droppable region may lose its pages under memory pressure: only its flags are checked.
    else if (strcmp(regs[i].name, "droppable") != 0 && !check(regs[i].at, LEN, i)) wl_fail("%s: contents changed", regs[i].name);
  }
  // The growsdown region still grows on a write below its start.
  volatile char* below = gd - 2 * 4096;
  *below = 7;
  char f2[64];
  if (vmflags((const void*)below, f2, sizeof f2) != 0 || !strstr(f2, "gd")) wl_fail("growsdown region did not grow");
  char* wf = NULL;
  char* dc = NULL;
  for (int i = 0; i < nreg; i++) {
    if (strcmp(regs[i].name, "wipeonfork") == 0) wf = regs[i].at;
    if (strcmp(regs[i].name, "dontfork") == 0) dc = regs[i].at;
  }
  pid_t c = fork();
  if (c < 0) wl_die("fork");
  if (c == 0) {
    char fl[64];
    int ok = 1;
    if (wf && wf[0] != 0) ok = 0;                                   // wiped in the child
    if (dc && vmflags(dc, fl, sizeof fl) == 0) ok = 0;             // not inherited
    _exit(ok ? 0 : 1);
  }
  int st;
  if (waitpid(c, &st, 0) != c || !WIFEXITED(st) || WEXITSTATUS(st) != 0) wl_fail("fork: WIPEONFORK/DONTFORK not in effect (0x%x)", st);
  return wl_finish();
}
