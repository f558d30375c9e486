// Cooperative userfaultfd test harness: a process that hands its memory to
// a fault handler and then checks what it gets back.
//
//   uffd-harness --sock PATH --pattern FILE --regions P1,P2,... [--no-events]
//                [--features HEX] -- ACTION...
//
// Maps one anonymous private region per --regions entry (P pages each),
// fills it from FILE (region i at file offset = sum of previous region
// sizes), drops the pages (MADV_DONTNEED), registers every region (MISSING)
// with a uffd negotiated with FORK|REMAP|REMOVE|UNMAP|THREAD_ID (or exactly
// --features), connects to
// the unix socket PATH and sends one message with the uffd (SCM_RIGHTS):
//   "uffd <pid> <nregions>\n" then "<i> <addr-hex> <len> <fileoff>\n" per region.
// It closes its own uffd copy, waits for one byte on the socket ("go"),
// then runs ACTIONs in order, printing "ok ..." per action. On the first
// failed check it prints "FAIL ..." and exits 1; "done" and exit 0 at the end.
//
// ACTIONs (R region, P first page, N pages, B byte value 0..255):
//   read R P N        pages equal the pattern (content follows the region across mremap)
//   zero R P N        pages read back as zero
//   write R P N B     fill pages with B
//   byte R P N B      pages are all B
//   touch R P N       sequential first touch, one clock_gettime pair per page;
//                     prints "touch n= total_ns= p50_ns= p99_ns= mean_ns=" and verifies
//   threads T R P N   T threads touch and verify interleaved pages at once
//   fork ... endfork  the child runs the enclosed actions and exits; the parent waits
//                     for it (must exit 0) and continues after endfork
//   mremap R PAGES    move the region (MREMAP_FIXED to a fresh place), new size PAGES
//   dontneed R P N    madvise(MADV_DONTNEED)
//   mprotect R P N    mprotect(PROT_READ): splits the VMA, no uffd event
//   munmap R P N      munmap
//   wait              print "wait" and block until one byte arrives on the socket
//   stress R S K SEED MIX
//                     K random operations on region R, each of a kind picked from
//                     the letters of MIX (repeat one to make it more frequent):
//                     r read, d DONTNEED then read back zero, w write, m mremap
//                     move/grow, u munmap tail, f fork with a child that checks and
//                     writes; meanwhile a second thread reads region S (and
//                     discards parts of it if MIX has d); every page is checked
//                     against what the program did to it, both regions in full at
//                     the end. Meant to race the handler's events with its pushes.
//   exit C            _exit(C) at once
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define PAGE 4096UL
#define MAXR 64

struct region {
  uint8_t *base;
  size_t len;
  size_t fileoff;
};

static struct region regs[MAXR];
static int nregs;
static const uint8_t *pattern;
static size_t pattern_len;
static int sock = -1;

static void fail(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void fail(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  printf("FAIL ");
  vprintf(fmt, ap);
  printf("\n");
  va_end(ap);
  fflush(stdout);
  _exit(1);
}

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + ts.tv_nsec;
}

static long num(const char *s) {
  char *end;
  long v = strtol(s, &end, 0);
  if (*s == 0 || *end != 0) fail("bad number '%s'", s);
  return v;
}

static struct region *reg(const char *s) {
  long r = num(s);
  if (r < 0 || r >= nregs) fail("no region %ld", r);
  return &regs[r];
}

static uint8_t *pages(struct region *r, long p, long n) {
  if (p < 0 || n < 0 || (size_t)(p + n) * PAGE > r->len) fail("pages %ld+%ld outside region of %zu pages", p, n, r->len / PAGE);
  return r->base + p * PAGE;
}

static const uint8_t *expect(struct region *r, long p) {
  size_t off = r->fileoff + p * PAGE;
  if (off + PAGE > pattern_len) fail("pattern file too short for page %ld", p);
  return pattern + off;
}

static void verify_pattern(struct region *r, long p, long n, const char *what) {
  uint8_t *m = pages(r, p, n);
  for (long i = 0; i < n; i++)
    if (memcmp(m + i * PAGE, expect(r, p + i), PAGE) != 0)
      fail("%s: page %ld of region %ld differs from the pattern (first byte %u, want %u)", what, p + i,
           (long)(r - regs), m[i * PAGE], expect(r, p + i)[0]);
}

