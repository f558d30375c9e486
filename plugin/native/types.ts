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
  /** pidfd_open(pid, 0): CLOEXEC fd, readable when the process has exited. */
  pidfdOpen(pid: number): number;
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
/** Event as delivered by the native engine (plugin/uffd/engine.ts re-types it). */
export type RawEngineEvent =
  | { type: 'fork'; proc: number; child: number }
  | { type: 'remap'; proc: number; from: bigint; to: bigint; len: bigint }
  | { type: 'remove' | 'unmap'; proc: number; start: bigint; end: bigint }
  | { type: 'need'; proc: number; addr: bigint; imageAddr: bigint; len: bigint }
  | { type: 'prefetched'; proc: number; start: bigint; len: bigint; copied: bigint }
  | { type: 'complete' | 'exit'; proc: number }
  | { type: 'error'; proc: number; code: string; errno: number; syscall: string; message: string };

export interface RawProcStats {
  proc: number;
  state: 'live' | 'exited' | 'failed' | 'released';
  lazyBytes: bigint;
  faults: bigint; served: bigint; ignored: bigint; unexpected: bigint;
  zeroPages: bigint; copiedPages: bigint; pushedPages: bigint; suppliedPages: bigint;
  bytes: bigint; needs: bigint; eagain: bigint; eexist: bigint; enoent: bigint;
  /** Fault service time histogram: index i counts [2^i, 2^(i+1)) ns. */
  latencyLog2Ns: number[];
}

export interface NativeFaultEngineHandle {
  addSource(path: string): { id: number; size: bigint };
  /** ranges: [start, end, kind (0 file, 1 zero, 2 remote), source, offset|imageAddr] per range. */
  adopt(uffd: number, ranges: BigUint64Array, pidfd: number): number;
  supply(proc: number, imageAddr: bigint, data: Buffer): bigint;
  prefetch(proc: number, start: bigint, len: bigint): void;
  lazyRanges(proc: number): BigUint64Array;
  lazyBytes(proc: number): bigint;
  release(proc: number): void;
  kill(proc: number): void;
  stats(): { procs: RawProcStats[]; threadCpuNs: bigint[] };
  close(): void;
}

export interface EngineNative {
  NativeFaultEngine: new (
    threads: number,
    faultAroundPages: bigint,
    spinMicros: bigint,
    onEvents: (events: RawEngineEvent[]) => void,
  ) => NativeFaultEngineHandle;
}

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
// eslint-disable-next-line @typescript-eslint/no-empty-object-type
export interface RestoreNative {}

//
// ---------------------------------------------------------------------------
//
export interface NativeAddon extends UffdNative, EngineNative, InjectNative, RestoreNative {}
