// Shared by the shared-memory test workloads (workload-shmem.c,
// workload-shmem-lazy.c): page patterns and a futex handshake between a
// parent and a child through a shared page. Include after workload-common.h.
#pragma once

#include <linux/futex.h>
#include <time.h>

#define PAGE 4096UL

struct handshake {
  volatile uint32_t child_wrote;
  volatile uint32_t parent_answered;
};

// The word `word` of page `page` of area `area` written in generation `gen`.
static uint64_t pat(int area, size_t page, size_t word, uint64_t gen) {
  return ((uint64_t)area << 56) ^ (page * 0x9E3779B97F4A7C15ULL) ^ (word * 31) ^ (gen << 40);
}

static void fill(char* base, int area, size_t page, uint64_t gen) {
  uint64_t* w = (uint64_t*)(base + page * PAGE);
  for (size_t i = 0; i < PAGE / 8; i++) w[i] = pat(area, page, i, gen);
}

static int check(const char* base, int area, size_t page, uint64_t gen) {
  const uint64_t* w = (const uint64_t*)(base + page * PAGE);
  for (size_t i = 0; i < PAGE / 8; i++)
    if (w[i] != pat(area, page, i, gen)) return 0;
  return 1;
}

static int zero(const char* base, size_t page) {
  const uint64_t* w = (const uint64_t*)(base + page * PAGE);
  for (size_t i = 0; i < PAGE / 8; i++)
    if (w[i]) return 0;
  return 1;
}

// Waits (bounded, 20 s) until *flag becomes `want`; futex on shared memory.
static int wait_flag(volatile uint32_t* flag, uint32_t want) {
  struct timespec start, now;
  clock_gettime(CLOCK_MONOTONIC, &start);
  while (*flag != want) {
    struct timespec ts = {0, 100 * 1000 * 1000};
    syscall(SYS_futex, flag, FUTEX_WAIT, *flag, &ts, NULL, 0);
    clock_gettime(CLOCK_MONOTONIC, &now);
    if (now.tv_sec - start.tv_sec > 20) return 0;
  }
  return 1;
}

static void set_flag(volatile uint32_t* flag, uint32_t v) {
  *flag = v;
  syscall(SYS_futex, flag, FUTEX_WAKE, 1 << 30, NULL, NULL, 0);
}
