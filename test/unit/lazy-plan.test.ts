// Images -> lazy range tables (plugin/lazy/plan.ts), on synthetic VMAs and pagemaps.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ImageError, UserError } from '../../plugin/errors.js';
import { PE_LAZY, PE_PARENT, PE_PRESENT } from '../../plugin/images/memory.js';
import { fileSpansOf, isLazyVma, ParentPagemap, planRanges, type PagemapRun, type PlanContext, type VmaInfo } from '../../plugin/lazy/plan.js';

const P = 4096n;
const ANON = { flags: 0x22, status: 0x201 }; // MAP_PRIVATE|MAP_ANONYMOUS, REGULAR|ANON_PRIVATE
const vma = (startPage: number, endPage: number, extra: Partial<VmaInfo> = {}): VmaInfo => ({ start: BigInt(startPage) * P, end: BigInt(endPage) * P, ...ANON, ...extra });
const run = (page: number, n: number, flags: number, offPage = 0): PagemapRun => ({ vaddr: BigInt(page) * P, nrPages: BigInt(n), flags, offset: BigInt(offPage) * P });
const ctx = (over: Partial<PlanContext> = {}): PlanContext => ({ pid: 7, pagemapFile: 'pagemap-7.img', pagesFile: 'pages-1.img', pagesSize: 1000n * P, fileSource: 3, allowRemote: false, ...over });
const show = (ranges: { start: bigint; end: bigint; src: { kind: string } & Record<string, unknown> }[]): string[] =>
  ranges.map((r) => `${r.start / P}-${r.end / P}:${r.src.kind}${r.src.kind === 'file' ? `@${(r.src.offset as bigint) / P}` : r.src.kind === 'remote' ? `@${(r.src.imageAddr as bigint) / P}` : ''}`);

test('which VMAs are lazy', () => {
  assert.equal(isLazyVma(vma(1, 2)), true);
  assert.equal(isLazyVma(vma(1, 2, { status: 0x209 })), false, 'vdso');
  assert.equal(isLazyVma(vma(1, 2, { status: 0x1201 })), false, 'vvar');
  assert.equal(isLazyVma(vma(1, 2, { status: 0x204 })), false, 'vsyscall (not regular)');
  assert.equal(isLazyVma(vma(1, 2, { status: 0x41, flags: 0x2 })), false, 'file private');
  assert.equal(isLazyVma(vma(1, 2, { status: 0x101, flags: 0x21 })), false, 'shared anon');
  assert.equal(isLazyVma(vma(1, 2, { flags: 0x2022 })), false, 'locked');
  assert.equal(isLazyVma(vma(1, 2, { flags: 0x40022 })), false, 'hugetlb');
  assert.equal(isLazyVma(vma(1, 2, { flags: 0x122 })), true, 'stack');
});

test('covers every lazy VMA: file pieces, zero gaps, cut at VMA boundaries, running offsets', async () => {
  const vmas = [vma(10, 20), vma(20, 30), vma(40, 45, { status: 0x41, flags: 0x2 }), vma(50, 60)];
  const runs = [run(0, 2, PE_PRESENT, 0), run(12, 10, PE_LAZY | PE_PRESENT, 2), run(25, 1, PE_LAZY | PE_PRESENT, 12), run(40, 2, PE_PRESENT, 13), run(59, 1, PE_LAZY | PE_PRESENT, 15)];
  const plan = await planRanges(vmas, runs, ctx());
  assert.deepEqual(show(plan.ranges), ['10-12:zero', '12-20:file@2', '20-22:file@10', '22-25:zero', '25-26:file@12', '26-30:zero', '50-59:zero', '59-60:file@15']);
  assert.equal(plan.fileBytes, 12n * P);
  assert.equal(plan.zeroBytes, 18n * P);
  assert.equal(plan.lazyVmas, 3);
});

test('a VMA with no pagemap entry is all zero; no VMAs, no ranges', async () => {
  assert.deepEqual(show((await planRanges([vma(1, 5)], [], ctx())).ranges), ['1-5:zero']);
  assert.deepEqual((await planRanges([], [run(1, 1, PE_PRESENT)], ctx())).ranges, []);
});

test('pagemap past the end of the pages file is refused before anything is served', async () => {
  await assert.rejects(planRanges([vma(0, 10)], [run(0, 10, PE_LAZY | PE_PRESENT, 0)], ctx({ pagesSize: 9n * P })),
    (e: unknown) => e instanceof ImageError && /past the end of the pages file/.test(e.message) && /pid 7/.test(e.message));
});

test('unsorted or misaligned entries are corrupt images', async () => {
  await assert.rejects(planRanges([vma(0, 10)], [run(5, 1, PE_PRESENT), run(4, 1, PE_PRESENT, 1)], ctx()), ImageError);
  await assert.rejects(planRanges([vma(0, 10)], [{ vaddr: 5n, nrPages: 1n, flags: PE_PRESENT, offset: 0n }], ctx()), ImageError);
});

