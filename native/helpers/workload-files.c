// Test workload: open files at offsets, shared and separate open file
// descriptions, flags, and a working directory (protocol: workload-common.h).
//   workload-files CTRL_DIR
// fds: data (data.bin, O_RDWR, at 4321), dup of it at fd 20 (same offset),
// ro (data.bin again, O_RDONLY|O_CLOEXEC, at 777), log (log.txt,
// O_WRONLY|O_APPEND), null (/dev/null), dir (CTRL_DIR/sub, O_DIRECTORY);
// cwd = CTRL_DIR/sub. After "go" it checks offsets, flags, contents, that the
// dup still shares the offset, appends to the log and checks getcwd.
#include "workload-common.h"

#include <sys/stat.h>

#define DATA_LEN 10000

static unsigned char byte_at(size_t i) { return (unsigned char)(i * 7 + 3); }

static int open_at(const char* name, int flags) {
  char p[4096];
  snprintf(p, sizeof p, "%s/%s", wl_ctrl_dir, name);
  int fd = open(p, flags, 0644);
  if (fd < 0) wl_die(name);
  return fd;
}

int main(int argc, char** argv) {
  wl_init(argc, argv);
  unsigned char buf[DATA_LEN];
  for (size_t i = 0; i < DATA_LEN; i++) buf[i] = byte_at(i);
  int data = open_at("data.bin", O_RDWR | O_CREAT | O_TRUNC);
  if (write(data, buf, DATA_LEN) != DATA_LEN) wl_die("write data");
  lseek(data, 4321, SEEK_SET);
  if (dup2(data, 20) != 20) wl_die("dup2");
  int ro = open_at("data.bin", O_RDONLY | O_CLOEXEC);
  lseek(ro, 777, SEEK_SET);
  int log = open_at("log.txt", O_WRONLY | O_CREAT | O_TRUNC | O_APPEND);
  if (write(log, "before\n", 7) != 7) wl_die("write log");
  int null = open("/dev/null", O_RDWR);
  if (null < 0) wl_die("/dev/null");
  char sub[4096];
  snprintf(sub, sizeof sub, "%s/sub", wl_ctrl_dir);
  mkdir(sub, 0755);
  int dir = open(sub, O_RDONLY | O_DIRECTORY);
  if (dir < 0) wl_die("open sub");
  if (chdir(sub) < 0) wl_die("chdir");
  wl_report("data=%d", data);
  wl_report("dup=20");
  wl_report("ro=%d", ro);
  wl_report("log=%d", log);
  wl_report("null=%d", null);
  wl_report("dir=%d", dir);
  wl_report("cwd=%s", sub);
  wl_ready_and_wait();

  if (lseek(data, 0, SEEK_CUR) != 4321) wl_fail("data offset %lld", (long long)lseek(data, 0, SEEK_CUR));
  if (lseek(ro, 0, SEEK_CUR) != 777) wl_fail("ro offset %lld", (long long)lseek(ro, 0, SEEK_CUR));
  unsigned char b[16];
  if (read(20, b, 16) != 16) wl_fail("read dup: %s", strerror(errno));
  for (int i = 0; i < 16; i++)
    if (b[i] != byte_at(4321 + (size_t)i)) wl_fail("data byte %d", 4321 + i);
  if (lseek(data, 0, SEEK_CUR) != 4337) wl_fail("dup does not share the offset");
  if (read(ro, b, 16) != 16 || b[0] != byte_at(777)) wl_fail("ro read");
  if ((fcntl(ro, F_GETFD) & FD_CLOEXEC) == 0) wl_fail("ro lost FD_CLOEXEC");
  if (fcntl(data, F_GETFD) & FD_CLOEXEC) wl_fail("data gained FD_CLOEXEC");
  if ((fcntl(data, F_GETFL) & O_ACCMODE) != O_RDWR) wl_fail("data not O_RDWR");
  if ((fcntl(log, F_GETFL) & (O_ACCMODE | O_APPEND)) != (O_WRONLY | O_APPEND)) wl_fail("log flags");
  if (write(log, "after\n", 6) != 6) wl_fail("write log: %s", strerror(errno));
  if (write(null, "x", 1) != 1) wl_fail("write /dev/null");
  struct stat st;
  if (fstat(dir, &st) < 0 || !S_ISDIR(st.st_mode)) wl_fail("dir fd");
  char cwd[4096];
  if (!getcwd(cwd, sizeof cwd) || strcmp(cwd, sub) != 0) wl_fail("cwd is %s", cwd);
  return wl_finish();
}
