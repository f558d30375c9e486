// Test workload: one process with mixed memory whose every byte it can
// verify itself after a dump/restore (protocol: workload-common.h).
//   workload-mem CTRL_DIR [ANON_MIB=24] [shared|sysv|socket]
// ("shared" adds a MAP_SHARED|MAP_ANONYMOUS page, "sysv" an attached SysV
// shared memory segment (already IPC_RMID'd, so it goes with the process),
// "socket" two netlink sockets (the first reported as sock=N): things a dump must refuse.)
// Regions (reported in CTRL_DIR/ready as name=0xSTART:LEN):
//   anon     ANON_MIB of patterned anonymous memory; every 16th page never
//            touched (must read back as zeros), every 16th+1 page written
//            with zeros (present but zero), 1 MiB in the middle discarded
//            with MADV_DONTNEED after being written (zeros);
//   scatter  8 MiB mapping with one page in 37 touched;
//   heap     malloc'ed blocks of assorted sizes (checksum in heap_sum);
//   ro       a patterned page made read-only;
//   none     a patterned page made PROT_NONE (re-opened before checking);
//   file     a 256 KiB private mapping of CTRL_DIR/mapped.dat with pages
//            1, 5 and 60 modified (COW copies), the rest as in the file;
//   stack    a patterned 64 KiB array on the main thread's stack;
//   tls      a patterned thread-local array (with glibc linked statically
//            it sits next to the thread's TCB and rseq area in the heap).
#include "workload-common.h"

#include <sys/shm.h>

#include <sys/mman.h>
#include <linux/netlink.h>
#include <sys/socket.h>

#define PAGE 4096UL

static uint64_t pat(uint64_t seed, uint64_t off) {
  uint64_t x = (off / 8 + 1) * 0x9E3779B97F4A7C15ULL ^ seed;
  x ^= x >> 29;
  return x * 0xBF58476D1CE4E5B9ULL;
}

static void fill(void* p, size_t len, uint64_t seed) {
  uint64_t* w = p;
  for (size_t i = 0; i < len / 8; i++) w[i] = pat(seed, i * 8);
}

static int check(const void* p, size_t len, uint64_t seed, const char* what) {
  const uint64_t* w = p;
  for (size_t i = 0; i < len / 8; i++)
    if (w[i] != pat(seed, i * 8)) {
      wl_fail("%s: word at +0x%zx is 0x%llx, expected 0x%llx", what, i * 8, (unsigned long long)w[i],
              (unsigned long long)pat(seed, i * 8));
      return 0;
    }
  return 1;
}

static int check_zero(const void* p, size_t len, const char* what) {
  const uint64_t* w = p;
  for (size_t i = 0; i < len / 8; i++)
    if (w[i]) {
      wl_fail("%s: word at +0x%zx is 0x%llx, expected 0", what, i * 8, (unsigned long long)w[i]);
      return 0;
    }
  return 1;
}

static void* map_anon(size_t len, int prot) {
  void* p = mmap(NULL, len, prot, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) wl_die("mmap");
  return p;
}

enum { ANON_SEED = 0xa1, SCAT_SEED = 0x5c, RO_SEED = 0x70, NONE_SEED = 0x0e, FILE_SEED = 0xf1,
       COW_SEED = 0xc0, STACK_SEED = 0x57, HEAP_SEED = 0x4e, TLS_SEED = 0x75 };
static __thread uint64_t tls_words[64];
#define NHEAP 3000
#define DONTNEED_OFF(len) (((len) / 2) & ~(PAGE - 1))
#define DONTNEED_LEN (1UL << 20)
#define FILE_LEN (256 * 1024UL)
static const int cow_pages[] = {1, 5, 60};

