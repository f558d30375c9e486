// Shared bits of the example workloads: a control directory through which a
// driver (demo, test, benchmark) talks to the workload with plain files, so
// the workload holds nothing but memory, regular files and its cwd — all of
// which lazy-restore checkpoints.
//   <ctl>/ready     written by the workload when it is set up (its pid inside)
//   <ctl>/go        created by the driver to let the workload continue
//   <ctl>/result    written by the workload at the end ("ok ..." or "fail ...")
#pragma once
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <sys/syscall.h>
#include <unistd.h>

static inline void ctl_write(const char* ctl, const char* name, const char* fmt, ...) {
  char path[4096], tmp[4096], buf[1024];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  snprintf(path, sizeof path, "%s/%s", ctl, name);
  // A temp name in the control dir itself (unique per process), renamed
  // into place, so readers never see a half-written file.
  snprintf(tmp, sizeof tmp, "%s/.tmp-%d", ctl, getpid());
  int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) { perror(tmp); exit(2); }
  if (write(fd, buf, n) != n) { perror(tmp); exit(2); }
  close(fd);
  // rename makes the file appear complete, never half-written.
  if (rename(tmp, path) != 0) { perror(path); exit(2); }
}

static inline int ctl_exists(const char* ctl, const char* name) {
  char path[4096];
  snprintf(path, sizeof path, "%s/%s", ctl, name);
  return access(path, F_OK) == 0;
}

// Waits for <ctl>/<name> by polling every millisecond. This is the workload's
// own loop (it must survive being checkpointed in the middle of it), not a
// test synchronisation.
static inline void ctl_wait(const char* ctl, const char* name) {
  struct timespec ms = {0, 1000000};
  while (!ctl_exists(ctl, name)) nanosleep(&ms, NULL);
}

// Drops every descriptor the workload inherited beyond stdio (a driver's
// pipes would otherwise be part of the checkpoint).
static inline void close_inherited_fds(void) {
  syscall(436 /* close_range */, 3U, ~0U, 0U);
}

static inline double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

// A cheap deterministic pattern: the value of 64-bit word i of region r.
static inline uint64_t pattern(uint64_t r, uint64_t i) {
  uint64_t x = (r + 1) * 0x9E3779B97F4A7C15ULL ^ (i * 0xBF58476D1CE4E5B9ULL);
  x ^= x >> 31;
  x *= 0x94D049BB133111EBULL;
  return x ^ (x >> 29);
}
