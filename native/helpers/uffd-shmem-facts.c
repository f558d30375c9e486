// Kernel facts lazy restore of shared memory depends on (issue 13 item 5),
// measured on a memfd mapped three times in one process (two shared
// writable mappings A and B, one shared read-only R) plus one private
// mapping V, all registered with one userfaultfd (MISSING, EVENT_REMOVE).
// A reader thread reads the uffd's events (an madvise that raises
// UFFD_EVENT_REMOVE waits until its event is read). Prints key=value lines:
//   copy_a0          UFFDIO_COPY into A page 0 (0 = placed)
//   b0               what B page 0 reads right after, without a fault
//   copy_b0_again    a second UFFDIO_COPY of the same object page via B (-17 EEXIST: never placed twice)
//   zeropage_a1      UFFDIO_ZEROPAGE on a shared shmem VMA
//   copy_r2, a2      UFFDIO_COPY through the read-only mapping; A then reads it
//   copy_v3, copy_a3 UFFDIO_COPY into the private mapping, then into A at the
//                    same object page (0: the private copy did not enter the page cache)
//   dontneed_ev, copy_a0_after_dontneed
//                    MADV_DONTNEED of a served page: the event, then a copy (EEXIST: contents kept)
//   remove_ev, copy_b0_after_remove
//                    MADV_REMOVE of a served page: the event, then a copy via B (0: the page is gone)
//   same_msg_unserved 1 if MADV_DONTNEED and MADV_REMOVE of never-served pages
//                    give byte-identical messages (but for the address)
//   copy_a7_after_pwrite a page written through the fd, then a copy (EEXIST:
//                    fd writes bypass userfaultfd)
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define P 4096UL

static int uffd;
static sem_t got;
static struct uffd_msg last;

static void* reader(void* arg) {
  (void)arg;
  for (;;) {
    struct pollfd pf = {uffd, POLLIN, 0};
    if (poll(&pf, 1, -1) < 0) continue;
    struct uffd_msg m;
    if (read(uffd, &m, sizeof m) != (ssize_t)sizeof m) continue;
    last = m;
    sem_post(&got);
  }
  return NULL;
}

// Waits (bounded) for the reader to record the event an madvise raised.
static const char* wait_event(struct uffd_msg* out) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  ts.tv_sec += 10;
  if (sem_timedwait(&got, &ts) < 0) return "none";
  *out = last;
  return last.event == UFFD_EVENT_REMOVE ? "REMOVE" : last.event == UFFD_EVENT_PAGEFAULT ? "PAGEFAULT" : "other";
}

static int copy(char* dst, const char* src) {
  struct uffdio_copy c = {(unsigned long)dst, (unsigned long)src, P, 0, 0};
  return ioctl(uffd, UFFDIO_COPY, &c) < 0 ? -errno : 0;
}

static int zeropage(char* dst) {
  struct uffdio_zeropage z = {{(unsigned long)dst, P}, 0, 0};
  return ioctl(uffd, UFFDIO_ZEROPAGE, &z) < 0 ? -errno : 0;
}

static void reg(char* a, size_t len) {
  struct uffdio_register r = {{(unsigned long)a, len}, UFFDIO_REGISTER_MODE_MISSING, 0};
  if (ioctl(uffd, UFFDIO_REGISTER, &r) < 0) {
    perror("UFFDIO_REGISTER");
    exit(2);
  }
}

int main(void) {
  setvbuf(stdout, NULL, _IONBF, 0);
  sem_init(&got, 0, 0);
  uffd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
  struct uffdio_api api = {UFFD_API, UFFD_FEATURE_EVENT_REMOVE | UFFD_FEATURE_MISSING_SHMEM, 0};
  if (uffd < 0 || ioctl(uffd, UFFDIO_API, &api) < 0) {
    perror("userfaultfd");
    return 2;
  }
  int fd = memfd_create("lr-shmem-facts", 0);
  if (fd < 0 || ftruncate(fd, 8 * P) < 0) return 2;
  char* A = mmap(NULL, 8 * P, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  char* B = mmap(NULL, 8 * P, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  char* R = mmap(NULL, 8 * P, PROT_READ, MAP_SHARED, fd, 0);
  char* V = mmap(NULL, 8 * P, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
  if (A == MAP_FAILED || B == MAP_FAILED || R == MAP_FAILED || V == MAP_FAILED) return 2;
  reg(A, 8 * P);
  reg(B, 8 * P);
  reg(R, 8 * P);
  reg(V, 8 * P);
  pthread_t t;
  pthread_create(&t, NULL, reader, NULL);
  char* src = aligned_alloc(P, P);
  memset(src, 'd', P);

  printf("copy_a0=%d\n", copy(A, src));
  printf("b0=%c\n", B[0]);
  memset(src, 'x', P);
  printf("copy_b0_again=%d\n", copy(B, src));
  printf("zeropage_a1=%d\n", zeropage(A + P));
  memset(src, 'r', P);
  int r = copy(R + 2 * P, src);
  printf("copy_r2=%d\n", r);
  if (r == 0) printf("a2=%c\n", A[2 * P]);
  memset(src, 'v', P);
  printf("copy_v3=%d\n", copy(V + 3 * P, src));
  memset(src, 'a', P);
  printf("copy_a3=%d\n", copy(A + 3 * P, src));

  struct uffd_msg m1, m2;
  if (madvise(A, P, MADV_DONTNEED) < 0) return 2;
  printf("dontneed_ev=%s\n", wait_event(&m1));
  printf("copy_a0_after_dontneed=%d\n", copy(A, src));
  if (madvise(A, P, MADV_REMOVE) < 0) return 2;
  printf("remove_ev=%s\n", wait_event(&m1));
  memset(src, 'n', P);
  printf("copy_b0_after_remove=%d\n", copy(B, src));

  // Never-served pages 5 and 6: one MADV_DONTNEED, one MADV_REMOVE.
  if (madvise(A + 5 * P, P, MADV_DONTNEED) < 0) return 2;
  const char* e1 = wait_event(&m1);
  if (madvise(A + 6 * P, P, MADV_REMOVE) < 0) return 2;
  const char* e2 = wait_event(&m2);
  m2.arg.remove.start -= P;
  m2.arg.remove.end -= P;
  printf("unserved_evs=%s,%s\n", e1, e2);
  printf("same_msg_unserved=%d\n", memcmp(&m1, &m2, sizeof m1) == 0 ? 1 : 0);

  memset(src, 'f', P);
  if (pwrite(fd, src, P, 7 * P) != (ssize_t)P) return 2;
  printf("copy_a7_after_pwrite=%d\n", copy(A + 7 * P, src));
  printf("done\n");
  return 0;
}
