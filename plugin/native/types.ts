// The typed surface of the native addon (build/Release/lazy_restore.node).
// One interface per native area; NativeAddon is their union. Addresses and
// sizes are bigint; file descriptors and pids are number.
// Each area edits only its own interface below.

//
// ---------------------------------------------------------------------------
// native/uffd: the userfaultfd ABI (owner: uffd/engine work)
// ---------------------------------------------------------------------------
//
/** A decoded `struct uffd_msg` (see plugin/uffd/abi.ts for the typed union). */
export type RawUffdMsg =
  | { event: 'pagefault'; flags: bigint; address: bigint; ptid: number }
  | { event: 'fork'; ufd: number }
  | { event: 'remap'; from: bigint; to: bigint; len: bigint }
  | { event: 'remove' | 'unmap'; start: bigint; end: bigint }
  | { event: 'unknown'; code: number };

/**
 * One ioctl per function; errors carry code/errno/syscall. COPY, ZEROPAGE,
 * CONTINUE, MOVE and POISON errors also carry `progress: bigint` (bytes done).
 */
export interface UffdNative {
  uffdCreate(flags: number, allowDevFallback: boolean): number;
  uffdApi(fd: number, features: bigint): { api: bigint; features: bigint; ioctls: bigint };
  uffdRegister(fd: number, start: bigint, len: bigint, mode: bigint): bigint;
  uffdUnregister(fd: number, start: bigint, len: bigint): void;
  uffdCopy(fd: number, dst: bigint, data: Buffer, mode: bigint): bigint;
  uffdZeropage(fd: number, start: bigint, len: bigint, mode: bigint): bigint;
  uffdWake(fd: number, start: bigint, len: bigint): void;
  uffdWriteprotect(fd: number, start: bigint, len: bigint, mode: bigint): void;
  uffdContinue(fd: number, start: bigint, len: bigint, mode: bigint): bigint;
  uffdMove(fd: number, dst: bigint, src: bigint, len: bigint, mode: bigint): bigint;
  uffdPoison(fd: number, start: bigint, len: bigint, mode: bigint): bigint;
  /** Non-blocking; [] when nothing is pending. */
  uffdRead(fd: number, max: number): RawUffdMsg[];
  /** Blocking poll for readability (bounded by timeoutMs). */
  uffdPoll(fd: number, timeoutMs: number): boolean;
  /** Listening AF_UNIX stream socket at path (CLOEXEC). */
  unixListen(path: string): number;
  /** Accepts one connection and reads one message with its SCM_RIGHTS fds (off the JS thread). */
  acceptRecvFds(listenFd: number, timeoutMs: number, maxBytes?: number): Promise<{ conn: number; data: Buffer; fds: number[] }>;
}

//
// ---------------------------------------------------------------------------
// native/engine: the fault-serving engine (owner: uffd/engine work)
// ---------------------------------------------------------------------------
//
/**
 * Event as delivered by the native engine (native/engine/init.cc Deliver);
 * the one definition (plugin/uffd exports it as EngineEvent).
 */
export type RawEngineEvent =
  /** The child got its own uffd and a copy of the parent's lazy map (incl. pages in flight). */
  | { type: 'fork'; proc: number; child: number }
  | { type: 'remap'; proc: number; from: bigint; to: bigint; len: bigint }
  | { type: 'remove' | 'unmap'; proc: number; start: bigint; end: bigint }
  /** Remote pages [addr, addr+len) (run-time) are wanted; they were dumped at imageAddr. */
  | { type: 'need'; proc: number; addr: bigint; imageAddr: bigint; len: bigint }
  | { type: 'prefetched'; proc: number; start: bigint; len: bigint; copied: bigint }
  /** complete: nothing lazy left. exit: the mm is gone (ESRCH/ENOSPC from the kernel, pidfd readable, or liveness probe). */
  | { type: 'complete' | 'exit'; proc: number }
  /** The working-set queue given to prefetchFirst() is done; `copied` bytes (all calls so far). */
  | { type: 'warmed'; proc: number; copied: bigint }
  /** The process is no longer served (uffd kept open so it blocks rather than reading zeros): kill it. */
  | { type: 'error'; proc: number; code: string; errno: number; syscall: string; message: string }
  /**
   * The native page-server link of worker `slot` failed (closed, reset,
   * stalled or a malformed reply) and was closed; its `lost` unanswered GETs
   * were turned into 'need' events. Attach a fresh socket to resume.
   */
  | { type: 'link-error'; proc: 0; slot: number; lost: number; code: string; errno: number; syscall: string; message: string }
  /**
   * A bulk pull (startPull) ended: every remote page of the process placed,
   * the process gone or failed (no code), or the stream failed (code, errno,
   * syscall, message: what is left is for the caller's own path). `pages`
   * copied by the pull. Call stopPull(pull) to free it.
   */
  | { type: 'pull-end'; proc: number; pull: number; pages: number; code?: string; errno?: number; syscall?: string; message?: string };

