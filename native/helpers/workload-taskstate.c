// Test workload: children in states other than running (protocol:
// workload-common.h).
//   workload-taskstate CTRL_DIR zombie
//     Five children end before the ready report and stay unreaped zombies:
//     exit 0, exit 3, exit 200 (all 8 bits), killed by SIGKILL, killed by
//     SIGSEGV; the exit-3 one leads its own process group. Reported as
//     z0..z4=PID. A sixth (z5, exit 5) is in a process group whose leader
//     is gone (zdtm zombie01): a child makes its own group (lead5=PID),
//     clones z5 with CLONE_PARENT and exits; the root reaps it. On go the
//     root checks that no SIGCHLD arrived since the report (a restore must
//     not add one), reaps the process group ones with waitpid(-pgid) and the
//     others by pid, each with its status.
//   workload-taskstate CTRL_DIR stopped
//     Two children with patterned memory sleep until SIGCONT; the root stops
//     one with SIGSTOP and one with SIGTSTP and waits (WNOWAIT) until both
//     are stopped. Reported as stop=PID, tstp=PID. On go the root expects
//     waitpid(WUNTRACED) to report each stopped by its signal, sends SIGCONT,
//     and each child verifies its memory, that its SIGCONT handler ran once,
//     and exits 0.
//   workload-taskstate CTRL_DIR leader-exit
//     The main thread starts a thread that sleeps in pause(), writes the
//     ready report and calls pthread_exit: a zombie thread-group leader with
//     a live thread (zdtm pthread02), which a dump refuses. Killed by the test.
#include "workload-common.h"

#include <pthread.h>

#include <sched.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#define LEN (256UL << 10)

static volatile sig_atomic_t sigchld_count, sigcont_count;

static void on_chld(int sig) {
  (void)sig;
  sigchld_count++;
}

static void on_cont(int sig) {
  (void)sig;
  sigcont_count++;
}

static int zombies(void) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_chld;
  sa.sa_flags = SA_RESTART;
  if (sigaction(SIGCHLD, &sa, NULL) < 0) wl_die("sigaction");
  pid_t z[5];
  for (int i = 0; i < 5; i++) {
    z[i] = fork();
    if (z[i] < 0) wl_die("fork");
    if (z[i] == 0) {
      switch (i) {
        case 0: _exit(0);
        case 1: setpgid(0, 0); _exit(3);
        case 2: _exit(200);
        case 3: kill(getpid(), SIGKILL); break;
        case 4: signal(SIGSEGV, SIG_DFL); *(volatile int*)0 = 1; break;
      }
      _exit(13);
    }
  }
  for (int i = 0; i < 5; i++) {
    siginfo_t si;
    if (waitid(P_PID, (id_t)z[i], &si, WEXITED | WNOWAIT) < 0) wl_die("waitid");
    wl_report("z%d=%d", i, (int)z[i]);
  }
  // z5: a zombie in the group of a leader that is gone.
  int zp[2];
  if (pipe(zp) < 0) wl_die("pipe");
  pid_t lead = fork();
  if (lead < 0) wl_die("fork");
  if (lead == 0) {
    close(zp[0]);
    if (setpgid(0, 0) < 0) _exit(1);
    long c = syscall(SYS_clone, CLONE_PARENT | SIGCHLD, 0, 0, 0, 0);
    if (c == 0) _exit(5);
    if (c < 0 || write(zp[1], &c, sizeof c) != (ssize_t)sizeof c) _exit(1);
    _exit(0);
  }
  close(zp[1]);
  long z5 = 0;
  if (read(zp[0], &z5, sizeof z5) != (ssize_t)sizeof z5) wl_die("read z5");
  close(zp[0]);
  int lst;
  if (waitpid(lead, &lst, 0) != lead || !WIFEXITED(lst) || WEXITSTATUS(lst) != 0) wl_die("group leader");
  siginfo_t si5;
  if (waitid(P_PID, (id_t)z5, &si5, WEXITED | WNOWAIT) < 0) wl_die("waitid z5");
  wl_report("z5=%ld", z5);
  wl_report("lead5=%d", (int)lead);
  // Every SIGCHLD was delivered on the way back from waitid.
  int before = sigchld_count;
  wl_ready_and_wait();
  if (sigchld_count != before) wl_fail("%d SIGCHLD arrived after the checkpoint", (int)(sigchld_count - before));
  int st;
  pid_t r = waitpid(-z[1], &st, WNOHANG);
  if (r != z[1]) wl_fail("waitpid(-%d) returned %d (%s): the zombie lost its process group", (int)z[1], (int)r, strerror(errno));
  else if (!WIFEXITED(st) || WEXITSTATUS(st) != 3) wl_fail("z1 status 0x%x", st);
  for (int i = 0; i < 5; i++) {
    if (i == 1) continue;
    r = waitpid(z[i], &st, WNOHANG);
    if (r != z[i]) {
      wl_fail("waitpid(z%d=%d) returned %d (%s)", i, (int)z[i], (int)r, strerror(errno));
      continue;
    }
    int ok = i == 0 ? WIFEXITED(st) && WEXITSTATUS(st) == 0
           : i == 2 ? WIFEXITED(st) && WEXITSTATUS(st) == 200
           : i == 3 ? WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL
                    : WIFSIGNALED(st) && WTERMSIG(st) == SIGSEGV;
    if (!ok) wl_fail("z%d status 0x%x", i, st);
  }
  if (getpgid((pid_t)z5) != lead) wl_fail("z5 is in group %d, not %d", (int)getpgid((pid_t)z5), (int)lead);
  r = waitpid(-lead, &st, WNOHANG);
  if (r != (pid_t)z5) wl_fail("waitpid(-%d) returned %d (%s): z5 lost its process group", (int)lead, (int)r, strerror(errno));
  else if (!WIFEXITED(st) || WEXITSTATUS(st) != 5) wl_fail("z5 status 0x%x", st);
  if (waitpid(-1, &st, WNOHANG) != -1 || errno != ECHILD) wl_fail("children left after reaping the zombies");
  return wl_finish();
}

