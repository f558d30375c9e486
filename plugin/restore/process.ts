// Rebuilds one process inside a traced stub: the address space (RESTORE-NOTES
// B: unmap the stub, move [vvar]/[vvar_vclock]/[vdso] together, map every VMA
// at its exact address with MAP_FIXED_NOREPLACE, write pages, PR_SET_MM_MAP),
// then sigactions, files, cwd/root, threads and per-thread kernel state, and
// finally registers (with the syscall-restart fix-up) and the detach.
import {
  PE_LAZY, MAP_ANONYMOUS, MAP_SHARED, PAGE, VMA_AREA_REGULAR, VMA_AREA_VDSO, VMA_AREA_VSYSCALL, VMA_AREA_VVAR,
} from '../images/memory.js';
import type { PageVerifier } from '../integrity/checksums.js';
import { UserError } from '../errors.js';
import type { CoreEntry, UserX86FpregsEntry, UserX86RegsEntry } from '../images/index.js';
import { waitStop } from '../inject/ptrace.js';
import { addon } from '../native/addon.js';
import type { FdRestorer } from './fds/index.js';
import type { FileLockRestorer } from './locks.js';
import { type PageRun, type ProcessPlan, type VmaPlan } from './plan.js';
import { type BatchCall, NR, PROT, readMaps, RemoteTask } from './task.js';
import { applyMadvise, madviseCalls, mmapFlags } from './vmaflags.js';
import { attachSysvShm } from './sysvipc.js';
import { inheritedVmas, restoreInheritedPages } from './cow.js';
import { O_CLOEXEC } from '../inject/constants.js';
import { fillHere, fillInTask, splitForTask } from './fill.js';

const MAP_FIXED_NOREPLACE = 0x100000;
const MREMAP_MAYMOVE = 1;
const MREMAP_FIXED = 2;
const O_RDONLY = 0;
const O_RDWR = 2;
const O_NONBLOCK = 0o4000;
const PR_SET_NAME = 15;
const PR_SET_MM = 35;
const PR_SET_MM_MAP = 14;
const SS_DISABLE = 2;
const SS_AUTODISARM = 1 << 31;
const CLONE_THREAD_FLAGS = 0x100 | 0x200 | 0x400 | 0x800 | 0x10000 | 0x40000; // VM FS FILES SIGHAND THREAD SYSVSEM

// Scratch layout (offsets into the task's scratch area).
const SCR_PATH = 0n;
const SCR_STRUCT = 0x1000n;
const SCR_AUXV = 0x1800n;
const SCR_SIGACT = 0x2000n;
const SCR_CLONE = 0x3000n;

const SPECIAL = ['[vvar]', '[vvar_vclock]', '[vdso]'];
const AT_FDCWD = -100;
/** Paths for a batch of opens go into scratch below this offset (the clone3 arguments start there). */
const PATHS_END = SCR_CLONE;

export interface Interval {
  start: bigint;
  end: bigint;
}

/** First page-aligned address >= `from` where `size` bytes overlap none of `busy`. */
export function findHole(busy: Interval[], size: bigint, from = 0x10000000n, limit = 0x7ffffffff000n): bigint {
  const sorted = [...busy].sort((a, b) => (a.start < b.start ? -1 : a.start > b.start ? 1 : 0));
  let cand = from;
  for (const b of sorted) {
    if (b.end <= cand) continue;
    if (b.start >= cand + size) break;
    cand = (b.end + PAGE - 1n) & ~(PAGE - 1n);
  }
  if (cand + size > limit) throw new Error('no free address range for the restorer scratch area');
  return cand;
}

function cloneArgs(flags: number, exitSignal: number, setTidAddr: bigint): Buffer {
  const b = Buffer.alloc(88);
  b.writeBigUInt64LE(BigInt(flags), 0);
  b.writeBigUInt64LE(BigInt(exitSignal), 32);
  b.writeBigUInt64LE(setTidAddr, 64);
  b.writeBigUInt64LE(1n, 72);
  return b;
}

/**
 * Injects clone3 with set_tid into `parent` (a stub or a restored process).
 * Returns the new task's pid/tid in the restorer's pid namespace, after its
 * initial stop. Thread clones share the parent's memory; process clones get a
 * copy of the (still stub) address space.
 */
