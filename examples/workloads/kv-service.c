// kv-service: a warmed-up service whose requests touch a fixed subset of its
// memory (the working set): a large table of values, of which each request
// reads the same few thousand scattered pages. Used by the working-set
// benchmark: after a lazy restore, the first answer needs exactly those pages.
// Requests: <ctl>/go-<n> files; each answer is <ctl>/answer-<n> with a
// checksum over the working set (the same every time) and the time it took.
//
// Usage: kv-service CTLDIR [MIB] [HOT_PAGES]   (defaults 64 MiB, 2048 pages)
#include <sys/mman.h>

#include "common.h"

int main(int argc, char** argv) {
  if (argc < 2) { fprintf(stderr, "usage: kv-service CTLDIR [MIB] [HOT_PAGES]\n"); return 2; }
  const char* ctl = argv[1];
  close_inherited_fds();
  size_t mib = argc > 2 ? strtoul(argv[2], NULL, 10) : 64;
  size_t hot = argc > 3 ? strtoul(argv[3], NULL, 10) : 2048;
  size_t pages = mib * 256;
  if (hot > pages) hot = pages;
  uint64_t* table = mmap(NULL, pages * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (table == MAP_FAILED) { perror("mmap"); return 2; }
  for (size_t i = 0; i < pages * 512; i++) table[i] = pattern(4, i);
  // The hot set: a fixed pseudo-random choice of pages, in a fixed order.
  size_t* order = malloc(hot * sizeof *order);
  for (size_t k = 0; k < hot; k++) order[k] = pattern(5, k) % pages;
  ctl_write(ctl, "ready", "%d\n", getpid());
  for (unsigned n = 1;; n++) {
    char go[64];
    snprintf(go, sizeof go, "go-%u", n);
    ctl_wait(ctl, go);
    if (ctl_exists(ctl, "stop")) break;
    double t0 = now_ms();
    uint64_t sum = 0;
    for (size_t k = 0; k < hot; k++) {
      const uint64_t* page = table + order[k] * 512;
      for (int w = 0; w < 512; w += 64) sum += page[w];
    }
    double t1 = now_ms();
    char name[64];
    snprintf(name, sizeof name, "answer-%u", n);
    ctl_write(ctl, name, "%016llx %.3f\n", (unsigned long long)sum, t1 - t0);
  }
  ctl_write(ctl, "result", "ok\n");
  return 0;
}
