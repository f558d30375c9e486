// lr-criu: the `criu` to give runc, crun or podman (runc --criu PATH).
// Container runtimes start `criu swrk FD` twice per command: once only to
// ask VERSION, once for the request itself. Starting node for the VERSION
// question alone costs more than CRIU's whole checkpoint, so this small
// program answers VERSION requests itself (the same criu_resp the CLI's
// plugin/rpc/service.ts sends: CRIU 4.2, gitid lazy-restore-<version>,
// name lazy-restore) and hands everything else to the CLI: it peeks at the
// next request (MSG_PEEK, the request stays queued) and, when it is not
// VERSION, execs bin/lazy-restore.js with its own arguments, which reads
// that request as usual. Any other command line is the CLI's at once.
// The CLI is found from this program's own path (build/bin/lr-criu ->
// ../../bin/lazy-restore.js), so a symlink to it anywhere works.
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

enum { REQ_VERSION = 10 };

static char cli_path[PATH_MAX];
static char pkg_path[PATH_MAX];

// Paths of the CLI and package.json from /proc/self/exe (build/bin/lr-criu).
static int find_paths(void) {
  char self[PATH_MAX];
  ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
  if (n <= 0) return -1;
  self[n] = '\0';
  for (int up = 0; up < 3; up++) {  // strip lr-criu, bin, build
    char *slash = strrchr(self, '/');
    if (!slash) return -1;
    *slash = '\0';
  }
  if (snprintf(cli_path, sizeof(cli_path), "%s/bin/lazy-restore.js", self) >= (int)sizeof(cli_path)) return -1;
  if (snprintf(pkg_path, sizeof(pkg_path), "%s/package.json", self) >= (int)sizeof(pkg_path)) return -1;
  return 0;
}

// node from PATH, as the CLI's "#!/usr/bin/env node" line would find it.
static int find_node(char *out, size_t size) {
  const char *path = getenv("PATH");
  if (!path || !*path) path = "/usr/local/bin:/usr/bin:/bin";
  for (const char *p = path; *p;) {
    const char *colon = strchr(p, ':');
    size_t len = colon ? (size_t)(colon - p) : strlen(p);
    if (len > 0 && (size_t)snprintf(out, size, "%.*s/node", (int)len, p) < size && access(out, X_OK) == 0) return 0;
    if (!colon) break;
    p = colon + 1;
  }
  return -1;
}

// Runs the CLI with our arguments. node is started directly (not through
// the script's env line: one exec less), without NODE_EXTRA_CA_CERTS: node
// parses that bundle of certificates at start-up (~40 ms of CPU here) and
// the CLI never uses the default CA store (its TLS takes explicit --tls-*
// files; RPC page servers are plain TCP). V8 gets a larger interrupt
// budget (15x its default): a swrk request is a short process that runs
// the image decoder hot enough for V8 to optimise it on a background
// thread (~20 ms of CPU per runc restore, measured with --trace-opt), work
// that only pays off in long commands; with this budget a long loop (a big
// container's images) is still optimised, after a little longer. V8 keys
// its code cache by such flags, so only swrk gets it: the swrk command's
// cache (dist/plugin/bundle/cache/swrk.v8) is made and used with it, other
// commands keep the caches the CLI makes without it.
#define LR_CRIU_V8_FLAGS "--interrupt-budget=1000000"
static void exec_cli(char **argv) {
  int swrk = argv[1] && strcmp(argv[1], "swrk") == 0;
  if (cli_path[0] == '\0') {
    fprintf(stderr, "lr-criu: cannot find bin/lazy-restore.js from /proc/self/exe\n");
    exit(1);
  }
  unsetenv("NODE_EXTRA_CA_CERTS");
  char node[PATH_MAX];
  if (find_node(node, sizeof(node)) == 0) {
    int argc = 0;
    while (argv[argc]) argc++;
    char **args = calloc((size_t)argc + 3, sizeof(char *));
    if (args) {
      args[0] = node;
      int n = 1;
      if (swrk) args[n++] = LR_CRIU_V8_FLAGS;
      args[n++] = cli_path;
      for (int i = 1; i < argc; i++) args[n++] = argv[i];
      execv(node, args);
      free(args);
    }
  }
  argv[0] = cli_path;
  execv(cli_path, argv);
  fprintf(stderr, "lr-criu: exec %s: %s\n", cli_path, strerror(errno));
  exit(1);
}