export function injectClone(parent: RemoteTask, tid: number, thread: boolean): number {
  const setTid = parent.scratch + SCR_CLONE + 0x100n;
  const t = Buffer.alloc(4);
  t.writeInt32LE(tid, 0);
  parent.write(setTid, t);
  parent.write(parent.scratch + SCR_CLONE, cloneArgs(thread ? CLONE_THREAD_FLAGS : 0, thread ? 0 : 17, setTid));
  const { result: r, child } = parent.rawFork(NR.clone3, parent.scratch + SCR_CLONE, 88);
  if (r < 0n) {
    const errno = Number(-r);
    if (errno === 17) throw new UserError(`pid ${tid} is already in use: cannot recreate ${thread ? 'thread' : 'process'} ${tid} (clone3 set_tid: EEXIST)`);
    throw new UserError(`pid ${parent.pid}: clone3 of ${thread ? 'thread' : 'child'} ${tid} failed: errno ${errno}`);
  }
  // The restorer sees the new task under its own namespace's pid: the event message.
  if (child <= 0) throw new Error(`pid ${parent.pid}: clone3 of ${tid} reported no new task (is the stub traced with TRACECLONE?)`);
  const outer = child;
  waitStop(outer, 30000);
  return outer;
}

/** The parts of a run outside `ranges` (sorted, disjoint). */
function outside(r: PageRun, ranges: Interval[]): PageRun[] {
  const out: PageRun[] = [];
  let a = r.vaddr;
  const end = r.vaddr + r.bytes;
  const piece = (s: bigint, e: bigint): void => {
    if (e > s) out.push({ ...r, vaddr: s, bytes: e - s, offset: r.offset === undefined ? undefined : r.offset + (s - r.vaddr) });
  };
  for (const k of ranges) {
    if (k.end <= a || k.start >= end) continue;
    piece(a, k.start < end ? k.start : end);
    a = k.end;
  }
  piece(a, end);
  return out;
}

function isSpecial(v: VmaPlan): boolean {
  return (v.vma.status & (VMA_AREA_VDSO | VMA_AREA_VVAR | VMA_AREA_VSYSCALL)) !== 0 || (v.vma.status & VMA_AREA_REGULAR) === 0;
}

export interface VdsoMove {
  from: bigint;
  len: bigint;
  to: bigint;
  name: string;
}

/**
 * Where each of this kernel's vDSO areas ([vvar], [vvar_vclock], [vdso], as
 * in /proc/PID/maps) must go to sit where the dump had them. The vvar areas
 * are compared as one block, by total size and by their place relative to
 * the vDSO (its code reaches them at fixed offsets), not by VMA count: CRIU
 * 4.2 records [vvar] + [vvar_vclock] as one VMA_AREA_VVAR, we record two.
 * A different size or order means another kernel: a clear error.
 */
export function vdsoMoves(pid: number, cur: readonly { start: bigint; end: bigint; name: string }[], dumpedVvar: readonly { start: bigint; end: bigint }[], dumpedVdso: { start: bigint; end: bigint }): VdsoMove[] {
  const hex = (n: bigint): string => `0x${n.toString(16)}`;
  const curVdso = cur.find((m) => m.name === '[vdso]');
  if (curVdso === undefined) throw new UserError(`pid ${pid}: this kernel maps no [vdso] but the dump has one: restore needs the same kernel`);
  const curVvar = cur.filter((m) => m.name !== '[vdso]').sort((a, b) => (a.start < b.start ? -1 : 1));
  const dVvar = [...dumpedVvar].sort((a, b) => (a.start < b.start ? -1 : 1));
  const block = (areas: readonly { start: bigint; end: bigint }[], what: string): { start: bigint; end: bigint } | undefined => {
    if (areas.length === 0) return undefined;
    for (let i = 1; i < areas.length; i++) {
      if (areas[i]!.start !== areas[i - 1]!.end) throw new UserError(`pid ${pid}: the vvar areas ${what} are not contiguous (gap at ${hex(areas[i - 1]!.end)}): restore needs the same kernel`);
    }
    return { start: areas[0]!.start, end: areas[areas.length - 1]!.end };
  };
  const cb = block(curVvar, 'of this kernel');
  const db = block(dVvar, 'in the image');
  const size = (b: { start: bigint; end: bigint } | undefined): bigint => (b ? b.end - b.start : 0n);
  const describe = (vv: { start: bigint; end: bigint } | undefined, vd: { start: bigint; end: bigint }): string =>
    `${size(vv) / PAGE} vvar page(s) at vdso${vv ? `${vv.start < vd.start ? '-' : '+'}${hex(vv.start < vd.start ? vd.start - vv.start : vv.start - vd.start)}` : ''}, ${(vd.end - vd.start) / PAGE} vdso page(s)`;
  const sameLayout = size(cb) === size(db) && curVdso.end - curVdso.start === dumpedVdso.end - dumpedVdso.start &&
    (cb === undefined || cb.start - curVdso.start === db!.start - dumpedVdso.start);
  if (!sameLayout) {
    throw new UserError(`pid ${pid}: the vDSO layout differs from the dump (here ${describe(cb, curVdso)}; in the image ${describe(db, dumpedVdso)}): restore needs the same kernel`);
  }
  const moves: VdsoMove[] = curVvar.map((m) => ({ from: m.start, len: m.end - m.start, to: db!.start + (m.start - cb!.start), name: m.name }));
  moves.push({ from: curVdso.start, len: curVdso.end - curVdso.start, to: dumpedVdso.start, name: '[vdso]' });
  return moves;
}

