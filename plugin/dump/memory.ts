// One process's memory into its pages-<id>.img: one path for the three ways
// a dump copies memory (full, --lazy-pages, incremental), each a list of
// copy passes over the process's regions.
import { closeSync, openSync } from 'node:fs';
import { PAGE, PAGE_SIZE, PE_LAZY, type PagemapEntry } from '../images/index.js';
import { Pagemap, ProcMem, dumpPages, dumpPagesAsync, scanPages, type DumpRegion } from '../inject/index.js';
import { copyDirty, type Incremental } from './incremental.js';
import type { PlannedVma } from './vmas.js';

export type MemoryStrategy =
  /** Every page with data is written; the copier computes the pages file's checksums per `checksumChunk` bytes. */
  | { kind: 'full'; checksumChunk: number }
  /**
   * --lazy-pages: lazy-eligible regions are only looked up in the pagemap
   * (which pages hold data; nothing is read, so the time before the page
   * server listens does not grow with the memory, as CRIU's); the page
   * server reads them later from the frozen tree.
   */
  | { kind: 'lazy' }
  /** Incremental: only pages written since the parent dump; the others become PE_PARENT entries. */
  | { kind: 'incremental'; inc: Incremental };

export interface CopiedRun {
  vaddr: bigint;
  nPages: number;
  /** Index into CopiedMemory.regions. */
  region: number;
  /** Scanned only (--lazy-pages): a PE_LAZY entry without data. */
  lazyOnly: boolean;
}

export interface CopiedMemory {
  /** The VMAs copied (those with a collect mode). */
  regions: PlannedVma[];
  /** Ascending vaddr. */
  runs: CopiedRun[];
  /** Incremental: entries left to the parent images. */
  parent: PagemapEntry[];
  /** The pages file's checksums when the copier computed them (one pass wrote the whole file). */
  checksums?: { checksums: Uint32Array; bytes: number };
  scanned: number;
  zero: number;
  /** Bytes written to the pages file. */
  bytes: number;
}

interface PassResult {
  runs: readonly { vaddr: bigint; nPages: number; region: number }[];
  bytes: number;
  scanned: number;
  zero: number;
  checksums?: Uint32Array;
}

/** One copy over some of the regions (indices into them); its runs' regions index the pass's list. */
interface Pass {
  regions: number[];
  lazyOnly: boolean;
  copy(regions: DumpRegion[]): PassResult | Promise<PassResult>;
}

/**
 * Copies process `pid`'s memory (the frozen tree's) into the pages file at
 * `pagesPath`. A full copy runs on a worker thread: the caller may go on
 * (collecting the process's registers and state, never writing its memory)
 * until the promise settles.
 */
export async function copyMemory(pid: number, pagesPath: string, vmas: readonly PlannedVma[], strategy: MemoryStrategy,
  inject: { gadget: bigint; timeoutMs: number }): Promise<CopiedMemory> {
  const regions: DumpRegion[] = [];
  const regionPlan: PlannedVma[] = [];
  for (const v of vmas) {
    if (v.mode === undefined) continue;
    regions.push({ start: v.entry.start, nPages: Number((v.entry.end - v.entry.start) / PAGE), mode: v.mode });
    regionPlan.push(v);
  }
  const out: CopiedMemory = { regions: regionPlan, runs: [], parent: [], scanned: 0, zero: 0, bytes: 0 };
  const mem = new ProcMem(pid);
  const pm = new Pagemap(pid);
  const pagesFd = openSync(pagesPath, 'w');
  try {
    const all = regions.map((_, i) => i);
    const passes: Pass[] = [];
    if (strategy.kind === 'full') {
      passes.push({ regions: all, lazyOnly: false, copy: (g) => dumpPagesAsync(mem, pm, pagesFd, 0n, g, strategy.checksumChunk) });
    } else if (strategy.kind === 'incremental') {
      const mp = await strategy.inc.planMemory(pid, regions, inject);
      out.parent = mp.parent;
      passes.push({
        regions: all, lazyOnly: false,
        copy: () => copyDirty(pid, pagesFd, mp, (g, off) => dumpPages(mem, pm, pagesFd, off, g), (addr, into) => { mem.read(addr, PAGE_SIZE, into); }),
      });
    } else {
      const lazy = (i: number): boolean => (regionPlan[i]!.peFlags & PE_LAZY) !== 0;
      passes.push({ regions: all.filter((i) => !lazy(i)), lazyOnly: false, copy: (g) => dumpPages(mem, pm, pagesFd, 0n, g) });
      passes.push({ regions: all.filter(lazy), lazyOnly: true, copy: (g) => ({ ...scanPages(pid, pm, g), bytes: 0 }) });
    }
    for (const pass of passes) {
      const r = await pass.copy(pass.regions.map((i) => regions[i]!));
      for (const x of r.runs) out.runs.push({ vaddr: x.vaddr, nPages: x.nPages, region: pass.regions[x.region]!, lazyOnly: pass.lazyOnly });
      out.scanned += r.scanned;
      out.zero += r.zero;
      if (!pass.lazyOnly) out.bytes += r.bytes;
      if (r.checksums) out.checksums = { checksums: r.checksums, bytes: r.bytes };
    }
    if (passes.length > 1) out.runs.sort((a, b) => (a.vaddr < b.vaddr ? -1 : a.vaddr > b.vaddr ? 1 : 0));
  } finally {
    closeSync(pagesFd);
    pm.close();
    mem.close();
  }
  return out;
}
