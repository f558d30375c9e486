// Remote memory of another process: process_vm_readv/writev (batched
// iovecs), /proc/PID/mem (reaches pages without read/write permission, as
// the tracer), /proc/PID/pagemap ranges, and pidfd_open/pidfd_getfd.
import { Errno, sysError } from '../errors.js';
import { closeSync, openSync } from 'node:fs';
import { PAGE_SIZE } from '../images/memory.js';
import { addon } from '../native/addon.js';
import type { NativeCollectedPages } from '../native/types.js';

/** A remote range. */
export interface RemoteRange {
  addr: bigint;
  len: number;
}

function pairs(ranges: readonly RemoteRange[]): BigUint64Array {
  const a = new BigUint64Array(ranges.length * 2);
  ranges.forEach((r, i) => {
    a[2 * i] = r.addr;
    a[2 * i + 1] = BigInt(r.len);
  });
  return a;
}

/** Reads `len` bytes at `addr`; throws EFAULT if not all of it is readable. */
export function readMemory(pid: number, addr: bigint, len: number): Buffer {
  const buf = Buffer.allocUnsafe(len);
  const got = addon.processVmReadv(pid, buf, new BigUint64Array([addr, BigInt(len)]));
  if (got !== len) throw sysError(Errno.EFAULT, 'process_vm_readv', `pid ${pid}: read ${got} of ${len} bytes at 0x${addr.toString(16)}`);
  return buf;
}

/**
 * Reads many ranges into one buffer back to back (batches of 1024 iovecs).
 * Returns the bytes read; short if a range was unreadable (the kernel stops
 * at the first bad page).
 */
export function readMemoryv(pid: number, ranges: readonly RemoteRange[], into?: Buffer): { buffer: Buffer; bytes: number } {
  const total = ranges.reduce((s, r) => s + r.len, 0);
  const buffer = into ?? Buffer.allocUnsafe(total);
  return { buffer, bytes: addon.processVmReadv(pid, buffer, pairs(ranges)) };
}

/** Writes `data` at `addr` with process_vm_writev (EFAULT on non-writable pages: use ProcMem). */
export function writeMemory(pid: number, addr: bigint, data: Buffer): void {
  const n = addon.processVmWritev(pid, data, new BigUint64Array([addr, BigInt(data.length)]));
  if (n !== data.length) throw sysError(Errno.EFAULT, 'process_vm_writev', `pid ${pid}: wrote ${n} of ${data.length} bytes at 0x${addr.toString(16)}`);
}

/** Writes consecutive slices of `data` to many ranges; returns bytes written. */
export function writeMemoryv(pid: number, data: Buffer, ranges: readonly RemoteRange[]): number {
  return addon.processVmWritev(pid, data, pairs(ranges));
}

/**
 * /proc/PID/mem opened once; pread/pwrite at remote addresses. As the
 * tracer (or parent with ptrace access) this reads and writes pages whose
 * protection forbids it (FOLL_FORCE), e.g. read-only private pages.
 */
export class ProcMem {
  readonly fd: number;
  constructor(readonly pid: number, writable = false) {
    this.fd = openSync(`/proc/${pid}/mem`, writable ? 'r+' : 'r');
  }
  read(addr: bigint, len: number, into: Buffer = Buffer.allocUnsafe(len)): Buffer {
    const n = addon.preadAt(this.fd, into, addr, len);
    if (n !== len) throw sysError(Errno.EIO, 'pread', `/proc/${this.pid}/mem: ${n} of ${len} bytes at 0x${addr.toString(16)}`);
    return into;
  }
  write(addr: bigint, data: Buffer): void {
    const n = addon.pwriteAt(this.fd, data, addr);
    if (n !== data.length) throw sysError(Errno.EIO, 'pwrite', `/proc/${this.pid}/mem: ${n} of ${data.length} bytes at 0x${addr.toString(16)}`);
  }
  close(): void {
    closeSync(this.fd);
  }
}

/** Bits of a /proc/PID/pagemap entry. */
export const PM = {
  PRESENT: 1n << 63n,
  SWAPPED: 1n << 62n,
  FILE_OR_SHARED: 1n << 61n,
  EXCLUSIVE: 1n << 56n,
  SOFT_DIRTY: 1n << 55n,
  PFN_MASK: (1n << 55n) - 1n,
} as const;

/** /proc/PID/pagemap opened once; one 64-bit entry per page. */
export class Pagemap {
  readonly fd: number;
  constructor(readonly pid: number) {
    this.fd = openSync(`/proc/${pid}/pagemap`, 'r');
  }
  read(start: bigint, nPages: number): BigUint64Array {
    return addon.readPagemap(this.fd, start, nPages);
  }
  close(): void {
    closeSync(this.fd);
  }
}

/** Reads the pagemap entries of [start, start + nPages pages) of `pid`. */
export function readPagemap(pid: number, start: bigint, nPages: number): BigUint64Array {
  const pm = new Pagemap(pid);
  try {
    return pm.read(start, nPages);
  } finally {
    pm.close();
  }
}

export const CollectMode = { anon: 0, privateFile: 1, all: 2 } as const;
export type CollectMode = (typeof CollectMode)[keyof typeof CollectMode];
export type CollectedPages = NativeCollectedPages;