export interface MmResult {
  /** Lazy-eligible VMAs to register with userfaultfd (whole VMAs). */
  lazyVmas: Interval[];
  bytesWritten: bigint;
  /**
   * Pages of rseq areas left to the lazy-pages daemon (their data is not in
   * the images: dump --lazy-pages). The kernel writes an rseq area as soon as
   * it is registered; done before the page is served, that write would
   * populate it with zeros underneath the daemon (whose copy then fails with
   * EEXIST) and the program would run on a zeroed page. restoreRseq()
   * registers those areas only once these pages are in.
   */
  rseqLazyPages: bigint[];
}

/** Pages of the rseq areas of the threads of p. */
function rseqPages(p: ProcessPlan): Set<bigint> {
  const s = new Set<bigint>();
  for (const t of p.threads) {
    const r = t.core.thread_core?.rseq_entry;
    if (r && r.rseq_abi_pointer !== 0n) {
      s.add(r.rseq_abi_pointer & ~(PAGE - 1n));
      s.add((r.rseq_abi_pointer + BigInt(r.rseq_abi_size) - 1n) & ~(PAGE - 1n));
    }
  }
  return s;
}

/**
 * Pages that are always written eagerly: those the kernel touches while the
 * restorer re-registers per-thread state (rseq areas), and the argument and
 * environment strings, which the kernel reads for other processes
 * (/proc/PID/cmdline and environ, ps) through remote access that cannot
 * wait for userfaultfd and would read them as empty.
 */
function restoreTouchedPages(p: ProcessPlan): Set<bigint> {
  const s = new Set<bigint>();
  for (const [from, to] of [[p.mm.mm_arg_start, p.mm.mm_arg_end], [p.mm.mm_env_start, p.mm.mm_env_end]] as const) {
    if (to <= from || to - from > 1n << 20n) continue;
    for (let pg = from & ~(PAGE - 1n); pg < to; pg += PAGE) s.add(pg);
  }
  for (const pg of rseqPages(p)) s.add(pg);
  return s;
}

/**
 * `inherit`: the plan of the parent this task was cloned from after the
 * parent's memory was restored; identical private VMAs are kept so that
 * the pages they share stay shared (plugin/restore/cow.ts).
 */
