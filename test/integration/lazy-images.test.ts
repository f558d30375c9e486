// Image directories (written with plugin/images) -> per-process lazy plans,
// through the real ImageDir reader: lazy VMAs only, zero gaps, parent chain,
// refusal of corrupt/truncated pages files and of PE_LAZY-only images.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, truncateSync } from 'node:fs';
import { join } from 'node:path';
import { openImageProvider } from '../../plugin/lazy/images.js';
import { PE_LAZY, PE_PARENT, PE_PRESENT } from '../../plugin/images/memory.js';
import { UserError } from '../../plugin/errors.js';
import { tempDir } from '../helpers/env.js';
import { PAGE, writeLazyImages } from '../helpers/lazy-images.js';

const P = BigInt(PAGE);
const B = 0x7f0000000000n;
const pages = (n: number, fill: number): Buffer => Buffer.alloc(n * PAGE, fill);

function show(ranges: { start: bigint; end: bigint; src: { kind: string; offset?: bigint; source?: number } }[], sources: string[]): string[] {
  return ranges.map((r) => `${(r.start - B) / P}-${(r.end - B) / P}:${r.src.kind}${r.src.kind === 'file' ? `:${sources[r.src.source!]!.split('/').slice(-2).join('/')}@${r.src.offset! / P}` : ''}`);
}

test('plan from real images: lazy VMAs, gaps, file private and vdso skipped', async () => {
  const d = tempDir();
  try {
    await writeLazyImages(d.path, [{
      pid: 100,
      vmas: [
        { start: B, end: B + 10n * P },
        { start: B + 10n * P, end: B + 12n * P, flags: 0x2, status: 0x41 }, // file private
        { start: B + 20n * P, end: B + 22n * P, status: 0x209 }, // vdso
      ],
      entries: [
        { vaddr: B + 2n * P, pages: 3, flags: PE_LAZY | PE_PRESENT, data: pages(3, 1) },
        { vaddr: B + 10n * P, pages: 1, flags: PE_PRESENT, data: pages(1, 2) },
        { vaddr: B + 20n * P, pages: 2, flags: PE_PRESENT, data: pages(2, 3) },
      ],
    }]);
    const prov = await openImageProvider(d.path, false);
    assert.deepEqual(await prov.pids(), [100]);
    const sources: string[] = [];
    const plan = await prov.plan(100, (p) => sources.push(p) - 1);
    assert.deepEqual(show(plan.ranges, sources), ['0-2:zero', '2-5:file:' + d.path.split('/').pop() + '/pages-1.img@0', '5-10:zero']);
    assert.equal(plan.fileBytes, 3n * P);
    await assert.rejects(prov.plan(101, () => 0), (e: unknown) => e instanceof UserError && /pid 101 is not in pstree/.test(e.message));
  } finally {
    d.dispose();
  }
});

test('truncated pages file: a clear error naming the file, before anything is served', async () => {
  const d = tempDir();
  try {
    await writeLazyImages(d.path, [{ pid: 7, vmas: [{ start: B, end: B + 8n * P }], entries: [{ vaddr: B, pages: 8, flags: PE_LAZY | PE_PRESENT, data: pages(8, 9) }] }]);
    truncateSync(join(d.path, 'pages-1.img'), 5 * PAGE);
    const prov = await openImageProvider(d.path, false);
    await assert.rejects(prov.plan(7, () => 0), (e: unknown) => e instanceof UserError && /pages-1\.img/.test(e.message) && /past the end/.test(e.message));
  } finally {
    d.dispose();
  }
});

test('PE_LAZY without data is refused without a page server', async () => {
  const d = tempDir();
  try {
    await writeLazyImages(d.path, [{ pid: 7, vmas: [{ start: B, end: B + 8n * P }], entries: [{ vaddr: B, pages: 8, flags: PE_LAZY }] }]);
    await assert.rejects((await openImageProvider(d.path, false)).plan(7, () => 0), (e: unknown) => e instanceof UserError && /page server/.test(e.message));
    const plan = await (await openImageProvider(d.path, true)).plan(7, () => 0);
    assert.deepEqual(plan.ranges.map((r) => r.src.kind), ['remote']);
  } finally {
    d.dispose();
  }
});

test('PE_PARENT pages come from the parent image directory (its own pages id)', async () => {
  const d = tempDir();
  try {
    const pre = join(d.path, 'pre');
    const cur = join(d.path, 'cur');
    mkdirSync(pre);
    mkdirSync(cur);
    await writeLazyImages(pre, [{ pid: 5, pagesId: 9, vmas: [{ start: B, end: B + 8n * P }], entries: [{ vaddr: B, pages: 8, flags: PE_LAZY | PE_PRESENT, data: pages(8, 4) }] }]);
    await writeLazyImages(cur, [{
      pid: 5, vmas: [{ start: B, end: B + 8n * P }],
      entries: [{ vaddr: B, pages: 2, flags: PE_LAZY | PE_PRESENT, data: pages(2, 5) }, { vaddr: B + 2n * P, pages: 4, flags: PE_PARENT }],
    }], { parent: '../pre' });
    const sources: string[] = [];
    const plan = await (await openImageProvider(cur, false)).plan(5, (p) => sources.push(p) - 1);
    assert.deepEqual(show(plan.ranges, sources), ['0-2:file:cur/pages-1.img@0', '2-6:file:pre/pages-9.img@2', '6-8:zero']);
  } finally {
    d.dispose();
  }
});