export interface RawLinkStats {
  attached: boolean;
  outstanding: number;
  gets: number;
  pages: number;
  shortReplies: number;
  failures: number;
  attaches: number;
}

export interface RawProcStats {
  proc: number;
  state: 'live' | 'exited' | 'failed' | 'released';
  lazyBytes: bigint;
  faults: bigint; served: bigint; ignored: bigint; unexpected: bigint;
  zeroPages: bigint; copiedPages: bigint; pushedPages: bigint; suppliedPages: bigint;
  bytes: bigint; needs: bigint; eagain: bigint; eexist: bigint; enoent: bigint;
  remoteGets: bigint; remotePages: bigint;
  /** Fault service time histogram: index i counts [2^i, 2^(i+1)) ns. */
  latencyLog2Ns: number[];
}

/** Page counters of one lazily served shared memory object (native/engine/shared.cc). */
export interface RawSharedStats {
  name: string;
  /** Image pages placed with UFFDIO_COPY: each at most once. */
  copiedPages: number;
  /** Holes placed with UFFDIO_ZEROPAGE. */
  zeroPages: number;
  /** Served pages the program punched out and faulted on again (zero page). */
  refilledPages: number;
  /** Pages found present (EEXIST) when first placed. */
  presentPages: number;
  /** Pages discarded before they were served (their processes killed). */
  poisonedPages: number;
  servedPages: number;
}

export interface NativeFaultEngineHandle {
  /** checksums: CRC32C per chunkSize bytes of the file (verified on first use of a chunk). */
  addSource(path: string, checksums?: Uint32Array, chunkSize?: number): { id: number; size: bigint };
  /** ranges: [start, end, kind (0 file, 1 zero, 2 remote, 3 shared), source|object, offset|imageAddr|objectOffset] per range. */
  adopt(uffd: number, ranges: BigUint64Array, pidfd: number, remotePid?: number): number;
  /** A shared memory object of `size` bytes; data: [objOffset, objEnd, source, fileOffset] per image run. */
  addSharedObject(name: string, size: bigint, data: BigUint64Array): number;
  sharedStats(): RawSharedStats[];
  supply(proc: number, imageAddr: bigint, data: Buffer): bigint;
  prefetch(proc: number, start: bigint, len: bigint, follow?: boolean): void;
  /** Working set: [start, end]* copied in this order before any prefetch (faults first); one 'warmed' event when done. */
  prefetchFirst(proc: number, ranges: BigUint64Array): void;
  /** Checks the chunks of `source` holding each [offset, length] on a native thread of its own (data needed soon); a mismatch is left for the serving path. */
  verifyAhead(source: number, spans: BigUint64Array): void;
  /** Fault log ring capacity in entries (0 = off). */
  setFaultLog(capacity: number): void;
  /** entries: [tNs (CLOCK_MONOTONIC), proc, start, pages, kind (0 fault, 1 zero, 2 push), faultAddr]* */
  drainFaultLog(): { entries: BigUint64Array; dropped: number };
  lazyRanges(proc: number): BigUint64Array;
  lazyBytes(proc: number): bigint;
  release(proc: number): void;
  kill(proc: number): void;
  /** Native page-server link of worker `slot`: the engine keeps a duplicate of `fd`. */
  attachLink(slot: number, fd: number, stallMs: bigint, spinMicros: bigint): void;
  detachLink(slot: number): void;
  links(): RawLinkStats[];
  /** Bulk pull of the process's remote pages over `fd` on a thread of its own (the engine keeps a duplicate): its id. */
  startPull(proc: number, fd: number, getPages: bigint, windowPages: bigint, stallMs: bigint): number;
  /** Stops and joins a pull (no event); no-op when unknown. */
  stopPull(pull: number): void;
  pullStats(pull: number): { pages: number; gets: number } | undefined;
  /** A new fd (close-on-exec) duplicating the process's uffd; ESRCH once it is closed. */
  dupUffd(proc: number): number;
  stats(): { procs: RawProcStats[]; threadCpuNs: bigint[] };
  close(): void;
}