export function restoreAddressSpace(t: RemoteTask, p: ProcessPlan, lazy: boolean, verifier?: PageVerifier, inherit?: ProcessPlan): MmResult {
  const cur = readMaps(t.pid);
  const kept = inherit ? inheritedVmas(p, inherit, lazy) : new Set<VmaPlan>();
  const keptRanges = [...kept].map((v) => ({ start: v.vma.start, end: v.vma.end })).sort((a, b) => (a.start < b.start ? -1 : 1));
  // 1. Drop everything of the stub (or the parent) but the vDSO block, the
  //    scratch area and the kept VMAs. (Steps 1-3 go in batches: one ptrace
  //    round trip for many calls, RemoteTask.batch.)
  const unmaps: BatchCall[] = [];
  for (const m of cur) {
    if (SPECIAL.includes(m.name) || m.name === '[vsyscall]') continue;
    if (m.start >= t.scratch && m.end <= t.scratch + t.scratchSize) continue;
    let a = m.start;
    for (const k of keptRanges) {
      if (k.end <= a || k.start >= m.end) continue;
      if (k.start > a) unmaps.push({ what: `munmap(inherited ${m.name || 'anon'})`, nr: NR.munmap, args: [a, k.start - a] });
      a = k.end;
    }
    if (a < m.end) unmaps.push({ what: `munmap(stub ${m.name || 'anon'})`, nr: NR.munmap, args: [a, m.end - a] });
  }
  t.batch(unmaps);
  // 2. Move [vvar], [vvar_vclock], [vdso] to their dumped addresses, through a
  //    hole first: MREMAP_FIXED silently replaces whatever is at the target.
  const curSpecial = cur.filter((m) => SPECIAL.includes(m.name));
  const dumpedVdso = p.vmas.find((v) => v.vma.status & VMA_AREA_VDSO);
  if (dumpedVdso) {
    const pairs = vdsoMoves(p.pid, curSpecial, p.vmas.filter((v) => v.vma.status & VMA_AREA_VVAR).map((v) => v.vma), dumpedVdso.vma);
    const lo = curSpecial.reduce((a, m) => (m.start < a ? m.start : a), curSpecial[0]!.start);
    const hi = curSpecial.reduce((a, m) => (m.end > a ? m.end : a), 0n);
    const busy: Interval[] = [...p.vmas.map((v) => ({ start: v.vma.start, end: v.vma.end })), ...curSpecial, { start: t.scratch, end: t.scratch + t.scratchSize }];
    const temp = findHole(busy, hi - lo);
    // The syscall gadget moves with the vDSO.
    const move = (pr: VdsoMove, to: bigint): BatchCall => ({
      what: `mremap(${pr.name})`, nr: NR.mremap, args: [pr.from, pr.len, pr.len, MREMAP_MAYMOVE | MREMAP_FIXED, to],
      after: () => { if (pr.name === '[vdso]') t.vdsoMoved(to); },
    });
    const moves: BatchCall[] = [];
    for (const pr of pairs) {
      const at = temp + (pr.from - lo);
      moves.push(move(pr, at));
      pr.from = at;
    }
    for (const pr of pairs) moves.push(move(pr, pr.to));
    t.batch(moves);
  }
  // 3. Every VMA at its exact address; files opened once per path inside the task.
  const fds = new Map<string, number>();
  const lazyVmas: Interval[] = [];
  try {
    const modeOf = (v: VmaPlan): number => {
      const vma = v.vma;
      // A shared mapping keeps the file's access mode (fdflags, from
      // map_files): mapped read-only from a writable file, the program may
      // mprotect it writable later.
      const shared = (vma.flags & MAP_SHARED) !== 0;
      const writable = vma.prot & PROT.WRITE || ((vma.fdflags ?? 0) & 3) === O_RDWR;
      return shared && writable ? O_RDWR : O_RDONLY;
    };
    const todo = p.vmas.filter((v) => !isSpecial(v) && !kept.has(v));
    // The files, opened in batches: their paths side by side in scratch.
    const opens: { key: string; path: string; mode: number }[] = [];
    for (const v of todo) {
      if (v.path === undefined) continue;
      const mode = modeOf(v);
      const key = `${mode}:${v.path}`;
      if (!opens.some((o) => o.key === key)) opens.push({ key, path: v.path, mode });
    }
    for (let i = 0; i < opens.length;) {
      const calls: BatchCall[] = [];
      const keys: string[] = [];
      let off = 0n;
      for (; i < opens.length; i++) {
        const o = opens[i]!;
        const b = Buffer.from(`${o.path}\0`, 'utf8');
        if (off + BigInt(b.length) > PATHS_END) {
          if (calls.length === 0) throw new Error(`path too long: ${o.path}`);
          break;
        }
        t.write(t.scratch + off, b);
        calls.push({ what: `open(${o.path})`, nr: NR.openat, args: [AT_FDCWD, t.scratch + off, o.mode | O_CLOEXEC, 0] });
        keys.push(o.key);
        off += (BigInt(b.length) + 7n) & ~7n;
      }
      const got = t.batch(calls);
      keys.forEach((k, j) => fds.set(k, Number(got[j]!)));
    }
    const maps: BatchCall[] = [];
    for (const v of todo) {
      const vma = v.vma;
      if (v.sysv) {
        // SysV shared memory: shmat by the process itself (plugin/restore/sysvipc.ts).
        attachSysvShm(t, p.pid, vma, v.sysv);
        applyMadvise(t, vma);
        continue;
      }
      const len = vma.end - vma.start;
      let flags = MAP_FIXED_NOREPLACE | mmapFlags(vma);
      let fd = -1;
      let off = 0n;
      if (v.path !== undefined) {
        fd = fds.get(`${modeOf(v)}:${v.path}`)!;
        off = vma.pgoff;
      } else {
        flags |= MAP_ANONYMOUS;
      }
      maps.push({ what: `mmap(0x${vma.start.toString(16)}-0x${vma.end.toString(16)}${v.path ? ` ${v.path}` : ''})`, nr: NR.mmap, args: [vma.start, len, vma.prot, flags, fd, off] });
      maps.push(...madviseCalls(vma));
      if (lazy && (v.lazyEligible || v.lazyShared)) lazyVmas.push({ start: vma.start, end: vma.end });
    }
    const got = t.batch(maps);
    maps.forEach((c, j) => {
      if (c.nr === NR.mmap && got[j] !== c.args[0]) throw new UserError(`pid ${p.pid}: VMA 0x${BigInt(c.args[0]!).toString(16)} was mapped at 0x${got[j]!.toString(16)}`);
    });
  } finally {
    t.batch([...fds.values()].map((f) => ({ what: `close(${f})`, nr: NR.close, args: [f], mayFail: true })));
  }
  // 4. Page data. Lazily restored runs are skipped except the few pages the
  //    kernel touches during the restore itself (rseq areas).
  const touched = lazy ? restoreTouchedPages(p) : new Set<bigint>();
  // Eager restore: private anonymous VMAs get their pages by UFFDIO_COPY
  // through a userfaultfd made for the purpose (new pages filled straight
  // from the pages file; process_vm_writev would fault in a zeroed page for
  // each first), closed again before anything runs; large runs are copied
  // by the process itself (plugin/restore/fill.ts). Any other VMA, or no
  // userfaultfd, takes process_vm_writev (also with LR_EAGER_UFFD=0).
  const copyRanges = lazy || kept.size || process.env.LR_EAGER_UFFD === '0' ? [] : p.vmas
    // (Not MADV_HUGEPAGE areas: UFFDIO_COPY fills small pages, faults there may take huge ones.)
    .filter((v) => !isSpecial(v) && v.path === undefined && (v.vma.flags & MAP_SHARED) === 0 && ((v.vma.madv ?? 0n) & (1n << 14n)) === 0n)
    .map((v) => ({ start: v.vma.start, end: v.vma.end }));
  let uffd = -1;
  let remoteUffd = -1;
  if (copyRanges.length) {
    try {
      ({ fd: uffd, remoteFd: remoteUffd } = openUffd(t, copyRanges));
    } catch {
      uffd = -1; // no userfaultfd here (or a VMA it refuses): process_vm_writev for all
    }
  }
  const inCopyRange = (addr: bigint): boolean => uffd >= 0 && copyRanges.some((r) => addr >= r.start && addr < r.end);
  const byFile = new Map<string, { plain: bigint[]; copied: bigint[] }>();
  const add = (file: string, addr: bigint, off: bigint, len: bigint): void => {
    let a = byFile.get(file);
    if (!a) byFile.set(file, (a = { plain: [], copied: [] }));
    (inCopyRange(addr) ? a.copied : a.plain).push(addr, off, len);
  };
  let bytesWritten = kept.size ? restoreInheritedPages(t, p, kept, verifier) : 0n;
  const written = new Set<bigint>();
  try {
    // Runs outside the kept VMAs (those were written above).
    const runs = kept.size ? p.runs.flatMap((r) => outside(r, keptRanges)) : p.runs;
    for (const r of runs) {
      if (r.file === undefined || r.offset === undefined) continue;
      if (lazy && r.flags & PE_LAZY) {
        for (const pg of touched) {
          if (pg >= r.vaddr && pg < r.vaddr + r.bytes) {
            add(r.file, pg, r.offset + (pg - r.vaddr), PAGE);
            written.add(pg);
          }
        }
        continue;
      }
      add(r.file, r.vaddr, r.offset, r.bytes);
    }
    for (const [file, { plain, copied }] of byFile) {
      // Page checksums (plugin/integrity): every chunk is checked (hardware
      // CRC32C) before the process runs; a mismatch stops the restore
      // (plugin/restore/fill.ts).
      const checks = verifier?.nativeChecks(file);
      const { inTask, here } = splitForTask(copied);
      if (plain.length) bytesWritten += fillHere(t, p.pid, file, plain, -1, checks);
      if (here.length) bytesWritten += fillHere(t, p.pid, file, here, uffd, checks);
      if (inTask.length) bytesWritten += fillInTask(t, p.pid, remoteUffd, file, inTask, checks, t.scratch + SCR_STRUCT);
    }
  } finally {
    if (uffd >= 0) addon.restoreCloseFd(uffd);
    if (remoteUffd >= 0) t.raw(NR.close, remoteUffd);
  }
  // 5. mm bounds, auxv and the exe link (the stub binary is unmapped by now).
  const mm = p.mm;
  // Cloned from a restored parent running the same program: the exe link is
  // right already, and the kernel refuses to replace it while it is mapped
  // (EBUSY), so it is left as it is (exe_fd -1).
  const exeFd = inherit && inherit.exePath === p.exePath ? -1 : t.openat(p.exePath, O_RDONLY | O_CLOEXEC);
  try {
    const auxv = Buffer.alloc(mm.mm_saved_auxv.length * 8);
    mm.mm_saved_auxv.forEach((w, i) => auxv.writeBigUInt64LE(BigInt.asUintN(64, w), i * 8));
    t.write(t.scratch + SCR_AUXV, auxv);
    const s = Buffer.alloc(104);
    const words = [mm.mm_start_code, mm.mm_end_code, mm.mm_start_data, mm.mm_end_data, mm.mm_start_brk, mm.mm_brk, mm.mm_start_stack, mm.mm_arg_start, mm.mm_arg_end, mm.mm_env_start, mm.mm_env_end, t.scratch + SCR_AUXV];
    words.forEach((w, i) => s.writeBigUInt64LE(w, i * 8));
    s.writeUInt32LE(auxv.length, 96);
    s.writeUInt32LE(exeFd >>> 0, 100);
    t.write(t.scratch + SCR_STRUCT, s);
    t.call('prctl(PR_SET_MM_MAP)', NR.prctl, PR_SET_MM, PR_SET_MM_MAP, t.scratch + SCR_STRUCT, 104, 0);
  } finally {
    if (exeFd >= 0) t.raw(NR.close, exeFd);
  }
  // rseq pages in a registered VMA and not written here: the daemon serves
  // them (from a page server, or zeros where the images hold nothing).
  const rseqLazyPages = lazy
    ? [...rseqPages(p)].filter((pg) => !written.has(pg) && lazyVmas.some((v) => pg >= v.start && pg < v.end))
    : [];
  return { lazyVmas, bytesWritten, rseqLazyPages };
}

