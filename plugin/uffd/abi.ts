// Typed wrapper over the userfaultfd ABI (native/uffd). Arguments are
// checked here (alignment, ranges, fd) and TypeError/RangeError thrown
// before anything reaches the kernel; kernel failures arrive as SystemError
// with code/errno/syscall (and `progress` for partially done operations).
// Constants mirror the kernel's uapi/linux/userfaultfd.h (6.18).
import { closeSync } from 'node:fs';
import { PAGE } from '../images/memory.js';
import { O_CLOEXEC } from '../inject/constants.js';
import { addon } from '../native/addon.js';

/** userfaultfd(2) flags (O_CLOEXEC is open(2)'s, from inject/constants). */
export { O_CLOEXEC };
export const O_NONBLOCK = 0o4000;
export const UFFD_USER_MODE_ONLY = 1;

export const UFFD_API = 0xaan;

/** UFFDIO_API features (bit numbers as in the kernel). */
export const UffdFeature = {
  PAGEFAULT_FLAG_WP: 1n << 0n,
  EVENT_FORK: 1n << 1n,
  EVENT_REMAP: 1n << 2n,
  EVENT_REMOVE: 1n << 3n,
  MISSING_HUGETLBFS: 1n << 4n,
  MISSING_SHMEM: 1n << 5n,
  EVENT_UNMAP: 1n << 6n,
  SIGBUS: 1n << 7n,
  THREAD_ID: 1n << 8n,
  MINOR_HUGETLBFS: 1n << 9n,
  MINOR_SHMEM: 1n << 10n,
  EXACT_ADDRESS: 1n << 11n,
  WP_HUGETLBFS_SHMEM: 1n << 12n,
  WP_UNPOPULATED: 1n << 13n,
  POISON: 1n << 14n,
  WP_ASYNC: 1n << 15n,
  MOVE: 1n << 16n,
} as const;

/** The four events a non-cooperative (restore) handler needs, as CRIU requires. */
export const NONCOOP_FEATURES: bigint =
  UffdFeature.EVENT_FORK | UffdFeature.EVENT_REMAP | UffdFeature.EVENT_REMOVE | UffdFeature.EVENT_UNMAP;

/** Ioctl numbers (_UFFDIO_*): bit i of the `ioctls` masks returned by API/REGISTER. */
export const UffdIoctl = {
  REGISTER: 0x00,
  UNREGISTER: 0x01,
  WAKE: 0x02,
  COPY: 0x03,
  ZEROPAGE: 0x04,
  MOVE: 0x05,
  WRITEPROTECT: 0x06,
  CONTINUE: 0x07,
  POISON: 0x08,
  API: 0x3f,
} as const;

export const RegisterMode = { MISSING: 1n << 0n, WP: 1n << 1n, MINOR: 1n << 2n } as const;
export const CopyMode = { DONTWAKE: 1n << 0n, WP: 1n << 1n } as const;
export const ZeropageMode = { DONTWAKE: 1n << 0n } as const;
export const WriteprotectMode = { WP: 1n << 0n, DONTWAKE: 1n << 1n } as const;
export const ContinueMode = { DONTWAKE: 1n << 0n, WP: 1n << 1n } as const;
export const MoveMode = { DONTWAKE: 1n << 0n, ALLOW_SRC_HOLES: 1n << 1n } as const;
export const PoisonMode = { DONTWAKE: 1n << 0n } as const;

/** Pagefault message flags. */
export const PagefaultFlag = { WRITE: 1n << 0n, WP: 1n << 1n, MINOR: 1n << 2n } as const;

/** Event codes of struct uffd_msg. */
export const UffdEvent = { PAGEFAULT: 0x12, FORK: 0x13, REMAP: 0x14, REMOVE: 0x15, UNMAP: 0x16 } as const;

export type UffdMsg =
  | { event: 'pagefault'; flags: bigint; address: bigint; ptid: number }
  | { event: 'fork'; ufd: number }
  | { event: 'remap'; from: bigint; to: bigint; len: bigint }
  | { event: 'remove'; start: bigint; end: bigint }
  | { event: 'unmap'; start: bigint; end: bigint }
  | { event: 'unknown'; code: number };

