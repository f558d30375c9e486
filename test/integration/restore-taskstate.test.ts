// Task states other than running (issue 18 items 1-2): zombies dumped with
// their exit status (TASK_DEAD core, no other images) and recreated as
// zombies that the restored parent reaps with the same status, eager and
// lazy; stopped processes (SIGSTOP and SIGTSTP) dumped with their stop
// signal, restored stopped, and continuing on SIGCONT with their memory
// intact; a leave-running dump leaves them stopped.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { dump } from '../../plugin/dump/index.js';
import { ImageDir } from '../../plugin/images/index.js';
import { critCheckDir, critDecode } from '../helpers/critcheck.js';
import { isRoot, leakedFds, openFds, tempDir, withTimeout } from '../helpers/env.js';
import { goAndCheck, restoreTree, withDumped } from '../helpers/restore.js';
import type { RestoredTree } from '../../plugin/restore/index.js';
import { startWorkload } from '../helpers/workload.js';

const skip = !isRoot && 'needs root';

/** After a failed check: kills what the restore created (by pid: the given children, then the root) and reaps the root. */
async function killRestored(tree: RestoredTree | undefined, children: number[]): Promise<void> {
  if (!tree) return;
  for (const p of [...children, tree.pid]) {
    try {
      process.kill(p, 'SIGKILL');
    } catch { /* gone */ }
  }
  await withTimeout(tree.wait(), 10000, 'killed restored root').catch(() => {});
  await tree.close();
}

function stat(pid: number): { comm: string; state: string; ppid: number; pgid: number } {
  const s = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = s.slice(s.lastIndexOf(')') + 2).split(' ');
  return { comm: s.slice(s.indexOf('(') + 1, s.lastIndexOf(')')), state: f[0]!, ppid: Number(f[1]), pgid: Number(f[2]) };
}

// Wait statuses the workload's zombies end with: exit 0, 3, 200, SIGKILL, SIGSEGV (+ core flag maybe), 5 (z5: group leader gone).
const ZOMBIE_STATUS = [0, 3 << 8, 200 << 8, 9, 11, 5 << 8];

async function zombieRoundTrip(lazy: boolean): Promise<void> {
  await withDumped('workload-taskstate', ['zombie'], async (d) => {
    let tree: RestoredTree | undefined;
    try {
      const zs = [0, 1, 2, 3, 4, 5].map((i) => Number(d.wl.report[`z${i}`]));
      const lead5 = Number(d.wl.report.lead5);
      const dir = await ImageDir.open(d.images.path);
      const pstree = await dir.pstree();
      assert.equal(pstree.length, 7, 'root and six zombies in pstree.img');
      for (const [i, z] of zs.entries()) {
        const e = pstree.find((x) => x.pid === z)!;
        assert.ok(e, `zombie ${z} in pstree.img`);
        assert.equal(e.ppid, d.wl.pid);
        assert.deepEqual(e.threads, [z]);
        if (i === 1) assert.equal(e.pgid, z, 'z1 leads its own process group');
        if (i === 5) assert.equal(e.pgid, lead5, 'z5 is in the group of a leader that is gone');
        const core = await dir.core(z);
        assert.equal(core.tc!.task_state, 2, 'TASK_DEAD');
        assert.equal(core.tc!.exit_code & 0xff7f, ZOMBIE_STATUS[i], `exit status of z${i}`);
        assert.equal(core.thread_info, undefined, 'no registers for a zombie');
      }
      const c = critCheckDir(d.images.path);
      for (const z of zs) {
        assert.ok(c.has(`core-${z}.img`));
        for (const k of ['mm', 'pagemap', 'ids', 'fs']) assert.ok(!c.has(`${k}-${z}.img`), `no ${k} image for a zombie (as CRIU)`);
      }
      const tc = (critDecode(`${d.images.path}/core-${zs[2]}.img`).entries[0] as { tc: { task_state: number; exit_code: number } }).tc;
      assert.deepEqual([tc.task_state, tc.exit_code], [2, 200 << 8]);
      tree = await restoreTree(d.images.path, { lazy });
      for (const z of zs) {
        const s = stat(z);
        assert.equal(s.state, 'Z', `pid ${z} is a zombie again`);
        assert.equal(s.ppid, tree.pid, `zombie ${z} is a child of the restored root`);
        assert.equal(s.comm, 'workload-taskst', 'the zombie keeps its name (15 characters)');
      }
      assert.equal(stat(zs[1]!).pgid, zs[1], 'z1 keeps its process group');
      assert.equal(stat(zs[5]!).pgid, lead5, 'z5 is back in the group of its gone leader (recreated by a helper)');
      assert.throws(() => readFileSync(`/proc/${lead5}/stat`), 'the helper that made the group is gone');
      await goAndCheck(d, tree);
      tree = undefined;
    } finally {
      await killRestored(tree, []);
    }
  });
}

test('zombies: dumped with their exit status, reaped with it by the restored parent (eager)', { skip }, async () => {
  await zombieRoundTrip(false);
});

test('zombies: the same with a lazy restore', { skip }, async () => {
  await zombieRoundTrip(true);
});

async function stoppedRoundTrip(lazy: boolean): Promise<void> {
  await withDumped('workload-taskstate', ['stopped'], async (d) => {
    let tree: RestoredTree | undefined;
    try {
      const s = Number(d.wl.report.stop);
      const t = Number(d.wl.report.tstp);
      const dir = await ImageDir.open(d.images.path);
      for (const [pid, sig] of [[s, 19], [t, 20]] as const) {
        const tc = (await dir.core(pid)).tc!;
        assert.equal(tc.task_state, 3, `pid ${pid}: TASK_STOPPED`);
        assert.equal(tc.stop_signo, sig, `pid ${pid}: stop_signo`);
      }
      assert.equal((await dir.core(d.wl.pid)).tc!.task_state, 1, 'the root runs');
      critCheckDir(d.images.path);
      tree = await restoreTree(d.images.path, { lazy });
      assert.equal(stat(s).state, 'T', 'the SIGSTOPped child is stopped after the restore');
      assert.equal(stat(t).state, 'T', 'the SIGTSTPped child is stopped after the restore');
      await goAndCheck(d, tree);
      tree = undefined;
    } finally {
      await killRestored(tree, [Number(d.wl.report.stop), Number(d.wl.report.tstp)]);
    }
  });
}

test('stopped: SIGSTOP/SIGTSTP children restored stopped, continue on SIGCONT with their memory (eager)', { skip }, async () => {
  await stoppedRoundTrip(false);
});

test('stopped: the same with a lazy restore', { skip }, async () => {
  await stoppedRoundTrip(true);
});

test('stopped: a leave-running dump leaves stopped children stopped', { skip }, async () => {
  const fds = openFds();
  const wl = await startWorkload('workload-taskstate', ['stopped']);
  const img = tempDir('lr-img-');
  try {
    await dump({ pid: wl.pid, imagesDir: img.path, leaveRunning: true });
    assert.equal(stat(Number(wl.report.stop)).state, 'T');
    assert.equal(stat(Number(wl.report.tstp)).state, 'T');
    wl.go();
    assert.equal(await withTimeout(wl.exited, 10000, 'workload exit'), 0);
    assert.equal(wl.result(), 'ok');
  } finally {
    for (const k of ['stop', 'tstp']) {
      try {
        process.kill(Number(wl.report[k]), 'SIGKILL'); // only left on a failure
      } catch { /* exited */ }
    }
    await wl.dispose();
    img.dispose();
  }
  assert.deepEqual(leakedFds(fds), []);
});
