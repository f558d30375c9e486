/*
 * The program every restored process starts as: static, no libc, so its
 * address space is only its own two or three pages plus [vvar]/[vdso]/[stack],
 * which the restorer unmaps (or moves) before recreating the dumped layout.
 * The restorer drives it entirely by ptrace; `_start` is never meant to run
 * past the int3. The second entry, `lr_reaper`, turns the stub into the init
 * of a new pid namespace (--pidns): it reaps every orphan and exits with the
 * restored root's status when the root (pid in %rdi) is gone.
 */
__asm__(
    ".text\n"
    ".globl _start\n"
    "_start:\n"
    "  syscall\n"
    "  int3\n"
    "1: jmp 1b\n"
    ".balign 16\n"
    /* _start + 16: the entry the restorer jumps to for --pidns */
    "lr_reaper_entry:\n"
    "  jmp lr_reaper\n");

static long sys4(long nr, long a, long b, long c, long d) {
  long ret;
  register long r10 __asm__("r10") = d;
  __asm__ volatile("syscall" : "=a"(ret) : "a"(nr), "D"(a), "S"(b), "d"(c), "r"(r10) : "rcx", "r11", "memory");
  return ret;
}

__attribute__((noreturn, used)) void lr_reaper(long root) {
  for (;;) {
    int status = 0;
    long r = sys4(61 /* wait4 */, -1, (long)&status, 0x40000000 /* __WALL */, 0);
    if (r == root || r == -10 /* ECHILD */) {
      int code = r == root ? ((status & 0x7f) == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)) : 0;
      sys4(231 /* exit_group */, code, 0, 0, 0);
    }
  }
}
