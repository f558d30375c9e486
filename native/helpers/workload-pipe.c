// Pipeline workload: `workload-pipe produce` writes 8-byte little-endian
// counters (0, 1, 2, ...) to stdout until the reader goes away;
// `workload-pipe consume CTRL_DIR N` reads them from stdin and checks that
// none is lost or duplicated. After N/2 counters it writes CTRL_DIR/ready
// (pid=...) and stops reading until SIGUSR1, so the pipe fills up and the
// producer blocks mid-stream (the moment to checkpoint). Then it reads the
// rest and writes CTRL_DIR/result: "ok N" or "fail ...".
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static volatile sig_atomic_t go;
static void on_usr1(int s) { (void)s; go = 1; }

static void put_file(const char* dir, const char* name, const char* text) {
  char tmp[4096], path[4096];
  snprintf(tmp, sizeof tmp, "%s/%s.tmp", dir, name);
  snprintf(path, sizeof path, "%s/%s", dir, name);
  FILE* f = fopen(tmp, "w");
  if (!f) exit(2);
  fputs(text, f);
  fclose(f);
  if (rename(tmp, path) != 0) exit(2);
}

static int produce(void) {
  signal(SIGPIPE, SIG_DFL);
  uint64_t buf[512];
  uint64_t next = 0;
  for (;;) {
    for (int i = 0; i < 512; i++) buf[i] = next++;
    size_t off = 0;
    while (off < sizeof buf) {
      ssize_t w = write(1, (char*)buf + off, sizeof buf - off);
      if (w < 0 && errno == EINTR) continue;
      if (w <= 0) return 0;  // reader gone
      off += (size_t)w;
    }
  }
}

static int consume(const char* ctrl, uint64_t n) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_usr1;
  sa.sa_flags = SA_RESTART;
  sigaction(SIGUSR1, &sa, NULL);
  sigset_t blk, old;
  sigemptyset(&blk);
  sigaddset(&blk, SIGUSR1);
  sigprocmask(SIG_BLOCK, &blk, &old);
  uint64_t expect = 0;
  unsigned char part[8];
  size_t have = 0;
  char msg[256];
  int announced = 0;
  while (expect < n) {
    if (!announced && expect >= n / 2) {
      snprintf(msg, sizeof msg, "pid=%d\n", getpid());
      put_file(ctrl, "ready", msg);
      announced = 1;
      while (!go) sigsuspend(&old);
    }
    unsigned char buf[4096];
    size_t want = sizeof buf;
    uint64_t left = (n - expect) * 8 - have;
    if (!announced && (n / 2 - expect) * 8 - have < want) want = (n / 2 - expect) * 8 - have;
    if (left < want) want = left;
    ssize_t r = read(0, buf, want);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) {
      snprintf(msg, sizeof msg, "fail eof after %llu counters\n", (unsigned long long)expect);
      put_file(ctrl, "result", msg);
      return 1;
    }
    for (ssize_t i = 0; i < r; i++) {
      part[have++] = buf[i];
      if (have == 8) {
        uint64_t v;
        memcpy(&v, part, 8);
        have = 0;
        if (v != expect) {
          snprintf(msg, sizeof msg, "fail at %llu: got %llu\n", (unsigned long long)expect, (unsigned long long)v);
          put_file(ctrl, "result", msg);
          return 1;
        }
        expect++;
      }
    }
  }
  snprintf(msg, sizeof msg, "ok %llu\n", (unsigned long long)expect);
  put_file(ctrl, "result", msg);
  return 0;
}

int main(int argc, char** argv) {
  if (argc >= 2 && strcmp(argv[1], "produce") == 0) return produce();
  if (argc >= 4 && strcmp(argv[1], "consume") == 0) return consume(argv[2], strtoull(argv[3], NULL, 10));
  fprintf(stderr, "usage: %s produce | consume CTRL_DIR N\n", argv[0]);
  return 2;
}
