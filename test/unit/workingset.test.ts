// Working-set recorder (first touch, fault order, runs) and the image round
// trip through plugin/images, with malformed images refused by name.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ImageDir } from '../../plugin/images/imagedir.js';
import { ImageError } from '../../plugin/errors.js';
import { loadWorkingSet, WorkingSetRecorder, writeWorkingSet } from '../../plugin/lazy/workingset.js';
import { latencySummary } from '../../plugin/stats/format.js';
import { tempDir } from '../helpers/env.js';

test('recorder: pages once, in first-touch order, consecutive pages as runs, frozen after remap', () => {
  const r = new WorkingSetRecorder(1000n);
  for (const a of [0x5000n, 0x6123n, 0x7000n, 0x5008n, 0x2000n, 0x3000n, 0x9000n]) r.add(a, 1500n);
  assert.equal(r.pages, 6);
  assert.deepEqual(r.ranges().map((x) => [x.vaddr, x.nr_pages]), [[0x5000n, 3n], [0x2000n, 2n], [0x9000n, 1n]]);
  assert.equal(r.ranges()[0]!.at_ns, 500n);
  r.frozen = true;
  r.add(0x20000n, 2000n);
  assert.equal(r.pages, 6);
});

test('working-set image: written and loaded back in order, adjacent runs joined; bad images refused', async () => {
  const d = tempDir('lr-wsu-');
  try {
    assert.equal(await loadWorkingSet(d.path, 7), undefined);
    const r = new WorkingSetRecorder(0n);
    for (const a of [0x9000n, 0x1000n, 0x2000n, 0x4000n]) r.add(a, 1n);
    await writeWorkingSet(d.path, 7, 123n, r);
    assert.deepEqual(await loadWorkingSet(d.path, 7), [{ start: 0x9000n, end: 0xa000n }, { start: 0x1000n, end: 0x3000n }, { start: 0x4000n, end: 0x5000n }]);
    const img = await ImageDir.open(d.path);
    await img.writeWorkingSet({ pid: 8, page_size: 4096 }, [{ vaddr: 0x1001n, nr_pages: 1n }]);
    await assert.rejects(loadWorkingSet(d.path, 8), (e: unknown) => e instanceof ImageError && /lr-workingset-8\.img: bad range at 0x1001/.test(e.message));
    await img.writeWorkingSet({ pid: 10, page_size: 4096 }, []);
    const { renameSync } = await import('node:fs');
    renameSync(`${d.path}/lr-workingset-10.img`, `${d.path}/lr-workingset-9.img`);
    await assert.rejects(loadWorkingSet(d.path, 9), /working set is for pid 10, not 9/);
  } finally {
    d.dispose();
  }
});

test('latencySummary: percentiles from log2-ns buckets', () => {
  assert.equal(latencySummary([0, 0]), undefined);
  const h = new Array<number>(64).fill(0);
  h[12] = 90; // (4.096 us, 8.192 us]
  h[15] = 10;
  const s = latencySummary(h)!;
  assert.equal(s.p50Us, 8.192);
  assert.equal(s.p99Us, 65.536);
  assert.equal(s.maxUs, 65.536);
  assert.deepEqual(s.histogram, [{ leUs: 8.192, count: 90 }, { leUs: 65.536, count: 10 }]);
});