function sigForIndex(i: number): number {
  return i < 8 ? i + 1 : i < 17 ? i + 2 : i + 3;
}

/** Process-wide state: signal handlers, files, cwd/root, umask. */
export function restoreProcessState(t: RemoteTask, p: ProcessPlan, fds: FdRestorer, locks?: FileLockRestorer, log?: (line: string) => void): void {
  const tc = p.threads[0]!.core.tc!;
  tc.sigactions.forEach((sa, i) => {
    if (sa.sigaction === 0n && sa.flags === 0n && sa.mask === 0n) return;
    const sig = sigForIndex(i);
    const k = Buffer.alloc(32);
    k.writeBigUInt64LE(sa.sigaction, 0);
    k.writeBigUInt64LE(sa.flags, 8);
    k.writeBigUInt64LE(sa.restorer, 16);
    k.writeBigUInt64LE(sa.mask, 24);
    t.write(t.scratch + SCR_SIGACT, k);
    t.call(`rt_sigaction(${sig})`, NR.rt_sigaction, sig, t.scratch + SCR_SIGACT, 0, 8);
  });
  // Files: every fd of the process from the tree's created descriptions (plugin/restore/fds).
  fds.install(t, p.pid);
  // File locks on those fds (plugin/restore/locks.ts, --file-locks).
  locks?.restore(t, p.pid, log);
  t.putString(p.cwd, SCR_PATH);
  t.call(`chdir(${p.cwd})`, NR.chdir, t.scratch + SCR_PATH);
  if (p.root !== '/') {
    t.putString(p.root, SCR_PATH);
    t.call(`chroot(${p.root})`, NR.chroot, t.scratch + SCR_PATH);
  }
  if (p.umask !== undefined) t.raw(NR.umask, p.umask);
}

