// spool-server: a multi-process server that forks a worker per request.
// Requests are files dropped into <ctl>/in/ (content: a region number);
// a worker child computes a checksum of that region of the server's data set
// (inherited memory: after a lazy restore the child's pages are served through
// its own userfaultfd) and writes <ctl>/out/<name> ("<region> <checksum>").
// The server stops when <ctl>/stop appears, after reaping every worker.
//
// Usage: spool-server CTLDIR [MIB]   (default 32 MiB, 64 regions)
#include <dirent.h>
#include <sys/mman.h>
#include <sys/wait.h>

#include "common.h"

#define REGIONS 64

static uint64_t checksum(const uint64_t* p, size_t words) {
  uint64_t h = 1469598103934665603ULL;
  for (size_t i = 0; i < words; i++) h = (h ^ p[i]) * 1099511628211ULL;
  return h;
}

int main(int argc, char** argv) {
  if (argc < 2) { fprintf(stderr, "usage: spool-server CTLDIR [MIB]\n"); return 2; }
  const char* ctl = argv[1];
  close_inherited_fds();
  size_t mib = argc > 2 ? strtoul(argv[2], NULL, 10) : 32;
  size_t words = mib * (1 << 20) / 8, per = words / REGIONS;
  uint64_t* data = mmap(NULL, words * 8, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (data == MAP_FAILED) { perror("mmap"); return 2; }
  for (size_t i = 0; i < words; i++) data[i] = pattern(3, i);
  char in[4096], out[4096];
  snprintf(in, sizeof in, "%s/in", ctl);
  snprintf(out, sizeof out, "%s/out", ctl);
  mkdir(in, 0755);
  mkdir(out, 0755);
  ctl_write(ctl, "ready", "%d\n", getpid());
  struct timespec ms = {0, 1000000};
  unsigned served = 0;
  while (!ctl_exists(ctl, "stop")) {
    DIR* d = opendir(in);
    struct dirent* e;
    int any = 0;
    while (d && (e = readdir(d)) != NULL) {
      if (e->d_name[0] == '.') continue;
      char req[8192], busy[8192];
      snprintf(req, sizeof req, "%s/%s", in, e->d_name);
      snprintf(busy, sizeof busy, "%s/.%s", in, e->d_name);
      if (rename(req, busy) != 0) continue;  // claim it
      any = 1;
      pid_t w = fork();
      if (w == 0) {
        FILE* f = fopen(busy, "r");
        unsigned r = 0;
        if (!f || fscanf(f, "%u", &r) != 1 || r >= REGIONS) _exit(3);
        fclose(f);
        unlink(busy);
        uint64_t sum = checksum(data + r * per, per);
        // The worker also writes to its own copy: that must stay private.
        data[r * per] ^= 1;
        char name[512];
        snprintf(name, sizeof name, "out/%s", e->d_name);
        ctl_write(ctl, name, "%u %016llx\n", r, (unsigned long long)sum);
        _exit(0);
      }
      if (w > 0) served++;
    }
    if (d) closedir(d);
    // Reap finished workers without blocking.
    while (waitpid(-1, NULL, WNOHANG) > 0) {}
    if (!any) nanosleep(&ms, NULL);
  }
  while (wait(NULL) > 0) {}
  // The parent's data must be untouched by the workers' writes.
  size_t bad = 0;
  for (size_t i = 0; i < words; i++)
    if (data[i] != pattern(3, i)) bad++;
  ctl_write(ctl, "result", bad ? "fail %zu words changed\n" : "ok served %u requests\n", bad ? bad : (size_t)served);
  return bad ? 1 : 0;
}
