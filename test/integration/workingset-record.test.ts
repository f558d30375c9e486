// Working-set record and replay on real kv-service runs: recording writes
// lr-workingset-<pid>.img with the hot set in request order; a later lazy
// restore replays it and the first request takes far fewer synchronous
// faults (counted by the engine), with byte-exact answers; --no-working-set
// (workingSet: false) turns it off.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { ImageDir } from '../../plugin/images/imagedir.js';
import { isRoot, leakedFds, openFds, tempDir } from '../helpers/env.js';
import { checkpointKv, kvHotOffsets, runKv } from '../helpers/kv-service.js';

const skip = !isRoot && 'needs root (userfaultfd, ptrace)';
const MIB = 16;
const HOT = 1024;

test('working set: recorded in fault order, replayed first, far fewer synchronous faults, byte-exact', { skip, timeout: 120_000 }, async () => {
  const fds = openFds();
  const work = tempDir('lr-ws-');
  try {
    const cp = await checkpointKv(work.path, MIB, HOT);

    // 1. Record (push off while recording anyway; stop it by API once answered).
    let written: string[] = [];
    const rec = await runKv(cp, { recordWorkingSet: 60 }, async (s) => {
      assert.equal(s.recordingWorkingSet, true);
      written = await s.stopRecording();
    });
    assert.equal(rec.sum, cp.sum, 'recording run answers the same checksum');
    assert.equal(rec.result, 'ok');
    const path = join(cp.dir, `lr-workingset-${cp.pid}.img`);
    assert.deepEqual(written, [path]);
    assert.ok(existsSync(path));

    // The image: the hot set of the table, in request order (other pages, e.g. the stack, around it).
    const ws = await (await ImageDir.open(cp.dir)).workingSet(cp.pid);
    assert.ok(ws);
    assert.equal(ws.head.pid, cp.pid);
    assert.equal(ws.head.page_size, 4096);
    const pages: bigint[] = [];
    for (const r of ws.ranges) for (let i = 0n; i < r.nr_pages; i++) pages.push(r.vaddr + i * 4096n);
    assert.equal(new Set(pages).size, pages.length, 'each page once');
    const hot = kvHotOffsets(MIB, HOT);
    const size = BigInt(MIB) << 20n;
    const mm = await (await ImageDir.open(cp.dir)).mm(cp.pid);
    const bases = mm.vmas.filter((v) => v.end - v.start >= size).flatMap((v) => [v.start, v.end - size]);
    const match = bases.find((b) => {
      const inTable = pages.filter((p) => p >= b && p < b + size).map((p) => p - b);
      return inTable.length === hot.length && inTable.every((o, i) => o === hot[i]);
    });
    assert.ok(match !== undefined, `the recorded pages of the table are kv-service's ${hot.length} hot pages in order`);
    assert.ok(pages.length < hot.length + 256, `few pages besides the hot set (${pages.length - hot.length})`);

    // 2. Same run: without and with the working set, background push off to isolate it.
    // The hold is unbounded here: the process resumes only once its working set
    // is in, so the fault counts depend on the mechanism, not on the load.
    const HOLD = { workingSetHoldMs: 600_000 };
    const without = await runKv(cp, { prefetch: false, workingSet: false });
    const withWs = await runKv(cp, { prefetch: false, ...HOLD });
    for (const r of [without, withWs]) {
      assert.equal(r.sum, cp.sum, 'byte-exact: the same checksum as before the checkpoint');
      assert.equal(r.code, 0);
      assert.equal(r.result, 'ok');
    }
    assert.equal(without.workingSetPages, undefined);
    assert.equal(withWs.workingSetPages, pages.length);
    assert.ok(withWs.warmedMs !== undefined, 'the working set was all in (warmed) before the process ran');
    assert.ok(without.faults >= hot.length / 8, `without: ${without.faults} faults`);
    assert.ok(withWs.faults * 3 <= without.faults, `replay cuts synchronous faults at least 3x: ${withWs.faults} vs ${without.faults}`);

    // 3. With the background push on as well: still byte-exact.
    const pushed = await runKv(cp, HOLD);
    assert.equal(pushed.sum, cp.sum);
    assert.equal(pushed.result, 'ok');
    assert.ok(pushed.faults < without.faults, `with push: ${pushed.faults} faults`);
  } finally {
    work.dispose();
  }
  assert.deepEqual(leakedFds(fds), []);
});
