// Test workload: unix sockets a restore must bring back, checked from inside
// (protocol: workload-common.h).
//   workload-unix CTRL_DIR SOCK_DIR [EXT_NAME]
// A parent and a child share, before the dump:
//   - a socketpair of each type (stream, dgram, seqpacket), parent end
//     sp[i][0], child end sp[i][1], with messages queued both ways (the
//     parent's dgram end has SO_PASSCRED);
//   - in the parent alone, a stream socketpair with data queued and then
//     shut down for writing (the reader sees the data, then EOF);
//   - a listener on SOCK_DIR/listen.sock and one on the abstract name
//     "\0<SOCK_DIR>/abstract" (NUL-padded, as Node names it); the child connected to each and the parent
//     accepted (data queued both ways); a second connection of the child
//     to the path listener is left not accepted (in flight);
//   - a datagram socket bound to SOCK_DIR/dgram.sock (parent) with two
//     datagrams queued by the child's unconnected socket (sendto) and one
//     from its socket connected to that name;
//   - with EXT_NAME: the child's datagram socket connected to the abstract
//     name "\0EXT_NAME", held by the test (outside the tree).
// After "go" (the parent forwards it to the child) every queued byte and
// message must arrive once and in order, the shutdown and options must
// hold, the listeners accept the in-flight connection and two more from
// the test (which it connects before "go"; each gets "hello"), the child's
// connected datagram socket still reaches the parent's, and with EXT_NAME
// the child sends "after-ext" to the test's socket.
#include "workload-common.h"

#include <poll.h>
#include <stddef.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>

#define check(ok, ...) \
  do {                    \
    if (!(ok)) wl_fail(__VA_ARGS__); \
  } while (0)

static const int types[3] = {SOCK_STREAM, SOCK_DGRAM, SOCK_SEQPACKET};
static const char* tnames[3] = {"stream", "dgram", "seqpacket"};
#define NMSG 3
static const size_t sizes[NMSG] = {7, 3000, 40000};

// Message j of direction `dir` ("p2c"/"c2p") on socket type i: a header then a pattern.
static size_t make_msg(char* buf, const char* dir, int i, int j) {
  size_t n = sizes[j];
  if (types[i] != SOCK_STREAM && n > 3000) n = 3000 + (size_t)j;
  for (size_t k = 0; k < n; k++) buf[k] = (char)('a' + (k * 7 + (size_t)j + (size_t)i) % 26);
  int h = snprintf(buf, n, "%s-%s-%d", dir, tnames[i], j);
  (void)h;
  return n;
}

static socklen_t addr_of(struct sockaddr_un* a, const char* path, int abstract) {
  memset(a, 0, sizeof *a);
  a->sun_family = AF_UNIX;
  size_t l = strlen(path);
  if (abstract == 2) {  // padded with NULs to the whole sun_path, as libuv (Node) names them
    memcpy(a->sun_path + 1, path, l);
    return (socklen_t)sizeof *a;
  }
  if (abstract) {
    memcpy(a->sun_path + 1, path, l);
    return (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + l);
  }
  memcpy(a->sun_path, path, l + 1);
  return (socklen_t)(offsetof(struct sockaddr_un, sun_path) + l + 1);
}

