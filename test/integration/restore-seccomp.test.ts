// Seccomp filters across dump -> kill -> restore, eager and lazy:
// workload-seccomp sets no_new_privs and installs getppid->EPERM, then
// uname->ENOSYS with TSYNC on both threads, and (unless "same") the thread
// adds getsid->ESRCH on itself alone; after the restore both threads check
// that their filters still apply. The images are CRIU's layout (seccomp.img
// chains newest first with prev links, thread_core seccomp_mode and
// seccomp_filter; identical chains kept once on the leader with TSYNC) and
// decode with crit. A broken chain in seccomp.img is refused by name.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { ImageDir } from '../../plugin/images/index.js';
import { critCheckDir, critDecode } from '../helpers/critcheck.js';
import { isRoot, leakedFds, openFds, withTimeout } from '../helpers/env.js';
import { goAndCheck, restoreTree, startAndDump } from '../helpers/restore.js';
import { restore } from '../../plugin/restore/index.js';

const skip = !isRoot && 'needs root';
const TSYNC = 1;

async function roundTrip(lazy: boolean, same: boolean): Promise<void> {
  const fds = openFds();
  const d = await startAndDump('workload-seccomp', same ? ['same'] : []);
  try {
    assert.equal(d.wl.report.early_fail, undefined, 'the workload set up its filters');
    const dir = await ImageDir.open(d.images.path);
    const tid = Number(d.wl.report.tid_thread);
    const lc = (await dir.core(d.wl.pid)).thread_core!;
    const tc = (await dir.core(tid)).thread_core!;
    const sc = (await dir.seccomp())!;
    if (same) {
      // CRIU's TSYNC trick: the chain once, on the leader, with TSYNC.
      assert.equal(lc.seccomp_mode, 2);
      assert.equal(tc.seccomp_mode ?? 0, 0, 'the thread gets its filters from the leader\'s TSYNC');
      assert.equal(sc.seccomp_filters.length, 2);
      for (const f of sc.seccomp_filters) assert.equal((f.flags ?? 0) & TSYNC, TSYNC);
    } else {
      assert.equal(lc.seccomp_mode, 2);
      assert.equal(tc.seccomp_mode, 2);
      assert.equal(sc.seccomp_filters.length, 5, '2 filters of the leader + 3 of the thread');
      // Newest first, each older one pointing back; the thread's index is its oldest.
      const chain = (start: number): number => {
        let n = 1;
        for (let i = start; sc.seccomp_filters[i]!.prev !== undefined && sc.seccomp_filters[i]!.prev !== null; i = sc.seccomp_filters[i]!.prev!) n++;
        return n;
      };
      assert.equal(chain(lc.seccomp_filter!), 2);
      assert.equal(chain(tc.seccomp_filter!), 3);
    }
    critCheckDir(d.images.path);
    const decoded = critDecode(join(d.images.path, 'seccomp.img')).entries[0] as { seccomp_filters: { filter: string }[] };
    assert.equal(decoded.seccomp_filters.length, same ? 2 : 5, 'crit decodes seccomp.img');
    const tree = await restoreTree(d.images.path, { lazy });
    await goAndCheck(d, tree);
  } finally {
    await d.wl.dispose();
    d.images.dispose();
  }
  assert.deepEqual(leakedFds(fds), []);
}

test('seccomp filters per thread: restored eagerly, each thread filtered as before', { skip }, () => roundTrip(false, false));
test('seccomp filters per thread: restored lazily', { skip }, () => roundTrip(true, false));
test('seccomp filters shared by all threads: once on the leader with TSYNC, restored to both', { skip }, () => roundTrip(false, true));

test('seccomp.img whose chain points past its filters: refused naming the file and thread, nothing restored', { skip }, async () => {
  const d = await startAndDump('workload-seccomp', ['same']);
  try {
    const dir = await ImageDir.open(d.images.path);
    const core = await dir.core(d.wl.pid);
    core.thread_core!.seccomp_filter = 7;
    await dir.writeCore(d.wl.pid, core);
    await assert.rejects(withTimeout(restore({ imagesDir: d.images.path, shellJob: true, detached: true }), 30000, 'restore'),
      (e: Error) => /seccomp\.img.*tid \d+: filter index 7 is past the 2 filters/.test(e.message));
  } finally {
    await d.wl.dispose();
    d.images.dispose();
  }
});