// Reads one varint at *p (bounded by end); -1 when malformed.
static int read_varint(const uint8_t **p, const uint8_t *end, uint64_t *out) {
  uint64_t v = 0;
  for (int shift = 0; shift < 64 && *p < end; shift += 7) {
    uint8_t b = *(*p)++;
    v |= (uint64_t)(b & 0x7f) << shift;
    if (!(b & 0x80)) {
      *out = v;
      return 0;
    }
  }
  return -1;
}

// A criu_req that is exactly a VERSION request (type, and keep_open at
// most); anything else, even a malformed one, is left to the CLI.
static int is_version_req(const uint8_t *buf, size_t len, int *keep_open) {
  const uint8_t *p = buf, *end = buf + len;
  int type = -1;
  *keep_open = 0;
  while (p < end) {
    uint64_t key, v;
    if (read_varint(&p, end, &key) < 0) return 0;
    if ((key & 7) != 0) return 0;  // only varint fields are ours
    if (read_varint(&p, end, &v) < 0) return 0;
    if ((key >> 3) == 1) type = (int)v;
    else if ((key >> 3) == 4) *keep_open = v != 0;
    else return 0;
  }
  return type == REQ_VERSION;
}

// The package's version from package.json ("0" if it cannot be read).
static void package_version(char *out, size_t size) {
  snprintf(out, size, "0");
  int fd = open(pkg_path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return;
  char text[8192];
  ssize_t n = read(fd, text, sizeof(text) - 1);
  close(fd);
  if (n <= 0) return;
  text[n] = '\0';
  char *k = strstr(text, "\"version\"");
  if (!k) return;
  char *q = strchr(k + 9, '"');
  if (!q) return;
  char *e = strchr(q + 1, '"');
  if (!e || (size_t)(e - q - 1) >= size) return;
  memcpy(out, q + 1, (size_t)(e - q - 1));
  out[e - q - 1] = '\0';
}

static size_t put_string(uint8_t *p, int field, const char *s) {
  size_t n = strlen(s);
  p[0] = (uint8_t)(field << 3 | 2);
  p[1] = (uint8_t)n;  // < 128: short strings only
  memcpy(p + 2, s, n);
  return n + 2;
}

// criu_resp { type: VERSION, success: true, version: { 4, 2, gitid, name } }
static size_t version_resp(uint8_t *out) {
  char ver[64], gitid[96];
  package_version(ver, sizeof(ver));
  snprintf(gitid, sizeof(gitid), "lazy-restore-%s", ver);
  uint8_t v[256];
  size_t vn = 0;
  v[vn++] = 1 << 3; v[vn++] = 4;   // major_number
  v[vn++] = 2 << 3; v[vn++] = 2;   // minor_number
  vn += put_string(v + vn, 3, gitid);
  vn += put_string(v + vn, 6, "lazy-restore");
  size_t n = 0;
  out[n++] = 1 << 3; out[n++] = REQ_VERSION;  // type
  out[n++] = 2 << 3; out[n++] = 1;            // success
  out[n++] = 10 << 3 | 2; out[n++] = (uint8_t)vn;  // version
  memcpy(out + n, v, vn);
  return n + vn;
}

int main(int argc, char **argv) {
  if (find_paths() < 0) cli_path[0] = '\0';
  char *end = NULL;
  long fd = argc == 3 && strcmp(argv[1], "swrk") == 0 ? strtol(argv[2], &end, 10) : -1;
  if (fd < 0 || !end || *end != '\0' || argv[2][0] == '\0' || getenv("LR_CRIU_NO_FAST")) exec_cli(argv);
  for (int served = 0;; served++) {
    uint8_t req[64];
    ssize_t n = recv((int)fd, req, sizeof(req), MSG_PEEK | MSG_TRUNC);
    if (n == 0 && served) return 0;  // the client closed its end after a VERSION
    int keep_open;
    if (n < 0 || (size_t)n > sizeof(req) || !is_version_req(req, (size_t)n, &keep_open)) exec_cli(argv);
    if (recv((int)fd, req, sizeof(req), 0) != n) exec_cli(argv);
    uint8_t resp[320];
    size_t len = version_resp(resp);
    if (send((int)fd, resp, len, MSG_NOSIGNAL) != (ssize_t)len) return 1;
    if (!keep_open) return 0;
  }
}