static void verify_byte(struct region *r, long p, long n, int b, const char *what) {
  uint8_t *m = pages(r, p, n);
  for (size_t i = 0; i < (size_t)n * PAGE; i++)
    if (m[i] != b) fail("%s: region %ld page %ld byte %zu is %u, want %d", what, (long)(r - regs), p + (long)(i / PAGE), i % PAGE, m[i], b);
}

static int cmp_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

struct thr {
  struct region *r;
  long p, n, t, nt;
  pthread_barrier_t *bar;
  int bad;
};

static void *thr_main(void *arg) {
  struct thr *t = arg;
  pthread_barrier_wait(t->bar);
  for (long i = t->t; i < t->n; i += t->nt) {
    const uint8_t *m = t->r->base + (t->p + i) * PAGE;
    if (memcmp(m, expect(t->r, t->p + i), PAGE) != 0) t->bad++;
  }
  return NULL;
}

static void send_uffd(const char *path, int uffd) {
  sock = socket(AF_UNIX, SOCK_STREAM, 0);
  if (sock < 0) fail("socket: %s", strerror(errno));
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
  if (connect(sock, (struct sockaddr *)&sa, sizeof(sa)) < 0) fail("connect %s: %s", path, strerror(errno));
  char buf[8192];
  int len = snprintf(buf, sizeof(buf), "uffd %d %d\n", getpid(), nregs);
  for (int i = 0; i < nregs; i++)
    len += snprintf(buf + len, sizeof(buf) - len, "%d %lx %zu %zu\n", i, (unsigned long)regs[i].base, regs[i].len, regs[i].fileoff);
  char cbuf[CMSG_SPACE(sizeof(int))];
  memset(cbuf, 0, sizeof(cbuf));
  struct iovec iov = {buf, (size_t)len};
  struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf, .msg_controllen = sizeof(cbuf)};
  struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
  c->cmsg_level = SOL_SOCKET;
  c->cmsg_type = SCM_RIGHTS;
  c->cmsg_len = CMSG_LEN(sizeof(int));
  memcpy(CMSG_DATA(c), &uffd, sizeof(int));
  if (sendmsg(sock, &mh, 0) != len) fail("sendmsg: %s", strerror(errno));
}

static void wait_byte(void) {
  char b;
  ssize_t n;
  do n = read(sock, &b, 1); while (n < 0 && errno == EINTR);
  if (n != 1) fail("socket closed while waiting (%s)", n < 0 ? strerror(errno) : "EOF");
}

// --- stress: random operations with the expected content tracked per page ---
// Expected content of a page: EX_PATTERN (the pattern file) or a byte value
// (0 = zero page: discarded or never there).
#define EX_PATTERN (-1)

struct tracked {
  struct region *r;
  int16_t *ex;
  long maxp;
};

static uint64_t rnd_next(uint64_t *s) {
  uint64_t x = *s;
  x ^= x << 13;
  x ^= x >> 7;
  x ^= x << 17;
  return *s = x;
}

// First page of [p, p+n) whose content is not what t expects, or -1.
static long check_run(struct tracked *t, long p, long n, int *got, int *want) {
  for (long i = p; i < p + n; i++) {
    const uint8_t *m = t->r->base + i * PAGE;
    if (t->ex[i] == EX_PATTERN) {
      if (memcmp(m, expect(t->r, i), PAGE) != 0) {
        *got = m[0];
        *want = expect(t->r, i)[0];
        return i;
      }
    } else {
      for (size_t k = 0; k < PAGE; k++)
        if (m[k] != (uint8_t)t->ex[i]) {
          *got = m[k];
          *want = t->ex[i];
          return i;
        }
    }
  }
  return -1;
}

static void stress_check(struct tracked *t, long p, long n, const char *what, long op) {
  int got = 0, want = 0;
  long bad = check_run(t, p, n, &got, &want);
  if (bad >= 0)
    fail("stress op %ld (%s): region %ld page %ld is wrong (byte %d, want %d%s)", op, what, (long)(t->r - regs), bad,
         got, want, t->ex[bad] == EX_PATTERN ? " from the pattern" : "");
}

struct stress_reader {
  struct tracked t;
  uint64_t seed;
  int discard;
  volatile int stop;
  long ops, bad, badpage, badop;
  int got, want;
  char what[16];
};

