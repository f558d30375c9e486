// Dump of a process tree with a grandchild (workload-tree): pstree with
// parents first, links, process groups and sessions; per-process images;
// the tree runs on (the child still reaps the grandchild) and verifies itself.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { dump } from '../../plugin/dump/index.js';
import { ImageDir, inspectCheckpoint } from '../../plugin/images/index.js';
import { critCheckDir } from '../helpers/critcheck.js';
import { isRoot, tempDir, withTimeout } from '../helpers/env.js';
import { withRunningDump } from '../helpers/dump-running.js';
import { startWorkload } from '../helpers/workload.js';

test('dump: process tree with a grandchild', { skip: !isRoot && 'needs root' }, async () => {
  await withRunningDump('lr-dump-tree-', 'workload-tree', [], async (wl, img) => {
    const child = Number(wl.report.child);
    const grand = Number(wl.report.grandchild);
    const res = await dump({ pid: wl.pid, imagesDir: img.path, leaveRunning: true });
    assert.deepEqual(res.pids, [wl.pid, child, grand]);
    {
      const c = critCheckDir(img.path);
      assert.equal(c.get('pstree.img'), 3);
      for (const p of [wl.pid, child, grand]) for (const k of ['core', 'mm', 'pagemap', 'ids', 'fs']) assert.ok(c.has(`${k}-${p}.img`), `${k}-${p}.img`);
    }
    const dir = await ImageDir.open(img.path);
    assert.deepEqual(await dir.pstree(), [
      { pid: wl.pid, ppid: 0, pgid: wl.pid, sid: wl.pid, threads: [wl.pid] },
      { pid: child, ppid: wl.pid, pgid: wl.pid, sid: wl.pid, threads: [child] },
      { pid: grand, ppid: child, pgid: grand, sid: wl.pid, threads: [grand] },
    ]);
    const ids = await Promise.all([wl.pid, child, grand].map((p) => dir.ids(p)));
    assert.equal(new Set(ids.map((i) => i.files_id)).size, 3, 'separate fd tables');
    assert.equal(new Set(ids.map((i) => i.vm_id)).size, 3);
    const inv = await dir.inventory();
    assert.ok(!ids.some((i) => i.files_id === inv.root_ids!.files_id));
    assert.equal(inv.root_ids!.pid_ns_id, ids[0]!.pid_ns_id);

    const sum = await inspectCheckpoint(img.path);
    assert.deepEqual(sum.processes.map((p) => [p.pid, p.depth, p.problems.length]), [[wl.pid, 0, 0], [child, 1, 0], [grand, 2, 0]]);
    assert.ok(sum.processes.every((p) => p.memory.dumped > 1 << 18), 'each process dumped its 1 MiB region (a third of it non-zero)');
  });
});

test('dump: a second dump into the same directory leaves no stale images', { skip: !isRoot && 'needs root' }, async () => {
  const img = tempDir('lr-dump-again-');
  const tree = await startWorkload('workload-tree');
  const single = await startWorkload('workload-mem', ['1']);
  try {
    await dump({ pid: tree.pid, imagesDir: img.path, leaveRunning: true });
    writeFileSync(join(img.path, 'notes.txt'), 'mine');
    await dump({ pid: single.pid, imagesDir: img.path, leaveRunning: true });
    const names = readdirSync(img.path).sort();
    assert.deepEqual(names, ['cgroup.img', `core-${single.pid}.img`, `fdinfo-6.img`, 'files.img', `fs-${single.pid}.img`, `ids-${single.pid}.img`, 'inventory.img',
      `mm-${single.pid}.img`, 'lr-checksums-1.img', 'notes.txt', 'pages-1.img', `pagemap-${single.pid}.img`, 'pstree.img', 'seccomp.img', 'stats-dump'].sort());
    critCheckDir(img.path);
    for (const w of [tree, single]) {
      w.go();
      assert.equal(await withTimeout(w.exited, 30000, 'workload exit'), 0);
      assert.equal(w.result(), 'ok');
    }
  } finally {
    await tree.dispose();
    await single.dispose();
    img.dispose();
  }
});