/** A connection the native page responder gave back to TypeScript (its duplicate fd is closed by then). */
export interface RawHandback {
  conn: number;
  /** eof: the peer closed; error: a socket error (code/errno); command: a header it does not answer (in bytes). */
  reason: 'eof' | 'error' | 'command';
  code: string | undefined;
  errno: number;
  /** Bytes read from the socket and not acted on (at most one header). */
  bytes: Buffer;
}

export interface NativePageResponderHandle {
  /** runs: [start, end, fd, fileOffset]* of one pid; the fds stay the caller's (open until close()). */
  setRuns(pid: number, runs: BigUint64Array): void;
  /** Serves GETs on a duplicate of fd (a paused Node socket's) on its own thread; returns the connection id. */
  serve(fd: number): number;
  /** Stops and joins a connection's thread (also after a hand-back); idempotent. */
  stop(conn: number): void;
  stats(): { gets: number; pages: number; idleMs: number };
  close(): void;
}

export interface EngineNative {
  NativePageResponder: new (spinMicros: bigint, onHandback: (h: RawHandback) => void) => NativePageResponderHandle;
  NativeFaultEngine: new (
    threads: number,
    faultAroundPages: bigint,
    spinMicros: bigint,
    onEvents: (events: RawEngineEvent[]) => void,
    cpus?: number[],
  ) => NativeFaultEngineHandle;
}

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
  /** Seccomp filter `index` (0 = oldest) of a stopped tracee as struct sock_filter[]; null past the last one. */
  ptraceSeccompGetFilter(tid: number, index: number): Buffer | null;
  /** The flags filter `index` was installed with (PTRACE_SECCOMP_GET_METADATA); -1 without kernel support. */
  ptraceSeccompGetFlags(tid: number, index: number): number;
  /** Signed raw rax after the syscall. */
  injectSyscall(tid: number, nr: number | bigint, args: (bigint | number)[], gadget: bigint,
    useTrap: boolean, timeoutMs: number): bigint;
  /**
   * injectSyscall for fork/clone/clone3 in a tracee with TRACEFORK/TRACECLONE:
   * `child` is the new task's pid (this namespace) from the event stop, 0 if
   * none was created; it is left in its initial stop for the caller to wait for.
   */
  injectSyscallFork(tid: number, nr: number | bigint, args: (bigint | number)[], gadget: bigint,
    useTrap: boolean, timeoutMs: number): { result: bigint; child: number };
  /** The syscall-batch routine's code, to copy into a tracee's executable scratch area. */
  injectBatchBlob(): Buffer;
  /** Runs the syscall table at tableAddr with the routine at blobAddr in stopped tracee `tid` (one resume, one stop). */
  injectBatch(tid: number, blobAddr: bigint, tableAddr: bigint, timeoutMs: number): void;
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
   * returned runs: (vaddr, nPages, regionIndex) triples. checksumChunk: also
   * CRC32C of each checksumChunk bytes written (`checksums`), computed on the
   * pages while in cache.
   */
  dumpPages(pid: number, memFd: number, pagemapFd: number, pagesFd: number, pagesOffset: bigint,
    regions: BigUint64Array, checksumChunk?: number): { runs: BigUint64Array; bytes: number; scanned: number; zero: number; checksums?: Uint32Array };
  /** dumpPages on a worker thread; the fds stay open and the task frozen until it settles. */
  dumpPagesAsync(pid: number, memFd: number, pagemapFd: number, pagesFd: number, pagesOffset: bigint,
    regions: BigUint64Array, checksumChunk?: number): Promise<{ runs: BigUint64Array; bytes: number; scanned: number; zero: number; checksums?: Uint32Array }>;
  /**
   * The pages dumpPages would select, from the pagemap alone (nothing read
   * from the process; pages mapping the kernel's zero page left out):
   * (vaddr, nPages, regionIndex) triples.
   */
  scanPages(pid: number, pagemapFd: number, regions: BigUint64Array, usePagemapScan?: boolean): { runs: BigUint64Array; scanned: number; zero: number };
  /** kcmp(2): 0 equal, 1/2 ordered, 3 different. */
  kcmp(pid1: number, pid2: number, type: number, idx1: bigint | number, idx2: bigint | number): number;
  pidfdOpen(pid: number, flags?: number): number;
  pidfdGetfd(pidfd: number, targetFd: number): number;
  /** Data segments of a shmem file below `size`: (offset, length) pairs, page aligned (SEEK_DATA/SEEK_HOLE). */
  shmemDataRuns(fd: number, size: bigint): BigUint64Array;
  /** memfd_create(name, flags | MFD_CLOEXEC) in this process. */
  memfdCreate(name: string, flags: number): number;
  memfdGetSeals(fd: number): number;
  memfdAddSeals(fd: number, seals: number): void;
}

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

