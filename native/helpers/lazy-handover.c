// lazy-handover: the restorer side of CRIU's lazy-pages socket, written from
// IMAGE-FORMAT.md §5.3, for testing the lazy-pages daemon.
//
//   lazy-handover SOCKET [--procs N] [--map ADDR:NPAGES:SEED] [--zombie PID]
//                 [--setuid UID] [--no-finish] [--verify | --touch] [--holes K]
//
// Connects once (like CRIU's main process), then N processes (the first is
// this one when N = 1, otherwise N forked children) each: map NPAGES empty
// private anonymous pages at ADDR, create a userfaultfd with the
// non-cooperative event features, register the mapping (MISSING), print
// "ready <pid>" and wait until stdin says go (read by the parent, passed on
// through a pipe), send int32 pid then 1 byte + SCM_RIGHTS(uffd) under a
// process-shared lock, close their uffd copy, and with --verify read every
// page and check the pattern: the 64-bit word at address a holds a ^ SEED
// (with --holes K, every K-th page, p % K == K-1, must be zero instead);
// --touch checks only the first word of every page.
// After all sent their uffd the parent sends any zombie announcements and
// "RSTF". Exit 0 = all verified; 10 = mismatch; 11 = a child died by signal
// (the signal is printed); other = setup error.
// --setuid: drop to UID before connecting, send a pid and wait for EOF
// (used to check that the daemon refuses other users); prints "eof".
// --fork (one process): after the hand-over, fork a child (it inherits the
// lazy mapping: the daemon gets its uffd through UFFD_EVENT_FORK), print
// "forked <pid>", wait for a second "go" line, then the child verifies
// (--verify/--touch) while the parent, which never touches the mapping,
// waits for it; the exit status is the child's (11 if killed by a signal).
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <semaphore.h>
#include <stddef.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef MAP_FIXED_NOREPLACE
#define MAP_FIXED_NOREPLACE 0x100000
#endif

static void die(const char *what) {
  fprintf(stderr, "lazy-handover[%d]: %s: %s\n", getpid(), what, strerror(errno));
  exit(2);
}

static void write_all(int fd, const void *buf, size_t len) {
  const char *p = buf;
  while (len > 0) {
    ssize_t n = write(fd, p, len);
    if (n < 0) {
      if (errno == EINTR) continue;
      die("write");
    }
    p += n;
    len -= (size_t)n;
  }
}

static void send_fd(int sk, int fd) {
  char byte = 0;
  struct iovec iov = {&byte, 1};
  union {
    char buf[CMSG_SPACE(sizeof(int))];
    struct cmsghdr align;
  } u;
  struct msghdr msg = {0};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = u.buf;
  msg.msg_controllen = sizeof(u.buf);
  struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
  c->cmsg_level = SOL_SOCKET;
  c->cmsg_type = SCM_RIGHTS;
  c->cmsg_len = CMSG_LEN(sizeof(int));
  memcpy(CMSG_DATA(c), &fd, sizeof(int));
  if (sendmsg(sk, &msg, 0) != 1) die("sendmsg(SCM_RIGHTS)");
}

struct opts {
  const char *sock;
  int procs;
  uint64_t addr, npages, seed;
  int have_map, setuid_to, no_finish, verify, nzombies, fork_child;
  int holes;  // with --holes K, page p (from ADDR) with p % K == K-1 must read as zero
  int zombies[16];
};

