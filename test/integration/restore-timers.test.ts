// Timers through dump -> kill -> restore (eager and lazy): interval timers
// (getitimer/setitimer injected) and POSIX timers (/proc/PID/timers +
// timer_gettime at dump; timer_create with the dumped ids + timer_settime at
// restore). The workload (workload-timers) checks intervals, remaining times
// and ids itself, then burns CPU until its CPU-time timers fire and checks
// each signal's number, value and timer id.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { ImageDir } from '../../plugin/images/index.js';
import { critCheckDir, critDecode } from '../helpers/critcheck.js';
import { isRoot } from '../helpers/env.js';
import { restoreAndCheck, withDumped } from '../helpers/restore.js';

const skip = !isRoot && 'needs root';
const MS = 1_000_000n;
const CLOCK_MONOTONIC = 1;
// The kernel keeps CLOCK_PROCESS_CPUTIME_ID as the CPU clock of "this process":
// MAKE_PROCESS_CPUCLOCK(0, CPUCLOCK_SCHED) = -6, stored as u32.
const PROCESS_CPUCLOCK_SELF = -6 >>> 0;
const SIGEV_SIGNAL = 0;
const SIGEV_THREAD_ID = 4;

async function roundTrip(lazy: boolean): Promise<void> {
  await withDumped('workload-timers', [], async (d) => {
    const r = d.wl.report;
    const [idA, idB, idC, sigA] = [Number(r.id_a), Number(r.id_b), Number(r.id_c), Number(r.sig_a)];
    assert.deepEqual([idA, idB, idC], [1, 3, 4], 'the workload leaves gaps in its timer ids');

    // What the dump recorded.
    const core = await (await ImageDir.open(d.images.path)).core(d.wl.pid);
    const t = core.tc!.timers!;
    assert.equal(t.real.isec, 7n);
    assert.equal(t.real.iusec, 0n);
    assert.ok(t.real.vsec > 500n && t.real.vsec <= 600n, `ITIMER_REAL remaining ${t.real.vsec} s`);
    const prof = t.prof.vsec * 1_000_000n + t.prof.vusec;
    // setitimer adds a tick to a CPU-time value: up to 10 ms more than armed.
    assert.ok(prof > 0n && prof <= 160_000n, `ITIMER_PROF remaining ${prof} us`);
    assert.deepEqual(t.virt, { isec: 0n, iusec: 0n, vsec: 0n, vusec: 0n });
    assert.deepEqual(t.posix.map((p) => p.it_id), [idA, idB, idC]);
    const [a, b, c] = t.posix as [typeof t.posix[0], typeof t.posix[0], typeof t.posix[0]];
    assert.equal(a.clock_id, PROCESS_CPUCLOCK_SELF);
    assert.equal(a.it_sigev_notify, SIGEV_SIGNAL);
    assert.equal(a.si_signo, sigA);
    assert.equal(a.sival_ptr, 0x5eed0000cafe1234n);
    assert.equal(a.isec * 1_000_000_000n + a.insec, 0n);
    assert.ok(a.vsec * 1_000_000_000n + a.vnsec <= 200n * MS);
    assert.equal(b.si_signo, sigA + 1);
    assert.equal(b.sival_ptr, 77n);
    assert.equal(b.isec * 1_000_000_000n + b.insec, 40n * MS, 'periodic interval');
    assert.equal(c.clock_id, CLOCK_MONOTONIC);
    assert.equal(c.it_sigev_notify, SIGEV_THREAD_ID);
    assert.equal(c.notify_thread_id, d.wl.pid);
    assert.ok(c.vsec > 500n && c.vsec <= 600n, `timer C remaining ${c.vsec} s`);
    {
      critCheckDir(d.images.path);
      const entry = critDecode(join(d.images.path, `core-${d.wl.pid}.img`)).entries[0] as { tc: { timers: { posix: { it_id: number; sival_ptr: number }[] } } };
      assert.deepEqual(entry.tc.timers.posix.map((p) => p.it_id), [idA, idB, idC], 'crit shows the same timers');
    }

    await restoreAndCheck(d, { lazy }, (tree) => assert.equal(tree.pid, d.wl.pid));
  });
}

test('timers: itimers and POSIX timers (exact ids, signal, value, interval) survive an eager restore', { skip }, async () => {
  await roundTrip(false);
});

test('timers: the same after a lazy restore', { skip }, async () => {
  await roundTrip(true);
});
