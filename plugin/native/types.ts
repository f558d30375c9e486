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
// eslint-disable-next-line @typescript-eslint/no-empty-object-type
export interface InjectNative {}

//
// ---------------------------------------------------------------------------
// native/inject (restore side): process creation with set_tid, stub exec
// (owner: restore work)
// ---------------------------------------------------------------------------
//
/** Result of restoreWaitpid. */
export interface RestoreWaitStatus {
  pid: number;
  status: number;
  exited: boolean;
  /** Exit code, or -1 when not exited. */
  code: number;
  /** Terminating (or stop) signal, 0 if none. */
  signal: number;
  stopped: boolean;
}

/** What RestoreChildWaiter reports once the child is reaped. */
export interface RestoreExitInfo {
  code: number; // -1 when killed by a signal
  signal: number; // 0 when exited normally
  error?: Error & { code: string; errno: number; syscall: string };
}

export interface RestoreChildWaiterHandle {
  /** Stops the waiter thread (flag, wake, join) if it is still waiting. Idempotent. */
  close(): void;
}

export interface RestoreNative {
  /**
   * clone3 with set_tid = pid (or, with newPidns, as pid 1 of a new pid
   * namespace) from the calling thread; the child drops fds >= 3, defaults
   * every signal, PTRACE_TRACEMEs and execs `stubPath`. Returns once the
   * child is stopped at its exec trap with EXITKILL|TRACECLONE|TRACEFORK set.
   * Throws EEXIST when the pid is taken.
   */
  restoreSpawnStub(pid: number, stubPath: string, newPidns?: boolean): number;
  /** Injects one syscall into the stopped tracee `tid` by single-stepping the `syscall` at `gadget`. Returns the raw (signed) result. */
  restoreSyscall(tid: number, gadget: bigint, nr: number, args?: (bigint | number)[]): bigint;
  /** Pid (in this process's namespace) of the task created by the last injected clone; -1 if none. */
  restoreLastEventPid(): number;
  /** Waits for the next stop of a tracee (e.g. a task auto-attached by an injected clone); returns the stop signal. */
  restoreWaitStop(tid: number): number;
  /** user_regs_struct as 27 words, in CRIU user_x86_regs_entry order. */
  restoreGetRegs(tid: number): BigUint64Array;
  restoreSetRegs(tid: number, regs: BigUint64Array): void;
  /** The NT_X86_XSTATE regset (standard XSAVE layout) at its real size. */
  restoreGetXstate(tid: number): Buffer;
  restoreSetXstate(tid: number, xstate: Buffer): void;
  /** [component, offset, size] of each XSAVE user component (CPUID 0xD). */
  restoreXstateLayout(): [number, number, number][];
  restoreSetSigmask(tid: number, mask: bigint): void;
  restoreDetach(tid: number, sig?: number): void;
  /** Kills and reaps process groups listed parents first ([leader, ...tids] each); never leaves zombies behind. */
  restoreKillTree(groups: number[][]): void;
  /** waitpid(pid, __WALL [|WNOHANG]); null when nohang and nothing to report. */
  restoreWaitpid(pid: number, nohang?: boolean): RestoreWaitStatus | null;
  restoreWriteMem(pid: number, addr: bigint, data: Buffer): void;
  restoreReadMem(pid: number, addr: bigint, len: bigint | number): Buffer;
  /** Copies (address, file offset, length) triples from a pages file into the target; returns bytes written. */
  restoreWritePages(pid: number, pagesPath: string, ranges: BigUint64Array): bigint;
  /** pidfd_open + pidfd_getfd: a copy of another process's fd, O_CLOEXEC. */
  restorePidfdGetfd(pid: number, fd: number): number;
  restoreCloseFd(fd: number): void;
  /** UFFDIO_API with `features`, then UFFDIO_REGISTER (MISSING) of each (start, length) pair; returns the granted features. */
  restoreUffdSetup(uffd: number, features: bigint, ranges: BigUint64Array): bigint;
  /** Connects to a lazy-pages daemon's UNIX socket; returns the socket fd. */
  restoreLazyConnect(path: string): number;
  /** Lazy socket message A (pid, then the uffd by SCM_RIGHTS) or, with uffd < 0, message B (-pid). */
  restoreLazySendTask(sock: number, pid: number, uffd: number): void;
  /** Lazy socket message C ("RSTF"). */
  restoreLazySendFinish(sock: number): void;
  RestoreChildWaiter: new (pid: number, onExit: (info: RestoreExitInfo) => void) => RestoreChildWaiterHandle;
}

//
// ---------------------------------------------------------------------------
//
export interface NativeAddon extends UffdNative, EngineNative, InjectNative, RestoreNative {}