export interface ApiResult {
  api: bigint;
  features: bigint;
  ioctls: bigint;
}

const U64_MAX = (1n << 64n) - 1n;

export function checkFd(fd: number, name = 'fd'): void {
  if (!Number.isInteger(fd)) throw new TypeError(`${name} must be an integer file descriptor`);
  if (fd < 0 || fd > 0x7fffffff) throw new RangeError(`${name} must be a file descriptor >= 0 (got ${fd})`);
}

function checkU64(v: bigint, name: string): void {
  if (typeof v !== 'bigint') throw new TypeError(`${name} must be a bigint`);
  if (v < 0n || v > U64_MAX) throw new RangeError(`${name} out of 64-bit range`);
}

/** Page-aligned non-empty [start, start+len) below 2^64. */
export function checkRange(start: bigint, len: bigint, what = 'range'): void {
  checkU64(start, `${what} start`);
  checkU64(len, `${what} length`);
  if (start % PAGE !== 0n) throw new RangeError(`${what} start 0x${start.toString(16)} is not page aligned`);
  if (len === 0n || len % PAGE !== 0n) throw new RangeError(`${what} length 0x${len.toString(16)} must be a non-zero multiple of the page size`);
  if (start + len > U64_MAX) throw new RangeError(`${what} wraps around`);
}

function checkMode(mode: bigint, allowed: bigint, what: string): void {
  checkU64(mode, `${what} mode`);
  if ((mode & ~allowed) !== 0n) throw new RangeError(`${what} mode 0x${mode.toString(16)} has unknown bits`);
}

/** userfaultfd(2), falling back to /dev/userfaultfd when the syscall is not allowed. */
export function uffdCreate(opts: { flags?: number; devFallback?: boolean } = {}): number {
  const flags = opts.flags ?? (O_CLOEXEC | O_NONBLOCK);
  if (!Number.isInteger(flags) || (flags & ~(O_CLOEXEC | O_NONBLOCK | UFFD_USER_MODE_ONLY)) !== 0) {
    throw new RangeError(`userfaultfd flags 0x${flags.toString(16)}: only O_CLOEXEC, O_NONBLOCK, UFFD_USER_MODE_ONLY`);
  }
  return addon.uffdCreate(flags, opts.devFallback ?? true);
}

/** UFFDIO_API: enables `features` (must be a subset of what the kernel offers). */
export function uffdApi(fd: number, features: bigint): ApiResult {
  checkFd(fd);
  checkU64(features, 'features');
  return addon.uffdApi(fd, features);
}

/**
 * What the kernel offers: probes on a throw-away uffd (a uffd accepts
 * UFFDIO_API only once).
 */
export function uffdProbeFeatures(): ApiResult {
  const fd = uffdCreate();
  try {
    return uffdApi(fd, 0n);
  } finally {
    closeFdQuiet(fd);
  }
}

/** Creates a uffd and negotiates the wanted features (intersected with what the kernel offers). */
export function uffdOpen(wanted: bigint, opts: { flags?: number; require?: bigint } = {}): { fd: number } & ApiResult {
  const offered = uffdProbeFeatures().features;
  const require = opts.require ?? 0n;
  if ((offered & require) !== require) {
    throw new RangeError(`kernel lacks userfaultfd features 0x${(require & ~offered).toString(16)}`);
  }
  const fd = uffdCreate(opts.flags !== undefined ? { flags: opts.flags } : {});
  try {
    return { fd, ...uffdApi(fd, wanted & offered) };
  } catch (e) {
    closeFdQuiet(fd);
    throw e;
  }
}

export function uffdRegister(fd: number, start: bigint, len: bigint, mode: bigint): bigint {
  checkFd(fd);
  checkRange(start, len, 'register');
  checkMode(mode, RegisterMode.MISSING | RegisterMode.WP | RegisterMode.MINOR, 'register');
  if (mode === 0n) throw new RangeError('register mode must name MISSING, WP or MINOR');
  return addon.uffdRegister(fd, start, len, mode);
}

export function uffdUnregister(fd: number, start: bigint, len: bigint): void {
  checkFd(fd);
  checkRange(start, len, 'unregister');
  addon.uffdUnregister(fd, start, len);
}