/** Kernel state of one thread, injected in that thread. */
export function restoreThreadState(t: RemoteTask, core: CoreEntry, comm: string | undefined, opts: { deferRseq?: boolean } = {}): void {
  const tc = core.thread_core!;
  const ti = core.thread_info!;
  if (!opts.deferRseq) restoreRseq(t, core);
  if (tc.futex_rla !== 0n) t.call('set_robust_list', NR.set_robust_list, tc.futex_rla, tc.futex_rla_len);
  t.call('set_tid_address', NR.set_tid_address, ti.clear_tid_addr);
  const sas = tc.sas;
  if (sas && (sas.ss_flags & SS_DISABLE) === 0 && sas.ss_size > 0n) {
    const b = Buffer.alloc(24);
    b.writeBigUInt64LE(sas.ss_sp, 0);
    b.writeInt32LE((sas.ss_flags & SS_AUTODISARM) | 0, 8);
    b.writeBigUInt64LE(sas.ss_size, 16);
    t.write(t.scratch + SCR_STRUCT, b);
    t.call('sigaltstack', NR.sigaltstack, t.scratch + SCR_STRUCT, 0);
  }
  const name = tc.comm ?? comm;
  if (name) {
    t.putString(name.slice(0, 15), SCR_PATH);
    t.call('prctl(PR_SET_NAME)', NR.prctl, PR_SET_NAME, t.scratch + SCR_PATH);
  }
}

