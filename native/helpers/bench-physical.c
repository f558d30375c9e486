// Physical baselines of bench/suites/vs-criu.ts (what the hardware and kernel
// allow for each path, without any checkpoint format):
//   bench-physical dump MIB FILE     a child fills MIB MiB; time process_vm_readv of it + write to FILE
//   bench-physical restore FILE      a child maps the file's size, untouched; time read FILE + process_vm_writev into it
//   bench-physical tcp MIB           time MIB MiB sent over loopback TCP (one stream, 4 MiB writes)
// Prints the elapsed milliseconds of the timed part on stdout.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define CHUNK (4UL << 20)

static double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static void die(const char* what) {
  perror(what);
  exit(2);
}

// A child holding LEN bytes at a known address (the parent's mapping address
// is inherited by fork); filled when `fill`. Returns its pid; it waits on a pipe.
static pid_t holder(void* mem, size_t len, int fill, int* keep) {
  int p[2], r[2];
  if (pipe(p) < 0 || pipe(r) < 0) die("pipe");
  pid_t pid = fork();
  if (pid < 0) die("fork");
  if (pid == 0) {
    close(p[1]);
    close(r[0]);
    if (fill) {
      uint64_t* w = mem;
      for (size_t i = 0; i < len / 8; i++) w[i] = (i + 1) * 0x9E3779B97F4A7C15ULL;
    }
    char c = 1;
    if (write(r[1], &c, 1) != 1) _exit(2);
    if (read(p[0], &c, 1) < 0) _exit(2);
    _exit(0);
  }
  close(p[0]);
  close(r[1]);
  char c;
  if (read(r[0], &c, 1) != 1) die("holder");
  close(r[0]);
  *keep = p[1];
  return pid;
}

static void release(pid_t pid, int keep) {
  close(keep);
  waitpid(pid, NULL, 0);
}

int main(int argc, char** argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: %s dump MIB FILE | restore FILE | tcp MIB\n", argv[0]);
    return 2;
  }
  char* buf = malloc(CHUNK);
  if (!buf) die("malloc");
  memset(buf, 1, CHUNK);
  double ms = 0;
  if (!strcmp(argv[1], "dump") && argc > 3) {
    size_t len = strtoull(argv[2], NULL, 10) << 20;
    void* mem = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED) die("mmap");
    int keep;
    pid_t pid = holder(mem, len, 1, &keep);
    int fd = open(argv[3], O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) die("open");
    double t0 = now_ms();
    for (size_t off = 0; off < len; off += CHUNK) {
      size_t n = len - off < CHUNK ? len - off : CHUNK;
      struct iovec l = {buf, n}, r = {(char*)mem + off, n};
      if (process_vm_readv(pid, &l, 1, &r, 1, 0) != (ssize_t)n) die("process_vm_readv");
      for (size_t w = 0; w < n;) {
        ssize_t k = write(fd, buf + w, n - w);
        if (k <= 0) die("write");
        w += k;
      }
    }
    ms = now_ms() - t0;
    close(fd);
    release(pid, keep);
  } else if (!strcmp(argv[1], "restore")) {
    int fd = open(argv[2], O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) < 0) die("open");
    size_t len = st.st_size;
    void* mem = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED) die("mmap");
    int keep;
    pid_t pid = holder(mem, len, 0, &keep);
    double t0 = now_ms();
    for (size_t off = 0; off < len; off += CHUNK) {
      size_t n = len - off < CHUNK ? len - off : CHUNK;
      for (size_t got = 0; got < n;) {
        ssize_t k = pread(fd, buf + got, n - got, off + got);
        if (k <= 0) die("read");
        got += k;
      }
      struct iovec l = {buf, n}, r = {(char*)mem + off, n};
      if (process_vm_writev(pid, &l, 1, &r, 1, 0) != (ssize_t)n) die("process_vm_writev");
    }
    ms = now_ms() - t0;
    close(fd);
    release(pid, keep);
  } else if (!strcmp(argv[1], "tcp")) {
    size_t len = strtoull(argv[2], NULL, 10) << 20;
    int ls = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof a;
    if (ls < 0 || bind(ls, (struct sockaddr*)&a, sizeof a) < 0 || listen(ls, 1) < 0 ||
        getsockname(ls, (struct sockaddr*)&a, &al) < 0)
      die("listen");
    pid_t pid = fork();
    if (pid < 0) die("fork");
    if (pid == 0) {
      int s = socket(AF_INET, SOCK_STREAM, 0);
      if (connect(s, (struct sockaddr*)&a, sizeof a) < 0) _exit(2);
      for (size_t off = 0; off < len;) {
        ssize_t k = write(s, buf, len - off < CHUNK ? len - off : CHUNK);
        if (k <= 0) _exit(2);
        off += k;
      }
      close(s);
      _exit(0);
    }
    int s = accept(ls, NULL, NULL);
    if (s < 0) die("accept");
    double t0 = now_ms();
    size_t got = 0;
    for (;;) {
      ssize_t k = read(s, buf, CHUNK);
      if (k < 0) die("read");
      if (k == 0) break;
      got += k;
    }
    ms = now_ms() - t0;
    close(s);
    close(ls);
    waitpid(pid, NULL, 0);
    if (got != len) {
      fprintf(stderr, "tcp: got %zu of %zu bytes\n", got, len);
      return 1;
    }
  } else {
    fprintf(stderr, "unknown mode %s\n", argv[1]);
    return 2;
  }
  printf("%.3f\n", ms);
  return 0;
}
