// The vDSO block at restore: this kernel's [vvar]/[vvar_vclock]/[vdso] are
// matched with the dump's by size and order, not VMA count (CRIU 4.2 records
// [vvar] + [vvar_vclock] as one VMA_AREA_VVAR of 6 pages; we record two).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { vdsoMoves } from '../../plugin/restore/process.js';
import { UserError } from '../../plugin/errors.js';

const P = 0x1000n;
// This kernel (6.18): [vvar] 4 pages, [vvar_vclock] 2 pages, then [vdso] 2 pages.
const here = [
  { start: 0x7f0000000000n, end: 0x7f0000000000n + 4n * P, name: '[vvar]' },
  { start: 0x7f0000004000n, end: 0x7f0000004000n + 2n * P, name: '[vvar_vclock]' },
  { start: 0x7f0000006000n, end: 0x7f0000006000n + 2n * P, name: '[vdso]' },
];

test('a CRIU 4.2 image (one 6-page VMA_AREA_VVAR) maps both vvar areas in order before the vDSO', () => {
  const vvar = { start: 0x7ffd10000000n, end: 0x7ffd10000000n + 6n * P };
  const vdso = { start: vvar.end, end: vvar.end + 2n * P };
  const m = vdsoMoves(7, here, [vvar], vdso);
  assert.deepEqual(m.map((x) => [x.name, x.from, x.len, x.to]), [
    ['[vvar]', here[0]!.start, 4n * P, vvar.start],
    ['[vvar_vclock]', here[1]!.start, 2n * P, vvar.start + 4n * P],
    ['[vdso]', here[2]!.start, 2n * P, vdso.start],
  ]);
});

test('our own images (two vvar VMAs) give the same moves', () => {
  const base = 0x7ffd20000000n;
  const m = vdsoMoves(7, here, [{ start: base + 4n * P, end: base + 6n * P }, { start: base, end: base + 4n * P }], { start: base + 6n * P, end: base + 8n * P });
  assert.deepEqual(m.map((x) => x.to), [base, base + 4n * P, base + 6n * P]);
});

test('a different size or order of the vDSO block is a clear error', () => {
  const vdso = { start: 0x7ffd10006000n, end: 0x7ffd10008000n };
  const cases: [{ start: bigint; end: bigint }[], { start: bigint; end: bigint }, RegExp][] = [
    [[{ start: 0x7ffd10002000n, end: 0x7ffd10006000n }], vdso, /here 6 vvar page\(s\) at vdso-0x6000, 2 vdso page\(s\); in the image 4 vvar page\(s\) at vdso-0x4000/],
    [[{ start: 0x7ffd10008000n, end: 0x7ffd1000e000n }], vdso, /in the image 6 vvar page\(s\) at vdso\+0x2000/],
    [[{ start: 0x7ffd10000000n, end: 0x7ffd10006000n }], { start: 0x7ffd10006000n, end: 0x7ffd10009000n }, /3 vdso page\(s\)/],
    [[{ start: 0x7ffd10000000n, end: 0x7ffd10002000n }, { start: 0x7ffd10003000n, end: 0x7ffd10006000n }], vdso, /not contiguous/],
  ];
  for (const [vv, vd, re] of cases) {
    assert.throws(() => vdsoMoves(7, here, vv, vd), (e: unknown) => e instanceof UserError && /^pid 7: /.test(e.message) && re.test(e.message), re.source);
  }
  assert.throws(() => vdsoMoves(7, here.slice(0, 2), [], { start: 0n, end: P }), /maps no \[vdso\]/);
});