static void timeout(int fd) {
  struct timeval tv = {10, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
}

static void send_all(int fd, const char* buf, size_t n) {
  while (n) {
    ssize_t w = send(fd, buf, n, MSG_NOSIGNAL);
    if (w <= 0) wl_die("send");
    buf += w;
    n -= (size_t)w;
  }
}

// Receives the NMSG messages of direction `dir` on a socket of type i, exactly once each.
static void expect_msgs(int fd, const char* dir, int i, const char* who) {
  static char want[40000], got[65536];
  timeout(fd);
  for (int j = 0; j < NMSG; j++) {
    size_t n = make_msg(want, dir, i, j);
    size_t have = 0;
    if (types[i] == SOCK_STREAM) {
      while (have < n) {
        ssize_t r = recv(fd, got + have, n - have, 0);
        if (r <= 0) break;
        have += (size_t)r;
      }
    } else {
      ssize_t r = recv(fd, got, sizeof got, 0);
      have = r > 0 ? (size_t)r : 0;
    }
    check(have == n && memcmp(got, want, n) == 0, "%s: %s message %d on %s: %zu bytes, expected %zu", who, dir, j, tnames[i], have, n);
  }
  ssize_t r = recv(fd, got, sizeof got, MSG_DONTWAIT);
  check(r < 0 && errno == EAGAIN, "%s: %s on %s: more data than was queued (%zd)", who, dir, tnames[i], r);
}

static void expect_text(int fd, const char* text, const char* what) {
  char got[256] = {0};
  timeout(fd);
  size_t n = strlen(text), have = 0;
  while (have < n) {
    ssize_t r = recv(fd, got + have, n - have, 0);
    if (r <= 0) break;
    have += (size_t)r;
  }
  check(have == n && memcmp(got, text, n) == 0, "%s: got \"%.*s\", expected \"%s\"", what, (int)have, got, text);
}

static int accept_one(int l, const char* what) {
  struct pollfd p = {.fd = l, .events = POLLIN};
  if (poll(&p, 1, 10000) != 1) {
    wl_fail("%s: no connection to accept", what);
    return -1;
  }
  int c = accept4(l, NULL, NULL, SOCK_CLOEXEC);
  if (c < 0) wl_fail("%s: accept: %s", what, strerror(errno));
  return c;
}

int main(int argc, char** argv) {
  wl_init(argc, argv);
  if (argc < 3) {
    fprintf(stderr, "usage: %s CTRL_DIR SOCK_DIR [EXT_NAME]\n", argv[0]);
    return 2;
  }
  const char* dir = argv[2];
  const char* ext = argc > 3 ? argv[3] : NULL;
  char path_l[200], path_a[200], path_d[200];
  snprintf(path_l, sizeof path_l, "%s/listen.sock", dir);
  snprintf(path_a, sizeof path_a, "%s/abstract", dir);
  snprintf(path_d, sizeof path_d, "%s/dgram.sock", dir);
  struct sockaddr_un a;
  socklen_t al;

  int sp[3][2];
  for (int i = 0; i < 3; i++)
    if (socketpair(AF_UNIX, types[i] | SOCK_CLOEXEC, 0, sp[i]) < 0) wl_die("socketpair");
  int one = 1;
  if (setsockopt(sp[1][0], SOL_SOCKET, SO_PASSCRED, &one, sizeof one) < 0) wl_die("SO_PASSCRED");
  int sh[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sh) < 0) wl_die("socketpair shut");

  int lp = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int la = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int ds = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (lp < 0 || la < 0 || ds < 0) wl_die("socket");
  unlink(path_l);
  unlink(path_d);
  al = addr_of(&a, path_l, 0);
  if (bind(lp, (struct sockaddr*)&a, al) < 0 || listen(lp, 8) < 0) wl_die("bind/listen path");
  al = addr_of(&a, path_a, 2);
  if (bind(la, (struct sockaddr*)&a, al) < 0 || listen(la, 8) < 0) wl_die("bind/listen abstract");
  al = addr_of(&a, path_d, 0);
  if (bind(ds, (struct sockaddr*)&a, al) < 0) wl_die("bind dgram");

  int c2p[2], p2c[2];
  if (pipe2(c2p, O_CLOEXEC) < 0 || pipe2(p2c, O_CLOEXEC) < 0) wl_die("pipe");
  char c;
  pid_t child = fork();
  if (child < 0) wl_die("fork");
  if (child == 0) {
    // --- child -------------------------------------------------------------
    close(c2p[0]);
    close(p2c[1]);
    for (int i = 0; i < 3; i++) close(sp[i][0]);
    close(sh[0]);
    close(sh[1]);
    close(lp);
    close(la);
    close(ds);
    char buf[40000];
    for (int i = 0; i < 3; i++)
      for (int j = 0; j < NMSG; j++) {
        size_t n = make_msg(buf, "c2p", i, j);
        send_all(sp[i][1], buf, n);
      }
    int cp = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int ca = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int ci = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int du = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    int dc = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (cp < 0 || ca < 0 || ci < 0 || du < 0 || dc < 0) wl_die("socket");
    al = addr_of(&a, path_l, 0);
    if (connect(cp, (struct sockaddr*)&a, al) < 0) wl_die("connect path");
    send_all(cp, "c-path", 6);
    al = addr_of(&a, path_a, 2);
    if (connect(ca, (struct sockaddr*)&a, al) < 0) wl_die("connect abstract");
    send_all(ca, "c-abstract", 10);
    if (write(c2p[1], "1", 1) != 1) wl_die("sync 1");
    if (read(p2c[0], &c, 1) != 1) wl_die("sync 2");  // the parent accepted cp and ca
    al = addr_of(&a, path_l, 0);
    if (connect(ci, (struct sockaddr*)&a, al) < 0) wl_die("connect in-flight");
    al = addr_of(&a, path_d, 0);
    if (sendto(du, "dgram-1", 7, 0, (struct sockaddr*)&a, al) != 7) wl_die("sendto 1");
    if (sendto(du, "dgram-22", 8, 0, (struct sockaddr*)&a, al) != 8) wl_die("sendto 2");
    if (connect(dc, (struct sockaddr*)&a, al) < 0) wl_die("connect dgram");
    if (send(dc, "dgram-333", 9, 0) != 9) wl_die("send dgram");
    close(du);
    int de = -1;
    if (ext) {
      de = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
      al = addr_of(&a, ext, 1);
      if (de < 0 || connect(de, (struct sockaddr*)&a, al) < 0) wl_die("connect ext");
    }
    if (write(c2p[1], "3", 1) != 1) wl_die("sync 3");
    close(c2p[1]);
    close(p2c[0]);
    wl_wait_go();
    // After go.
    for (int i = 0; i < 3; i++) expect_msgs(sp[i][1], "p2c", i, "child");
    expect_text(cp, "p-path", "child: path connection");
    expect_text(ca, "p-abstract", "child: abstract connection");
    expect_text(ci, "hello", "child: in-flight connection");
    if (send(dc, "dgram-after", 11, 0) != 11) wl_fail("child: send on the connected dgram socket: %s", strerror(errno));
    if (ext && send(de, "after-ext", 9, 0) != 9) wl_fail("child: send to the external socket: %s", strerror(errno));
    char out[1100];
    int n = wl_fail_buf[0] ? snprintf(out, sizeof out, "fail %s\n", wl_fail_buf) : snprintf(out, sizeof out, "ok\n");
    wl_write_file("child-result", out, (size_t)n);
    _exit(wl_fail_buf[0] ? 1 : 0);
  }
  // --- parent --------------------------------------------------------------
  close(c2p[1]);
  close(p2c[0]);
  for (int i = 0; i < 3; i++) close(sp[i][1]);
  if (read(c2p[0], &c, 1) != 1) wl_die("sync 1");
  int acp = accept4(lp, NULL, NULL, SOCK_CLOEXEC);
  int aca = accept4(la, NULL, NULL, SOCK_CLOEXEC);
  if (acp < 0 || aca < 0) wl_die("accept");
  send_all(acp, "p-path", 6);
  send_all(aca, "p-abstract", 10);
  if (write(p2c[1], "2", 1) != 1) wl_die("sync 2");
  if (read(c2p[0], &c, 1) != 1) wl_die("sync 3");
  close(c2p[0]);
  close(p2c[1]);
  char buf[40000];
  for (int i = 0; i < 3; i++)
    for (int j = 0; j < NMSG; j++) {
      size_t n = make_msg(buf, "p2c", i, j);
      send_all(sp[i][0], buf, n);
    }
  send_all(sh[0], "tail", 4);
  if (shutdown(sh[0], SHUT_WR) < 0) wl_die("shutdown");
  wl_report("child=%d", (int)child);
  wl_ready_and_wait();

  // After go.
  kill(child, SIGUSR1);
  for (int i = 0; i < 3; i++) expect_msgs(sp[i][0], "c2p", i, "parent");
  int v = 0;
  socklen_t vl = sizeof v;
  check(getsockopt(sp[1][0], SOL_SOCKET, SO_PASSCRED, &v, &vl) == 0 && v == 1, "SO_PASSCRED lost");
  v = 1;
  vl = sizeof v;
  check(getsockopt(sp[0][0], SOL_SOCKET, SO_PASSCRED, &v, &vl) == 0 && v == 0, "SO_PASSCRED set where it was not");
  expect_text(sh[1], "tail", "shut pair data");
  char x;
  check(recv(sh[1], &x, 1, 0) == 0, "shut pair: no EOF after the data");
  check(send(sh[0], "x", 1, MSG_NOSIGNAL) < 0 && errno == EPIPE, "shut pair: write after SHUT_WR did not fail with EPIPE");
  expect_text(acp, "c-path", "parent: accepted path connection");
  expect_text(aca, "c-abstract", "parent: accepted abstract connection");
  // Datagrams: two by sendto, one connected, each once and whole.
  const char* dg[3] = {"dgram-1", "dgram-22", "dgram-333"};
  timeout(ds);
  for (int j = 0; j < 3; j++) {
    char got[64] = {0};
    ssize_t r = recv(ds, got, sizeof got, 0);
    check(r == (ssize_t)strlen(dg[j]) && memcmp(got, dg[j], (size_t)r) == 0, "dgram %d: got %zd \"%.*s\"", j, r, r > 0 ? (int)r : 0, got);
  }
  // The in-flight connection, then the test's two connections (one per listener).
  int in = accept_one(lp, "in-flight connection");
  if (in >= 0) send_all(in, "hello", 5);
  int tp = accept_one(lp, "test's path connection");
  if (tp >= 0) send_all(tp, "hello", 5);
  int ta = accept_one(la, "test's abstract connection");
  if (ta >= 0) send_all(ta, "hello", 5);
  {
    char got[64] = {0};
    ssize_t r = recv(ds, got, sizeof got, 0);
    check(r == 11 && memcmp(got, "dgram-after", 11) == 0, "dgram after the restore: got %zd", r);
  }
  int st = 0;
  if (waitpid(child, &st, 0) != child) wl_fail("waitpid child: %s", strerror(errno));
  else if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
    char p[4096], res[1100] = {0};
    snprintf(p, sizeof p, "%s/child-result", wl_ctrl_dir);
    int f = open(p, O_RDONLY | O_CLOEXEC);
    if (f >= 0) {
      ssize_t r = read(f, res, sizeof res - 1);
      (void)r;
      close(f);
    }
    wl_fail("child: status %x: %s", st, res);
  }
  return wl_finish();
}
