// Test workload: SysV IPC objects in an IPC namespace of its own (protocol:
// workload-common.h).
//   workload-sysvipc CTRL_DIR
// Unshares its IPC namespace, sets its msgmnb sysctl to 32768, then makes:
//   shm A  key 0x5a1 mode 0640, 3 pages + 100 bytes, attached read-write,
//          its first 12388 bytes a pattern; a forked child keeps the attach;
//   shm B  private, 16 pages, filled once, then attached read-only;
//   shm C  key 0x5c3, 2 pages, filled and detached (no attach left);
//   shm D  private, 1 page, attached and then removed (IPC_RMID: SHM_DEST);
//   sem    key 0x5e4 mode 0600, 3 semaphores = 1, 7, 300;
//   msg    key 0x5f5, msg_qbytes 20000, messages: type 1 "hello", type 5
//          4000 pattern bytes, type 2 empty.
// Ready report: the ids and attach addresses. On SIGUSR1 (forwarded to the
// child) it checks every id, key, mode, size and content, that A is still
// shared with the child (the child checks the pattern, writes a marker the
// parent then reads), B is mapped read-only, D is still attached and marked
// SHM_DEST, the values and messages (in order, each once), qbytes and msgmnb.
#include "workload-common.h"

#include <sched.h>
#include <sys/ipc.h>
#include <sys/msg.h>
#include <sys/sem.h>
#include <sys/shm.h>
#include <sys/wait.h>

#define PG 4096
#define A_SIZE (3 * PG + 100)

union semun {
  int val;
  struct semid_ds* buf;
  unsigned short* array;
};

static unsigned char pat(int seg, size_t i) { return (unsigned char)(seg * 31 + i * 7 + (i >> 12)); }

static int check_pattern(const unsigned char* p, int seg, size_t len) {
  for (size_t i = 0; i < len; i++)
    if (p[i] != pat(seg, i)) return (int)i + 1;
  return 0;
}

static int read_sysctl(const char* path) {
  FILE* f = fopen(path, "r");
  if (!f) return -1;
  int v = -1;
  if (fscanf(f, "%d", &v) != 1) v = -1;
  fclose(f);
  return v;
}

struct msgbuf4k {
  long mtype;
  char mtext[4096];
};