/**
 * A page checksum verification running on a native thread of its own
 * (RestoreVerifyJob): the chunks of a pages file that (address, offset,
 * length) triples touch, flagged in `verified` as restoreWritePages does.
 */
export interface RestoreVerifyJobHandle {
  /** Waits for it; throws EBADMSG (chunk/stored/computed set) on a mismatch. */
  join(): void;
  /** Stops it early (joined); join() then returns without a verdict. */
  cancel(): void;
}

export interface RestoreNative {
  /**
   * clone3 with set_tid = pid (or, with newPidns, as pid 1 of a new pid
   * namespace) from the calling thread; the child drops fds >= 3, defaults
   * every signal, PTRACE_TRACEMEs and execs `stubPath`. Returns once the
   * child is stopped at its exec trap with EXITKILL|TRACECLONE|TRACEFORK set. sibling: CLONE_PARENT (a child of our parent), seized instead of TRACEME.
   * Throws EEXIST when the pid is taken.
   */
  restoreSpawnStub(pid: number, stubPath: string, newPidns?: boolean, sibling?: boolean, nsFlags?: number): number;
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
  /**
   * With sums/chunkSize/verified: each chunk touched is CRC32C-checked right before it is written
   * (once per file: `verified` flags are shared between calls); a mismatch throws EBADMSG with chunk/stored/computed.
   */
  /** CRC32C of each chunkSize bytes of the file (the last chunk may be short), hardware CRC32C. */
  checksumFile(path: string, chunkSize: number): Uint32Array;
  /**
   * With uffd (a userfaultfd of `pid` with the target ranges registered MISSING): UFFDIO_COPY instead of process_vm_writev.
   * threads: workers sharing the fill (default 1), all stopped when it returns or throws.
   */
  restoreWritePages(pid: number, pagesPath: string, ranges: BigUint64Array, sums?: Uint32Array, chunkSize?: number, verified?: Uint8Array, uffd?: number, threads?: number): bigint;
  /**
   * Reads a byte of each page (process_vm_readv, on a worker thread): in a
   * lazily restored process, resolves once its lazy-pages daemon has served
   * every one of them. Rejects with the errno of a failed read.
   */
  restoreFaultIn(pid: number, pages: BigUint64Array): Promise<void>;
  /** pidfd_open + pidfd_getfd: a copy of another process's fd, O_CLOEXEC. */
  restorePidfdGetfd(pid: number, fd: number): number;
  restoreCloseFd(fd: number): void;
  /** UFFDIO_API with `features`, then UFFDIO_REGISTER (MISSING) of each (start, length) pair; returns the granted features. */
  restoreUffdSetup(uffd: number, features: bigint, ranges: BigUint64Array): bigint;
  /** Connects to a lazy-pages daemon's UNIX socket; returns the socket fd. */
  restoreLazyConnect(path: string): number;
  /** Lazy socket message A (pid, then the uffd by SCM_RIGHTS) or, with uffd < 0, message B (-pid). */
  restoreLazySendTask(sock: number, pid: number, uffd: number): void;
  /** The lazy-pages daemon's pid (SO_PEERCRED of the connected socket). */
  restoreLazyPeerPid(sock: number): number;
  /** Lazy socket message C ("RSTF"). */
  restoreLazySendFinish(sock: number): void;
  /**
   * One acknowledgement of our lazy-pages daemon ("LRAK", pid, errno; 0 =
   * adopted), waiting at most `timeoutMs`; undefined when none came. Throws
   * ECONNRESET at EOF, EPROTO for anything else.
   */
  restoreLazyReadAck(sock: number, timeoutMs: number): { pid: number; errno: number } | undefined;
  /** "LRAQ" (our extension, only to our daemon): acknowledge each pid from now on. */
  restoreLazyAskAcks(sock: number): void;
  RestoreChildWaiter: new (pid: number, onExit: (info: RestoreExitInfo) => void) => RestoreChildWaiterHandle;
  RestoreVerifyJob: new (pagesPath: string, ranges: BigUint64Array, sums: Uint32Array, chunkSize: number, verified: Uint8Array) => RestoreVerifyJobHandle;
}

