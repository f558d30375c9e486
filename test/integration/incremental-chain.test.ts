// Incremental dumps on a real process that keeps writing between rounds
// (native/helpers/workload-incr.c): pre-dump chains of 1 and 3, a final
// dump with PE_PARENT entries (counted exactly against what the workload
// reports), crit decoding of every image, and byte-exact restores (eager and
// lazy) that the workload verifies itself.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync, readlinkSync } from 'node:fs';
import { join } from 'node:path';
import { dump, preDump } from '../../plugin/dump/index.js';
import { readTrackerRecord } from '../../plugin/dump/tracker.js';
import { ImageDir, PE_PARENT, PE_PRESENT } from '../../plugin/images/index.js';
import { restore } from '../../plugin/restore/index.js';
import { isRoot, leakedFds, openFds, tempDir, withTimeout } from '../helpers/env.js';
import { critCheckDir } from '../helpers/critcheck.js';
import { parseReport, startWorkload, waitForFile, type Workload } from '../helpers/workload.js';

const MIB = 8;

async function round(w: Workload, k: number): Promise<Record<string, string>> {
  process.kill(w.pid, 'SIGUSR2');
  const f = join(w.ctrlDir, `round-${k}`);
  await waitForFile(f, 10000);
  return parseReport(readFileSync(f, 'utf8'));
}

/** Pages of [lo, hi) by pagemap flag kind. */
async function countPages(dir: string, pid: number, lo: bigint, hi: bigint): Promise<{ parent: number; present: number; parentAll: number }> {
  const d = await ImageDir.open(dir);
  const r = await d.pagemap(pid);
  let parent = 0, present = 0, parentAll = 0;
  for await (const e of r) {
    if (e.flags & PE_PARENT) parentAll += e.nrPages;
    const a = e.vaddr > lo ? e.vaddr : lo;
    const b = e.end < hi ? e.end : hi;
    if (a >= b) continue;
    const n = Number((b - a) / 4096n);
    if (e.flags & PE_PARENT) parent += n;
    if (e.flags & PE_PRESENT) present += n;
  }
  return { parent, present, parentAll };
}

function trackerAlive(pid: number): boolean {
  try {
    return !readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.startsWith('Z');
  } catch {
    return false;
  }
}

async function chain(preDumps: number, lazy: boolean): Promise<void> {
  const before = openFds();
  const t = tempDir('lr-incr-');
  const w = await startWorkload('workload-incr', [String(MIB)]);
  const warnings: string[] = [];
  const warn = (l: string): void => { warnings.push(l); };
  try {
    const buf = BigInt(`0x${w.report.buf!}`);
    const pages = Number(w.report.pages);
    const hi = buf + BigInt(pages) * 4096n;
    const dirs: string[] = [];
    let last: Record<string, string> = {};
    let tracker = 0;
    for (let i = 1; i <= preDumps; i++) {
      const d = join(t.path, `pre${i}`);
      const r = await preDump({ pid: w.pid, imagesDir: d, warn, trackTimeoutS: 60, ...(i > 1 ? { prevImagesDir: `../pre${i - 1}` } : {}) });
      const rec = readTrackerRecord(d);
      assert.ok(rec, `pre${i} records its tracker`);
      assert.ok(trackerAlive(rec.tracker), 'tracker runs');
      if (i > 1) {
        assert.equal(rec.tracker, tracker, 'the chain keeps one tracker');
        assert.equal(readTrackerRecord(dirs[i - 2]!), undefined, 'the parent record is consumed');
        assert.equal(readlinkSync(join(d, 'parent')), `../pre${i - 1}`);
        assert.ok(r.stats.pagesSkippedParent > 0);
        const c = await countPages(d, w.pid, buf, hi);
        assert.equal(c.present, Number(last.written), `pre${i}: exactly the pages written in round ${i - 1} are copied`);
        assert.equal(c.parent + c.present, Number(last.populated), `pre${i}: every populated page is in the image or its parent`);
      }
      tracker = rec.tracker;
      dirs.push(d);
      last = await round(w, i);
    }
    // The final dump: frozen, only what round N wrote is copied.
    const fin = join(t.path, 'final');
    const r = await dump({ pid: w.pid, imagesDir: fin, prevImagesDir: `../pre${preDumps}`, warn });
    assert.equal(await withTimeout(w.exited, 10000, 'dumped workload killed'), 'SIGKILL');
    assert.deepEqual(warnings, []);
    assert.equal(readlinkSync(join(fin, 'parent')), `../pre${preDumps}`);
    const c = await countPages(fin, w.pid, buf, hi);
    assert.equal(c.present, Number(last.written), 'only pages written since the last pre-dump are copied');
    assert.equal(c.parent + c.present, Number(last.populated), 'unchanged populated pages are PE_PARENT');
    assert.ok(c.parent > pages / 2, `most of the buffer is left to the parent (${c.parent} of ${pages})`);
    assert.equal(r.stats.pagesSkippedParent, c.parentAll);
    assert.equal(readTrackerRecord(dirs[dirs.length - 1]!), undefined, 'the record is consumed');
    await withTimeout((async () => { while (trackerAlive(tracker)) await new Promise((res) => setTimeout(res, 10)); })(), 5000, 'tracker retired');
    for (const d of [...dirs, fin]) critCheckDir(d);

    const restored = await restore({ imagesDir: fin, detached: true, lazy });
    try {
      // Lazy: the unchanged (PE_PARENT) pages are left to the daemon too.
      if (lazy) assert.ok(restored.timings.eagerBytes < BigInt(c.parent) * 4096n, `eager bytes ${restored.timings.eagerBytes} < parent bytes`);
      else assert.ok(restored.timings.eagerBytes >= BigInt(c.parent + c.present) * 4096n);
      process.kill(restored.pid, 'SIGUSR1');
      const ex = await withTimeout(restored.wait(), 20000, 'restored workload exit');
      assert.equal(readFileSync(join(w.ctrlDir, 'result'), 'utf8').trim(), 'ok');
      assert.deepEqual(ex, { code: 0, signal: 0 });
      if (lazy) await withTimeout(restored.lazyDone(), 10000, 'lazy done');
    } finally {
      await restored.close();
    }
  } finally {
    await w.dispose();
    t.dispose();
  }
  assert.deepEqual(leakedFds(before), []);
}

