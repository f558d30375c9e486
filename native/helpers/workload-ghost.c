// Test workload: deleted files that are still open or mapped (CRIU's ghost
// files; protocol: workload-common.h).
//   workload-ghost CTRL_DIR
// In CTRL_DIR/g it creates, then unlinks:
//   big.bin   64 KiB, mode 0640: data in [0, 16 KiB) and [48 KiB, 64 KiB),
//             a hole between; open O_RDWR at offset 12345 (rw), again
//             O_RDONLY at offset 100 (ro, a description of its own), mapped
//             MAP_SHARED (page 0) and MAP_PRIVATE (all, page 1 written
//             privately after the mapping);
//   small.txt 100 bytes, mode 0604: open O_WRONLY|O_APPEND (app);
//   null.dev  a device node like /dev/null (1:3), mode 0620: open O_RDWR (dev).
// After "go" it checks, through the fds and mappings: the files are unlinked
// (nlink 0) with their size and mode, offsets and access modes, contents,
// that the hole is still a hole, that a write through the shared mapping is
// seen through rw (one inode for fds and mappings), that the private page
// kept its own bytes, that an append lands at the end, and that nothing was
// left in CTRL_DIR/g (the restore's temporary names are gone).
#include "workload-common.h"

#include <dirent.h>
#include <sys/mman.h>
#include <sys/sysmacros.h>
#include <sys/stat.h>

#define BIG (64 * 1024)
#define HOLE_START (16 * 1024)
#define HOLE_END (48 * 1024)
#define SMALL 100

static unsigned char byte_at(size_t i) { return (unsigned char)(i * 13 + 5); }

static int make(const char* path, int flags, mode_t mode) {
  int fd = open(path, flags | O_CREAT | O_EXCL, mode);
  if (fd < 0) wl_die(path);
  if (fchmod(fd, mode) < 0) wl_die("fchmod");
  return fd;
}

static void check_file(int fd, const char* name, off_t size, mode_t mode) {
  struct stat st;
  if (fstat(fd, &st) < 0) { wl_fail("fstat %s: %s", name, strerror(errno)); return; }
  if (st.st_nlink != 0) wl_fail("%s: nlink %lu, expected 0 (still linked)", name, (unsigned long)st.st_nlink);
  if (st.st_size != size) wl_fail("%s: size %ld, expected %ld", name, (long)st.st_size, (long)size);
  if ((st.st_mode & 07777) != mode) wl_fail("%s: mode 0%o, expected 0%o", name, st.st_mode & 07777, mode);
  if (!S_ISREG(st.st_mode)) wl_fail("%s: not a regular file", name);
}