//
// ---------------------------------------------------------------------------
// native/uffd/lazysock.cc: the receiving end of CRIU's lazy-pages socket
// (owner: lazy work)
// ---------------------------------------------------------------------------
//
/**
 * One message from the lazy-pages socket listener thread. Connections are
 * independent: `conn` numbers them (from 1) and `peer` is the connecting
 * process's pid (SO_PEERCRED as seen here; 0 when not visible).
 */
export type LazySocketEvent =
  /** A peer with an allowed uid connected. */
  | { type: 'connected'; conn: number; peer: number; pid: number; uid: number }
  /** A peer with another uid (not root) was refused and disconnected. */
  | { type: 'refused'; conn: number; peer: number; pid: number; uid: number }
  /**
   * Message A's pid, before its userfaultfd is received (listener made with
   * holdAnnounced): the connection waits until proceed(conn).
   */
  | { type: 'announce'; conn: number; peer: number; pid: number }
  /** Message A: a live process's virtual pid and its userfaultfd (now owned by the receiver). */
  | { type: 'task'; conn: number; peer: number; pid: number; fd: number }
  /** Message B: a zombie (the pid is positive here). */
  | { type: 'zombie'; conn: number; peer: number; pid: number }
  /** Message C: restore finished ("RSTF"). */
  | { type: 'finished'; conn: number; peer: number }
  /** The peer closed the connection between messages. */
  | { type: 'eof'; conn: number; peer: number }
  /**
   * The connection broke the protocol (or failed): it is closed, every fd it
   * sent with the bad message too. `pid`: the pid it had announced, if any;
   * `code`: an errno name (EPROTO malformed, ECONNRESET hung up mid-message, ...).
   */
  | { type: 'protocol'; conn: number; peer: number; pid?: number; code: string; detail: string }
  /** The listener itself failed (poll/accept). */
  | { type: 'error'; error: Error & { code: string; errno: number; syscall: string } };

export interface LazySocketListenerHandle {
  readonly path: string;
  /** Stops the listener thread (flag, wake, join), closes its fds and unlinks the socket. Idempotent. */
  close(): void;
  /** After an 'announce': receive that connection's userfaultfd (and go on reading it). */
  proceed(conn: number): void;
  /** Sends the peer on `conn` "LRAK", pid, errno: `pid` was adopted (0) or refused (errno). */
  ack(conn: number, pid: number, errno: number): void;
}

export interface LazySocketNative {
  /**
   * Binds and listens on `path` (a stale socket file is replaced) and starts
   * the listener thread. Peers whose uid is neither `allowUid` nor 0 are refused.
   * `holdAnnounced`: post each announced pid ('announce') and receive its
   * userfaultfd only after proceed(conn).
   */
  LazySocketListener: new (path: string, allowUid: number, onEvent: (ev: LazySocketEvent) => void, holdAnnounced?: boolean) => LazySocketListenerHandle;
}

//
// ---------------------------------------------------------------------------
// native/inject/pagescan.cc: write tracking for incremental dumps
// (owner: incremental work)
// ---------------------------------------------------------------------------
//
export interface IncrementalNative {
  /**
   * PAGEMAP_SCAN over [start, end) of an open /proc/PID/pagemap; returns
   * (start, end, categories) triples. flags: PM_SCAN_* bits.
   */
  pagemapScan(pagemapFd: number, start: bigint, end: bigint, flags: bigint, categoryMask: bigint, returnMask: bigint): BigUint64Array;
}

