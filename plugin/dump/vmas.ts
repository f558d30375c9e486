// Turns /proc/PID/smaps VMAs into CRIU vma_entry values and decides which
// pages of each are dumped (IMAGE-FORMAT §3.9, §4.2, §4.3). Anything we
// cannot restore faithfully is reported as a problem naming the VMA.
import { lstatSync, statSync, type BigIntStats } from 'node:fs';
import {
  MAP_ANONYMOUS, MAP_DROPPABLE, MAP_GROWSDOWN, MAP_LOCKED, MAP_NORESERVE, MAP_PRIVATE, MAP_SHARED, PE_LAZY, PE_PRESENT,
  PROT_EXEC, PROT_READ, PROT_WRITE, VMA_ANON_PRIVATE, VMA_AREA_HEAP, VMA_AREA_REGULAR, VMA_AREA_VDSO,
  VMA_AREA_VSYSCALL, VMA_AREA_VVAR, VMA_FILE_PRIVATE, VMA_FILE_SHARED, type VmaEntry,
} from '../images/index.js';
import { CollectMode } from '../inject/index.js';
import { DEFAULT_GHOST_LIMIT, deletedPath, ghostProblem, isLinkRemap } from './ghost.js';
import type { SmapsVma } from './proc.js';
import { isShmemVma, planShmemVma, type ShmemRef } from './shmem.js';
import { isSysvShmVma, planSysvShmVma } from './ipc/sysvshm-vma.js';

/** madvise advice bits CRIU keeps in vma_entry.madv, keyed by smaps VmFlags. */
const MADV_BITS: Record<string, bigint> = {
  rr: 1n << 1n, sr: 1n << 2n, dc: 1n << 10n, mg: 1n << 12n, hg: 1n << 14n, nh: 1n << 15n, dd: 1n << 16n, wf: 1n << 18n,
};

const O_RDWR = 2;

export interface PlannedVma {
  /** vma_entry without shmid (file VMAs get their file id later). */
  entry: VmaEntry;
  /** Pages to dump, if any. */
  mode?: CollectMode;
  /** PE_* flags of the dumped pages. */
  peFlags: number;
  /** Mapped file (absolute path), for file VMAs. */
  file?: VmaFile;
  /** Shared memory object (shared anonymous memory, memfd) for VMA_AREA_MEMFD VMAs (plugin/dump/shmem.ts). */
  shmem?: ShmemRef;
}

export interface VmaFile {
  path: string;
  dev: number;
  ino: number;
  size: bigint;
  mode: number;
  fdflags: number;
  /** A deleted file (nlink 0): where its contents can be read, and its stat. */
  ghost?: { source: string; st: BigIntStats };
  /** A deleted file still linked elsewhere (--link-remap): where it can be linked from, and the VMA's name for messages. */
  linked?: { source: string; st: BigIntStats; where: string };
}

export function vmaName(pid: number, v: SmapsVma): string {
  return `pid ${pid}: VMA ${v.start.toString(16)}-${v.end.toString(16)} ${v.perms}${v.path ? ` ${v.path}` : ''}`;
}