/** Registers the thread's rseq area (the kernel writes it on the thread's next return to user mode). */
export function restoreRseq(t: RemoteTask, core: CoreEntry): void {
  const r = core.thread_core!.rseq_entry;
  if (r && r.rseq_abi_pointer !== 0n) {
    t.call('rseq', NR.rseq, r.rseq_abi_pointer, r.rseq_abi_size, 0, r.signature);
  }
}

/** Creates the non-leader threads of a restored process; returns their tids as the restorer sees them. */
export function createThreads(leader: RemoteTask, p: ProcessPlan): RemoteTask[] {
  const out: RemoteTask[] = [];
  for (const th of p.threads.slice(1)) {
    const outer = injectClone(leader, th.tid, true);
    out.push(leader.thread(outer));
  }
  return out;
}

/** userfaultfd created inside the process (with its credentials), taken out with pidfd_getfd, enabled and registered here. */
export function makeUffd(t: RemoteTask, ranges: Interval[]): number {
  const { fd, remoteFd } = openUffd(t, ranges);
  t.raw(NR.close, remoteFd);
  return fd;
}

/**
 * makeUffd that leaves the process's own descriptor open too (`remoteFd`,
 * for ioctls the process makes itself); the caller closes both.
 */
export function openUffd(t: RemoteTask, ranges: Interval[]): { fd: number; remoteFd: number } {
  const remoteFd = Number(t.call('userfaultfd', NR.userfaultfd, O_CLOEXEC | O_NONBLOCK));
  let fd: number;
  try {
    fd = addon.restorePidfdGetfd(t.pid, remoteFd);
  } catch (e) {
    t.raw(NR.close, remoteFd);
    throw e;
  }
  const FEATURES = (1n << 1n) | (1n << 2n) | (1n << 3n) | (1n << 6n); // EVENT_FORK REMAP REMOVE UNMAP
  const pairs = new BigUint64Array(ranges.length * 2);
  ranges.forEach((r, i) => {
    pairs[2 * i] = r.start;
    pairs[2 * i + 1] = r.end - r.start;
  });
  try {
    addon.restoreUffdSetup(fd, FEATURES, pairs);
  } catch (e) {
    addon.restoreCloseFd(fd);
    t.raw(NR.close, remoteFd);
    throw e;
  }
  return { fd, remoteFd };
}