int main(int argc, char** argv) {
  wl_init(argc, argv);
  if (unshare(CLONE_NEWIPC) < 0) wl_die("unshare(CLONE_NEWIPC)");
  FILE* f = fopen("/proc/sys/kernel/msgmnb", "w");
  if (!f || fprintf(f, "32768\n") < 0 || fclose(f) != 0) wl_die("write msgmnb");

  int a = shmget(0x5a1, A_SIZE, IPC_CREAT | IPC_EXCL | 0640);
  if (a < 0) wl_die("shmget A");
  unsigned char* pa = shmat(a, NULL, 0);
  if (pa == (void*)-1) wl_die("shmat A");
  for (size_t i = 0; i < A_SIZE; i++) pa[i] = pat(1, i);

  int b = shmget(IPC_PRIVATE, 16 * PG, IPC_CREAT | 0600);
  if (b < 0) wl_die("shmget B");
  unsigned char* w = shmat(b, NULL, 0);
  if (w == (void*)-1) wl_die("shmat B rw");
  for (size_t i = 0; i < 16 * PG; i++) w[i] = pat(2, i);
  shmdt(w);
  unsigned char* pb = shmat(b, NULL, SHM_RDONLY);
  if (pb == (void*)-1) wl_die("shmat B ro");

  int c = shmget(0x5c3, 2 * PG, IPC_CREAT | 0600);
  if (c < 0) wl_die("shmget C");
  w = shmat(c, NULL, 0);
  if (w == (void*)-1) wl_die("shmat C");
  for (size_t i = 0; i < 2 * PG; i++) w[i] = pat(3, i);
  shmdt(w);

  int d = shmget(IPC_PRIVATE, PG, IPC_CREAT | 0600);
  if (d < 0) wl_die("shmget D");
  unsigned char* pd = shmat(d, NULL, 0);
  if (pd == (void*)-1) wl_die("shmat D");
  for (size_t i = 0; i < PG; i++) pd[i] = pat(4, i);
  if (shmctl(d, IPC_RMID, NULL) < 0) wl_die("IPC_RMID D");

  int s = semget(0x5e4, 3, IPC_CREAT | 0600);
  if (s < 0) wl_die("semget");
  unsigned short vals[3] = {1, 7, 300};
  union semun su = {.array = vals};
  if (semctl(s, 0, SETALL, su) < 0) wl_die("SETALL");

  int q = msgget(0x5f5, IPC_CREAT | 0600);
  if (q < 0) wl_die("msgget");
  struct msqid_ds qs;
  if (msgctl(q, IPC_STAT, &qs) < 0) wl_die("msg IPC_STAT");
  qs.msg_qbytes = 20000;
  if (msgctl(q, IPC_SET, &qs) < 0) wl_die("msg IPC_SET");
  static struct msgbuf4k m;
  m.mtype = 1;
  memcpy(m.mtext, "hello", 5);
  if (msgsnd(q, &m, 5, IPC_NOWAIT) < 0) wl_die("msgsnd 1");
  m.mtype = 5;
  for (int i = 0; i < 4000; i++) m.mtext[i] = (char)pat(5, (size_t)i);
  if (msgsnd(q, &m, 4000, IPC_NOWAIT) < 0) wl_die("msgsnd 2");
  m.mtype = 2;
  if (msgsnd(q, &m, 0, IPC_NOWAIT) < 0) wl_die("msgsnd 3");

  pid_t child = fork();
  if (child < 0) wl_die("fork");
  if (child == 0) {
    sigset_t old;
    sigprocmask(SIG_BLOCK, NULL, &old);
    sigdelset(&old, SIGUSR1);
    while (!wl_go) sigsuspend(&old);
    // Still attached to A after the restore, with its contents.
    if (check_pattern(pa, 1, A_SIZE)) _exit(3);
    pa[PG + 5] = 0xee;
    _exit(0);
  }

  wl_report("child=%d", (int)child);
  wl_report("shm_a=%d", a);
  wl_report("shm_b=%d", b);
  wl_report("shm_c=%d", c);
  wl_report("shm_d=%d", d);
  wl_report("sem=%d", s);
  wl_report("msg=%d", q);
  wl_report("addr_a=%p", (void*)pa);
  wl_report("addr_b=%p", (void*)pb);
  wl_report("addr_d=%p", (void*)pd);
  wl_ready_and_wait();

  // Ids, keys and modes.
  if (shmget(0x5a1, 0, 0) != a) wl_fail("shm A by key: %s", strerror(errno));
  if (shmget(0x5c3, 0, 0) != c) wl_fail("shm C by key: %s", strerror(errno));
  if (semget(0x5e4, 0, 0) != s) wl_fail("sem by key: %s", strerror(errno));
  if (msgget(0x5f5, 0) != q) wl_fail("msg by key: %s", strerror(errno));
  struct shmid_ds ds;
  if (shmctl(a, IPC_STAT, &ds) < 0) wl_fail("IPC_STAT A: %s", strerror(errno));
  else if ((ds.shm_perm.mode & 0777) != 0640 || ds.shm_segsz != A_SIZE) wl_fail("shm A mode 0%o size %zu", ds.shm_perm.mode, (size_t)ds.shm_segsz);
  else if (ds.shm_nattch != 2) wl_fail("shm A nattch %lu, not 2", (unsigned long)ds.shm_nattch);
  // Contents.
  int bad;
  if ((bad = check_pattern(pa, 1, A_SIZE))) wl_fail("shm A byte %d", bad - 1);
  for (size_t i = A_SIZE; i < 4 * PG; i++)
    if (pa[i]) { wl_fail("shm A tail byte %zu is %d", i, pa[i]); break; }
  if ((bad = check_pattern(pb, 2, 16 * PG))) wl_fail("shm B byte %d", bad - 1);
  w = shmat(c, NULL, SHM_RDONLY);
  if (w == (void*)-1) wl_fail("shmat C: %s", strerror(errno));
  else {
    if ((bad = check_pattern(w, 3, 2 * PG))) wl_fail("shm C byte %d", bad - 1);
    shmdt(w);
  }
  if ((bad = check_pattern(pd, 4, PG))) wl_fail("shm D byte %d", bad - 1);
  if (shmctl(d, IPC_STAT, &ds) < 0) wl_fail("IPC_STAT D: %s", strerror(errno));
  else if (!(ds.shm_perm.mode & SHM_DEST)) wl_fail("shm D is not marked for removal (mode 0%o)", ds.shm_perm.mode);
  // B is mapped read-only.
  char line[512], want[32];
  snprintf(want, sizeof want, "%lx-", (unsigned long)pb);
  FILE* maps = fopen("/proc/self/maps", "r");
  int seen = 0;
  while (maps && fgets(line, sizeof line, maps))
    if (!strncmp(line, want, strlen(want))) seen = !strncmp(strchr(line, ' ') + 1, "r--s", 4) ? 1 : 2;
  if (maps) fclose(maps);
  if (seen != 1) wl_fail("shm B is %s", seen ? "not mapped r--s" : "not mapped");
  // Shared with the child.
  kill(child, SIGUSR1);
  int st = 0;
  if (waitpid(child, &st, 0) != child || !WIFEXITED(st) || WEXITSTATUS(st)) wl_fail("child status 0x%x", st);
  else if (pa[PG + 5] != 0xee) wl_fail("the child's write to shm A is not seen");
  // Semaphores.
  unsigned short got[3] = {0};
  su.array = got;
  if (semctl(s, 0, GETALL, su) < 0) wl_fail("GETALL: %s", strerror(errno));
  else if (got[0] != 1 || got[1] != 7 || got[2] != 300) wl_fail("semaphores %u %u %u", got[0], got[1], got[2]);
  struct sembuf op = {.sem_num = 1, .sem_op = -7, .sem_flg = IPC_NOWAIT};
  if (semop(s, &op, 1) < 0) wl_fail("semop -7: %s", strerror(errno));
  // Messages, in order, each once.
  if (msgctl(q, IPC_STAT, &qs) < 0) wl_fail("msg IPC_STAT: %s", strerror(errno));
  else if (qs.msg_qbytes != 20000 || qs.msg_qnum != 3) wl_fail("msg qbytes %lu qnum %lu", (unsigned long)qs.msg_qbytes, (unsigned long)qs.msg_qnum);
  ssize_t n = msgrcv(q, &m, sizeof m.mtext, 0, IPC_NOWAIT);
  if (n != 5 || m.mtype != 1 || memcmp(m.mtext, "hello", 5)) wl_fail("message 1: %zd bytes type %ld", n, m.mtype);
  n = msgrcv(q, &m, sizeof m.mtext, 0, IPC_NOWAIT);
  if (n != 4000 || m.mtype != 5) wl_fail("message 2: %zd bytes type %ld", n, m.mtype);
  else
    for (int i = 0; i < 4000; i++)
      if (m.mtext[i] != (char)pat(5, (size_t)i)) { wl_fail("message 2 byte %d", i); break; }
  n = msgrcv(q, &m, sizeof m.mtext, 0, IPC_NOWAIT);
  if (n != 0 || m.mtype != 2) wl_fail("message 3: %zd bytes type %ld", n, m.mtype);
  if (msgrcv(q, &m, sizeof m.mtext, 0, IPC_NOWAIT) >= 0 || errno != ENOMSG) wl_fail("a fourth message");
  int mnb = read_sysctl("/proc/sys/kernel/msgmnb");
  if (mnb != 32768) wl_fail("msgmnb %d", mnb);
  return wl_finish();
}