/**
 * The dump's hot path for one chunk: pagemap → selected pages read into
 * `out` → all-zero pages dropped (except mode all) → kept pages packed at the
 * front of `out`, described by (vaddr, count) runs.
 */
export function collectPages(mem: ProcMem, pagemap: Pagemap, start: bigint, nPages: number, mode: CollectMode, out: Buffer): CollectedPages {
  if (out.length < nPages * PAGE_SIZE) throw new RangeError('collectPages: out buffer too small');
  return addon.collectPages(mem.pid, mem.fd, pagemap.fd, start, nPages, mode, out);
}

/** pidfd_open(2); close the fd with fs.closeSync. */
export function pidfdOpen(pid: number, flags = 0): number {
  return addon.pidfdOpen(pid, flags);
}
/** pidfd_getfd(2): a duplicate of `targetFd` of the process behind `pidfd`. */
export function pidfdGetfd(pidfd: number, targetFd: number): number {
  return addon.pidfdGetfd(pidfd, targetFd);
}

/** One region for dumpPages: `nPages` pages from `start`, selected by `mode`. */
export interface DumpRegion {
  start: bigint;
  nPages: number;
  mode: CollectMode;
}

export interface DumpedRun {
  vaddr: bigint;
  nPages: number;
  /** Index into the regions given to dumpPages. */
  region: number;
}

/**
 * Copies the selected non-zero pages of `regions` into the file `pagesFd`
 * from byte `pagesOffset` on (reads and writes overlap in two threads), and
 * returns what was written as runs in file order. With `checksumChunk`, also
 * the CRC32C of each checksumChunk bytes written (`checksums`).
 */
export function dumpPages(mem: ProcMem, pagemap: Pagemap, pagesFd: number, pagesOffset: bigint, regions: readonly DumpRegion[], checksumChunk?: number): DumpedPages {
  return dumpedPages(addon.dumpPages(mem.pid, mem.fd, pagemap.fd, pagesFd, pagesOffset, regionTriples(regions), checksumChunk));
}

/**
 * dumpPages on a worker thread: this thread goes on meanwhile. The caller
 * keeps `mem`, `pagemap` and `pagesFd` open, and the process frozen with its
 * memory unchanged, until the promise settles.
 */
export async function dumpPagesAsync(mem: ProcMem, pagemap: Pagemap, pagesFd: number, pagesOffset: bigint, regions: readonly DumpRegion[], checksumChunk?: number): Promise<DumpedPages> {
  return dumpedPages(await addon.dumpPagesAsync(mem.pid, mem.fd, pagemap.fd, pagesFd, pagesOffset, regionTriples(regions), checksumChunk));
}

export interface DumpedPages { runs: DumpedRun[]; bytes: number; scanned: number; zero: number; checksums?: Uint32Array }

function regionTriples(regions: readonly DumpRegion[]): BigUint64Array {
  const r = new BigUint64Array(regions.length * 3);
  regions.forEach((g, i) => {
    r[3 * i] = g.start;
    r[3 * i + 1] = BigInt(g.nPages);
    r[3 * i + 2] = BigInt(g.mode);
  });
  return r;
}

function dumpedPages(out: { runs: BigUint64Array; bytes: number; scanned: number; zero: number; checksums?: Uint32Array }): DumpedPages {
  const runs: DumpedRun[] = [];
  for (let i = 0; i < out.runs.length; i += 3) runs.push({ vaddr: out.runs[i]!, nPages: Number(out.runs[i + 1]!), region: Number(out.runs[i + 2]!) });
  return { runs, bytes: out.bytes, scanned: out.scanned, zero: out.zero, ...(out.checksums ? { checksums: out.checksums } : {}) };
}

/**
 * The pages dumpPages would take from `regions`, found from the pagemap only
 * (for memory served later from the frozen process: `dump --lazy-pages`).
 * The kernel's PAGEMAP_SCAN reports runs of pages where it has it (Linux
 * 6.7+, as CRIU 4.2 uses it), else the pagemap is read page by page;
 * `LR_PAGEMAP_SCAN=0` reads page by page always.
 */
export function scanPages(pid: number, pagemap: Pagemap, regions: readonly DumpRegion[]): { runs: DumpedRun[]; scanned: number; zero: number } {
  const r = new BigUint64Array(regions.length * 3);
  regions.forEach((g, i) => {
    r[3 * i] = g.start;
    r[3 * i + 1] = BigInt(g.nPages);
    r[3 * i + 2] = BigInt(g.mode);
  });
  const out = addon.scanPages(pid, pagemap.fd, r, process.env.LR_PAGEMAP_SCAN !== '0');
  const runs: DumpedRun[] = [];
  for (let i = 0; i < out.runs.length; i += 3) runs.push({ vaddr: out.runs[i]!, nPages: Number(out.runs[i + 1]!), region: Number(out.runs[i + 2]!) });
  return { runs, scanned: out.scanned, zero: out.zero };
}

export const KCMP = { FILE: 0, VM: 1, FILES: 2, FS: 3, SIGHAND: 4, IO: 5, SYSVSEM: 6, EPOLL_TFD: 7 } as const;

/** kcmp(2): true when both refer to the same kernel object. */
export function kcmpSame(pid1: number, pid2: number, type: number, idx1: number = 0, idx2: number = 0): boolean {
  return addon.kcmp(pid1, pid2, type, idx1, idx2) === 0;
}
