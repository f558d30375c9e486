// Test helper: a datagram socket outside the dumped tree (--ext-unix-sk).
//   unix-dgram-peer NAME DIR
// Binds the abstract name "\0NAME", creates DIR/ready, then writes every
// datagram it receives as one line to DIR/received (rewritten after each,
// through a rename) until it receives "after-ext" or 60 s pass without one.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

static void put(const char* dir, const char* name, const char* data, size_t len) {
  char tmp[4096], path[4096];
  snprintf(tmp, sizeof tmp, "%s/%s.tmp", dir, name);
  snprintf(path, sizeof path, "%s/%s", dir, name);
  int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0 || write(fd, data, len) != (ssize_t)len || close(fd) < 0 || rename(tmp, path) < 0) {
    perror("unix-dgram-peer: write");
    _exit(2);
  }
}

int main(int argc, char** argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: %s NAME DIR\n", argv[0]);
    return 2;
  }
  int s = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  struct sockaddr_un a;
  memset(&a, 0, sizeof a);
  a.sun_family = AF_UNIX;
  size_t l = strlen(argv[1]);
  if (l + 1 > sizeof a.sun_path) return 2;
  memcpy(a.sun_path + 1, argv[1], l);
  if (s < 0 || bind(s, (struct sockaddr*)&a, (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + l)) < 0) {
    perror("unix-dgram-peer: bind");
    return 2;
  }
  struct timeval tv = {60, 0};
  setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  put(argv[2], "ready", "1\n", 2);
  static char all[65536];
  size_t used = 0;
  for (;;) {
    char buf[4096];
    ssize_t n = recv(s, buf, sizeof buf - 1, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      return 1;
    }
    if (used + (size_t)n + 1 < sizeof all) {
      memcpy(all + used, buf, (size_t)n);
      used += (size_t)n;
      all[used++] = '\n';
    }
    put(argv[2], "received", all, used);
    if (n == 9 && memcmp(buf, "after-ext", 9) == 0) return 0;
  }
}
