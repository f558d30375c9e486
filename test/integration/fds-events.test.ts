// Event objects through dump -> kill -> restore (eager and lazy): eventfd,
// signalfd, timerfd, inotify and an epoll instance watching them. The
// workload (workload-events) checks from inside after the restore: flags,
// counters, a pending signal read through the signalfd, timer settings and
// expirations, the epoll ready set, data words and the fd numbers its
// watches are keyed by, and an inotify event. Here: what the images hold
// and that Debian's crit decodes them.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { FdType, ImageDir, type FileEntry } from '../../plugin/images/index.js';
import { critCheckDir, critDecode } from '../helpers/critcheck.js';
import { isRoot, tempDir } from '../helpers/env.js';
import { restoreAndCheck, withDumped } from '../helpers/restore.js';

const skip = !isRoot && 'needs root';

async function roundTrip(lazy: boolean): Promise<void> {
  const watch = tempDir('events-inet-watch-');
  try {
    await withDumped('workload-events', [watch.path], async (d) => {
      const dir = await ImageDir.open(d.images.path);
      const files = await dir.files();
      const ids = await dir.ids(d.wl.pid);
      const fdinfo = await dir.fdinfo(ids.files_id);
      const byFd = new Map<number, FileEntry>();
      for (const fi of fdinfo) byFd.set(fi.fd, files.find((f) => f.id === fi.id)!);
      const efd = Number(d.wl.report.efd);
      const ep = Number(d.wl.report.ep);
      assert.equal(byFd.get(efd)?.type, FdType.EVENTFD);
      assert.equal(byFd.get(efd)!.efd!.counter, 5n);
      assert.equal(byFd.get(efd + 1)!.efd!.counter, 0x100000007n);
      const sg = byFd.get(efd + 2)!.sgfd!;
      assert.equal(sg.sigmask, (1n << 11n) | (1n << BigInt(34 + 4 - 1)), 'signalfd mask: SIGUSR2 and SIGRTMIN+4');
      const t1 = byFd.get(efd + 3)!.tfd!;
      assert.equal(t1.clockid, 1);
      assert.equal(t1.isec * 1_000_000_000n + t1.insec, 20_000_000n);
      const t2 = byFd.get(efd + 4)!.tfd!;
      assert.equal(t2.settime_flags, 1, 'TFD_TIMER_ABSTIME kept');
      assert.ok(t2.vsec > 900n && t2.vsec <= 1000n, `tfd2 remaining ${t2.vsec}`);
      const ify = byFd.get(efd + 6)!.ify!;
      assert.deepEqual(ify.wd.map((w) => [w.wd, w.f_handle.path]), [[Number(d.wl.report.wd), watch.path]]);
      const epfd = byFd.get(ep)!.epfd!;
      assert.deepEqual(
        epfd.tfd.map((w) => [w.tfd, w.data]).sort((a, b) => Number(a[0]) - Number(b[0])),
        [[efd, 0x1122334455667788n], [efd + 1, 5n], [efd + 2, 2n], [efd + 3, 3n], [efd + 6, 4n]],
      );
      // ep2's watch was added through fd 900, closed since: recorded under efd2, as CRIU does.
      const ep2 = byFd.get(ep + 1)!.epfd!;
      assert.deepEqual(ep2.tfd.map((w) => [w.tfd, w.data]), [[efd + 1, 6n]], 'the watch through a closed dup is recorded under the fd holding its file');
      critCheckDir(d.images.path);
      const crit = critDecode(join(d.images.path, 'files.img')).entries as { type: string; efd?: { counter: number }; epfd?: { tfd: unknown[] } }[];
      assert.ok(crit.some((e) => e.type === 'EVENTFD' && e.efd?.counter === 5), 'crit shows the eventfd counter');
      assert.ok(crit.some((e) => e.type === 'EVENTPOLL' && e.epfd?.tfd.length === 5), 'crit shows the epoll watches');
      for (const k of ['SIGNALFD', 'TIMERFD', 'INOTIFY']) assert.ok(crit.some((e) => e.type === k), `crit shows a ${k}`);

      await restoreAndCheck(d, { lazy }, (tree) => assert.equal(tree.pid, d.wl.pid));
    });
  } finally {
    watch.dispose();
  }
}

test('events: eventfd, signalfd, timerfd, inotify and epoll survive an eager restore', { skip }, async () => {
  await roundTrip(false);
});

test('events: the same after a lazy restore', { skip }, async () => {
  await roundTrip(true);
});
