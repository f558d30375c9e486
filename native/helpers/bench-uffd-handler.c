// Baseline userfaultfd fault handlers for bench/suites/uffd-faults.ts, the
// classic single-threaded designs the engine is compared with:
//
//   bench-uffd-handler block|spin SOCK PATTERN
//
// Listens on the unix socket SOCK, prints "listening", accepts one
// uffd-harness connection, receives its uffd and region list, sends "go"
// and serves every fault with one UFFDIO_COPY of one page from PATTERN
// mapped read-only. `block` sleeps in poll() between faults (as CRIU's
// daemon does); `spin` never sleeps (the latency floor, one CPU burnt).
// Exits 0 when the harness disconnects; prints "faults N cpu_ns C".
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define PAGE 4096UL

struct region {
  unsigned long base, len, fileoff;
};

static void die(const char *what) {
  fprintf(stderr, "bench-uffd-handler: %s: %s\n", what, strerror(errno));
  exit(1);
}

int main(int argc, char **argv) {
  if (argc != 4 || (strcmp(argv[1], "block") && strcmp(argv[1], "spin"))) {
    fprintf(stderr, "usage: bench-uffd-handler block|spin SOCK PATTERN\n");
    return 2;
  }
  int spin = !strcmp(argv[1], "spin");
  int pf = open(argv[3], O_RDONLY | O_CLOEXEC);
  struct stat st;
  if (pf < 0 || fstat(pf, &st) < 0) die("open pattern");
  const uint8_t *pat = mmap(NULL, st.st_size, PROT_READ, MAP_SHARED, pf, 0);
  if (pat == MAP_FAILED) die("mmap pattern");

  int ls = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", argv[2]);
  if (ls < 0 || bind(ls, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(ls, 1) < 0) die("listen");
  printf("listening\n");
  fflush(stdout);
  int c = accept4(ls, NULL, NULL, SOCK_CLOEXEC);
  if (c < 0) die("accept");
  char buf[8192], cbuf[CMSG_SPACE(sizeof(int))];
  struct iovec iov = {buf, sizeof(buf) - 1};
  struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf, .msg_controllen = sizeof(cbuf)};
  ssize_t n = recvmsg(c, &mh, MSG_CMSG_CLOEXEC);
  if (n <= 0) die("recvmsg");
  buf[n] = 0;
  struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
  if (!cm || cm->cmsg_type != SCM_RIGHTS) { fprintf(stderr, "no uffd received\n"); return 1; }
  int uffd;
  memcpy(&uffd, CMSG_DATA(cm), sizeof(int));
  struct region regs[64];
  int nr = 0;
  char *line = strchr(buf, '\n');
  while (line && nr < 64) {
    int idx;
    if (sscanf(line + 1, "%d %lx %lu %lu", &idx, &regs[nr].base, &regs[nr].len, &regs[nr].fileoff) != 4) break;
    nr++;
    line = strchr(line + 1, '\n');
  }
  if (write(c, "g", 1) != 1) die("write go");

  struct pollfd pfd[2] = {{uffd, POLLIN, 0}, {c, POLLIN, 0}};
  struct uffd_msg msgs[16];
  unsigned long faults = 0, idle = 0;
  for (;;) {
    if (!spin || ++idle % 4096 == 0) {
      if (poll(pfd, 2, spin ? 0 : -1) < 0 && errno != EINTR) die("poll");
      if (pfd[1].revents) break;  // harness gone (EOF or hangup)
      if (!spin && !(pfd[0].revents & POLLIN)) continue;
    }
    n = read(uffd, msgs, sizeof(msgs));
    if (n < 0) {
      if (errno == EAGAIN || errno == EINTR) continue;
      die("read uffd");
    }
    idle = 0;
    for (ssize_t k = 0; k < n / (ssize_t)sizeof(struct uffd_msg); k++) {
      if (msgs[k].event != UFFD_EVENT_PAGEFAULT) continue;
      unsigned long a = msgs[k].arg.pagefault.address & ~(PAGE - 1);
      const uint8_t *src = NULL;
      for (int r = 0; r < nr; r++)
        if (a >= regs[r].base && a < regs[r].base + regs[r].len) src = pat + regs[r].fileoff + (a - regs[r].base);
      struct uffdio_copy cp = {.dst = a, .src = (unsigned long)src, .len = PAGE, .mode = 0};
      if (!src) {
        struct uffdio_zeropage z = {.range = {a, PAGE}};
        ioctl(uffd, UFFDIO_ZEROPAGE, &z);
      } else if (ioctl(uffd, UFFDIO_COPY, &cp) < 0 && errno != EEXIST) {
        die("UFFDIO_COPY");
      }
      faults++;
    }
  }
  struct timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  printf("faults %lu cpu_ns %llu\n", faults, (unsigned long long)ts.tv_sec * 1000000000ull + ts.tv_nsec);
  unlink(argv[2]);
  return 0;
}
