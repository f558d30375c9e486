// Pure argument checks of plugin/uffd: range packing for the engine, the
// ABI wrappers' validation (thrown before any syscall) and histogram maths.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { checkRange, uffdCopy, uffdRegister, uffdZeropage, uffdMove, NONCOOP_FEATURES, UffdFeature, uffdCreate } from '../../plugin/uffd/abi.js';
import { histPercentile, packRanges, type LazyRange } from '../../plugin/uffd/engine.js';

const P = 4096n;
const sizes = new Map<number, bigint>([[0, 16n * P]]);

test('packRanges sorts and packs [start, end, kind, source, off]', () => {
  const ranges: LazyRange[] = [
    { start: 10n * P, end: 12n * P, src: { kind: 'remote', imageAddr: 0x7000n * P } },
    { start: 0n, end: 4n * P, src: { kind: 'file', source: 0, offset: 8n * P } },
    { start: 4n * P, end: 6n * P, src: { kind: 'zero' } },
  ];
  assert.deepEqual([...packRanges(ranges, sizes)], [
    0n, 4n * P, 0n, 0n, 8n * P,
    4n * P, 6n * P, 1n, 0n, 0n,
    10n * P, 12n * P, 2n, 0n, 0x7000n * P,
  ]);
});

test('packRanges rejects bad ranges with a message naming the range', () => {
  const f = (start: bigint, end: bigint, offset = 0n, source = 0): LazyRange => ({ start, end, src: { kind: 'file', source, offset } });
  assert.throws(() => packRanges([f(1n, P)], sizes), /not page aligned/);
  assert.throws(() => packRanges([f(P, P)], sizes), /empty or reversed/);
  assert.throws(() => packRanges([f(2n * P, P)], sizes), /empty or reversed/);
  assert.throws(() => packRanges([f(0n, 2n * P), f(P, 3n * P)], sizes), /overlaps/);
  assert.throws(() => packRanges([f(0n, P, 16n * P)], sizes), /the file has 0x10000/);
  assert.throws(() => packRanges([f(0n, P, 1n)], sizes), /page-aligned/);
  assert.throws(() => packRanges([f(0n, P, 0n, 3)], sizes), /unknown source 3/);
  assert.throws(() => packRanges([{ start: 0n, end: P, src: { kind: 'remote', imageAddr: 5n } }], sizes), /imageAddr/);
  assert.throws(() => packRanges([{ start: 0n, end: P, src: { kind: 'bogus' } } as unknown as LazyRange], sizes), TypeError);
  assert.throws(() => packRanges([{ start: 0, end: P, src: { kind: 'zero' } } as unknown as LazyRange], sizes), TypeError);
  assert.equal(packRanges([], sizes).length, 0);
});

test('checkRange: alignment, emptiness, 64-bit wrap', () => {
  checkRange(P, P);
  assert.throws(() => checkRange(P + 1n, P), RangeError);
  assert.throws(() => checkRange(P, 0n), RangeError);
  assert.throws(() => checkRange(P, 100n), RangeError);
  assert.throws(() => checkRange((1n << 64n) - P, 2n * P), /wraps|range/);
  assert.throws(() => checkRange(-P, P), RangeError);
});

test('ABI wrappers validate before the syscall', () => {
  assert.throws(() => uffdCopy(-1, 0n, Buffer.alloc(4096)), RangeError);
  assert.throws(() => uffdCopy(3, 1n, Buffer.alloc(4096)), /not page aligned/);
  assert.throws(() => uffdCopy(3, P, Buffer.alloc(100)), /multiple of the page size/);
  assert.throws(() => uffdCopy(3, P, Buffer.alloc(4096), 4n), /unknown bits/);
  assert.throws(() => uffdZeropage(1.5, P, P), TypeError);
  assert.throws(() => uffdRegister(3, P, P, 0n), /MISSING, WP or MINOR/);
  assert.throws(() => uffdRegister(3, P, P, 8n), /unknown bits/);
  assert.throws(() => uffdMove(3, P, 3n, P), /not page aligned/);
  assert.throws(() => uffdCreate({ flags: 0x10 }), RangeError);
});

test('feature constants match the kernel bit numbers', () => {
  assert.equal(NONCOOP_FEATURES, 0x4en);
  assert.equal(UffdFeature.MOVE, 0x10000n);
  assert.equal(Object.values(UffdFeature).reduce((a, b) => a | b, 0n), 0x1ffffn);
});

test('histPercentile returns the upper bound of the bucket holding the rank', () => {
  const h = new Array<number>(64).fill(0);
  assert.equal(histPercentile(h, 50), 0);
  h[10] = 98; // [1024, 2048) ns
  h[14] = 2; // [16384, 32768) ns
  assert.equal(histPercentile(h, 50), 2048);
  assert.equal(histPercentile(h, 98), 2048);
  assert.equal(histPercentile(h, 99), 32768);
});

test('packRanges packs shared object spans as kind 3 and checks them against the object size', () => {
  const objects = new Map([[2, 16n * 4096n]]);
  const r = (start: bigint, end: bigint, offset: bigint, object = 2): LazyRange => ({ start, end, src: { kind: 'shared', object, offset } });
  assert.deepEqual([...packRanges([r(0x10000n, 0x12000n, 0x3000n)], new Map(), objects)], [0x10000n, 0x12000n, 3n, 2n, 0x3000n]);
  assert.throws(() => packRanges([r(0x10000n, 0x12000n, 0x3000n, 5)], new Map(), objects), /unknown shared object 5/);
  assert.throws(() => packRanges([r(0x10000n, 0x12000n, 0xf000n)], new Map(), objects), /the object has 0x10000/);
  assert.throws(() => packRanges([r(0x10000n, 0x12000n, 0x100n)], new Map(), objects), /object offset must be a page-aligned bigint/);
});
