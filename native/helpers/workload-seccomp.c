// Test workload: seccomp filters a restore must bring back (protocol:
// workload-common.h).
//   workload-seccomp CTRL_DIR [same]
// Sets no_new_privs and installs filter 1 (getppid -> EPERM), starts a
// thread, then installs filter 2 (uname -> ENOSYS) with
// SECCOMP_FILTER_FLAG_TSYNC, so both threads share filters 1 and 2. Unless
// "same" is given, the thread then installs filter 3 (getsid -> ESRCH) on
// itself alone. After the go signal each thread checks that its filters
// still apply (and that what they do not filter works): main thread
// getppid EPERM, uname ENOSYS, getsid ok; the thread the same plus getsid
// ESRCH unless "same"; /proc status shows Seccomp 2 and NoNewPrivs 1.
#include "workload-common.h"

#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <pthread.h>
#include <stddef.h>
#include <sys/prctl.h>
#include <sys/utsname.h>

static int same;
static int go_pipe[2];
static char thread_fail[256];
static pid_t thread_tid;

static int install(int nr, int err, unsigned flags) {
  struct sock_filter f[] = {
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 0, 3),
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (unsigned)nr, 0, 1),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (unsigned)err),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
  };
  struct sock_fprog prog = {.len = sizeof f / sizeof f[0], .filter = f};
  return (int)syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, flags, &prog);
}

// Each check: the call fails with the filter's errno (want != 0) or works.
static const char* check(long nr, int want) {
  static char buf[128];
  struct utsname u;
  long r;
  errno = 0;
  if (nr == SYS_uname) r = syscall(SYS_uname, &u);
  else if (nr == SYS_getsid) r = syscall(SYS_getsid, 0);
  else r = syscall(nr);
  if (want ? (r != -1 || errno != want) : r < 0) {
    snprintf(buf, sizeof buf, "syscall %ld returned %ld errno %d, want %s %d", nr, r, errno, want ? "errno" : "success", want);
    return buf;
  }
  return NULL;
}

// This thread's /proc status field (thread-self: right in a pid namespace too).
static int status_field(const char* key) {
  char line[256];
  FILE* f = fopen("/proc/thread-self/status", "r");
  if (!f) return -1;
  int v = -1;
  size_t kl = strlen(key);
  while (fgets(line, sizeof line, f))
    if (!strncmp(line, key, kl) && line[kl] == ':') v = atoi(line + kl + 1);
  fclose(f);
  return v;
}

static const char* check_thread(int own) {
  const char* e;
  if ((e = check(SYS_getppid, EPERM)) || (e = check(SYS_uname, ENOSYS)) || (e = check(SYS_getsid, own ? ESRCH : 0))) return e;
  if (status_field("Seccomp") != 2) return "Seccomp is not 2 in /proc status";
  if (status_field("NoNewPrivs") != 1) return "NoNewPrivs is not 1";
  int n = status_field("Seccomp_filters");
  if (n >= 0 && n != (own ? 3 : 2)) return own ? "Seccomp_filters is not 3" : "Seccomp_filters is not 2";
  return NULL;
}

static pthread_barrier_t started;

static void* thread_main(void* arg) {
  (void)arg;
  thread_tid = (pid_t)syscall(SYS_gettid);
  pthread_barrier_wait(&started);  // main installs filter 2 (TSYNC) meanwhile
  pthread_barrier_wait(&started);
  if (!same && install(SYS_getsid, ESRCH, 0) != 0) snprintf(thread_fail, sizeof thread_fail, "thread: filter 3: %s", strerror(errno));
  const char* e = thread_fail[0] ? NULL : check_thread(!same);
  if (e) snprintf(thread_fail, sizeof thread_fail, "thread before: %s", e);
  pthread_barrier_wait(&started);
  char c;
  if (read(go_pipe[0], &c, 1) != 1) snprintf(thread_fail, sizeof thread_fail, "thread: read go pipe: %s", strerror(errno));
  e = check_thread(!same);
  if (e && !thread_fail[0]) snprintf(thread_fail, sizeof thread_fail, "thread after restore: %s", e);
  return NULL;
}

int main(int argc, char** argv) {
  wl_init(argc, argv);
  same = argc > 2 && !strcmp(argv[2], "same");
  if (pipe(go_pipe) < 0) wl_die("pipe");
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0) wl_die("no_new_privs");
  if (install(SYS_getppid, EPERM, 0) != 0) wl_die("filter 1");
  pthread_barrier_init(&started, NULL, 2);
  pthread_t t;
  if (pthread_create(&t, NULL, thread_main, NULL)) wl_die("pthread_create");
  pthread_barrier_wait(&started);
  if (install(SYS_uname, ENOSYS, SECCOMP_FILTER_FLAG_TSYNC) != 0) wl_die("filter 2 (TSYNC)");
  pthread_barrier_wait(&started);
  pthread_barrier_wait(&started);
  const char* e = check_thread(0);
  if (e) wl_report("early_fail=main: %s", e);
  if (thread_fail[0]) wl_report("early_fail=%s", thread_fail);
  wl_report("tid_thread=%d", (int)thread_tid);
  wl_ready_and_wait();
  if ((e = check_thread(0))) wl_fail("main after restore: %s", e);
  if (write(go_pipe[1], "g", 1) != 1) wl_fail("write go pipe: %s", strerror(errno));
  pthread_join(t, NULL);
  if (thread_fail[0]) wl_fail("%s", thread_fail);
  return wl_finish();
}
