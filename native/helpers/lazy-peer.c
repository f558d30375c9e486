// lazy-peer: a misbehaving client of the lazy-pages socket (IMAGE-FORMAT.md
// §5.3), for fault-injection tests of the daemon: it sends exactly what it is
// told, well-formed or not, with whatever file descriptors it is told.
//
//   lazy-peer SOCKET ACTION...
//
// Connects, prints "ready <pid>", then runs the actions in order:
//   child            fork a child that sleeps until killed; prints "child <pid>"
//   pid N|self|child write a 4-byte pid word (host-endian int32)
//   bytes HEX        write these raw bytes (e.g. 2a00 = a short pid)
//   fds K[,K...]     sendmsg 1 byte (0) carrying SCM_RIGHTS fds of kinds K:
//                    uffd (a real userfaultfd of this process), pipe, file (a
//                    regular file: this program), eventfd; "none" = no fds
//   random SEED N    N pseudo-random bytes (xorshift from SEED) in random-size
//                    writes, some carrying a pipe or uffd fd as SCM_RIGHTS
//   wait             wait for a line on stdin (the peer and its child stay alive)
//   hangup           close the connection (the actions go on)
// After the last action it waits for the daemon to close the connection
// (a peer that stalls: no actions at all), prints "eof" and exits 0; after a
// hangup it exits 0 at once.
// Exit 2 = setup error (printed).
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>

static void die(const char *what) {
  fprintf(stderr, "lazy-peer[%d]: %s: %s\n", getpid(), what, strerror(errno));
  exit(2);
}

static int sk = -1;
static pid_t kid = -1;
static int opened[64];
static int nopened;

static void write_all(const void *buf, size_t len) {
  const char *p = buf;
  if (sk < 0) return;
  while (len > 0) {
    ssize_t n = write(sk, p, len);
    if (n < 0) {
      if (errno == EINTR) continue;
      // The daemon may already have dropped us: that is its answer.
      if (errno == EPIPE || errno == ECONNRESET) return;
      die("write");
    }
    p += n;
    len -= (size_t)n;
  }
}

static int make_fd(const char *kind) {
  int fd = -1;
  if (!strcmp(kind, "uffd")) {
    fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
    if (fd >= 0) {
      struct uffdio_api api = {.api = UFFD_API};
      if (ioctl(fd, UFFDIO_API, &api) < 0) die("UFFDIO_API");
    }
  } else if (!strcmp(kind, "pipe")) {
    int p[2];
    if (pipe2(p, O_CLOEXEC) < 0) die("pipe");
    opened[nopened++] = p[1];
    fd = p[0];
  } else if (!strcmp(kind, "file")) {
    fd = open("/proc/self/exe", O_RDONLY | O_CLOEXEC);
  } else if (!strcmp(kind, "eventfd")) {
    fd = eventfd(0, EFD_CLOEXEC);
  } else {
    fprintf(stderr, "lazy-peer: unknown fd kind %s\n", kind);
    exit(2);
  }
  if (fd < 0) die(kind);
  if (nopened < 60) opened[nopened++] = fd;
  return fd;
}

static void send_fds(const void *data, size_t len, const int *fds, int nfds) {
  struct iovec iov = {(void *)data, len};
  union {
    char buf[CMSG_SPACE(sizeof(int) * 8)];
    struct cmsghdr align;
  } u;
  struct msghdr msg = {0};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  if (nfds > 0) {
    msg.msg_control = u.buf;
    msg.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
    struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
    memcpy(CMSG_DATA(c), fds, sizeof(int) * nfds);
  }
  if (sendmsg(sk, &msg, MSG_NOSIGNAL) < 0 && errno != EPIPE && errno != ECONNRESET) die("sendmsg");
}

static uint64_t rng;
static uint64_t next_rand(void) {
  rng ^= rng << 13;
  rng ^= rng >> 7;
  rng ^= rng << 17;
  return rng;
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: lazy-peer SOCKET ACTION...\n");
    return 2;
  }
  setvbuf(stdout, NULL, _IOLBF, 0);
  signal(SIGPIPE, SIG_IGN);
  sk = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (sk < 0) die("socket");
  struct sockaddr_un a = {.sun_family = AF_UNIX};
  size_t n = strlen(argv[1]);
  if (n >= sizeof(a.sun_path)) {
    errno = ENAMETOOLONG;
    die("socket path");
  }
  memcpy(a.sun_path, argv[1], n);
  if (connect(sk, (struct sockaddr *)&a, (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n)) < 0) die("connect");
  printf("ready %d\n", getpid());
  for (int i = 2; i < argc; i++) {
    const char *act = argv[i];
    if (!strcmp(act, "child")) {
      kid = fork();
      if (kid < 0) die("fork");
      if (kid == 0) {
        close(sk);
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        for (;;) pause();
      }
      printf("child %d\n", kid);
    } else if (!strcmp(act, "pid") && i + 1 < argc) {
      const char *v = argv[++i];
      int32_t pid = !strcmp(v, "self") ? getpid() : !strcmp(v, "child") ? kid : (int32_t)strtol(v, NULL, 0);
      write_all(&pid, sizeof(pid));
    } else if (!strcmp(act, "bytes") && i + 1 < argc) {
      const char *h = argv[++i];
      uint8_t buf[256];
      size_t k = 0;
      for (; h[0] && h[1] && k < sizeof(buf); h += 2) {
        unsigned v;
        if (sscanf(h, "%2x", &v) != 1) return 2;
        buf[k++] = (uint8_t)v;
      }
      write_all(buf, k);
    } else if (!strcmp(act, "fds") && i + 1 < argc) {
      char *list = strdup(argv[++i]);
      int fds[8], nfds = 0;
      for (char *t = strtok(list, ","); t && nfds < 8; t = strtok(NULL, ","))
        if (strcmp(t, "none") != 0) fds[nfds++] = make_fd(t);
      free(list);
      char zero = 0;
      send_fds(&zero, 1, fds, nfds);
    } else if (!strcmp(act, "random") && i + 2 < argc) {
      rng = strtoull(argv[i + 1], NULL, 0) * 0x9e3779b97f4a7c15ull + 1;
      size_t total = strtoull(argv[i + 2], NULL, 0);
      i += 2;
      uint8_t buf[64];
      while (total > 0) {
        size_t k = 1 + next_rand() % 8;
        if (k > total) k = total;
        if (k > sizeof(buf)) k = sizeof(buf);
        for (size_t j = 0; j < k; j++) buf[j] = (uint8_t)next_rand();
        uint64_t r = next_rand() % 8;
        if (r == 0 || r == 1) {
          int fd = make_fd(r == 0 ? "pipe" : "uffd");
          send_fds(buf, k, &fd, 1);
        } else {
          write_all(buf, k);
        }
        total -= k;
        if (nopened >= 56) break;  // bounded: enough fds sent for one peer
      }
    } else if (!strcmp(act, "wait")) {
      char line[64];
      if (!fgets(line, sizeof(line), stdin)) return 2;
    } else if (!strcmp(act, "hangup")) {
      if (sk >= 0) close(sk);
      sk = -1;
    } else {
      fprintf(stderr, "lazy-peer: unknown action %s\n", act);
      return 2;
    }
  }
  if (sk < 0) return 0;
  char c;
  ssize_t r;
  while ((r = read(sk, &c, 1)) > 0) {
  }
  printf("eof\n");
  return 0;
}