//
// ---------------------------------------------------------------------------
// native/inject/fds.cc: fds that are not plain files (plugin/dump/fds, plugin/restore/fds)
// ---------------------------------------------------------------------------
//
/** One unix socket of this network namespace (sock_diag). */
export interface UnixDiagEntry {
  ino: number;
  type: number;
  state: number;
  /** Inode of the peer socket, 0 if none. */
  peer: number;
  /** Bound address (sun_path bytes; abstract names start with NUL). */
  name?: Buffer;
  /** Receive queue: bytes (or, listening, pending connections). */
  rqlen: number;
  /** Send queue (or, listening, the backlog). */
  wqlen: number;
  /** Listening: inodes of the connections waiting to be accepted. */
  icons: number[];
  shutdown: number;
  vfsIno?: number;
  vfsDev?: number;
}

export interface FdsNative {
  /** One datagram with these fds (SCM_RIGHTS) on a connected unix socket. */
  fdsSend(sock: number, fds: number[]): void;
  /** A pipe's buffer size and queued bytes (tee: the pipe keeps them). */
  pipePeek(fd: number): { size: number; data: Buffer };
  fdFcntl(fd: number, cmd: number, arg: number): number;
  /** linkat(from, to, AT_SYMLINK_FOLLOW): a new name for the file a /proc magic link points at. */
  linkFollow(from: string, to: string): void;
  /** send(MSG_DONTWAIT | MSG_NOSIGNAL); returns bytes sent. */
  sendNoWait(fd: number, data: Buffer): number;
  getsockoptInt(fd: number, level: number, name: number): number;
  getsockoptTimeval(fd: number, name: number): [number, number];
  /** Every queued message (MSG_PEEK + SO_PEEK_OFF, the queue is kept); EBADMSG if one carries fds. */
  sockPeek(fd: number, maxBytes: number): Buffer[];
  /** The same, keeping SCM_RIGHTS: each message with the fds the peek installed here (close-on-exec; the caller closes them). */
  sockPeek(fd: number, maxBytes: number, rights: true): { data: Buffer; fds: number[] }[];
  /** One sendmsg(MSG_DONTWAIT | MSG_NOSIGNAL) of data with fds attached (SCM_RIGHTS); bytes sent. */
  sendFdsNoWait(fd: number, data: Buffer, fds: number[]): number;
  unixDiag(): UnixDiagEntry[];
}

/** native/net/unix.cc: generic options of a unix socket and the file its path name is bound to. */
export interface UnixSockOpts {
  sndbuf: number; rcvbuf: number;
  sndTmoSec: number; sndTmoUsec: number; rcvTmoSec: number; rcvTmoUsec: number;
  passcred: boolean; passsec: boolean; priority: number; rcvlowat: number; mark: number;
}

export interface UnixSockState extends UnixSockOpts {
  /** SO_PEEK_OFF (-1: off). */
  peekOff: number;
  /** The socket's bound file (SIOCUNIXFILE): path as the dumper sees it, unlinked or not. */
  file?: { path: string; deleted: boolean; mode?: number; uid?: number; gid?: number };
}

export interface UnixNative {
  unixSockDump(fd: number): UnixSockState;
  unixSockOptsRestore(fd: number, opts: UnixSockOpts): void;
}

//
// ---------------------------------------------------------------------------
// native/net: inet sockets and TCP repair (inet.cc), epoll targets and file
// handles (events.cc)
// ---------------------------------------------------------------------------
//
/**
 * The socket options inetSockDump reads when the kernel has them and
 * inetSockRestore applies when set (sk_opts_entry and the ip/ipv6/tcp ones).
 */
export interface InetSockOptions {
  v6only?: boolean;
  boundDev?: string;
  bufLock?: number;
  priority?: number;
  rcvlowat?: number;
  mark?: number;
  passcred?: boolean;
  passsec?: boolean;
  dontroute?: boolean;
  noCheck?: boolean;
  broadcast?: boolean;
  keepalive?: boolean;
  oobinline?: boolean;
  linger?: number;
  freebind?: boolean;
  pktinfo?: boolean;
  tos?: number;
  ttl?: number;
  nodelay?: boolean;
  cork?: boolean;
  keepcnt?: number;
  keepidle?: number;
  keepintvl?: number;
}

