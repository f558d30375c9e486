// Copy-on-write sharing across fork survives a restore (issue 18 item 5):
// workload-cow's parent and child share 24 of 32 private pages (each wrote
// 4 of its own after the fork). After an eager restore the shared pages are
// one frame in both processes again (/proc/PID/pagemap), the written ones
// are not, and both sides verify every byte. A lazy restore does not keep
// the sharing (lazy pages are not in the parent when the child is cloned)
// but stays correct.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { closeSync, openSync, readSync } from 'node:fs';
import { isRoot } from '../helpers/env.js';
import { restoreAndCheck, withDumped } from '../helpers/restore.js';

const skip = !isRoot && 'needs root';

const PAGES = 32;

/** Page frame numbers (0 when not present) of `n` pages at `addr`. */
function frames(pid: number, addr: bigint, n: number): bigint[] {
  const fd = openSync(`/proc/${pid}/pagemap`, 'r');
  try {
    const b = Buffer.alloc(8 * n);
    readSync(fd, b, 0, b.length, Number(addr / 4096n) * 8);
    return Array.from({ length: n }, (_, i) => {
      const e = b.readBigUInt64LE(i * 8);
      return e >> 63n ? e & ((1n << 55n) - 1n) : 0n;
    });
  } finally {
    closeSync(fd);
  }
}

test('cow: pages a parent and child still shared at the dump are shared again after an eager restore', { skip }, () => withDumped('workload-cow', [], async (d) => {
  const parent = d.wl.pid;
  const child = Number(d.wl.report.child);
  const region = BigInt(d.wl.report.region!);
  await restoreAndCheck(d, {}, () => {
    const a = frames(parent, region, PAGES);
    const b = frames(child, region, PAGES);
    for (let i = 0; i < PAGES; i++) {
      assert.ok(a[i]! !== 0n && b[i]! !== 0n, `page ${i} present in both`);
      const own = (i >= 8 && i < 12) || (i >= 16 && i < 20);
      if (own) assert.notEqual(a[i], b[i], `page ${i} was written after the fork: one copy each`);
      else assert.equal(a[i], b[i], `page ${i} is shared copy on write again`);
    }
  });
}));

test('cow: a lazy restore of the same tree is correct (sharing not kept for lazy memory)', { skip }, () =>
  withDumped('workload-cow', [], (d) => restoreAndCheck(d, { lazy: true })));
