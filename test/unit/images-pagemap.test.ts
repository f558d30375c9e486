// Pagemap streaming: writer → reader with pages-file offsets (IMAGE-FORMAT
// §4.1), both count fields, validation errors, the parent chain, and a
// large pagemap streamed in bounded memory.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile, stat, symlink, mkdir, truncate } from 'node:fs/promises';
import { join } from 'node:path';
import { ImageError } from '../../plugin/errors.js';
import { ImageDir } from '../../plugin/images/imagedir.js';
import { KIND } from '../../plugin/images/magic.js';
import { PAGE_SIZE } from '../../plugin/images/memory.js';
import { encodeImage } from '../../plugin/images/image.js';
import { PagemapReader } from '../../plugin/images/pagemap.js';
import { PE_LAZY, PE_PARENT, PE_PRESENT } from '../../plugin/images/memory.js';
import { leakedFds, openFds, tempDir } from '../helpers/env.js';

const page = (fill: number, n = 1): Buffer => Buffer.alloc(n * PAGE_SIZE, fill);

test('writer → reader: entries, flags, offsets in the pages file', async () => {
  const tmp = tempDir();
  const fds = openFds();
  try {
    const d = await ImageDir.create(tmp.path);
    const w = await d.pagemapWriter(100, 7);
    // The worked example of §4.1 (shape, not addresses).
    assert.equal(await w.add(0x5585710ac000n, 1, PE_PRESENT, page(1)), 0);
    assert.equal(await w.add(0x5585710ae000n, 2, PE_PRESENT, page(2, 2)), 0x1000);
    assert.equal(await w.add(0x7f70153cd000n, 2, PE_LAZY | PE_PRESENT, page(3, 2)), 0x3000);
    assert.equal(await w.add(0x7f70153d0000n, 4, PE_LAZY), undefined);
    assert.equal(await w.add(0x7f70153d4000n, 1, PE_PARENT), undefined);
    assert.equal(await w.add(0x7ffd4a210000n, 4, PE_LAZY | PE_PRESENT, page(4, 4)), 0x5000);
    await w.close();
    assert.equal((await stat(d.pagesPath(7))).size, 9 * PAGE_SIZE);

    const r = await d.pagemap(100);
    assert.equal(r.head.pages_id, 7);
    assert.equal(r.pagesPath, join(d.dir, 'pages-7.img'));
    const runs = await r.toArray();
    assert.deepEqual(runs.map((x) => [x.vaddr, x.nrPages, x.flags, x.pagesOffset]), [
      [0x5585710ac000n, 1, 4, 0],
      [0x5585710ae000n, 2, 4, 0x1000],
      [0x7f70153cd000n, 2, 6, 0x3000],
      [0x7f70153d0000n, 4, 2, undefined],
      [0x7f70153d4000n, 1, 1, undefined],
      [0x7ffd4a210000n, 4, 6, 0x5000],
    ]);
    // Both count fields carry the count (crit 3.17 reads field 2, CRIU 4.2 field 5).
    assert.deepEqual(runs[2]!.entry, { vaddr: 0x7f70153cd000n, compat_nr_pages: 2, flags: 6, nr_pages: 2n });
    assert.equal(runs[0]!.imageOffset, 8 + 4 + 2);
    // The data is where the offsets say.
    const pages = await readFile(d.pagesPath(7));
    assert.equal(pages[0x3000], 3);
    assert.equal(pages[0x5000 + 4 * PAGE_SIZE - 1], 4);
    assert.deepEqual(leakedFds(fds), []);
  } finally {
    tmp.dispose();
  }
});

test('legacy entries: in_parent and missing flags; count from field 2 when field 5 is absent', async () => {
  const tmp = tempDir();
  try {
    const d = await ImageDir.create(tmp.path);
    await d.writeImage(KIND.pagemap, 5, [
      { pages_id: 1 },
      { vaddr: 0x1000n, compat_nr_pages: 2 },
      { vaddr: 0x3000n, compat_nr_pages: 1, in_parent: true },
      { vaddr: 0x10000n, compat_nr_pages: 0, flags: PE_PRESENT, nr_pages: 3n },
    ]);
    await (await import('node:fs/promises')).writeFile(d.pagesPath(1), Buffer.alloc(5 * PAGE_SIZE));
    const runs = await (await d.pagemap(5)).toArray();
    assert.deepEqual(runs.map((x) => [x.nrPages, x.flags, x.pagesOffset]), [[2, PE_PRESENT, 0], [1, PE_PARENT, undefined], [3, PE_PRESENT, 0x2000]]);
  } finally {
    tmp.dispose();
  }
});