/** The socket options inetSockRestore always applies (read from every inet socket). */
export interface InetSockBaseOptions {
  sndbuf: number;
  rcvbuf: number;
  sndTmoSec: number;
  sndTmoUsec: number;
  rcvTmoSec: number;
  rcvTmoUsec: number;
  reuseaddr: boolean;
  reuseport: boolean;
}

/** What inetSockDump reads from a socket (a duplicate of the process's). */
export interface InetSockState extends InetSockOptions, Partial<InetSockBaseOptions> {
  family: number;
  type: number;
  proto: number;
  /** Only for AF_INET/AF_INET6 sockets: */
  src?: Buffer;
  srcPort?: number;
  dst?: Buffer;
  dstPort?: number;
  /** TCP state (TCP_INFO); UDP: 1 connected, 7 not. */
  state?: number;
  backlog?: number;
  /** Connections waiting in a listening socket's accept queue. */
  acceptQueue?: number;
  inq?: number;
  outq?: number;
  udpCork?: boolean;
  filterLen?: number;
}

/** An established TCP connection read in repair mode (soccr's libsoccr_sk_data + queues). */
export interface TcpRepairState {
  state: number;
  inqLen: number;
  inqSeq: number;
  outqLen: number;
  outqSeq: number;
  unsqLen: number;
  optMask: number;
  sndWscale: number;
  rcvWscale: number;
  mssClamp: number;
  timestamp?: number;
  window?: { sndWl1: number; sndWnd: number; maxWindow: number; rcvWnd: number; rcvWup: number };
  inqData: Buffer;
  outqData: Buffer;
}

/** What inetSockRestore applies to a fresh socket. */
export interface InetSockSpec extends InetSockOptions, InetSockBaseOptions {
  family: number;
  proto: number;
  state: number;
  src: Buffer;
  srcPort: number;
  dst: Buffer;
  dstPort: number;
  backlog: number;
  /** An established connection: restored with TCP_REPAIR. */
  stream?: {
    inqLen: number; inqSeq: number; outqLen: number; outqSeq: number; unsqLen: number;
    optMask: number; sndWscale: number; rcvWscale: number; mssClamp: number; timestamp?: number;
    sndWl1?: number; sndWnd?: number; maxWindow?: number; rcvWnd?: number; rcvWup?: number;
  };
  inqData?: Buffer;
  outqData?: Buffer;
}

export interface NetNative {
  inetSockDump(fd: number): InetSockState;
  /** Turns TCP_REPAIR on and leaves it on; reads the connection's state and queues. */
  tcpRepairDump(fd: number): TcpRepairState;
  /** TCP_REPAIR: 1 on, 0 off, -1 off without a window probe. */
  tcpRepair(fd: number, value: number): void;
  inetSockRestore(fd: number, spec: InetSockSpec): void;
  /** kcmp(pid, pid, KCMP_EPOLL_TFD, fd, {epfd, tfd, toff}): 0 when the file at fd is that epoll target. */
  kcmpEpollTfd(pid: number, fd: number, epfd: number, tfd: number, toff: number): number;
  /** open_by_handle_at(mountFd, handle, O_PATH|O_CLOEXEC). */
  openByHandle(mountFd: number, type: number, handle: Buffer): number;
}

//
// ---------------------------------------------------------------------------
// native/rpc: CRIU's RPC socket (criu swrk FD / criu service; plugin/rpc)
// ---------------------------------------------------------------------------
//
export interface RpcNative {
  /** AF_UNIX SOCK_SEQPACKET socketpair, both ends CLOEXEC. */
  seqpacketPair(): [number, number];
  /** One record (never cut: its length is peeked first); null when the peer closed. timeoutMs -1: no bound. */
  seqpacketRecv(fd: number, timeoutMs: number): Promise<Buffer | null>;
  /** One record, with passFd in SCM_RIGHTS when given. */
  seqpacketSend(fd: number, data: Buffer, passFd?: number): void;
  /** Listening AF_UNIX SOCK_SEQPACKET socket at path (CLOEXEC). */
  seqpacketListen(path: string): number;
  /** Accepts one connection (CLOEXEC). */
  seqpacketAccept(listenFd: number, timeoutMs: number): Promise<number>;
  /** SO_PEERCRED of a connected unix socket. */
  peerCred(fd: number): { pid: number; uid: number; gid: number };
  /** SO_TYPE of a socket (5 = SOCK_SEQPACKET). */
  socketType(fd: number): number;
  setCloexec(fd: number, on?: boolean): void;
}

