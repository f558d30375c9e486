// VMA flags a restore gives back (issue 18 item 4), as CRIU does: the mmap
// flags it keeps in vma_entry.flags (MAP_GROWSDOWN, MAP_LOCKED,
// MAP_NORESERVE, MAP_DROPPABLE, with the mapping type) go to the mmap
// itself, and every madvise advice it keeps in vma_entry.madv (SEQUENTIAL,
// RANDOM, DONTFORK, DONTDUMP, MERGEABLE, HUGEPAGE, NOHUGEPAGE, WIPEONFORK)
// is applied to the whole VMA right after it is mapped.
import { MAP_DROPPABLE, MAP_GROWSDOWN, MAP_LOCKED, MAP_NORESERVE, MAP_PRIVATE, MAP_SHARED } from '../images/memory.js';
import type { VmaEntry } from '../images/index.js';
import { type BatchCall, NR, type RemoteTask } from './task.js';

/** The vma_entry.flags bits passed to mmap (the rest are ours to add: FIXED_NOREPLACE, ANONYMOUS). */
const KEPT = MAP_SHARED | MAP_PRIVATE | MAP_DROPPABLE | MAP_GROWSDOWN | MAP_NORESERVE | MAP_LOCKED;

export function mmapFlags(vma: VmaEntry): number {
  return vma.flags & KEPT;
}

const MADV_NAMES: Record<number, string> = {
  1: 'MADV_RANDOM', 2: 'MADV_SEQUENTIAL', 10: 'MADV_DONTFORK', 12: 'MADV_MERGEABLE', 14: 'MADV_HUGEPAGE',
  15: 'MADV_NOHUGEPAGE', 16: 'MADV_DONTDUMP', 18: 'MADV_WIPEONFORK',
};

/** The advice numbers set in a vma_entry.madv mask, lowest first. */
export function madviceList(madv: bigint): number[] {
  const out: number[] = [];
  for (let b = 0; b < 64; b++) if (madv & (1n << BigInt(b))) out.push(b);
  return out;
}

/** madvise(start, len, advice) for every advice of the VMA; a refusal is an error naming pid, VMA and advice. */
export function applyMadvise(t: RemoteTask, vma: VmaEntry): void {
  t.batch(madviseCalls(vma));
}

/** The madvise calls of applyMadvise, for a batch (RemoteTask.batch). */
export function madviseCalls(vma: VmaEntry): BatchCall[] {
  return madviceList(vma.madv ?? 0n).map((advice) => ({
    what: `madvise(0x${vma.start.toString(16)}-0x${vma.end.toString(16)}, ${MADV_NAMES[advice] ?? advice})`,
    nr: NR.madvise,
    args: [vma.start, vma.end - vma.start, advice],
  }));
}