test('writer refuses unsorted, overlapping, unaligned, empty or data-less entries', async () => {
  const tmp = tempDir();
  try {
    const d = await ImageDir.create(tmp.path);
    const w = await d.pagemapWriter(1, 1);
    await w.add(0x10000n, 2, PE_PRESENT, page(0, 2));
    await assert.rejects(w.add(0x11000n, 1, PE_LAZY), /overlaps or precedes/);
    await assert.rejects(w.add(0x20001n, 1, PE_LAZY), /not page-aligned/);
    await assert.rejects(w.add(0x20000n, 0, PE_LAZY), /bad page count/);
    await assert.rejects(w.add(0x20000n, 1, PE_PRESENT), /page data must be given/);
    await assert.rejects(w.add(0x20000n, 1, PE_LAZY, page(0)), /page data must be given/);
    await assert.rejects(w.add(0x20000n, 2, PE_PRESENT, page(0)), /4096 bytes of data for 2 pages/);
    await assert.rejects(w.add(0x20000n, 1, 8), /invalid flags/);
    await assert.rejects(w.add(0x20000n, 1, PE_PARENT | PE_PRESENT, page(0)), /invalid flags/);
    // Overlapping calls are refused rather than silently interleaved.
    const first = w.add(0x30000n, 1, PE_LAZY);
    await assert.rejects(w.add(0x40000n, 1, PE_LAZY), /before the previous add\(\) finished/);
    await first;
    await w.close();
    await assert.rejects(w.add(0x50000n, 1, PE_LAZY), /writer is closed/);
    const w2 = await d.pagemapWriter(2, 2);
    await w2.add(0x10000n, 1, PE_PRESENT, page(1));
    await w2.abort();
    assert.deepEqual((await d.list()).map((f) => f.name).sort(), ['pagemap-1.img', 'pages-1.img']);
  } finally {
    tmp.dispose();
  }
});

async function pagemapWith(dir: ImageDir, entries: object[], pagesBytes?: number): Promise<string> {
  const file = await dir.writeImage(KIND.pagemap, 9, [{ pages_id: 3 }, ...entries]);
  if (pagesBytes !== undefined) await (await import('node:fs/promises')).writeFile(dir.pagesPath(3), Buffer.alloc(pagesBytes));
  return file;
}

async function readErr(dir: ImageDir): Promise<ImageError> {
  try {
    await (await dir.pagemap(9)).toArray();
  } catch (e) {
    assert.ok(e instanceof ImageError, `expected ImageError, got ${String(e)}`);
    return e;
  }
  assert.fail('expected an ImageError');
}

test('reader validation: each inconsistency is an ImageError naming the pagemap file and entry offset', async () => {
  const tmp = tempDir();
  const fds = openFds();
  try {
    const d = await ImageDir.create(tmp.path);
    const e = (vaddr: bigint, n: number, flags: number): object => ({ vaddr, compat_nr_pages: n, flags, nr_pages: BigInt(n) });
    const file = join(d.dir, 'pagemap-9.img');
    // second entry starts at 8 (header) + 4 + 2 (head) + 4 + len(first)
    const firstLen = 4 + (await import('../../plugin/images/pagemap.js')).encodePagemapEntry(e(0x10000n, 2, 4) as never).length;
    const second = 8 + 6 + firstLen;

    await pagemapWith(d, [e(0x10000n, 2, 4), e(0x20000n, 4, 4)], 3 * PAGE_SIZE);
    let err = await readErr(d);
    assert.equal(err.file, file);
    assert.equal(err.offset, second);
    assert.match(err.message, /run past the end of pages-3\.img \(need 24576 bytes, file has 12288\)/);

    await pagemapWith(d, [e(0x10000n, 2, 4), e(0x11000n, 1, 4)], 3 * PAGE_SIZE);
    err = await readErr(d);
    assert.equal(err.offset, second);
    assert.match(err.message, /overlaps or precedes the previous entry/);

    await pagemapWith(d, [e(0x10000n, 2, 4), e(0x8000n, 1, 4)], 3 * PAGE_SIZE);
    assert.match((await readErr(d)).message, /sorted and disjoint/);

    await pagemapWith(d, [e(0x10000n, 0, 4)], 0);
    assert.match((await readErr(d)).message, /has zero pages/);

    await pagemapWith(d, [e(0x10800n, 1, 4)], PAGE_SIZE);
    assert.match((await readErr(d)).message, /not page-aligned/);

    await pagemapWith(d, [e(0x10000n, 1, 0x10)], 0);
    assert.match((await readErr(d)).message, /invalid flags 0x10/);

    await pagemapWith(d, [e(0x10000n, 1, 4)], 2 * PAGE_SIZE);
    assert.match((await readErr(d)).message, /pages-3\.img has 8192 bytes but the pagemap accounts for 4096/);

    await (await import('node:fs/promises')).rm(d.pagesPath(3));
    await pagemapWith(d, [e(0x10000n, 1, 4)]);
    assert.match((await readErr(d)).message, /pages-3\.img does not exist/);

    // Lazy-only entries need no pages file.
    await pagemapWith(d, [e(0x10000n, 1, PE_LAZY)]);
    assert.equal((await (await d.pagemap(9)).toArray()).length, 1);

    // Plain decoding (show) does not validate.
    await pagemapWith(d, [e(0x10000n, 2, 4), e(0x11000n, 1, 4)]);
    assert.equal((await (await PagemapReader.open(file, { validate: false })).toArray()).length, 2);
    assert.deepEqual(leakedFds(fds), []);
  } finally {
    tmp.dispose();
  }
});

