// Test workload: files opened or mapped under a name that was unlinked while
// another hard link keeps them (CRIU's link remap, --link-remap; protocol:
// workload-common.h).
//   workload-linkremap CTRL_DIR
// In CTRL_DIR/l it creates:
//   a.bin     20000 bytes, opened O_RDWR at offset 777 (rw) and mapped
//             MAP_SHARED (page 0), hard-linked as a.link, then a.bin is
//             unlinked;
//   sub/b.txt 50 bytes, opened O_RDONLY at offset 7 (ro), hard-linked as
//             b.link, then b.txt is unlinked and sub/ removed (the link
//             remap goes to the nearest directory that exists).
// After "go" it checks, through its fds and mapping: each is the inode of
// its remaining link (a.link, b.link) with nlink 1 (no other name left),
// size, offset, access mode and contents; the shared mapping and rw are one
// inode; rw's /proc link names a.bin, deleted (the old name, as after
// CRIU's restore); and CTRL_DIR/l holds a.link and b.link only (no
// link_remap.* name and no a.bin left behind).
#include "workload-common.h"

#include <dirent.h>
#include <sys/mman.h>
#include <sys/stat.h>

#define A_SIZE 20000
#define B_SIZE 50

static unsigned char byte_at(size_t i) { return (unsigned char)(i * 7 + 3); }

static void check_fd(int fd, const char* link, const char* name, off_t size, off_t pos, int acc) {
  struct stat fs, ls;
  if (fstat(fd, &fs) < 0 || stat(link, &ls) < 0) { wl_fail("stat %s: %s", name, strerror(errno)); return; }
  if (fs.st_ino != ls.st_ino || fs.st_dev != ls.st_dev) wl_fail("%s: fd is not the inode of %s", name, link);
  if (fs.st_nlink != 1) wl_fail("%s: nlink %lu, expected 1 (only %s)", name, (unsigned long)fs.st_nlink, link);
  if (fs.st_size != size) wl_fail("%s: size %ld, expected %ld", name, (long)fs.st_size, (long)size);
  if (lseek(fd, 0, SEEK_CUR) != pos) wl_fail("%s: offset %ld, expected %ld", name, (long)lseek(fd, 0, SEEK_CUR), (long)pos);
  if ((fcntl(fd, F_GETFL) & O_ACCMODE) != acc) wl_fail("%s: access mode 0%o", name, fcntl(fd, F_GETFL) & O_ACCMODE);
  unsigned char got[A_SIZE];
  if (pread(fd, got, (size_t)size, 0) != size) { wl_fail("pread %s: %s", name, strerror(errno)); return; }
  for (off_t i = 0; i < size; i++)
    if (got[i] != byte_at((size_t)i)) { wl_fail("%s byte %ld is %u", name, (long)i, got[i]); break; }
}

int main(int argc, char** argv) {
  wl_init(argc, argv);
  char dir[4096], sub[4200], a[4200], alink[4200], b[4300], blink[4200];
  snprintf(dir, sizeof dir, "%s/l", wl_ctrl_dir);
  snprintf(sub, sizeof sub, "%s/sub", dir);
  snprintf(a, sizeof a, "%s/a.bin", dir);
  snprintf(alink, sizeof alink, "%s/a.link", dir);
  snprintf(b, sizeof b, "%s/b.txt", sub);
  snprintf(blink, sizeof blink, "%s/b.link", dir);
  if (mkdir(dir, 0755) < 0 || mkdir(sub, 0755) < 0) wl_die("mkdir");

  unsigned char buf[A_SIZE];
  for (size_t i = 0; i < A_SIZE; i++) buf[i] = byte_at(i);
  int rw = open(a, O_RDWR | O_CREAT | O_EXCL, 0644);
  if (rw < 0 || write(rw, buf, A_SIZE) != A_SIZE || lseek(rw, 777, SEEK_SET) != 777) wl_die("a.bin");
  unsigned char* shared = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, rw, 0);
  if (shared == MAP_FAILED) wl_die("mmap");
  int wb = open(b, O_WRONLY | O_CREAT | O_EXCL, 0600);
  if (wb < 0 || write(wb, buf, B_SIZE) != B_SIZE) wl_die("b.txt");
  close(wb);
  int ro = open(b, O_RDONLY);
  if (ro < 0 || lseek(ro, 7, SEEK_SET) != 7) wl_die("ro");
  if (link(a, alink) < 0 || link(b, blink) < 0) wl_die("link");
  if (unlink(a) < 0 || unlink(b) < 0 || rmdir(sub) < 0) wl_die("unlink");
  wl_report("rw=%d", rw);
  wl_ready_and_wait();

  check_fd(rw, alink, "a.bin (rw)", A_SIZE, 777, O_RDWR);
  check_fd(ro, blink, "b.txt (ro)", B_SIZE, 7, O_RDONLY);
  for (size_t i = 0; i < 4096; i++)
    if (shared[i] != byte_at(i)) { wl_fail("shared mapping byte %zu is %u", i, shared[i]); break; }
  shared[10] = 0x5a;
  unsigned char c = 0;
  if (pread(rw, &c, 1, 10) != 1 || c != 0x5a) wl_fail("a write through the shared mapping is not seen through rw (%u)", c);
  char proc[64], target[4400], want[4400];
  snprintf(proc, sizeof proc, "/proc/self/fd/%d", rw);
  ssize_t n = readlink(proc, target, sizeof target - 1);
  target[n < 0 ? 0 : n] = 0;
  snprintf(want, sizeof want, "%s (deleted)", a);
  if (strcmp(target, want) != 0) wl_fail("rw names %s, expected %s", target, want);
  DIR* d = opendir(dir);
  struct dirent* e;
  int seen = 0;
  while (d && (e = readdir(d))) {
    if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
    if (!strcmp(e->d_name, "a.link") || !strcmp(e->d_name, "b.link")) seen++;
    else wl_fail("left in %s: %s", dir, e->d_name);
  }
  if (d) closedir(d);
  if (seen != 2) wl_fail("%d of a.link, b.link left in %s", seen, dir);
  return wl_finish();
}
