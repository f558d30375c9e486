// The uffd harness (a real process with a cooperative userfaultfd and scripted
// memory actions, test/helpers/uffd.ts) together with lazy images of its
// regions, for tests of the lazy-pages server serving its faults: a sparse
// pattern file (some pages all zero: left out of the image, never populated),
// the images of a harness, and the case's clean-up.
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { PE_LAZY, PE_PRESENT } from '../../plugin/images/memory.js';
import type { LazyPagesServer } from '../../plugin/lazy/server.js';
import { PAGE, writeLazyImages, type TestProcess } from './lazy-images.js';
import { startHarness, type Harness } from './uffd.js';

/**
 * Writes a pattern file of `pages` pages where every `zeroEvery`-th page is
 * zero (0: none); `salt` varies the data. Returns the bytes.
 */
export function writeSparsePattern(path: string, pages: number, zeroEvery: number, salt = 0x5a5a5a5a): Buffer {
  const b = Buffer.alloc(pages * PAGE);
  for (let p = 0; p < pages; p++) {
    if (zeroEvery > 0 && p % zeroEvery === zeroEvery - 1) continue;
    for (let i = 0; i < PAGE; i += 4) b.writeUInt32LE(((p * 2654435761) ^ (i * 40503) ^ salt) >>> 0, p * PAGE + i);
  }
  writeFileSync(path, b);
  return b;
}

function isZeroPage(b: Buffer, off: number): boolean {
  for (let i = 0; i < PAGE; i += 8) if (b.readBigUInt64LE(off + i) !== 0n) return false;
  return true;
}

/** The image of a harness: one lazy VMA per region, its non-zero pages as PE_LAZY|PE_PRESENT runs. */
export function imageOfHarness(h: Harness, pattern: Buffer): TestProcess {
  const regions = [...h.regions].sort((a, b) => (a.addr < b.addr ? -1 : 1));
  const entries: TestProcess['entries'] = [];
  for (const r of regions) {
    const n = Number(r.len) / PAGE;
    let runStart = -1;
    for (let p = 0; p <= n; p++) {
      const data = p < n && !isZeroPage(pattern, Number(r.fileoff) + p * PAGE);
      if (data && runStart < 0) runStart = p;
      if (!data && runStart >= 0) {
        const off = Number(r.fileoff) + runStart * PAGE;
        entries.push({ vaddr: r.addr + BigInt(runStart * PAGE), pages: p - runStart, flags: PE_LAZY | PE_PRESENT, data: pattern.subarray(off, off + (p - runStart) * PAGE) });
        runStart = -1;
      }
    }
  }
  return { pid: h.pid, vmas: regions.map((r) => ({ start: r.addr, end: r.addr + r.len })), entries };
}

export interface ImagedHarness {
  h: Harness;
  /** The pattern's bytes (what the harness's regions hold, in order). */
  pattern: Buffer;
  /** dir/img: the harness's lazy images. */
  imgDir: string;
}

/**
 * Writes a sparse pattern of the regions' pages in `dir`, starts a harness
 * running `actions` on it and writes its lazy images to dir/img.
 */
export async function startImagedHarness(dir: string, spec: { regions: number[]; actions: string[]; zeroEvery: number; salt?: number }): Promise<ImagedHarness> {
  const patternPath = join(dir, 'pattern');
  const pattern = writeSparsePattern(patternPath, spec.regions.reduce((a, b) => a + b, 0), spec.zeroEvery, spec.salt);
  const h = await startHarness({ dir, pattern: patternPath, regions: spec.regions, actions: spec.actions });
  const imgDir = join(dir, 'img');
  try {
    await writeLazyImages(imgDir, [imageOfHarness(h, pattern)]);
  } catch (e) {
    await stopHarnessCase(h, undefined);
    throw e;
  }
  return { h, pattern, imgDir };
}

/** End of a harness case, whatever happened: SIGKILL the harness, close the server, reap the harness. */
export async function stopHarnessCase(h: Harness | undefined, server: LazyPagesServer | undefined): Promise<void> {
  h?.kill();
  await server?.close();
  if (h) await h.finish().catch(() => undefined);
}
