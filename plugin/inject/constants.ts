// x86-64 numbers shared by dump and restore: syscall numbers, ptrace options
// and events, regset note types, signal numbers. Kernel ABI values.

/** x86-64 syscall numbers used by injection (arch/x86/entry/syscalls/syscall_64.tbl). */
export const SYS = {
  read: 0, write: 1, open: 2, close: 3, lseek: 8, mmap: 9, mprotect: 10, munmap: 11, brk: 12,
  rt_sigaction: 13, rt_sigprocmask: 14, ioctl: 16, madvise: 28, dup2: 33, getpid: 39, clone: 56,
  fork: 57, execve: 59, exit: 60, kill: 62, fcntl: 72, fchdir: 81, umask: 95, getppid: 110,
  setpgid: 109, setsid: 112, getpgid: 121, getsid: 124, sigaltstack: 131, personality: 135,
  prctl: 157, arch_prctl: 158, chroot: 161, gettid: 186, tkill: 200, futex: 202,
  set_tid_address: 218, exit_group: 231, openat: 257, set_robust_list: 273,
  get_robust_list: 274, mremap: 25, userfaultfd: 323, rseq: 334, pidfd_open: 434, clone3: 435,
  pidfd_getfd: 438, getitimer: 36, setitimer: 38, wait4: 61, chdir: 80, setgroups: 116, setresuid: 117,
  setresgid: 119, setfsuid: 122, setfsgid: 123, capset: 126, rt_sigqueueinfo: 129, timer_create: 222,
  timer_settime: 223, timer_gettime: 224, timer_getoverrun: 225, timer_delete: 226, dup3: 292,
  rt_tgsigqueueinfo: 297, prlimit64: 302, rt_sigtimedwait: 128, mlock2: 325,
  // fds (plugin/restore/fds): pipes, unix sockets, the SCM_RIGHTS channel
  socket: 41, connect: 42, sendto: 44, sendmsg: 46, recvmsg: 47, shutdown: 48, bind: 49, listen: 50,
  getsockname: 51, socketpair: 53, setsockopt: 54, flock: 73, pipe2: 293,
  // unix sockets bound to a path (plugin/restore/fds/unix.ts)
  unlinkat: 263, fchmodat: 268, fchownat: 260, mkdirat: 258, renameat: 264,
  // fd kinds: inet sockets, event objects
  epoll_ctl: 233, inotify_add_watch: 254, timerfd_create: 283, timerfd_settime: 286, signalfd4: 289, eventfd2: 290,
  epoll_create1: 291, inotify_init1: 294, clock_gettime: 228,
  // SysV IPC (plugin/restore/sysvipc.ts): the root's IPC namespace, shm attaches
  unshare: 272, shmat: 30,
  sched_getscheduler: 145,
  // seccomp filters (plugin/restore/seccomp.ts)
  seccomp: 317,
} as const;

/** prctl options used by dump/restore. */
export const PR = {
  SET_PDEATHSIG: 1, GET_PDEATHSIG: 2, GET_DUMPABLE: 3, SET_DUMPABLE: 4, SET_NAME: 15,
  GET_NAME: 16, GET_SECUREBITS: 27, SET_MM: 35, GET_TID_ADDRESS: 40, SET_CHILD_SUBREAPER: 36,
  GET_CHILD_SUBREAPER: 37, GET_NO_NEW_PRIVS: 39, GET_THP_DISABLE: 42, SET_MM_MAP: 14,
  SET_MM_MAP_SIZE: 15, CAPBSET_DROP: 24, SET_SECUREBITS: 28, SET_NO_NEW_PRIVS: 38, CAP_AMBIENT: 47,
  TIMER_CREATE_RESTORE_IDS: 77,
} as const;

export const PTRACE_O = {
  TRACESYSGOOD: 1, TRACEFORK: 2, TRACEVFORK: 4, TRACECLONE: 8, TRACEEXEC: 0x10,
  TRACEVFORKDONE: 0x20, TRACEEXIT: 0x40, TRACESECCOMP: 0x80, EXITKILL: 0x100000,
  SUSPEND_SECCOMP: 0x200000,
} as const;

export const PTRACE_EVENT = {
  FORK: 1, VFORK: 2, CLONE: 3, EXEC: 4, VFORK_DONE: 5, EXIT: 6, SECCOMP: 7, STOP: 128,
} as const;

/** Note types for PTRACE_GETREGSET/SETREGSET. */
export const NT = { PRSTATUS: 1, PRFPREG: 2, X86_XSTATE: 0x202 } as const;

export const SIG = {
  HUP: 1, INT: 2, QUIT: 3, ILL: 4, TRAP: 5, ABRT: 6, BUS: 7, FPE: 8, KILL: 9, USR1: 10,
  SEGV: 11, USR2: 12, PIPE: 13, ALRM: 14, TERM: 15, STKFLT: 16, CHLD: 17, CONT: 18, STOP: 19,
  TSTP: 20, TTIN: 21, TTOU: 22,
} as const;

/** __WALL, for waitPid flags (already always set by the native wait). */
export const WALL = 0x40000000;

/** open(2)/socket(2) flags and socket families and types used by dump and restore. */
export const O_CLOEXEC = 0o2000000;
export const SOCK_CLOEXEC = 0o2000000;
export const AF_UNIX = 1;
export const SOCK_STREAM = 1;
export const SOCK_DGRAM = 2;
export const SOCK_SEQPACKET = 5;
export const SOL_SOCKET = 1;
export const AF_INET = 2;
export const AF_INET6 = 10;
export const IPPROTO_TCP = 6;
export const IPPROTO_UDP = 17;
