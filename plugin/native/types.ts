// The typed surface of the native addon (build/Release/lazy_restore.node).
// One interface per native area; NativeAddon is their union. Addresses and
// sizes are bigint; file descriptors and pids are number.
// Each area edits only its own interface below.

//
// ---------------------------------------------------------------------------
// native/uffd: the userfaultfd ABI (owner: uffd/engine work)
// ---------------------------------------------------------------------------
//
// eslint-disable-next-line @typescript-eslint/no-empty-object-type
export interface UffdNative {}

//
// ---------------------------------------------------------------------------
// native/engine: the fault-serving engine (owner: uffd/engine work)
// ---------------------------------------------------------------------------
//
// eslint-disable-next-line @typescript-eslint/no-empty-object-type
export interface EngineNative {}

//
// ---------------------------------------------------------------------------
// native/inject: ptrace, syscall injection, remote memory (owner: dump work;
// restore adds its own primitives in a separate block below)
// ---------------------------------------------------------------------------
//
// All calls are synchronous and must run on node's main thread (ptrace
// binds a tracee to the thread that seized it). Errors carry code/errno/syscall.
// Friendlier wrappers with docs: plugin/inject/index.ts.

/** The kernel's struct user_regs_struct (x86-64), field for field. */
export interface UserRegsStruct {
  r15: bigint; r14: bigint; r13: bigint; r12: bigint; rbp: bigint; rbx: bigint;
  r11: bigint; r10: bigint; r9: bigint; r8: bigint; rax: bigint; rcx: bigint;
  rdx: bigint; rsi: bigint; rdi: bigint; orig_rax: bigint; rip: bigint; cs: bigint;
  eflags: bigint; rsp: bigint; ss: bigint; fs_base: bigint; gs_base: bigint; ds: bigint;
  es: bigint; fs: bigint; gs: bigint;
}

/** A decoded waitpid status. `event` is status >> 16 (PTRACE_EVENT_*), stopped only. */
export interface NativeWaitStatus {
  pid: number;
  status: number;
  kind: 'exited' | 'signaled' | 'stopped' | 'continued';
  exitCode?: number;
  signal?: number;
  event?: number;
}

export interface NativeRseqConfiguration {
  rseqAbiPointer: bigint;
  rseqAbiSize: number;
  signature: number;
  flags: number;
}

export interface NativeCollectedPages {
  /** Kept pages as (vaddr, count) pairs, packed in this order at the start of `out`. */
  runs: BigUint64Array;
  bytes: number;
  /** Pages selected by the pagemap rule (before zero pages were dropped). */
  scanned: number;
  zero: number;
}

