// Pipes across a checkpoint: a shell pipeline `producer | consumer` (bash
// with two small C programs, native/helpers/workload-pipe.c) dumped while
// the producer is blocked on a full pipe and restored eagerly and lazily;
// the consumer checks that no counter is lost or duplicated. crit decodes
// files.img and pipes-data.img.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { dump } from '../../plugin/dump/index.js';
import { FdType, ImageDir } from '../../plugin/images/index.js';
import { helperPath } from '../../plugin/native/addon.js';
import { restore } from '../../plugin/restore/index.js';
import { critCheckDir, critDecode, haveCrit } from '../helpers/critcheck.js';
import { isRoot, leakedFds, openFds, tempDir, withTimeout } from '../helpers/env.js';
import { parseReport, waitForFile } from '../helpers/workload.js';

const COUNTERS = 400000; // 3.2 MB through the pipe; the dump happens after half

/** bash -c 'producer | consumer' as a session leader; resolves once the consumer paused mid-stream. */
async function startPipeline(ctrl: string): Promise<{ bash: number; consumer: number; exited: Promise<unknown> }> {
  const wl = helperPath('workload-pipe');
  const child = spawn('/bin/bash', ['-c', `${wl} produce | ${wl} consume ${ctrl} ${COUNTERS}`], { detached: true, stdio: 'ignore' });
  const exited = new Promise((resolve) => child.once('exit', resolve));
  try {
    await waitForFile(join(ctrl, 'ready'), 20000);
  } catch (e) {
    child.kill('SIGKILL');
    throw e;
  }
  return { bash: child.pid!, consumer: Number(parseReport(readFileSync(join(ctrl, 'ready'), 'utf8')).pid), exited };
}

for (const mode of ['eager', 'lazy'] as const) {
  test(`pipeline producer | consumer checkpointed mid-stream, restored ${mode}: no byte lost or duplicated`, { skip: !isRoot && 'needs root' }, async () => {
    const before = openFds();
    const ctrl = tempDir('lr-pipes-ctl-');
    const img = tempDir('lr-pipes-img-');
    let pids: number[] = [];
    try {
      const p = await startPipeline(ctrl.path);
      const d = await dump({ pid: p.bash, imagesDir: img.path });
      pids = d.pids;
      assert.equal(d.pids.length, 3, 'bash, producer, consumer');
      await withTimeout(p.exited, 10000, 'the dumped bash is reaped');

      const dir = await ImageDir.open(img.path);
      const files = await dir.files();
      const pipes = files.filter((f) => f.type === FdType.PIPE);
      const inTree = pipes.filter((f) => pipes.some((g) => g !== f && g.pipe!.pipe_id === f.pipe!.pipe_id));
      assert.equal(inTree.length, 2, 'both ends of the pipeline pipe');
      if (haveCrit) {
        const counts = critCheckDir(img.path);
        assert.equal(counts.get('pipes-data.img'), 1);
        const data = critDecode(join(img.path, 'pipes-data.img')).entries[0]!;
        assert.equal(data.pipe_id, inTree[0]!.pipe!.pipe_id);
        assert.ok(Number(data.bytes) > 0, 'the full pipe had queued bytes');
      }

      const tree = await withTimeout(restore({ imagesDir: img.path, detached: true, lazy: mode === 'lazy' }), 30000, 'restore');
      process.kill(p.consumer, 'SIGUSR1');
      const exit = await withTimeout(tree.wait(), 30000, 'restored pipeline exits');
      await withTimeout(tree.lazyDone(), 30000, 'lazy pages served');
      await tree.close();
      assert.equal(readFileSync(join(ctrl.path, 'result'), 'utf8').trim(), `ok ${COUNTERS}`);
      assert.deepEqual(exit, { code: 0, signal: 0 });
      pids = [];
    } finally {
      for (const pid of pids) try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ }
      ctrl.dispose();
      img.dispose();
    }
    assert.deepEqual(leakedFds(before), []);
  });
}
