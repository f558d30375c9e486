// Writes small image directories for the lazy-pages tests with the images
// library: pstree, mm (VMAs) and pagemap + pages for each process.
import { symlinkSync } from 'node:fs';
import { ImageDir } from '../../plugin/images/imagedir.js';
import type { MmEntry, VmaEntry } from '../../plugin/images/types.js';

export const PAGE = 4096;
export const ANON_PRIVATE = { flags: 0x22, status: 0x201 };

export interface TestVma {
  start: bigint;
  end: bigint;
  flags?: number;
  status?: number;
}

export interface TestEntry {
  vaddr: bigint;
  pages: number;
  flags: number;
  /** Data for PE_PRESENT entries. */
  data?: Buffer;
}

export interface TestProcess {
  pid: number;
  ppid?: number;
  vmas: TestVma[];
  entries: TestEntry[];
  pagesId?: number;
}

export function vmaEntry(v: TestVma): VmaEntry {
  return {
    start: v.start, end: v.end, pgoff: 0n, shmid: 0n, prot: 3,
    flags: v.flags ?? ANON_PRIVATE.flags, status: v.status ?? ANON_PRIVATE.status, fd: -1n,
  };
}

export function mmEntry(vmas: TestVma[]): MmEntry {
  return {
    mm_start_code: 0n, mm_end_code: 0n, mm_start_data: 0n, mm_end_data: 0n, mm_start_stack: 0n,
    mm_start_brk: 0n, mm_brk: 0n, mm_arg_start: 0n, mm_arg_end: 0n, mm_env_start: 0n, mm_env_end: 0n,
    exe_file_id: 0, mm_saved_auxv: [], vmas: vmas.map(vmaEntry), aios: [],
  };
}

/** Writes inventory-less lazy images: pstree + mm + pagemap/pages per process. */
export async function writeLazyImages(dir: string, procs: TestProcess[], opts: { parent?: string } = {}): Promise<ImageDir> {
  const img = await ImageDir.create(dir);
  await img.writePstree(procs.map((p) => ({ pid: p.pid, ppid: p.ppid ?? 0, pgid: p.pid, sid: p.pid, threads: [p.pid] })));
  let nextPages = 1;
  for (const p of procs) {
    await img.writeMm(p.pid, mmEntry(p.vmas));
    const w = await img.pagemapWriter(p.pid, p.pagesId ?? nextPages++);
    try {
      for (const e of p.entries) await w.add(e.vaddr, e.pages, e.flags, e.data);
    } finally {
      await w.close();
    }
  }
  if (opts.parent) symlinkSync(opts.parent, `${dir}/parent`);
  return img;
}