test('PE_LAZY without data needs a remote source; with one it becomes remote ranges', async () => {
  await assert.rejects(planRanges([vma(0, 10)], [run(2, 3, PE_LAZY)], ctx()), (e: unknown) => e instanceof UserError && /page server/.test(e.message));
  const plan = await planRanges([vma(0, 4), vma(4, 10)], [run(2, 3, PE_LAZY)], ctx({ allowRemote: true }));
  assert.deepEqual(show(plan.ranges), ['0-2:zero', '2-4:remote@2', '4-5:remote@4', '5-10:zero']);
  assert.equal(plan.remoteBytes, 3n * P);
});

test('PE_PARENT resolves piecewise through a parent chain', async () => {
  const grand = new ParentPagemap('g/pagemap-7.img', 9, undefined);
  grand.add(run(3, 2, PE_PRESENT, 0), 10n * P, 'g/pages-1.img');
  const parent = new ParentPagemap('p/pagemap-7.img', 8, (s, e) => grand.resolve(s, e));
  parent.add(run(0, 3, PE_PRESENT, 4), 10n * P, 'p/pages-2.img');
  parent.add(run(3, 2, PE_PARENT), 10n * P, 'p/pages-2.img');
  const plan = await planRanges([vma(0, 8)], [run(1, 4, PE_PARENT | PE_LAZY), run(5, 1, PE_LAZY | PE_PRESENT, 0)], ctx({ resolveParent: (s, e) => parent.resolve(s, e) }));
  assert.deepEqual(plan.ranges.map((r) => `${r.start / P}-${r.end / P}:${r.src.kind}${r.src.kind === 'file' ? `${r.src.source}@${r.src.offset / P}` : ''}`),
    ['0-1:zero', '1-3:file8@5', '3-5:file9@0', '5-6:file3@0', '6-8:zero']);
  await assert.rejects(parent.resolve(4n * P, 7n * P), (e: unknown) => e instanceof ImageError && /missing/.test(e.message));
  await assert.rejects(planRanges([vma(0, 8)], [run(1, 1, PE_PARENT)], ctx()), (e: unknown) => e instanceof ImageError && /no parent/.test(e.message));
});

test('memory is proportional to entries, not pages: one entry for 1 TiB is one range', async () => {
  const pages = 2 ** 28;
  const plan = await planRanges([vma(0, pages)], [run(0, pages, PE_LAZY | PE_PRESENT, 0)], ctx({ pagesSize: BigInt(pages) * P }));
  assert.equal(plan.ranges.length, 1);
});

test('streams async pagemap runs', async () => {
  async function* gen(): AsyncGenerator<PagemapRun> {
    for (let i = 0; i < 100; i++) yield run(i * 2, 1, PE_LAZY | PE_PRESENT, i);
  }
  const plan = await planRanges([vma(0, 200)], gen(), ctx());
  assert.equal(plan.ranges.length, 200);
  assert.equal(plan.fileBytes, 100n * P);
});

test('shared memory spans join a plan sorted; an overlap with a private range is refused', async () => {
  const { withSharedSpans } = await import('../../plugin/lazy/plan.js');
  const plan = await planRanges([vma(10, 20), vma(40, 50)], [run(12, 2, PE_PRESENT, 0)], ctx());
  const shared = { start: 30n * P, end: 34n * P, src: { kind: 'shared' as const, object: 0, offset: 8n * P } };
  const out = withSharedSpans(plan, [shared]);
  assert.deepEqual(out.ranges.map((r) => `${r.start / P}-${r.end / P}:${r.src.kind}`), ['10-12:zero', '12-14:file', '14-20:zero', '30-34:shared', '40-50:zero']);
  assert.equal(out.sharedBytes, 4n * P);
  assert.equal(withSharedSpans(plan, []), plan);
  assert.throws(() => withSharedSpans(plan, [{ ...shared, start: 18n * P, end: 22n * P }]), (e: Error) => e instanceof UserError && /pid 7: shared memory VMA at 0x12000 overlaps/.test(e.message));
});

test('fileSpansOf: the pages-file spans of wanted address ranges, per source, in the order asked; zero and remote pieces have none', () => {
  const P = 4096n;
  const ranges = [
    { start: 0x10000n, end: 0x10000n + 4n * P, src: { kind: 'file' as const, source: 0, offset: 8192n } },
    { start: 0x10000n + 4n * P, end: 0x10000n + 6n * P, src: { kind: 'zero' as const } },
    { start: 0x10000n + 6n * P, end: 0x10000n + 8n * P, src: { kind: 'file' as const, source: 1, offset: 0n } },
    { start: 0x40000n, end: 0x40000n + P, src: { kind: 'remote' as const, imageAddr: 0x40000n } },
  ];
  const spans = fileSpansOf(ranges, [
    { start: 0x10000n + 7n * P, end: 0x10000n + 8n * P }, // source 1, asked first
    { start: 0x10000n + 3n * P, end: 0x10000n + 7n * P }, // crosses file 0, zero, file 1
    { start: 0x40000n, end: 0x40000n + P }, // remote: nothing
    { start: 0x90000n, end: 0x91000n }, // outside every range
  ]);
  assert.deepEqual([...spans.keys()].sort(), [0, 1]);
  assert.deepEqual(spans.get(0), [{ offset: 8192n + 3n * P, length: P }]);
  assert.deepEqual(spans.get(1), [{ offset: P, length: P }, { offset: 0n, length: P }]);
});