//
// ---------------------------------------------------------------------------
// native/ipc: SysV IPC objects of an IPC namespace (sysvipc.cc); each call
// runs on a thread of its own that joins the namespace of nsFd
// ---------------------------------------------------------------------------
//
/** ipc_perm as CRIU's ipc_desc_entry records it. */
export interface SysvIpcDesc {
  id: number; key: number; uid: number; gid: number; cuid: number; cgid: number; mode: number;
}

export interface SysvShmSegment {
  desc: SysvIpcDesc;
  size: bigint;
  nattch: number;
  /** Its data pages (page-aligned offsets): pages in its page cache. */
  runs: { off: bigint; data: Buffer }[];
}

export interface SysvSemSet {
  desc: SysvIpcDesc;
  values: number[];
}

export interface SysvMsgQueue {
  desc: SysvIpcDesc;
  qbytes: number;
  messages: { mtype: bigint; data: Buffer }[];
}

export interface SysvIpcState {
  /** "kernel/msgmax" ... -> the value as /proc/sys shows it (absent files are left out). */
  sysctls: Record<string, string>;
  shm: SysvShmSegment[];
  sem: SysvSemSet[];
  msg: SysvMsgQueue[];
}

export interface SysvIpcSpec {
  /** Written first, in order (EACCES skipped, as CRIU). */
  sysctls: [string, string][];
  shm: { desc: SysvIpcDesc; size: bigint; runs: { off: bigint; data: Buffer }[] }[];
  msg: { desc: SysvIpcDesc; qbytes: number; messages: { mtype: bigint; data: Buffer }[] }[];
  sem: { desc: SysvIpcDesc; values: number[] }[];
}

export interface SysvIpcNative {
  sysvIpcDump(nsFd: number): SysvIpcState;
  sysvIpcRestore(nsFd: number, spec: SysvIpcSpec): void;
  sysvShmRemove(nsFd: number, ids: number[]): void;
}

// native/ns: reads in another process's namespace; mknod
// ---------------------------------------------------------------------------
//
/** One step of nsRun: mount(a, b, c, flags, d); umount2(a, flags); chdir(a); pivot_root(a, b); sethostname(a); setdomainname(a). */
export interface NsStep {
  sys: 'mount' | 'umount2' | 'chdir' | 'pivot_root' | 'sethostname' | 'setdomainname';
  what: string;
  a?: string;
  b?: string;
  c?: string;
  d?: string;
  flags?: number;
}

export interface NsNative {
  /** Each file's contents, read by a thread that joined pid's namespace of that kind (setns), e.g. /proc/sys/kernel/hostname for uts. */
  nsReadFiles(pid: number, kind: 'uts' | 'ipc' | 'net', paths: readonly string[]): string[];
  /**
   * Runs the steps in order on a thread that joined pid's namespaces of the
   * given kinds (its fs struct unshared first, as joining a mount namespace
   * needs); throws at the first failing step, named by its `what`.
   */
  nsRun(pid: number, kinds: readonly ('uts' | 'ipc' | 'net' | 'mnt' | 'cgroup')[], steps: readonly NsStep[]): void;
  /** mknod(2): mode includes the file type bits (S_IFCHR, S_IFBLK, S_IFIFO). */
  mknod(path: string, mode: number, major: number, minor: number): void;
  /** mount(2) without flags (data "" for none): a cgroup hierarchy the command mounts for itself. */
  mountFs(source: string, target: string, fstype: string, data: string): void;
  /** umount2(target, MNT_DETACH). */
  umountDetach(target: string): void;
}

export interface NativeAddon extends UffdNative, EngineNative, InjectNative, RestoreNative, LazySocketNative, IncrementalNative, RpcNative, FdsNative, NetNative, UnixNative, NsNative, SysvIpcNative {}