/** Returns the plan for a VMA, or a problem string explaining why it cannot be dumped. */
export function planVma(pid: number, v: SmapsVma, ghostLimit: bigint = DEFAULT_GHOST_LIMIT, linkRemap = false): PlannedVma | string {
  const name = vmaName(pid, v);
  const shared = v.perms[3] === 's';
  const prot = (v.perms[0] === 'r' ? PROT_READ : 0) | (v.perms[1] === 'w' ? PROT_WRITE : 0) | (v.perms[2] === 'x' ? PROT_EXEC : 0);
  let flags = shared ? MAP_SHARED : MAP_PRIVATE;
  if (v.vmFlags.has('gd')) flags |= MAP_GROWSDOWN;
  if (v.vmFlags.has('lo')) flags |= MAP_LOCKED;
  if (v.vmFlags.has('nr')) flags |= MAP_NORESERVE;
  // MAP_DROPPABLE is a mapping type of its own (smaps shows it as private).
  if (v.vmFlags.has('dp')) flags = (flags & ~MAP_PRIVATE) | MAP_DROPPABLE;
  let madv = 0n;
  for (const [f, b] of Object.entries(MADV_BITS)) if (v.vmFlags.has(f)) madv |= b;
  if (v.vmFlags.has('ht')) return `${name}: hugetlb mappings are not supported`;
  if (v.vmFlags.has('ss')) return `${name}: shadow stacks are not supported`;
  if (isShmemVma(v)) return planShmemVma(pid, v, name, prot, madv);
  const entry = (status: number, f: number, pgoff = 0n): VmaEntry => {
    const e: VmaEntry = { start: v.start, end: v.end, pgoff, shmid: 0n, prot, flags: f, status, fd: -1n };
    if (madv !== 0n) e.madv = madv;
    return e;
  };
  const anonPrivate = (extra: number): PlannedVma => ({
    entry: entry(VMA_AREA_REGULAR | VMA_ANON_PRIVATE | extra, flags | MAP_ANONYMOUS),
    mode: CollectMode.anon,
    // Lazy-eligible unless locked or droppable (§4.3; CRIU's vma_entry_can_be_lazy).
    peFlags: flags & (MAP_LOCKED | MAP_DROPPABLE) ? PE_PRESENT : PE_LAZY | PE_PRESENT,
  });

  switch (v.path) {
    case '[vsyscall]':
      return { entry: entry(VMA_AREA_VSYSCALL | VMA_ANON_PRIVATE, MAP_PRIVATE | MAP_ANONYMOUS), peFlags: 0 };
    case '[vvar]':
    case '[vvar_vclock]':
      return { entry: entry(VMA_AREA_REGULAR | VMA_AREA_VVAR | VMA_ANON_PRIVATE, MAP_PRIVATE | MAP_ANONYMOUS), peFlags: 0 };
    case '[vdso]':
      return { entry: entry(VMA_AREA_REGULAR | VMA_AREA_VDSO | VMA_ANON_PRIVATE, MAP_PRIVATE | MAP_ANONYMOUS), mode: CollectMode.all, peFlags: PE_PRESENT };
    case '[heap]':
      return anonPrivate(VMA_AREA_HEAP);
    case '[stack]':
      return anonPrivate(0);
  }
  if (v.path === '' || v.path.startsWith('[anon:')) {
    if (shared) return `${name}: shared anonymous memory is not supported`;
    if (v.vmFlags.has('io') || v.vmFlags.has('pf')) return `${name}: I/O mapping is not supported`;
    return anonPrivate(0);
  }
  if (v.path.startsWith('[')) return `${name}: special mapping is not supported`;
  if (isSysvShmVma(v)) return planSysvShmVma(pid, v, name, prot, flags, madv);
  const deleted = deletedPath(v.path);
  if (deleted !== undefined && shared && v.path.startsWith('/dev/zero')) return `${name}: shared anonymous memory is not supported`;
  if (!v.path.startsWith('/')) return `${name}: unsupported mapping`;
  if (v.vmFlags.has('io') || v.vmFlags.has('pf')) return `${name}: device mapping is not supported`;

  // The mapped inode must still be reachable under its path, unchanged, or
  // the restore would map something else; a deleted one (nlink 0) is a
  // ghost file, carried with its contents (plugin/dump/ghost.ts); one still
  // linked elsewhere gets a link remap (--link-remap, plugin/dump/link-remap.ts).
  const mf = `/proc/${pid}/map_files/${v.start.toString(16)}-${v.end.toString(16)}`;
  let st;
  let fdflags = 0;
  try {
    st = statSync(mf, { bigint: true });
    fdflags = (Number(lstatSync(mf).mode) & 0o200) !== 0 ? O_RDWR : 0;
  } catch (e) {
    return `${name}: cannot stat the mapped file (${(e as NodeJS.ErrnoException).code ?? String(e)})`;
  }
  if (!st.isFile()) return `${name}: mapping of a non-regular file is not supported`;
  if (deleted !== undefined) {
    const problem = ghostProblem(name, deleted, st, ghostLimit, linkRemap);
    if (problem) return problem;
  } else {
    try {
      // As the process sees it (its mount namespace and root).
      const now = statSync(`/proc/${pid}/root${v.path}`, { bigint: true });
      if (now.ino !== st.ino || now.dev !== st.dev) return `${name}: the path now names a different file`;
    } catch (e) {
      return `${name}: mapped file is not reachable by its path (${(e as NodeJS.ErrnoException).code ?? String(e)})`;
    }
  }
  const file: VmaFile = { path: deleted ?? v.path, dev: Number(st.dev), ino: Number(st.ino), size: st.size, mode: Number(st.mode), fdflags };
  if (deleted !== undefined) {
    if (isLinkRemap(st)) file.linked = { source: mf, st, where: name };
    else file.ghost = { source: mf, st };
  }
  if (shared) {
    return { entry: { ...entry(VMA_AREA_REGULAR | VMA_FILE_SHARED, flags, v.pgoff), fdflags }, peFlags: 0, file };
  }
  // Private file mapping: only pages copied on write differ from the file.
  return { entry: { ...entry(VMA_AREA_REGULAR | VMA_FILE_PRIVATE, flags, v.pgoff), fdflags }, mode: CollectMode.privateFile, peFlags: PE_PRESENT, file };
}