// The second thread: random reads and discards on its own region until told
// to stop, so faults and REMOVE events of two threads interleave.
static void *stress_reader_main(void *arg) {
  struct stress_reader *sr = arg;
  long n = (long)(sr->t.r->len / PAGE);
  while (!sr->stop && !sr->bad) {
    uint64_t v = rnd_next(&sr->seed);
    long p = (long)(v % n), m = 1 + (long)((v >> 20) % 16);
    if (p + m > n) m = n - p;
    const char *what = "read";
    if (sr->discard && (v >> 40) % 4 == 0) {
      if (madvise(sr->t.r->base + p * PAGE, m * PAGE, MADV_DONTNEED) < 0) {
        sr->bad = 1;
        snprintf(sr->what, sizeof(sr->what), "madvise");
        break;
      }
      for (long i = p; i < p + m; i++) sr->t.ex[i] = 0;
      what = "dontneed";
    }
    long b = check_run(&sr->t, p, m, &sr->got, &sr->want);
    if (b >= 0) {
      sr->bad = 1;
      sr->badpage = b;
      sr->badop = sr->ops;
      snprintf(sr->what, sizeof(sr->what), "%s", what);
    }
    sr->ops++;
  }
  return NULL;
}

static void stress(struct region *r, struct region *s, long k, uint64_t seed, const char *mix) {
  for (const char *c = mix; *c; c++)
    if (!strchr("rdwmuf", *c)) fail("stress: unknown kind '%c' in '%s'", *c, mix);
  const size_t mixlen = strlen(mix);
  if (mixlen == 0) fail("stress: empty mix");
  long n = (long)(r->len / PAGE);
  struct tracked t = {r, NULL, n + 64};
  t.ex = malloc(sizeof(int16_t) * t.maxp);
  for (long i = 0; i < t.maxp; i++) t.ex[i] = EX_PATTERN;
  struct stress_reader sr = {{s, malloc(sizeof(int16_t) * (s->len / PAGE)), (long)(s->len / PAGE)}, seed * 31 + 7, strchr(mix, 'd') != NULL, 0, 0, 0, 0, 0, 0, 0, ""};
  for (size_t i = 0; i < s->len / PAGE; i++) sr.t.ex[i] = EX_PATTERN;
  if (!t.ex || !sr.t.ex) fail("stress: malloc");
  pthread_t th;
  if (pthread_create(&th, NULL, stress_reader_main, &sr) != 0) fail("stress: pthread_create");
  uint64_t st = seed ? seed : 1;
  long forks = 0, remaps = 0, discards = 0, unmaps = 0;
  for (long op = 0; op < k; op++) {
    uint64_t v = rnd_next(&st);
    long p = (long)(v % n), m = 1 + (long)((v >> 24) % 32);
    if (p + m > n) m = n - p;
    char kind = mix[(v >> 48) % mixlen];
    if (kind == 'r') {
      stress_check(&t, p, m, "read", op);
    } else if (kind == 'd') {
      // Discard then read back at once: the handler must not put image data
      // back, and must not leave this thread waiting on the discarded pages.
      if (madvise(r->base + p * PAGE, m * PAGE, MADV_DONTNEED) < 0) fail("stress: madvise: %s", strerror(errno));
      for (long i = p; i < p + m; i++) t.ex[i] = 0;
      discards++;
      stress_check(&t, p, m, "dontneed", op);
    } else if (kind == 'w') {
      int b = 1 + (int)((v >> 8) % 255);
      memset(r->base + p * PAGE, b, m * PAGE);
      for (long i = p; i < p + m; i++) t.ex[i] = (int16_t)b;
      stress_check(&t, p, m, "write", op);
    } else if (kind == 'm') {
      // Move to a fresh place, sometimes growing; then touch a page of it.
      long nn = n;
      if ((v >> 4) % 3 == 0) nn = n + 1 + (long)((v >> 12) % 8);
      if (nn > t.maxp) nn = n;
      void *dst = mmap(NULL, nn * PAGE, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
      if (dst == MAP_FAILED) fail("stress: mmap: %s", strerror(errno));
      void *nb = mremap(r->base, n * PAGE, nn * PAGE, MREMAP_MAYMOVE | MREMAP_FIXED, dst);
      if (nb == MAP_FAILED) fail("stress: mremap: %s", strerror(errno));
      r->base = nb;
      r->len = nn * PAGE;
      for (long i = n; i < nn; i++) t.ex[i] = 0;
      n = nn;
      remaps++;
      stress_check(&t, p < n ? p : 0, 1, "mremap", op);
    } else if (kind == 'u') {
      long cut = 1 + (long)((v >> 8) % 8);
      if (n - cut >= 64) {
        if (munmap(r->base + (n - cut) * PAGE, cut * PAGE) < 0) fail("stress: munmap: %s", strerror(errno));
        n -= cut;
        r->len = n * PAGE;
        unmaps++;
      }
      stress_check(&t, n - 1, 1, "munmap", op);
    } else {
      // Only this thread exists in the child: it touches nothing the other
      // thread may hold (no stdio until it fails).
      fflush(stdout);
      pid_t c = fork();
      if (c < 0) fail("stress: fork: %s", strerror(errno));
      if (c == 0) {
        stress_check(&t, p, m, "fork child read", op);
        memset(r->base + p * PAGE, 0xee, PAGE);
        t.ex[p] = 0xee;
        stress_check(&t, p, 1, "fork child write", op);
        for (long i = (long)((v >> 16) % 61); i < n; i += 61) stress_check(&t, i, 1, "fork child sample", op);
        _exit(0);
      }
      int wst;
      while (waitpid(c, &wst, 0) < 0)
        if (errno != EINTR) fail("stress: waitpid: %s", strerror(errno));
      if (!WIFEXITED(wst) || WEXITSTATUS(wst) != 0) fail("stress op %ld: fork child status 0x%x", op, wst);
      forks++;
      stress_check(&t, p, m, "after fork", op);
    }
  }
  sr.stop = 1;
  pthread_join(th, NULL);
  if (sr.bad) {
    if (!strcmp(sr.what, "madvise")) fail("stress reader: madvise failed");
    fail("stress reader op %ld (%s): region %ld page %ld is wrong (byte %d, want %d)", sr.badop, sr.what,
         (long)(s - regs), sr.badpage, sr.got, sr.want);
  }
  stress_check(&t, 0, n, "final", k);
  sr.t.r = s;
  stress_check(&sr.t, 0, (long)(s->len / PAGE), "final reader", k);
  printf("ok stress ops=%ld forks=%ld remaps=%ld discards=%ld unmaps=%ld reader_ops=%ld\n", k, forks, remaps,
         discards, unmaps, sr.ops);
  free(t.ex);
  free(sr.t.ex);
}

// Runs actions argv[i..] until the end or an unmatched "endfork"; returns the index reached.
static int run(char **av, int ac, int i) {
  while (i < ac) {
    const char *a = av[i];
#define NEED(k) \
  if (i + (k) >= ac) fail("%s needs %d arguments", a, k)
    if (!strcmp(a, "endfork")) return i;
    if (!strcmp(a, "read") || !strcmp(a, "zero")) {
      NEED(3);
      struct region *r = reg(av[i + 1]);
      long p = num(av[i + 2]), n = num(av[i + 3]);
      if (a[0] == 'r') verify_pattern(r, p, n, "read");
      else verify_byte(r, p, n, 0, "zero");
      printf("ok %s %s %ld %ld\n", a, av[i + 1], p, n);
      i += 4;
    } else if (!strcmp(a, "write") || !strcmp(a, "byte")) {
      NEED(4);
      struct region *r = reg(av[i + 1]);
      long p = num(av[i + 2]), n = num(av[i + 3]), b = num(av[i + 4]);
      if (a[0] == 'w') memset(pages(r, p, n), (int)b, n * PAGE);
      else verify_byte(r, p, n, (int)b, "byte");
      printf("ok %s %s %ld %ld %ld\n", a, av[i + 1], p, n, b);
      i += 5;
    } else if (!strcmp(a, "touch")) {
      NEED(3);
      struct region *r = reg(av[i + 1]);
      long p = num(av[i + 2]), n = num(av[i + 3]);
      volatile uint8_t *m = pages(r, p, n);
      uint64_t *lat = malloc(sizeof(uint64_t) * (n ? n : 1));
      uint64_t t0 = now_ns(), sum = 0;
      for (long k = 0; k < n; k++) {
        uint64_t a0 = now_ns();
        (void)m[k * PAGE];
        lat[k] = now_ns() - a0;
        sum += lat[k];
      }
      uint64_t total = now_ns() - t0;
      verify_pattern(r, p, n, "touch");
      qsort(lat, n, sizeof(uint64_t), cmp_u64);
      printf("touch n=%ld total_ns=%llu p50_ns=%llu p99_ns=%llu mean_ns=%llu\n", n, (unsigned long long)total,
             (unsigned long long)(n ? lat[n / 2] : 0), (unsigned long long)(n ? lat[(n * 99) / 100] : 0),
             (unsigned long long)(n ? sum / n : 0));
      free(lat);
      i += 4;
    } else if (!strcmp(a, "threads")) {
      NEED(4);
      long nt = num(av[i + 1]);
      struct region *r = reg(av[i + 2]);
      long p = num(av[i + 3]), n = num(av[i + 4]);
      pages(r, p, n);
      if (nt < 1 || nt > 256) fail("threads: 1..256");
      pthread_barrier_t bar;
      pthread_barrier_init(&bar, NULL, nt);
      struct thr *ts = calloc(nt, sizeof(*ts));
      pthread_t *th = calloc(nt, sizeof(*th));
      for (long t = 0; t < nt; t++) {
        ts[t] = (struct thr){r, p, n, t, nt, &bar, 0};
        if (pthread_create(&th[t], NULL, thr_main, &ts[t]) != 0) fail("pthread_create");
      }
      int bad = 0;
      for (long t = 0; t < nt; t++) {
        pthread_join(th[t], NULL);
        bad += ts[t].bad;
      }
      if (bad) fail("threads: %d pages differ from the pattern", bad);
      printf("ok threads %ld %ld %ld\n", nt, p, n);
      free(ts);
      free(th);
      i += 5;
    } else if (!strcmp(a, "fork")) {
      fflush(stdout);
      pid_t c = fork();
      if (c < 0) fail("fork: %s", strerror(errno));
      if (c == 0) {
        run(av, ac, i + 1);
        printf("ok child done\n");
        fflush(stdout);
        _exit(0);
      }
      int depth = 0, j = i + 1;
      for (; j < ac; j++) {
        if (!strcmp(av[j], "fork")) depth++;
        else if (!strcmp(av[j], "endfork") && depth-- == 0) break;
      }
      int st;
      while (waitpid(c, &st, 0) < 0)
        if (errno != EINTR) fail("waitpid: %s", strerror(errno));
      if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) fail("fork: child status 0x%x", st);
      printf("ok fork %d\n", c);
      i = j + 1;
    } else if (!strcmp(a, "mremap")) {
      NEED(2);
      struct region *r = reg(av[i + 1]);
      size_t nl = num(av[i + 2]) * PAGE;
      void *dst = mmap(NULL, nl, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
      if (dst == MAP_FAILED) fail("mmap: %s", strerror(errno));
      void *m = mremap(r->base, r->len, nl, MREMAP_MAYMOVE | MREMAP_FIXED, dst);
      if (m == MAP_FAILED) fail("mremap: %s", strerror(errno));
      printf("ok mremap %s %lx %lx\n", av[i + 1], (unsigned long)r->base, (unsigned long)m);
      r->base = m;
      r->len = nl;
      i += 3;
    } else if (!strcmp(a, "mprotect")) {
      NEED(3);
      struct region *r = reg(av[i + 1]);
      long p = num(av[i + 2]), n = num(av[i + 3]);
      if (mprotect(pages(r, p, n), n * PAGE, PROT_READ) < 0) fail("mprotect: %s", strerror(errno));
      printf("ok mprotect %s %ld %ld\n", av[i + 1], p, n);
      i += 4;
    } else if (!strcmp(a, "dontneed") || !strcmp(a, "munmap")) {
      NEED(3);
      struct region *r = reg(av[i + 1]);
      long p = num(av[i + 2]), n = num(av[i + 3]);
      uint8_t *m = pages(r, p, n);
      int rc = a[0] == 'd' ? madvise(m, n * PAGE, MADV_DONTNEED) : munmap(m, n * PAGE);
      if (rc < 0) fail("%s: %s", a, strerror(errno));
      printf("ok %s %s %ld %ld\n", a, av[i + 1], p, n);
      i += 4;
    } else if (!strcmp(a, "stress")) {
      NEED(5);
      struct region *r = reg(av[i + 1]), *s = reg(av[i + 2]);
      if (r == s) fail("stress: two different regions needed");
      stress(r, s, num(av[i + 3]), (uint64_t)num(av[i + 4]), av[i + 5]);
      i += 6;
    } else if (!strcmp(a, "wait")) {
      printf("wait\n");
      fflush(stdout);
      wait_byte();
      i += 1;
    } else if (!strcmp(a, "exit")) {
      NEED(1);
      fflush(stdout);
      _exit((int)num(av[i + 1]));
    } else {
      fail("unknown action '%s'", a);
    }
    fflush(stdout);
  }
  return i;
}

int main(int argc, char **argv) {
  const char *sockpath = NULL, *patpath = NULL, *regions = NULL;
  int events = 1, i = 1;
  long long features = -1;
  for (; i < argc; i++) {
    if (!strcmp(argv[i], "--")) { i++; break; }
    if (!strcmp(argv[i], "--sock") && i + 1 < argc) sockpath = argv[++i];
    else if (!strcmp(argv[i], "--pattern") && i + 1 < argc) patpath = argv[++i];
    else if (!strcmp(argv[i], "--regions") && i + 1 < argc) regions = argv[++i];
    else if (!strcmp(argv[i], "--no-events")) events = 0;
    else if (!strcmp(argv[i], "--features") && i + 1 < argc) features = strtoll(argv[++i], NULL, 16);
    else fail("usage: uffd-harness --sock PATH --pattern FILE --regions P1,P2 [--no-events] [--features HEX] -- ACTION...");
  }
  if (!sockpath || !patpath || !regions) fail("--sock, --pattern and --regions are required");
  setvbuf(stdout, NULL, _IOLBF, 0);

  int pf = open(patpath, O_RDONLY | O_CLOEXEC);
  struct stat st;
  if (pf < 0 || fstat(pf, &st) < 0) fail("open %s: %s", patpath, strerror(errno));
  pattern_len = st.st_size;
  pattern = pattern_len ? mmap(NULL, pattern_len, PROT_READ, MAP_SHARED, pf, 0) : NULL;
  if (pattern == MAP_FAILED) fail("mmap %s: %s", patpath, strerror(errno));
  close(pf);

  size_t off = 0;
  for (char *s = strdup(regions), *tok; (tok = strsep(&s, ",")) != NULL;) {
    if (nregs == MAXR) fail("too many regions");
    size_t len = num(tok) * PAGE;
    if (len == 0) fail("empty region");
    void *m = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (m == MAP_FAILED) fail("mmap region: %s", strerror(errno));
    madvise(m, len, MADV_NOHUGEPAGE);
    regs[nregs++] = (struct region){m, len, off};
    off += len;
  }
  // Fill, then drop: every page must come back through the handler.
  for (int r = 0; r < nregs; r++) {
    size_t n = regs[r].fileoff >= pattern_len ? 0 : pattern_len - regs[r].fileoff;
    if (n > regs[r].len) n = regs[r].len;
    memcpy(regs[r].base, pattern + regs[r].fileoff, n);
    if (madvise(regs[r].base, regs[r].len, MADV_DONTNEED) < 0) fail("madvise: %s", strerror(errno));
  }

  int uffd = syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
  if (uffd < 0) fail("userfaultfd: %s", strerror(errno));
  struct uffdio_api api = {.api = UFFD_API};
  if (events)
    api.features = UFFD_FEATURE_EVENT_FORK | UFFD_FEATURE_EVENT_REMAP | UFFD_FEATURE_EVENT_REMOVE |
                   UFFD_FEATURE_EVENT_UNMAP | UFFD_FEATURE_THREAD_ID;
  if (features >= 0) api.features = (unsigned long long)features;
  if (ioctl(uffd, UFFDIO_API, &api) < 0) fail("UFFDIO_API: %s", strerror(errno));
  for (int r = 0; r < nregs; r++) {
    struct uffdio_register reg = {.range = {(unsigned long)regs[r].base, regs[r].len}, .mode = UFFDIO_REGISTER_MODE_MISSING};
    if (ioctl(uffd, UFFDIO_REGISTER, &reg) < 0) fail("UFFDIO_REGISTER: %s", strerror(errno));
  }
  send_uffd(sockpath, uffd);
  close(uffd);  // like a restored process: only the handler's copy remains
  wait_byte();
  run(argv, argc, i);
  printf("done\n");
  fflush(stdout);
  return 0;
}