const skip = !isRoot && 'needs root';
test('chain of 1 pre-dump, eager restore is byte-exact', { skip }, () => chain(1, false));
test('chain of 3 pre-dumps, eager restore is byte-exact', { skip }, () => chain(3, false));
test('chain of 1 pre-dump, lazy restore serves PE_PARENT pages from the parent files', { skip }, () => chain(1, true));
test('chain of 3 pre-dumps, lazy restore is byte-exact', { skip }, () => chain(3, true));

test('a parent of another pid, or without its tracker, gives a full dump with a warning', { skip }, async () => {
  const t = tempDir('lr-incr-');
  const a = await startWorkload('workload-incr', ['2']);
  const b = await startWorkload('workload-incr', ['2']);
  try {
    const warnings: string[] = [];
    const warn = (l: string): void => { warnings.push(l); };
    await preDump({ pid: a.pid, imagesDir: join(t.path, 'a1'), warn, trackTimeoutS: 60 });
    const r = await dump({ pid: b.pid, imagesDir: join(t.path, 'b2'), prevImagesDir: '../a1', leaveRunning: true, warn });
    assert.equal(r.stats.pagesSkippedParent, 0);
    assert.equal(existsSync(join(t.path, 'b2', 'parent')), false);
    assert.match(warnings.join('\n'), /dump of pid \d+, not of pid/);
    // Kill a's tracker: the next dump of a must not trust stale tracking.
    const rec = readTrackerRecord(join(t.path, 'a1'))!;
    process.kill(rec.tracker, 'SIGKILL');
    await withTimeout((async () => { while (trackerAlive(rec.tracker)) await new Promise((res) => setTimeout(res, 10)); })(), 5000, 'tracker gone');
    warnings.length = 0;
    await round(a, 1);
    const r2 = await dump({ pid: a.pid, imagesDir: join(t.path, 'a2'), prevImagesDir: '../a1', warn });
    assert.equal(r2.stats.pagesSkippedParent, 0);
    assert.match(warnings.join('\n'), /write tracker lost/);
    await withTimeout(a.exited, 10000, 'a killed');
    const restored = await restore({ imagesDir: join(t.path, 'a2'), detached: true });
    try {
      process.kill(restored.pid, 'SIGUSR1');
      await withTimeout(restored.wait(), 20000, 'restored exit');
      assert.equal(readFileSync(join(a.ctrlDir, 'result'), 'utf8').trim(), 'ok');
    } finally {
      await restored.close();
    }
  } finally {
    await a.dispose();
    await b.dispose();
    t.dispose();
  }
});