static void fill(uint64_t* w, uint64_t seed) {
  for (size_t i = 0; i < LEN / 8; i++) w[i] = seed * 0x9E3779B97F4A7C15ULL + i;
}

static int check(const uint64_t* w, uint64_t seed) {
  for (size_t i = 0; i < LEN / 8; i++)
    if (w[i] != seed * 0x9E3779B97F4A7C15ULL + i) return 0;
  return 1;
}

// The child reports on `ready` once it is set up, with SIGCONT blocked until
// its sigsuspend, so a stop and continue can never miss its handler.
static pid_t stoppable(uint64_t seed, const int pipefd[2]) {
  int ready = pipefd[1];
  pid_t c = fork();
  if (c < 0) wl_die("fork");
  // Its own process group, led from both sides before any signal: the
  // root's group is orphaned (its parent is in another session), and the
  // kernel drops SIGTSTP for orphaned groups.
  if (c) {
    setpgid(c, c);
    return c;
  }
  setpgid(0, 0);
  close(pipefd[0]);
  uint64_t* w = mmap(NULL, LEN, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (w == MAP_FAILED) _exit(2);
  fill(w, seed);
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_cont;
  if (sigaction(SIGCONT, &sa, NULL) < 0) _exit(2);
  sigset_t none, cont;
  sigemptyset(&none);
  sigemptyset(&cont);
  sigaddset(&cont, SIGCONT);
  sigprocmask(SIG_BLOCK, &cont, NULL);
  char b = 1;
  if (write(ready, &b, 1) != 1) _exit(2);
  close(ready);
  while (!sigcont_count) sigsuspend(&none);
  _exit(check(w, seed) && sigcont_count == 1 ? 0 : 1);
}

static int stopped(void) {
  int ready[2];
  if (pipe2(ready, O_CLOEXEC) < 0) wl_die("pipe");
  pid_t s = stoppable(7, ready), t = stoppable(8, ready);
  close(ready[1]);
  // Two bytes, then EOF once both children closed their ends: no pipe is
  // left open anywhere at dump time.
  char b[4];
  ssize_t n, got = 0;
  while ((n = read(ready[0], b + got, sizeof b - (size_t)got)) > 0) got += n;
  if (n < 0 || got != 2) wl_die("read ready");
  close(ready[0]);
  kill(s, SIGSTOP);
  kill(t, SIGTSTP);
  siginfo_t si;
  if (waitid(P_PID, (id_t)s, &si, WSTOPPED | WNOWAIT) < 0) wl_die("waitid stop");
  if (waitid(P_PID, (id_t)t, &si, WSTOPPED | WNOWAIT) < 0) wl_die("waitid tstp");
  wl_report("stop=%d", (int)s);
  wl_report("tstp=%d", (int)t);
  wl_ready_and_wait();
  pid_t kids[2] = {s, t};
  int sigs[2] = {SIGSTOP, SIGTSTP};
  for (int i = 0; i < 2; i++) {
    int st;
    if (waitpid(kids[i], &st, WUNTRACED | WNOHANG) != kids[i]) wl_fail("child %d is not reported stopped", (int)kids[i]);
    else if (!WIFSTOPPED(st) || WSTOPSIG(st) != sigs[i]) wl_fail("child %d status 0x%x, not stopped by %d", (int)kids[i], st, sigs[i]);
    kill(kids[i], SIGCONT);
    if (waitpid(kids[i], &st, 0) != kids[i]) wl_fail("waitpid %d: %s", (int)kids[i], strerror(errno));
    else if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) wl_fail("child %d ended with 0x%x after SIGCONT", (int)kids[i], st);
  }
  return wl_finish();
}

static void* idle_thread(void* arg) {
  (void)arg;
  for (;;) pause();
  return NULL;
}

static int leader_exit(void) {
  pthread_t t;
  if (pthread_create(&t, NULL, idle_thread, NULL) != 0) wl_die("pthread_create");
  wl_report("pid=%d", (int)getpid());
  wl_write_file("ready", wl_ready_buf, wl_ready_len);
  pthread_exit(NULL);
}

int main(int argc, char** argv) {
  wl_init(argc, argv);
  if (argc > 2 && strcmp(argv[2], "leader-exit") == 0) return leader_exit();
  if (argc > 2 && strcmp(argv[2], "zombie") == 0) return zombies();
  if (argc > 2 && strcmp(argv[2], "stopped") == 0) return stopped();
  fprintf(stderr, "usage: %s CTRL_DIR zombie|stopped|leader-exit\n", argv[0]);
  return 2;
}