int main(int argc, char** argv) {
  wl_init(argc, argv);
  char dir[4096], big[4200], small[4200], node[4200];
  snprintf(dir, sizeof dir, "%s/g", wl_ctrl_dir);
  if (mkdir(dir, 0755) < 0) wl_die("mkdir");
  snprintf(big, sizeof big, "%s/big.bin", dir);
  snprintf(small, sizeof small, "%s/small.txt", dir);
  snprintf(node, sizeof node, "%s/null.dev", dir);

  int rw = make(big, O_RDWR, 0640);
  unsigned char buf[BIG];
  for (size_t i = 0; i < BIG; i++) buf[i] = byte_at(i);
  if (pwrite(rw, buf, HOLE_START, 0) != HOLE_START) wl_die("write big");
  if (pwrite(rw, buf + HOLE_END, BIG - HOLE_END, HOLE_END) != BIG - HOLE_END) wl_die("write big tail");
  if (lseek(rw, 12345, SEEK_SET) != 12345) wl_die("lseek rw");
  int ro = open(big, O_RDONLY);
  if (ro < 0 || lseek(ro, 100, SEEK_SET) != 100) wl_die("ro");
  unsigned char* shared = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, rw, 0);
  unsigned char* priv = mmap(NULL, BIG, PROT_READ | PROT_WRITE, MAP_PRIVATE, ro, 0);
  if (shared == MAP_FAILED || priv == MAP_FAILED) wl_die("mmap");
  memset(priv + 4096, 0xa5, 4096);  // page 1: private copy
  int app = make(small, O_WRONLY | O_APPEND, 0604);
  if (write(app, buf, SMALL) != SMALL) wl_die("write small");
  if (mknod(node, S_IFCHR | 0620, makedev(1, 3)) < 0 || chmod(node, 0620) < 0) wl_die("mknod");
  int dev = open(node, O_RDWR);
  if (dev < 0) wl_die("open node");
  if (unlink(big) < 0 || unlink(small) < 0 || unlink(node) < 0) wl_die("unlink");
  wl_report("rw=%d", rw);
  wl_report("ro=%d", ro);
  wl_report("app=%d", app);
  wl_ready_and_wait();

  check_file(rw, "big.bin (rw)", BIG, 0640);
  check_file(ro, "big.bin (ro)", BIG, 0640);
  check_file(app, "small.txt", SMALL, 0604);
  struct stat ds;
  if (fstat(dev, &ds) < 0 || !S_ISCHR(ds.st_mode) || ds.st_rdev != makedev(1, 3) || ds.st_nlink != 0 || (ds.st_mode & 07777) != 0620)
    wl_fail("null.dev: mode 0%o rdev %lx nlink %lu", ds.st_mode, (unsigned long)ds.st_rdev, (unsigned long)ds.st_nlink);
  if (write(dev, "x", 1) != 1 || read(dev, &ds, 1) != 0) wl_fail("null.dev does not behave as /dev/null");
  if ((fcntl(dev, F_GETFL) & O_ACCMODE) != O_RDWR) wl_fail("dev is not O_RDWR");
  if (lseek(rw, 0, SEEK_CUR) != 12345) wl_fail("rw offset %ld", (long)lseek(rw, 0, SEEK_CUR));
  if (lseek(ro, 0, SEEK_CUR) != 100) wl_fail("ro offset %ld", (long)lseek(ro, 0, SEEK_CUR));
  if ((fcntl(rw, F_GETFL) & O_ACCMODE) != O_RDWR) wl_fail("rw is not O_RDWR");
  if ((fcntl(ro, F_GETFL) & O_ACCMODE) != O_RDONLY) wl_fail("ro is not O_RDONLY");
  if ((fcntl(app, F_GETFL) & (O_ACCMODE | O_APPEND)) != (O_WRONLY | O_APPEND)) wl_fail("app flags 0%o", fcntl(app, F_GETFL));
  // Contents (the hole reads as zeros) and the hole itself.
  unsigned char got[BIG];
  if (pread(ro, got, BIG, 0) != BIG) wl_fail("pread big: %s", strerror(errno));
  for (size_t i = 0; i < BIG; i++) {
    unsigned char want = i >= HOLE_START && i < HOLE_END ? 0 : byte_at(i);
    if (got[i] != want) { wl_fail("big.bin byte %zu is %u, expected %u", i, got[i], want); break; }
  }
  off_t data = lseek(ro, HOLE_START, SEEK_DATA);
  if (data != HOLE_END) wl_fail("SEEK_DATA from the hole gave %ld, expected %d (hole not kept)", (long)data, HOLE_END);
  // Mappings: the private page kept its bytes, the rest is the file's.
  for (size_t i = 0; i < BIG; i++) {
    unsigned char want = i >= 4096 && i < 8192 ? 0xa5 : i >= HOLE_START && i < HOLE_END ? 0 : byte_at(i);
    if (priv[i] != want) { wl_fail("private mapping byte %zu is %u, expected %u", i, priv[i], want); break; }
  }
  for (size_t i = 0; i < 4096; i++)
    if (shared[i] != byte_at(i)) { wl_fail("shared mapping byte %zu is %u", i, shared[i]); break; }
  // The shared mapping and rw are one inode: a write through one is read through the other.
  shared[10] = 0x5a;
  unsigned char b = 0;
  if (pread(rw, &b, 1, 10) != 1 || b != 0x5a) wl_fail("a write through the shared mapping is not seen through rw (%u)", b);
  if (pwrite(rw, "Q", 1, 20) != 1 || shared[20] != 'Q') wl_fail("a write through rw is not seen in the shared mapping");
  // Appending still appends.
  if (write(app, "xyz", 3) != 3) wl_fail("append: %s", strerror(errno));
  struct stat st;
  if (fstat(app, &st) < 0 || st.st_size != SMALL + 3) wl_fail("small.txt size after append %ld", (long)st.st_size);
  // Nothing left behind in the directory (no temporary names).
  DIR* d = opendir(dir);
  struct dirent* e;
  while (d && (e = readdir(d)))
    if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) wl_fail("left in %s: %s", dir, e->d_name);
  if (d) closedir(d);
  return wl_finish();
}