/** The standard XSAVE image of the dumped FPU state, on top of the kernel's current buffer (for size and layout). */
export function buildXstate(template: Buffer, fp: UserX86FpregsEntry): Buffer {
  const b = Buffer.from(template);
  b.writeUInt16LE(fp.cwd & 0xffff, 0);
  b.writeUInt16LE(fp.swd & 0xffff, 2);
  b.writeUInt16LE(fp.twd & 0xffff, 4);
  b.writeUInt16LE(fp.fop & 0xffff, 6);
  b.writeBigUInt64LE(fp.rip, 8);
  b.writeBigUInt64LE(fp.rdp, 16);
  b.writeUInt32LE(fp.mxcsr, 24);
  b.writeUInt32LE(fp.mxcsr_mask, 28);
  fp.st_space.slice(0, 32).forEach((w, i) => b.writeUInt32LE(w >>> 0, 32 + i * 4));
  fp.xmm_space.slice(0, 64).forEach((w, i) => b.writeUInt32LE(w >>> 0, 160 + i * 4));
  if (b.length <= 512) return b;
  const xcr0 = b.length >= 472 ? b.readBigUInt64LE(464) : 3n;
  const xs = fp.xsave;
  let bv = xs ? xs.xstate_bv : 3n;
  const layout = new Map<number, [number, number]>();
  for (const [c, off, size] of addon.restoreXstateLayout()) layout.set(c, [off, size]);
  const put32 = (comp: number, words: number[] | undefined): void => {
    const l = layout.get(comp);
    if (!words || !words.length || !l || l[0] + l[1] > b.length) return;
    words.slice(0, l[1] / 4).forEach((w, i) => b.writeUInt32LE(w >>> 0, l[0] + i * 4));
  };
  const put64 = (comp: number, words: bigint[] | undefined): void => {
    const l = layout.get(comp);
    if (!words || !words.length || !l || l[0] + l[1] > b.length) return;
    words.slice(0, l[1] / 8).forEach((w, i) => b.writeBigUInt64LE(BigInt.asUintN(64, w), l[0] + i * 8));
  };
  if (xs) {
    put32(2, xs.ymmh_space);
    put64(3, xs.bndreg_state);
    put64(4, xs.bndcsr_state);
    put64(5, xs.opmask_reg);
    put64(6, xs.zmm_upper);
    put64(7, xs.hi16_zmm);
    put32(9, xs.pkru);
  }
  bv &= xcr0;
  b.writeBigUInt64LE(bv, 512);
  b.writeBigUInt64LE(0n, 520); // standard (non-compacted) format
  return b;
}

const REG_ORDER: (keyof UserX86RegsEntry)[] = [
  'r15', 'r14', 'r13', 'r12', 'bp', 'bx', 'r11', 'r10', 'r9', 'r8', 'ax', 'cx', 'dx', 'si', 'di', 'orig_ax', 'ip', 'cs',
  'flags', 'sp', 'ss', 'fs_base', 'gs_base', 'ds', 'es', 'fs', 'gs',
];

/**
 * Final registers, with the kernel's syscall-restart rule applied by hand:
 * -ERESTARTSYS/-ERESTARTNOINTR/-ERESTARTNOHAND re-execute the syscall,
 * -ERESTART_RESTARTBLOCK (whose restart block was kernel state) becomes EINTR.
 */
export function finalRegs(g: UserX86RegsEntry): BigUint64Array {
  const a = new BigUint64Array(27);
  REG_ORDER.forEach((k, i) => {
    a[i] = BigInt.asUintN(64, g[k] as bigint);
  });
  const orig = BigInt.asIntN(64, g.orig_ax);
  const ax = BigInt.asIntN(64, g.ax);
  if (orig >= 0n) {
    if (ax === -512n || ax === -513n || ax === -514n) {
      a[10] = BigInt.asUintN(64, orig);
      a[16] = BigInt.asUintN(64, g.ip - 2n);
    } else if (ax === -516n) {
      a[10] = BigInt.asUintN(64, -4n);
    }
  }
  a[15] = BigInt.asUintN(64, -1n);
  return a;
}

/** Registers, xstate, blocked mask, then detach: the thread runs from here. */
export function finalizeThread(tid: number, core: CoreEntry, leaderMask: bigint, stopSig = 0): void {
  const ti = core.thread_info!;
  const tcore = core.thread_core!;
  const template = addon.restoreGetXstate(tid);
  addon.restoreSetXstate(tid, buildXstate(template, ti.fpregs));
  addon.restoreSetSigmask(tid, tcore.blk_sigset ?? leaderMask);
  addon.restoreSetRegs(tid, finalRegs(ti.gpregs));
  addon.restoreDetach(tid, stopSig);
}

