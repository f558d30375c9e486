// Shared protocol of the test workloads (workload-*.c), used by dump and
// restore tests to drive a program and let it verify itself:
//   workload-X CTRL_DIR [args]
//   1. sets up its state, then writes CTRL_DIR/ready ("key=value" lines,
//      written to ready.tmp and renamed, so a reader never sees half a file);
//   2. waits for the "go" signal: SIGUSR1 (its handler only sets a flag; the
//      main thread sleeps in sigsuspend);
//   3. verifies everything it set up, writes CTRL_DIR/result ("ok" or
//      "fail <what>") and exits 0 (ok) or 1 (fail).
#pragma once

#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

static const char* wl_ctrl_dir;
static volatile sig_atomic_t wl_go;
static char wl_ready_buf[16384];
static size_t wl_ready_len;

static void wl_on_usr1(int sig, siginfo_t* si, void* uc) {
  (void)sig;
  (void)si;
  (void)uc;
  wl_go = 1;
}

static void wl_die(const char* what) {
  fprintf(stderr, "workload: %s: %s\n", what, strerror(errno));
  exit(2);
}

// Installs the go handler (SA_SIGINFO | SA_RESTART) and blocks SIGUSR1 so it
// is only taken inside sigsuspend.
static void wl_init(int argc, char** argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: %s CTRL_DIR [args]\n", argv[0]);
    exit(2);
  }
  wl_ctrl_dir = argv[1];
  // Descriptors leaked in from whoever started us (a shell's pipes...) are
  // not part of the workload; a dump would rightly refuse them.
  syscall(SYS_close_range, 3, ~0U, 0);
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_sigaction = wl_on_usr1;
  sa.sa_flags = SA_SIGINFO | SA_RESTART;
  sigaddset(&sa.sa_mask, SIGUSR2);
  if (sigaction(SIGUSR1, &sa, NULL) < 0) wl_die("sigaction");
  sigset_t s;
  sigemptyset(&s);
  sigaddset(&s, SIGUSR1);
  if (sigprocmask(SIG_BLOCK, &s, NULL) < 0) wl_die("sigprocmask");
}

// Adds one "key=value" line to the ready report.
static void wl_report(const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(wl_ready_buf + wl_ready_len, sizeof wl_ready_buf - wl_ready_len, fmt, ap);
  va_end(ap);
  if (n > 0) wl_ready_len += (size_t)n;
  if (wl_ready_len < sizeof wl_ready_buf - 1) wl_ready_buf[wl_ready_len++] = '\n';
}

static void wl_write_file(const char* name, const char* data, size_t len) {
  char tmp[4096], path[4096];
  snprintf(tmp, sizeof tmp, "%s/%s.tmp", wl_ctrl_dir, name);
  snprintf(path, sizeof path, "%s/%s", wl_ctrl_dir, name);
  int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) wl_die("open ctrl file");
  if (write(fd, data, len) != (ssize_t)len) wl_die("write ctrl file");
  close(fd);
  if (rename(tmp, path) < 0) wl_die("rename ctrl file");
}

// Sleeps until SIGUSR1 ("go") has arrived.
static void wl_wait_go(void) {
  sigset_t old;
  sigprocmask(SIG_BLOCK, NULL, &old);
  sigdelset(&old, SIGUSR1);
  while (!wl_go) sigsuspend(&old);
}

// Publishes the report and sleeps until SIGUSR1 arrives.
static void wl_ready_and_wait(void) {
  wl_report("pid=%d", (int)getpid());
  wl_write_file("ready", wl_ready_buf, wl_ready_len);
  wl_wait_go();
}

// Forks a child that runs setup(arg) (its own writes before the dump), tells
// the parent over a pipe and sleeps until its own SIGUSR1. Returns the
// child's pid in the parent once the child is set up, and 0 in the child
// once its SIGUSR1 has arrived.
static inline pid_t wl_fork_ready(void (*setup)(void* arg), void* arg) {
  int ready[2];
  if (pipe2(ready, O_CLOEXEC) < 0) wl_die("pipe");
  pid_t child = fork();
  if (child < 0) wl_die("fork");
  if (child == 0) {
    close(ready[0]);
    if (setup) setup(arg);
    if (write(ready[1], "x", 1) != 1) wl_die("write ready pipe");
    close(ready[1]);
    wl_wait_go();
    return 0;
  }
  close(ready[1]);
  char b;
  if (read(ready[0], &b, 1) != 1) wl_die("read ready pipe");
  close(ready[0]);
  return child;
}

static char wl_fail_buf[1024];

// Records the first failure (later ones are dropped).
static void wl_fail(const char* fmt, ...) {
  if (wl_fail_buf[0]) return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(wl_fail_buf, sizeof wl_fail_buf, fmt, ap);
  va_end(ap);
}

static int wl_finish(void) {
  char out[1100];
  int n = wl_fail_buf[0] ? snprintf(out, sizeof out, "fail %s\n", wl_fail_buf) : snprintf(out, sizeof out, "ok\n");
  wl_write_file("result", out, (size_t)n);
  return wl_fail_buf[0] ? 1 : 0;
}