test('resolvePages follows the parent chain (PE_PARENT) with each level\'s own pages_id', async () => {
  const tmp = tempDir();
  try {
    const gp = await ImageDir.create(join(tmp.path, 'pre1'));
    const par = await ImageDir.create(join(tmp.path, 'pre2'));
    const cur = await ImageDir.create(join(tmp.path, 'dump'));
    await symlink('../pre1', join(par.dir, 'parent'));
    await symlink('../pre2', join(cur.dir, 'parent'));

    let w = await gp.pagemapWriter(50, 1);
    await w.add(0x100000n, 8, PE_PRESENT, Buffer.concat(Array.from({ length: 8 }, (_, i) => page(0x10 + i))));
    await w.close();
    w = await par.pagemapWriter(50, 2);
    await w.add(0x100000n, 2, PE_PRESENT, page(0x20, 2));
    await w.add(0x102000n, 6, PE_PARENT);
    await w.close();
    w = await cur.pagemapWriter(50, 3);
    await w.add(0x100000n, 1, PE_PARENT);
    await w.add(0x101000n, 1, PE_PRESENT, page(0x30));
    await w.add(0x102000n, 4, PE_PARENT);
    await w.add(0x106000n, 1, PE_LAZY);
    await w.close();

    const pieces = await cur.resolvePages(50, 0x100000n, 6);
    assert.deepEqual(pieces, [
      { vaddr: 0x100000n, nrPages: 1, file: par.pagesPath(2), offset: 0 },
      { vaddr: 0x101000n, nrPages: 1, file: cur.pagesPath(3), offset: 0 },
      { vaddr: 0x102000n, nrPages: 4, file: gp.pagesPath(1), offset: 2 * PAGE_SIZE },
    ]);
    // Content check through the pieces.
    const buf = await readFile(pieces[2]!.file);
    assert.equal(buf[pieces[2]!.offset], 0x12);

    await assert.rejects(cur.resolvePages(50, 0x106000n, 1), /lazy and not stored in this image/);
    await assert.rejects(cur.resolvePages(50, 0x200000n, 1), /no pagemap entry covers 0x200000/);
    await assert.rejects(gp.resolvePages(51, 0x100000n, 1), /pagemap-51\.img.*cannot open pagemap: ENOENT/);
    // A parent that does not cover the range names the parent's pagemap.
    await mkdir(join(tmp.path, 'empty'));
    const lone = await ImageDir.create(join(tmp.path, 'lone'));
    await symlink('../empty', join(lone.dir, 'parent'));
    w = await lone.pagemapWriter(50, 1);
    await w.add(0x100000n, 1, PE_PARENT);
    await w.close();
    await assert.rejects(lone.resolvePages(50, 0x100000n, 1), /empty\/pagemap-50\.img/);
  } finally {
    tmp.dispose();
  }
});

test('a pagemap of 300k entries streams in batches with correct offsets', async () => {
  const tmp = tempDir();
  try {
    const d = await ImageDir.create(tmp.path);
    const w = await d.pagemapWriter(1, 1);
    const n = 300_000;
    const one = page(7);
    for (let i = 0; i < n; i++) {
      const va = 0x7f0000000000n + BigInt(i) * 0x3000n;
      if (i % 100 === 0) await w.add(va, 1, PE_PRESENT | PE_LAZY, one);
      else await w.add(va, 2, PE_LAZY);
    }
    await w.close();
    const r = await d.pagemap(1);
    let count = 0;
    let present = 0;
    let maxBatch = 0;
    let last = -1n;
    for await (const batch of r.batches()) {
      maxBatch = Math.max(maxBatch, batch.length);
      for (const x of batch) {
        assert.ok(x.vaddr > last);
        last = x.vaddr;
        if (x.pagesOffset !== undefined) assert.equal(x.pagesOffset, present++ * PAGE_SIZE);
        count++;
      }
    }
    assert.equal(count, n);
    assert.equal(present, n / 100);
    assert.ok(maxBatch <= 4096);
  } finally {
    tmp.dispose();
  }
});

test('truncated pagemap: a clean error at the offset of the cut entry', async () => {
  const tmp = tempDir();
  try {
    const d = await ImageDir.create(tmp.path);
    const file = d.pathOf(KIND.pagemap, 2);
    const bytes = encodeImage(KIND.pagemap, [{ message: { pages_id: 1 } }, { message: { vaddr: 0x1000n, compat_nr_pages: 1, flags: 2, nr_pages: 1n } }]);
    await (await import('node:fs/promises')).writeFile(file, bytes);
    await truncate(file, bytes.length - 3);
    const err = await (await d.pagemap(2)).toArray().then(() => undefined, (e: unknown) => e);
    assert.ok(err instanceof ImageError);
    assert.equal(err.offset, 14);
    assert.match(err.message, /entry size \d+ runs past end of file/);
  } finally {
    tmp.dispose();
  }
});