static int make_uffd(const struct opts *o) {
  int uffd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
  if (uffd < 0) die("userfaultfd");
  struct uffdio_api api = {.api = UFFD_API,
                           .features = UFFD_FEATURE_EVENT_FORK | UFFD_FEATURE_EVENT_REMAP |
                                       UFFD_FEATURE_EVENT_REMOVE | UFFD_FEATURE_EVENT_UNMAP};
  if (ioctl(uffd, UFFDIO_API, &api) < 0) die("UFFDIO_API");
  if (o->have_map) {
    size_t len = o->npages * 4096;
    void *p = mmap((void *)o->addr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
    if (p == MAP_FAILED || (uint64_t)p != o->addr) die("mmap at ADDR");
    struct uffdio_register reg = {.range = {.start = o->addr, .len = len}, .mode = UFFDIO_REGISTER_MODE_MISSING};
    if (ioctl(uffd, UFFDIO_REGISTER, &reg) < 0) die("UFFDIO_REGISTER");
  }
  return uffd;
}

static int verify(const struct opts *o) {
  if (!o->have_map || !o->verify) return 0;
  volatile uint64_t *w = (volatile uint64_t *)o->addr;
  size_t words = o->npages * 4096 / 8;
  // --touch: only the first word of each page (one fault per page, little CPU of our own)
  size_t step = o->verify == 2 ? 4096 / 8 : 1;
  for (size_t i = 0; i < words; i += step) {
    uint64_t a = o->addr + i * 8;
    size_t page = i * 8 / 4096;
    uint64_t want = (o->holes > 0 && page % o->holes == (size_t)o->holes - 1) ? 0 : (a ^ o->seed);
    if (w[i] != want) {
      fprintf(stderr, "lazy-handover[%d]: mismatch at 0x%llx: 0x%llx != 0x%llx\n", getpid(), (unsigned long long)a,
              (unsigned long long)w[i], (unsigned long long)want);
      return 10;
    }
  }
  printf("verified %d %llu pages\n", getpid(), (unsigned long long)o->npages);
  fflush(stdout);
  return 0;
}

// Connects an existing socket: forked children share its file description,
// so connecting it in the parent connects it for them too (one connection
// for the whole tree, like CRIU's restorer).
static void connect_sock(int sk, const char *path) {
  struct sockaddr_un a = {.sun_family = AF_UNIX};
  size_t n = strlen(path);
  if (n >= sizeof(a.sun_path)) {
    errno = ENAMETOOLONG;
    die("socket path");
  }
  memcpy(a.sun_path, path, n);
  if (connect(sk, (struct sockaddr *)&a, (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n)) < 0) die("connect");
}

static int connect_to(const char *path) {
  int sk = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (sk < 0) die("socket");
  connect_sock(sk, path);
  return sk;
}

static void wait_go(void) {
  char line[64];
  if (!fgets(line, sizeof(line), stdin)) {
    fprintf(stderr, "lazy-handover: stdin closed before go\n");
    exit(2);
  }
}

int main(int argc, char **argv) {
  struct opts o = {0};
  o.procs = 1;
  o.setuid_to = -1;
  if (argc < 2) {
    fprintf(stderr, "usage: lazy-handover SOCKET [options]\n");
    return 2;
  }
  o.sock = argv[1];
  for (int i = 2; i < argc; i++) {
    if (!strcmp(argv[i], "--procs") && i + 1 < argc) o.procs = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--map") && i + 1 < argc) {
      char *p = argv[++i], *end;
      o.addr = strtoull(p, &end, 0);
      if (*end != ':') return 2;
      o.npages = strtoull(end + 1, &end, 0);
      if (*end != ':') return 2;
      o.seed = strtoull(end + 1, &end, 0);
      if (*end != 0) return 2;
      o.have_map = 1;
    } else if (!strcmp(argv[i], "--zombie") && i + 1 < argc && o.nzombies < 16) o.zombies[o.nzombies++] = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--setuid") && i + 1 < argc) o.setuid_to = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--holes") && i + 1 < argc) o.holes = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--no-finish")) o.no_finish = 1;
    else if (!strcmp(argv[i], "--fork")) o.fork_child = 1;
    else if (!strcmp(argv[i], "--verify")) o.verify = 1;
    else if (!strcmp(argv[i], "--touch")) o.verify = 2;
    else {
      fprintf(stderr, "lazy-handover: unknown option %s\n", argv[i]);
      return 2;
    }
  }
  setvbuf(stdout, NULL, _IOLBF, 0);

  if (o.setuid_to >= 0) {
    printf("ready %d\n", getpid());
    wait_go();
    if (setgid(o.setuid_to) < 0 || setuid(o.setuid_to) < 0) die("setuid");
    int sk = connect_to(o.sock);
    int32_t pid = getpid();
    // The daemon may already have closed the connection: EPIPE is an answer too.
    signal(SIGPIPE, SIG_IGN);
    (void)!write(sk, &pid, sizeof(pid));
    char c;
    while (read(sk, &c, 1) > 0) {
    }
    printf("eof\n");
    return 0;
  }

  if (o.procs == 1) {
    int uffd = make_uffd(&o);
    printf("ready %d\n", getpid());
    wait_go();
    int sk = connect_to(o.sock);
    int32_t pid = getpid();
    write_all(sk, &pid, sizeof(pid));
    send_fd(sk, uffd);
    close(uffd);
    for (int z = 0; z < o.nzombies; z++) {
      int32_t neg = -o.zombies[z];
      write_all(sk, &neg, sizeof(neg));
    }
    if (!o.no_finish) {
      uint32_t rstf = 0x52535446;
      write_all(sk, &rstf, sizeof(rstf));
    }
    if (o.fork_child) {
      int gp[2];
      if (pipe(gp) < 0) die("pipe");
      pid_t c = fork();
      if (c < 0) die("fork");
      if (c == 0) {
        close(gp[1]);
        close(sk);
        char g;
        if (read(gp[0], &g, 1) != 1) _exit(2);
        _exit(verify(&o));
      }
      close(gp[0]);
      printf("forked %d\n", c);
      wait_go();
      write_all(gp[1], "g", 1);
      int st;
      if (waitpid(c, &st, 0) < 0) die("waitpid");
      if (WIFSIGNALED(st)) {
        printf("child %d killed by signal %d\n", c, WTERMSIG(st));
        return 11;
      }
      close(sk);
      return WEXITSTATUS(st);
    }
    int r = verify(&o);
    close(sk);
    return r;
  }

  // Several processes sharing one connection, like CRIU's restored tree.
  int sk = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (sk < 0) die("socket");
  sem_t *lock = mmap(NULL, sizeof(sem_t) * 2, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (lock == MAP_FAILED) die("mmap lock");
  sem_init(&lock[0], 1, 1);  // the send mutex
  sem_init(&lock[1], 1, 0);  // counts children that have sent
  int gopipe[2];
  if (pipe(gopipe) < 0) die("pipe");
  pid_t *kids = calloc((size_t)o.procs, sizeof(pid_t));
  for (int k = 0; k < o.procs; k++) {
    pid_t c = fork();
    if (c < 0) die("fork");
    if (c == 0) {
      close(gopipe[1]);
      int uffd = make_uffd(&o);
      printf("ready %d\n", getpid());
      char g;
      if (read(gopipe[0], &g, 1) != 1) _exit(2);
      sem_wait(&lock[0]);
      int32_t pid = getpid();
      write_all(sk, &pid, sizeof(pid));
      send_fd(sk, uffd);
      sem_post(&lock[0]);
      close(uffd);
      sem_post(&lock[1]);
      _exit(verify(&o));
    }
    kids[k] = c;
  }
  close(gopipe[0]);
  wait_go();
  connect_sock(sk, o.sock);
  for (int k = 0; k < o.procs; k++) write_all(gopipe[1], "g", 1);
  for (int k = 0; k < o.procs; k++) sem_wait(&lock[1]);
  for (int z = 0; z < o.nzombies; z++) {
    int32_t neg = -o.zombies[z];
    write_all(sk, &neg, sizeof(neg));
  }
  if (!o.no_finish) {
    uint32_t rstf = 0x52535446;
    write_all(sk, &rstf, sizeof(rstf));
  }
  int worst = 0;
  for (int k = 0; k < o.procs; k++) {
    int st;
    if (waitpid(kids[k], &st, 0) < 0) die("waitpid");
    if (WIFSIGNALED(st)) {
      printf("child %d killed by signal %d\n", kids[k], WTERMSIG(st));
      worst = 11;
    } else if (WEXITSTATUS(st) != 0 && worst == 0) {
      worst = WEXITSTATUS(st);
    }
  }
  close(sk);
  return worst;
}
