// demo-service: the workload of `npm run demo`. It builds a data set in
// memory (a large patterned array, a heap of small records, and pages it never
// touches), announces itself in <ctl>/ready, waits for <ctl>/go, then checks
// every byte of its data against the pattern and writes the verdict to
// <ctl>/result. Checkpointed while it waits and restored lazily, its check
// touches memory that is not back yet: every page is served on demand or
// pushed in the background, and the verdict proves none was wrong.
//
// Usage: demo-service CTLDIR [MIB]   (default 64 MiB)
#include <sys/mman.h>

#include "common.h"

struct record {
  uint64_t key, value;
  struct record* next;
};

int main(int argc, char** argv) {
  if (argc < 2) { fprintf(stderr, "usage: demo-service CTLDIR [MIB]\n"); return 2; }
  const char* ctl = argv[1];
  close_inherited_fds();
  size_t mib = argc > 2 ? strtoul(argv[2], NULL, 10) : 64;
  size_t words = mib * (1 << 20) / 8;
  // Twice the size reserved: the upper half is never touched and must come
  // back as zeros (not dumped, zero-filled on demand).
  uint64_t* data = mmap(NULL, words * 16, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (data == MAP_FAILED) { perror("mmap"); return 2; }
  for (size_t i = 0; i < words; i++) data[i] = pattern(1, i);
  struct record* head = NULL;
  for (uint64_t k = 0; k < 20000; k++) {
    struct record* r = malloc(sizeof *r);
    r->key = k;
    r->value = pattern(2, k);
    r->next = head;
    head = r;
  }
  ctl_write(ctl, "ready", "%d\n", getpid());
  ctl_wait(ctl, "go");
  double t0 = now_ms();
  size_t bad = 0;
  for (size_t i = 0; i < words; i++)
    if (data[i] != pattern(1, i)) bad++;
  for (size_t i = words; i < words * 2; i += 512)
    if (data[i] != 0) bad++;
  uint64_t n = 0;
  for (struct record* r = head; r; r = r->next, n++)
    if (r->value != pattern(2, r->key)) bad++;
  double t1 = now_ms();
  if (bad == 0 && n == 20000)
    ctl_write(ctl, "result", "ok %zu MiB and %lu records verified in %.1f ms\n", mib, (unsigned long)n, t1 - t0);
  else
    ctl_write(ctl, "result", "fail %zu wrong words, %lu records\n", bad, (unsigned long)n);
  return bad == 0 && n == 20000 ? 0 : 1;
}