/** UFFDIO_COPY of the whole buffer to dst; returns bytes copied. */
export function uffdCopy(fd: number, dst: bigint, data: Buffer, mode = 0n): bigint {
  checkFd(fd);
  if (!Buffer.isBuffer(data)) throw new TypeError('data must be a Buffer');
  checkRange(dst, BigInt(data.length), 'copy');
  checkMode(mode, CopyMode.DONTWAKE | CopyMode.WP, 'copy');
  return addon.uffdCopy(fd, dst, data, mode);
}

export function uffdZeropage(fd: number, start: bigint, len: bigint, mode = 0n): bigint {
  checkFd(fd);
  checkRange(start, len, 'zeropage');
  checkMode(mode, ZeropageMode.DONTWAKE, 'zeropage');
  return addon.uffdZeropage(fd, start, len, mode);
}

export function uffdWake(fd: number, start: bigint, len: bigint): void {
  checkFd(fd);
  checkRange(start, len, 'wake');
  addon.uffdWake(fd, start, len);
}

export function uffdWriteprotect(fd: number, start: bigint, len: bigint, mode: bigint): void {
  checkFd(fd);
  checkRange(start, len, 'writeprotect');
  checkMode(mode, WriteprotectMode.WP | WriteprotectMode.DONTWAKE, 'writeprotect');
  addon.uffdWriteprotect(fd, start, len, mode);
}

export function uffdContinue(fd: number, start: bigint, len: bigint, mode = 0n): bigint {
  checkFd(fd);
  checkRange(start, len, 'continue');
  checkMode(mode, ContinueMode.DONTWAKE | ContinueMode.WP, 'continue');
  return addon.uffdContinue(fd, start, len, mode);
}

export function uffdMove(fd: number, dst: bigint, src: bigint, len: bigint, mode = 0n): bigint {
  checkFd(fd);
  checkRange(dst, len, 'move destination');
  checkRange(src, len, 'move source');
  checkMode(mode, MoveMode.DONTWAKE | MoveMode.ALLOW_SRC_HOLES, 'move');
  return addon.uffdMove(fd, dst, src, len, mode);
}

export function uffdPoison(fd: number, start: bigint, len: bigint, mode = 0n): bigint {
  checkFd(fd);
  checkRange(start, len, 'poison');
  checkMode(mode, PoisonMode.DONTWAKE, 'poison');
  return addon.uffdPoison(fd, start, len, mode);
}

/** Non-blocking read of pending messages ([] when none). */
export function uffdRead(fd: number, max = 64): UffdMsg[] {
  checkFd(fd);
  if (!Number.isInteger(max) || max < 1 || max > 4096) throw new RangeError('max must be 1..4096');
  return addon.uffdRead(fd, max);
}

/** Blocks up to timeoutMs for a message; for tests and tools, not for daemons. */
export function uffdPoll(fd: number, timeoutMs: number): boolean {
  checkFd(fd);
  if (!Number.isInteger(timeoutMs) || timeoutMs < -1) throw new RangeError('timeoutMs must be an integer >= -1');
  return addon.uffdPoll(fd, timeoutMs);
}

/** Listening unix socket for receiving fds (SCM_RIGHTS). */
export function unixListen(path: string): number {
  if (typeof path !== 'string' || path.length === 0) throw new TypeError('path must be a non-empty string');
  if (Buffer.byteLength(path) > 107) throw new RangeError(`socket path too long (max 107 bytes): ${path}`);
  return addon.unixListen(path);
}

/** Accepts one connection on listenFd and receives one message with its fds. */
export function acceptRecvFds(listenFd: number, timeoutMs: number, maxBytes = 65536): Promise<{ conn: number; data: Buffer; fds: number[] }> {
  checkFd(listenFd, 'listenFd');
  if (!Number.isInteger(timeoutMs) || timeoutMs < 0) throw new RangeError('timeoutMs must be an integer >= 0');
  return addon.acceptRecvFds(listenFd, timeoutMs, maxBytes);
}

function closeFdQuiet(fd: number): void {
  try {
    closeSync(fd);
  } catch {
    /* already closed */
  }
}
