// Benchmark workload shared by lazy-restore and CRIU 4.2 (bench/suites/vs-criu.ts):
//   bench-mem-service CTRL_DIR MIB [TOUCH_PERCENT=100] [shared]
// Holds MIB MiB of patterned anonymous memory (MAP_SHARED with `shared`). Writes CTRL_DIR/ready once
// filled, then sleeps in sigsuspend until SIGUSR1 ("go"); then reads and
// checks TOUCH_PERCENT of its pages (100: every page; 1: one page in a
// hundred, spread over the whole mapping, like a service's hot lookups),
// writes CTRL_DIR/result ("ok <CLOCK_REALTIME ns>" or "fail <what>") and
// exits 0 or 1. It keeps no file descriptor open while it waits (the ctrl
// files are opened by path), so both tools can dump it with nothing but its
// memory and registers to carry.
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define PAGE 4096UL

static volatile sig_atomic_t go;
static void on_usr1(int sig) { (void)sig; go = 1; }

static uint64_t pat(uint64_t off) { return (off + 1) * 0x9E3779B97F4A7C15ULL; }

static void put(const char* dir, const char* name, const char* text) {
  char tmp[4096], path[4096];
  snprintf(tmp, sizeof tmp, "%s/%s.tmp", dir, name);
  snprintf(path, sizeof path, "%s/%s", dir, name);
  int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) exit(2);
  if (write(fd, text, strlen(text)) != (ssize_t)strlen(text)) exit(2);
  close(fd);
  if (rename(tmp, path) < 0) exit(2);
}

int main(int argc, char** argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: %s CTRL_DIR MIB [TOUCH_PERCENT]\n", argv[0]);
    return 2;
  }
  const char* dir = argv[1];
  size_t len = strtoull(argv[2], NULL, 10) << 20;
  int percent = argc > 3 ? atoi(argv[3]) : 100;
  if (percent < 1 || percent > 100) percent = 100;
  // No inherited descriptors: only memory and registers to checkpoint.
  syscall(SYS_close_range, 0, ~0U, 0);
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_usr1;
  sigaction(SIGUSR1, &sa, NULL);
  sigset_t block, old;
  sigemptyset(&block);
  sigaddset(&block, SIGUSR1);
  sigprocmask(SIG_BLOCK, &block, &old);

  const int shared = argc > 4 && strcmp(argv[4], "shared") == 0;
  uint64_t* mem = mmap(NULL, len, PROT_READ | PROT_WRITE, (shared ? MAP_SHARED : MAP_PRIVATE) | MAP_ANONYMOUS, -1, 0);
  if (mem == MAP_FAILED) return 2;
  for (size_t i = 0; i < len / 8; i++) mem[i] = pat(i);
  char text[128];
  snprintf(text, sizeof text, "pid=%d\nbytes=%zu\n", getpid(), len);
  put(dir, "ready", text);

  while (!go) sigsuspend(&old);

  size_t pages = len / PAGE, stride = percent == 100 ? 1 : 100 / percent, checked = 0;
  for (size_t p = 0; p < pages; p += stride) {
    const uint64_t* w = mem + p * (PAGE / 8);
    for (size_t j = 0; j < PAGE / 8; j++) {
      if (w[j] != pat(p * (PAGE / 8) + j)) {
        snprintf(text, sizeof text, "fail page %zu word %zu is 0x%llx\n", p, j, (unsigned long long)w[j]);
        put(dir, "result", text);
        return 1;
      }
    }
    checked++;
  }
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  snprintf(text, sizeof text, "ok %lld %zu\n", (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec, checked);
  put(dir, "result", text);
  return 0;
}