int main(int argc, char** argv) {
  wl_init(argc, argv);
  size_t anon_len = (argc > 2 ? strtoul(argv[2], NULL, 0) : 24) << 20;

  char* anon = map_anon(anon_len, PROT_READ | PROT_WRITE);
  for (size_t pg = 0; pg < anon_len / PAGE; pg++) {
    if (pg % 16 == 0) continue;  // never touched
    if (pg % 16 == 1) memset(anon + pg * PAGE, 0, PAGE);  // present zero page
    else fill(anon + pg * PAGE, PAGE, ANON_SEED ^ pg);
  }
  if (anon_len >= 4 * DONTNEED_LEN && madvise(anon + DONTNEED_OFF(anon_len), DONTNEED_LEN, MADV_DONTNEED) < 0)
    wl_die("madvise");

  size_t scat_len = 8UL << 20;
  char* scat = map_anon(scat_len, PROT_READ | PROT_WRITE);
  for (size_t pg = 0; pg < scat_len / PAGE; pg += 37) fill(scat + pg * PAGE, PAGE, SCAT_SEED ^ pg);

  // Heap: sizes from 16 bytes to 64 KiB (the large ones are mmap'ed by malloc).
  static uint64_t* blocks[NHEAP];
  static size_t sizes[NHEAP];
  uint64_t heap_sum = 0;
  for (int i = 0; i < NHEAP; i++) {
    sizes[i] = 16 + (size_t)(pat(HEAP_SEED, (uint64_t)i * 8) % (i % 100 == 0 ? 65536 : 512)) / 8 * 8;
    blocks[i] = malloc(sizes[i]);
    if (!blocks[i]) wl_die("malloc");
    fill(blocks[i], sizes[i], HEAP_SEED ^ (uint64_t)i);
    heap_sum += blocks[i][0];
  }
  for (int i = 0; i < NHEAP; i += 3) {  // holes in the heap
    free(blocks[i]);
    blocks[i] = NULL;
  }

  char* ro = map_anon(PAGE, PROT_READ | PROT_WRITE);
  fill(ro, PAGE, RO_SEED);
  if (mprotect(ro, PAGE, PROT_READ) < 0) wl_die("mprotect ro");
  char* none = map_anon(PAGE, PROT_READ | PROT_WRITE);
  fill(none, PAGE, NONE_SEED);
  if (mprotect(none, PAGE, PROT_NONE) < 0) wl_die("mprotect none");

  char path[4096];
  snprintf(path, sizeof path, "%s/mapped.dat", wl_ctrl_dir);
  int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) wl_die("open mapped.dat");
  char* tmp = malloc(FILE_LEN);
  fill(tmp, FILE_LEN, FILE_SEED);
  if (write(fd, tmp, FILE_LEN) != (ssize_t)FILE_LEN) wl_die("write mapped.dat");
  free(tmp);
  char* file = mmap(NULL, FILE_LEN, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
  if (file == MAP_FAILED) wl_die("mmap file");
  close(fd);
  volatile char sink = 0;
  for (size_t off = 0; off < FILE_LEN; off += PAGE) sink += file[off];  // page-cache pages, not dumped
  (void)sink;
  for (size_t i = 0; i < sizeof cow_pages / sizeof cow_pages[0]; i++)
    fill(file + cow_pages[i] * PAGE, PAGE, COW_SEED ^ (uint64_t)cow_pages[i]);

  if (argc > 3 && strcmp(argv[3], "shared") == 0) {
    char* sh = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (sh == MAP_FAILED) wl_die("mmap shared");
    sh[0] = 1;
    wl_report("shared=%p:%lu", sh, PAGE);
  }

  if (argc > 3 && strcmp(argv[3], "sysv") == 0) {
    int id = shmget(IPC_PRIVATE, PAGE, IPC_CREAT | 0600);
    if (id < 0) wl_die("shmget");
    char* sv = shmat(id, NULL, 0);
    if (sv == (void*)-1) wl_die("shmat");
    shmctl(id, IPC_RMID, NULL);
    sv[0] = 1;
    wl_report("sysv=%p:%lu", sv, PAGE);
  }

  if (argc > 3 && strcmp(argv[3], "socket") == 0) {
    int s0 = socket(AF_NETLINK, SOCK_RAW, NETLINK_ROUTE);
    int s1 = socket(AF_NETLINK, SOCK_RAW, NETLINK_ROUTE);
    if (s0 < 0 || s1 < 0) wl_die("socket(AF_NETLINK)");
    wl_report("sock=%d", s0);
  }

  uint64_t stack_arr[8192];
  fill(stack_arr, sizeof stack_arr, STACK_SEED);

  wl_report("anon=%p:%zu", anon, anon_len);
  wl_report("scatter=%p:%zu", scat, scat_len);
  wl_report("ro=%p:%lu", ro, PAGE);
  wl_report("none=%p:%lu", none, PAGE);
  wl_report("file=%p:%lu", file, FILE_LEN);
  wl_report("stack=%p:%zu", (void*)stack_arr, sizeof stack_arr);
  wl_report("heap_sum=0x%llx", (unsigned long long)heap_sum);
  fill(tls_words, sizeof tls_words, TLS_SEED);
  wl_report("tls=%p:%zu", (void*)tls_words, sizeof tls_words);
  wl_ready_and_wait();

  for (size_t pg = 0; pg < anon_len / PAGE; pg++) {
    char* p = anon + pg * PAGE;
    int dropped = anon_len >= 4 * DONTNEED_LEN && p >= anon + DONTNEED_OFF(anon_len) &&
                  p < anon + DONTNEED_OFF(anon_len) + DONTNEED_LEN;
    if (pg % 16 <= 1 || dropped) {
      if (!check_zero(p, PAGE, "anon zero page")) break;
    } else if (!check(p, PAGE, ANON_SEED ^ pg, "anon")) {
      break;
    }
  }
  for (size_t pg = 0; pg < scat_len / PAGE; pg++) {
    if (pg % 37 == 0 ? !check(scat + pg * PAGE, PAGE, SCAT_SEED ^ pg, "scatter")
                     : !check_zero(scat + pg * PAGE, PAGE, "scatter hole"))
      break;
  }
  for (int i = 0; i < NHEAP; i++) {
    if (!blocks[i]) continue;
    if (!check(blocks[i], sizes[i], HEAP_SEED ^ (uint64_t)i, "heap")) break;
  }
  check(tls_words, sizeof tls_words, TLS_SEED, "thread-local array");
  check(ro, PAGE, RO_SEED, "ro page");
  if (mprotect(none, PAGE, PROT_READ) < 0) wl_fail("mprotect none: %s", strerror(errno));
  else check(none, PAGE, NONE_SEED, "prot_none page");
  for (size_t pg = 0; pg < FILE_LEN / PAGE; pg++) {
    int cow = 0;
    for (size_t i = 0; i < sizeof cow_pages / sizeof cow_pages[0]; i++) cow |= (size_t)cow_pages[i] == pg;
    if (cow) check(file + pg * PAGE, PAGE, COW_SEED ^ pg, "file cow page");
    else {
      // Unmodified pages equal the file at the same offset.
      uint64_t* w = (uint64_t*)(file + pg * PAGE);
      for (size_t i = 0; i < PAGE / 8; i++)
        if (w[i] != pat(FILE_SEED, pg * PAGE + i * 8)) {
          wl_fail("file page %zu differs from the file", pg);
          break;
        }
    }
  }
  check(stack_arr, sizeof stack_arr, STACK_SEED, "stack");
  // The heap still works (malloc/free after restore).
  void* more = malloc(1 << 20);
  if (!more) wl_fail("malloc after go");
  free(more);
  return wl_finish();
}
