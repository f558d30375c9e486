// Copy-on-write sharing between a parent and its children (issue 18 item 5).
// A child is cloned from its parent after the parent's memory is restored,
// so it starts with the parent's private mappings, their pages shared copy
// on write. VMAs the child has identically (range, protection, flags, file,
// advice) are kept: a page whose image content equals the inherited one is
// left alone (still shared, as before the dump), a different one is written
// (the child's own copy), and what the child's images do not hold is
// discarded (MADV_DONTNEED: zero again, or the file's page for a private
// file mapping). CRIU restores children the same way (forked from the
// restored parent, pages compared). Lazily restored VMAs are not kept: their
// pages are not in the parent when the child is cloned.
import {
  MAP_HUGETLB, MAP_LOCKED, MAP_SHARED, PAGE, VMA_ANON_PRIVATE, VMA_ANON_SHARED, VMA_AREA_MEMFD, VMA_AREA_REGULAR, VMA_AREA_SYSVIPC, VMA_AREA_VDSO, VMA_AREA_VSYSCALL, VMA_AREA_VVAR, VMA_FILE_PRIVATE,
} from '../images/memory.js';
import { closeSync, openSync, readSync } from 'node:fs';
import { ImageError } from '../errors.js';
import type { PageVerifier } from '../integrity/checksums.js';
import { addon } from '../native/addon.js';
import { type ProcessPlan, type VmaPlan } from './plan.js';
import type { RemoteTask } from './task.js';

const NR_MADVISE = 28;
const MADV_DONTNEED = 4;
const PROT_READ = 1;
const CHUNK = 1n << 20n;

function keepable(v: VmaPlan, lazy: boolean): boolean {
  const s = v.vma.status;
  if ((s & VMA_AREA_REGULAR) === 0 || (s & (VMA_ANON_PRIVATE | VMA_FILE_PRIVATE)) === 0) return false;
  if (s & (VMA_AREA_VDSO | VMA_AREA_VVAR | VMA_AREA_VSYSCALL | VMA_AREA_MEMFD | VMA_ANON_SHARED | VMA_AREA_SYSVIPC)) return false;
  if (v.shmem || v.vma.flags & (MAP_SHARED | MAP_LOCKED | MAP_HUGETLB)) return false;
  if ((v.vma.prot & PROT_READ) === 0) return false; // compared through process_vm_readv
  return !(lazy && v.lazyEligible);
}

/** The VMAs of `p` a child cloned from the restored `parent` already has, identical. */
export function inheritedVmas(p: ProcessPlan, parent: ProcessPlan, lazy: boolean): Set<VmaPlan> {
  const byStart = new Map(parent.vmas.map((v) => [v.vma.start, v]));
  const kept = new Set<VmaPlan>();
  for (const v of p.vmas) {
    const pv = byStart.get(v.vma.start);
    if (!pv || !keepable(v, lazy) || !keepable(pv, lazy)) continue;
    const a = v.vma;
    const b = pv.vma;
    if (a.end !== b.end || a.prot !== b.prot || a.flags !== b.flags || a.status !== b.status || a.pgoff !== b.pgoff) continue;
    if ((a.madv ?? 0n) !== (b.madv ?? 0n) || v.path !== pv.path) continue;
    kept.add(v);
  }
  return kept;
}

/**
 * Pages of the kept VMAs: compare, write what differs, discard what the
 * child's images do not hold. Returns the bytes written.
 */
export function restoreInheritedPages(t: RemoteTask, p: ProcessPlan, kept: Set<VmaPlan>, verifier: PageVerifier | undefined): bigint {
  let written = 0n;
  // Read through /proc/PID/mem: process_vm_readv pins pages, and pinning a
  // page shared copy on write unshares it (the child would get its own copy).
  const mem = openSync(`/proc/${t.pid}/mem`, 'r');
  try {
    written = restoreKept(t, p, kept, verifier, mem);
  } finally {
    closeSync(mem);
  }
  return written;
}

function restoreKept(t: RemoteTask, p: ProcessPlan, kept: Set<VmaPlan>, verifier: PageVerifier | undefined, memFd: number): bigint {
  let written = 0n;
  const vmas = [...kept].sort((x, y) => (x.vma.start < y.vma.start ? -1 : 1));
  for (const v of vmas) {
    const { start, end } = v.vma;
    // The child's data in this VMA, in address order.
    const pieces: { vaddr: bigint; bytes: bigint; file: string; offset: bigint }[] = [];
    for (const r of p.runs) {
      if (r.file === undefined || r.offset === undefined) continue;
      const s = r.vaddr > start ? r.vaddr : start;
      const e = r.vaddr + r.bytes < end ? r.vaddr + r.bytes : end;
      if (s < e) pieces.push({ vaddr: s, bytes: e - s, file: r.file, offset: r.offset + (s - r.vaddr) });
    }
    pieces.sort((x, y) => (x.vaddr < y.vaddr ? -1 : 1));
    let cur = start;
    const discard = (to: bigint): void => {
      if (to > cur) t.call(`madvise(0x${cur.toString(16)}, MADV_DONTNEED)`, NR_MADVISE, cur, to - cur, MADV_DONTNEED);
    };
    for (const pc of pieces) {
      discard(pc.vaddr);
      verifier?.verify(p.pid, pc.file, [{ offset: pc.offset, len: pc.bytes }]);
      written += comparePiece(t, p.pid, pc, memFd);
      cur = pc.vaddr + pc.bytes;
    }
    discard(end);
  }
  return written;
}

function comparePiece(t: RemoteTask, pid: number, pc: { vaddr: bigint; bytes: bigint; file: string; offset: bigint }, memFd: number): bigint {
  let written = 0n;
  const fd = openSync(pc.file, 'r');
  try {
    const buf = Buffer.allocUnsafe(Number(CHUNK));
    const mem = Buffer.allocUnsafe(Number(CHUNK));
    for (let done = 0n; done < pc.bytes; done += CHUNK) {
      const len = pc.bytes - done < CHUNK ? pc.bytes - done : CHUNK;
      const n = Number(len);
      const got = addon.preadAt(fd, buf, pc.offset + done, n);
      if (got !== n) throw new ImageError(pc.file, Number(pc.offset + done), `short pages file: ${got} of ${n} bytes (pid ${pid})`);
      for (let m = 0; m < n;) {
        const k = readSync(memFd, mem, m, n - m, pc.vaddr + done + BigInt(m));
        if (k <= 0) throw new Error(`pid ${pid}: cannot read the inherited memory at 0x${(pc.vaddr + done + BigInt(m)).toString(16)}`);
        m += k;
      }
      // Runs of differing pages are written; equal pages stay shared.
      let runStart = -1;
      const flush = (upto: number): void => {
        if (runStart < 0) return;
        addon.restoreWriteMem(t.pid, pc.vaddr + done + BigInt(runStart), buf.subarray(runStart, upto));
        written += BigInt(upto - runStart);
        runStart = -1;
      };
      for (let off = 0; off < n; off += Number(PAGE)) {
        const same = buf.compare(mem, off, off + Number(PAGE), off, off + Number(PAGE)) === 0;
        if (same) flush(off);
        else if (runStart < 0) runStart = off;
      }
      flush(n);
    }
  } finally {
    closeSync(fd);
  }
  return written;
}