export interface InjectNative {
  ptraceSeize(tid: number, options?: bigint | number): void;
  ptraceInterrupt(tid: number): void;
  ptraceCont(tid: number, sig?: number): void;
  ptraceSyscall(tid: number, sig?: number): void;
  ptraceSingleStep(tid: number, sig?: number): void;
  ptraceDetach(tid: number, sig?: number): void;
  ptraceSetOptions(tid: number, options: bigint | number): void;
  ptraceGetEventMsg(tid: number): bigint;
  /** waitpid(pid, __WALL|WNOHANG|flags) polled until a report or timeout (-> null). */
  waitPid(pid: number, timeoutMs: number, flags?: number): NativeWaitStatus | null;
  ptraceGetRegs(tid: number): UserRegsStruct;
  ptraceSetRegs(tid: number, regs: UserRegsStruct): void;
  /** Buffer sized by the kernel's iov_len. */
  ptraceGetRegset(tid: number, nt: number): Buffer;
  ptraceSetRegset(tid: number, nt: number, data: Buffer): void;
  ptraceGetSigmask(tid: number): bigint;
  ptraceSetSigmask(tid: number, mask: bigint): void;
  ptraceGetRseqConfiguration(tid: number): NativeRseqConfiguration;
  /** Pending siginfos (128 bytes each), per-thread or shared queue. */
  ptracePeekSiginfo(tid: number, shared: boolean): Buffer[];
  getRobustList(tid: number): { head: bigint; len: number };
  /** Signed raw rax after the syscall. */
  injectSyscall(tid: number, nr: number | bigint, args: (bigint | number)[], gadget: bigint,
    useTrap: boolean, timeoutMs: number): bigint;
  /** remote: (addr, len) pairs; local gets the bytes back to back. Returns bytes moved. */
  processVmReadv(pid: number, local: Buffer, remote: BigUint64Array): number;
  processVmWritev(pid: number, local: Buffer, remote: BigUint64Array): number;
  /** Full-length pread/pwrite at a 64-bit offset (e.g. /proc/PID/mem). */
  preadAt(fd: number, buffer: Buffer, offset: bigint, length?: bigint | number): number;
  pwriteAt(fd: number, buffer: Buffer, offset: bigint, length?: bigint | number): number;
  readPagemap(pagemapFd: number, start: bigint, nPages: number): BigUint64Array;
  /** mode: 0 anon (present|swapped), 1 private file (not page-cache), 2 all pages kept. */
  collectPages(pid: number, memFd: number, pagemapFd: number, start: bigint, nPages: number,
    mode: number, out: Buffer): NativeCollectedPages;
  /**
   * The dump's memory copier. regions: (start, nPages, mode) triples. Kept
   * pages are written to pagesFd from pagesOffset on, in the order of the
   * returned runs: (vaddr, nPages, regionIndex) triples.
   */
  dumpPages(pid: number, memFd: number, pagemapFd: number, pagesFd: number, pagesOffset: bigint,
    regions: BigUint64Array): { runs: BigUint64Array; bytes: number; scanned: number; zero: number };
  /** kcmp(2): 0 equal, 1/2 ordered, 3 different. */
  kcmp(pid1: number, pid2: number, type: number, idx1: bigint | number, idx2: bigint | number): number;
  pidfdOpen(pid: number, flags?: number): number;
  pidfdGetfd(pidfd: number, targetFd: number): number;
}

//
// ---------------------------------------------------------------------------
// native/inject (restore side): process creation with set_tid, stub exec
// (owner: restore work)
// ---------------------------------------------------------------------------
//
// eslint-disable-next-line @typescript-eslint/no-empty-object-type
export interface RestoreNative {}

//
// ---------------------------------------------------------------------------
// native/uffd/lazysock.cc: the receiving end of CRIU's lazy-pages socket
// (owner: lazy work)
// ---------------------------------------------------------------------------
//
/** One message from the lazy-pages socket listener thread. */
export type LazySocketEvent =
  /** A peer with an allowed uid connected; the listening socket is now closed. */
  | { type: 'connected'; pid: number; uid: number }
  /** A peer with another uid (not root) was refused and disconnected. */
  | { type: 'refused'; pid: number; uid: number }
  /** Message A: a live process's virtual pid and its userfaultfd (now owned by the receiver). */
  | { type: 'task'; pid: number; fd: number }
  /** Message B: a zombie (the pid is positive here). */
  | { type: 'zombie'; pid: number }
  /** Message C: restore finished ("RSTF"). */
  | { type: 'finished' }
  /** The restorer closed the connection. */
  | { type: 'eof' }
  /** A malformed message; the listener stopped reading. */
  | { type: 'protocol'; detail: string }
  /** A system call failed; the listener stopped. `error` has code/errno/syscall. */
  | { type: 'error'; error: Error & { code: string; errno: number; syscall: string } };

export interface LazySocketListenerHandle {
  readonly path: string;
  /** Stops the listener thread (flag, wake, join), closes its fds and unlinks the socket. Idempotent. */
  close(): void;
}

export interface LazySocketNative {
  /**
   * Binds and listens on `path` (a stale socket file is replaced) and starts
   * the listener thread. Peers whose uid is neither `allowUid` nor 0 are refused.
   */
  LazySocketListener: new (path: string, allowUid: number, onEvent: (ev: LazySocketEvent) => void) => LazySocketListenerHandle;
}

//
// ---------------------------------------------------------------------------
//
export interface NativeAddon extends UffdNative, EngineNative, InjectNative, RestoreNative, LazySocketNative {}
