// Eager page fill of a restored process: how the data of a pages file gets
// into its memory before it runs.
//  - Large runs in the process's private anonymous VMAs (registered with a
//    userfaultfd made for the restore): the process itself copies them, as
//    CRIU's restorer reads its pages in the task's own context. It maps the
//    pages file read-only (populated at once) and makes one UFFDIO_COPY
//    ioctl per run: new pages filled straight from the page cache, no
//    zeroed page first, no fault per page, and the work is the restored
//    process's (its own session and CPU share once it called setsid), not
//    the restorer's. Meanwhile a restorer thread checks the same data's
//    CRC32C (RestoreVerifyJob); a mismatch fails the restore, which kills
//    the process before it ever runs.
//  - Everything else: the restorer writes it (restoreWritePages: UFFDIO_COPY
//    through its own copy of the userfaultfd, else process_vm_writev),
//    checking each chunk right before it is written.
import { statSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { Errno, ImageError } from '../errors.js';
import { O_CLOEXEC } from '../inject/constants.js';
import { type NativeChecks, PageVerifier } from '../integrity/checksums.js';
import { addon } from '../native/addon.js';
import { InjectedSyscallError, NR, PROT, type RemoteTask } from './task.js';

const PAGE = 4096n;
const O_RDONLY = 0;
const MAP_PRIVATE = 0x02;
const MAP_POPULATE = 0x8000;
/** _IOWR(0xAA, 3, struct uffdio_copy): dst, src, len, mode, copy (5 x 64 bits). */
const UFFDIO_COPY = 0xc028aa03n;

/** Runs at least this long are copied by the process itself; shorter ones by the restorer (no round trip each). */
const IN_TASK_MIN = 256n << 10n;
/**
 * ... when they add up to this much: below, its extra calls (open, map,
 * unmap the pages file) cost more than it saves (16 MiB on a quiet machine:
 * ~9 ms more by the task; 512 MiB at load 12-18: 2.0-2.3 s vs 2.8-4.0 s by
 * the restorer).
 */
const IN_TASK_TOTAL_MIN = 64n << 20n;

/** Below this much data one thread fills alone (a second one costs more than it saves). */
const FILL_PARALLEL_MIN = 8n << 20n;

/**
 * Threads for one restorer-side fill (restoreWritePages), given its
 * (address, offset, length) triples: one per CPU, at most 4
 * (LR_EAGER_THREADS=N overrides), one for small fills.
 */
export function fillThreads(triples: readonly bigint[]): number {
  const env = Number(process.env.LR_EAGER_THREADS);
  if (Number.isInteger(env) && env >= 1 && env <= 64) return env;
  let bytes = 0n;
  for (let i = 2; i < triples.length; i += 3) bytes += triples[i]!;
  return bytes < FILL_PARALLEL_MIN ? 1 : Math.min(4, availableParallelism());
}

/**
 * Splits userfaultfd-registered (address, offset, length) triples into those
 * the process copies itself and those the restorer writes (LR_EAGER_IN_TASK=0:
 * all by the restorer; =1: large runs by the process whatever their total).
 */
export function splitForTask(triples: readonly bigint[]): { inTask: bigint[]; here: bigint[] } {
  const inTask: bigint[] = [];
  const here: bigint[] = [];
  const mode = process.env.LR_EAGER_IN_TASK;
  for (let i = 0; i < triples.length; i += 3) {
    (mode !== '0' && triples[i + 2]! >= IN_TASK_MIN ? inTask : here).push(triples[i]!, triples[i + 1]!, triples[i + 2]!);
  }
  let total = 0n;
  for (let i = 2; i < inTask.length; i += 3) total += inTask[i]!;
  if (mode !== '1' && total < IN_TASK_TOTAL_MIN) return { inTask: [], here: [...triples] };
  return { inTask, here };
}

/** Restorer-side fill of (address, offset, length) triples; uffd -1: process_vm_writev. Bytes written. */
export function fillHere(t: RemoteTask, pid: number, file: string, triples: bigint[], uffd: number, checks: NativeChecks | undefined): bigint {
  const threads = fillThreads(triples);
  try {
    return checks
      ? addon.restoreWritePages(t.pid, file, BigUint64Array.from(triples), checks.sums, checks.chunkSize, checks.verified, uffd, threads)
      : addon.restoreWritePages(t.pid, file, BigUint64Array.from(triples), undefined, undefined, undefined, uffd, threads);
  } catch (e) {
    throw (checks && PageVerifier.mismatchError(pid, file, checks, e)) ?? e;
  }
}

/**
 * The process copies the triples from `file` into its memory itself (see
 * above) through its own userfaultfd descriptor `remoteUffd`, with
 * `argAt` (scratch) for the ioctl's argument; with `checks`, a restorer
 * thread verifies the same chunks meanwhile and a mismatch throws the
 * ImageError of PageVerifier. Bytes written.
 */
export function fillInTask(t: RemoteTask, pid: number, remoteUffd: number, file: string, triples: bigint[], checks: NativeChecks | undefined, argAt: bigint): bigint {
  const size = BigInt(statSync(file).size);
  for (let i = 0; i < triples.length; i += 3) {
    const off = triples[i + 1]!;
    if (off + triples[i + 2]! > size) throw new ImageError(file, Number(off), `pid ${pid}: page data runs past the end of the file (${size} bytes)`);
  }
  const job = checks ? new addon.RestoreVerifyJob(file, BigUint64Array.from(triples), checks.sums, checks.chunkSize, checks.verified) : undefined;
  let written: bigint;
  try {
    written = copyInTask(t, pid, remoteUffd, file, size, triples, argAt);
  } catch (e) {
    job?.cancel();
    throw e;
  }
  try {
    job?.join();
  } catch (e) {
    throw (checks && PageVerifier.mismatchError(pid, file, checks, e)) ?? e;
  }
  return written;
}

/** uffdio_copy arguments per batch: 40 bytes each from argAt (the scratch space there is 2 KiB). */
const COPIES_PER_BATCH = 48;

function copyInTask(t: RemoteTask, pid: number, remoteUffd: number, file: string, size: bigint, triples: bigint[], argAt: bigint): bigint {
  const fd = t.openat(file, O_RDONLY | O_CLOEXEC);
  const [src] = t.batch([
    { what: `mmap(${file})`, nr: NR.mmap, args: [0, size, PROT.READ, MAP_PRIVATE | MAP_POPULATE, fd, 0] },
    { what: `close(${fd})`, nr: NR.close, args: [fd], mayFail: true },
  ]);
  let written = 0n;
  const arg = (dst: bigint, from: bigint, len: bigint): Buffer => {
    const b = Buffer.alloc(40);
    b.writeBigUInt64LE(dst, 0);
    b.writeBigUInt64LE(src! + from, 8);
    b.writeBigUInt64LE(len, 16);
    return b;
  };
  try {
    // Every run in one ioctl, many ioctls per round trip; a run the kernel
    // did not copy whole goes on call by call below.
    for (let at = 0; at < triples.length; at += 3 * COPIES_PER_BATCH) {
      const part = triples.slice(at, at + 3 * COPIES_PER_BATCH);
      const n = part.length / 3;
      t.write(argAt, Buffer.concat(Array.from({ length: n }, (_, i) => arg(part[3 * i]!, part[3 * i + 1]!, part[3 * i + 2]!))));
      const got = t.batch(Array.from({ length: n }, (_, i) => ({
        what: `ioctl(UFFDIO_COPY 0x${part[3 * i]!.toString(16)})`, nr: NR.ioctl, args: [remoteUffd, UFFDIO_COPY, argAt + BigInt(40 * i)], mayFail: true,
      })));
      const back = got.some((r) => r !== 0n) ? t.read(argAt, 40 * n) : undefined;
      for (let i = 0; i < n; i++) {
        const len = part[3 * i + 2]!;
        if (got[i] === 0n) {
          written += len;
          continue;
        }
        const c = back!.readBigInt64LE(40 * i + 32);
        const done = c > 0n ? c : 0n;
        written += done + copyRest(t, pid, remoteUffd, file, src!, part[3 * i]! + done, part[3 * i + 1]! + done, len - done, Number(-got[i]!), argAt);
      }
    }
  } finally {
    t.raw(NR.munmap, src!, size);
  }
  return written;
}

/** One run's rest after a UFFDIO_COPY stopped with `errno`, call by call. Bytes written. */
function copyRest(t: RemoteTask, pid: number, remoteUffd: number, file: string, src: bigint, dst: bigint, off: bigint, len: bigint, errno: number, argAt: bigint): bigint {
  let written = 0n;
  const arg = Buffer.alloc(40);
  while (len > 0n) {
    if (errno === Errno.EEXIST) {
      // Already present (a present page cannot fault into the userfaultfd):
      // written the other way, then on with the rest.
      written += addon.restoreWritePages(t.pid, file, BigUint64Array.of(dst, off, PAGE));
      dst += PAGE;
      off += PAGE;
      len -= PAGE;
    } else if (errno !== Errno.EAGAIN && errno !== Errno.EINTR) {
      throw new InjectedSyscallError(pid, `ioctl(UFFDIO_COPY 0x${dst.toString(16)})`, errno);
    }
    if (len === 0n) break;
    arg.writeBigUInt64LE(dst, 0);
    arg.writeBigUInt64LE(src + off, 8);
    arg.writeBigUInt64LE(len, 16);
    arg.writeBigUInt64LE(0n, 24);
    arg.writeBigInt64LE(0n, 32);
    t.write(argAt, arg);
    const r = t.raw(NR.ioctl, remoteUffd, UFFDIO_COPY, argAt);
    let done = len;
    if (r !== 0n) {
      const c = t.read(argAt + 32n, 8).readBigInt64LE(0);
      done = c > 0n ? c : 0n;
    }
    written += done;
    dst += done;
    off += done;
    len -= done;
    if (r === 0n) break;
    errno = Number(-r);
  }
  return written;
}
