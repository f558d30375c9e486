// The dump reads a frozen process's state with injected syscalls (per thread
// prctl x3, sigaltstack, sched_getscheduler; per process rt_sigaction x62,
// brk, getitimer x3, prctl x3, timer_gettime/timer_getoverrun per POSIX
// timer). They run as syscall batches (plugin/inject/batch.ts: one ptrace
// round trip per thread and per process) and, with LR_INJECT_BATCH=0, one
// by one. Both must collect the same state; the batch path must leave the
// address space as it was, and the CLI must inject only the scratch mmap and
// munmap one by one.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { dump } from '../../plugin/dump/index.js';
import { ImageDir, type CoreEntry } from '../../plugin/images/index.js';
import { projectRoot } from '../../plugin/native/addon.js';
import { isRoot, tempDir } from '../helpers/env.js';
import { withRunningDump } from '../helpers/dump-running.js';

/**
 * A core with the timers' remaining times zeroed: they move between two
 * dumps (wall clock, and the process's CPU clock: injected calls run in it).
 */
function stable(c: CoreEntry): unknown {
  const tc = c.tc ? structuredClone(c.tc) : undefined;
  if (tc?.timers) {
    for (const k of ['real', 'virt', 'prof'] as const) tc.timers[k] = { ...tc.timers[k], vsec: 0n, vusec: 0n };
    tc.timers.posix = tc.timers.posix.map((p) => ({ ...p, vsec: 0n, vnsec: 0n }));
  }
  return { tc, thread_core: c.thread_core, clear_tid_addr: c.thread_info?.clear_tid_addr };
}

/** Remaining times of the timers, in ms. */
function remaining(c: CoreEntry): number[] {
  const t = c.tc?.timers;
  if (!t) return [];
  return [
    ...[t.real, t.virt, t.prof].map((x) => Number(x.vsec) * 1000 + Number(x.vusec) / 1000),
    ...t.posix.map((p) => Number(p.vsec) * 1000 + Number(p.vnsec) / 1e6),
  ];
}

async function dumpBoth(pid: number, batched: string, single: string): Promise<void> {
  const saved = process.env.LR_INJECT_BATCH;
  try {
    delete process.env.LR_INJECT_BATCH;
    await dump({ pid, imagesDir: batched, leaveRunning: true });
    process.env.LR_INJECT_BATCH = '0';
    await dump({ pid, imagesDir: single, leaveRunning: true });
  } finally {
    if (saved === undefined) delete process.env.LR_INJECT_BATCH;
    else process.env.LR_INJECT_BATCH = saved;
  }
}

for (const name of ['workload-timers', 'workload-restore-signals', 'workload-threads']) {
  test(`dump: ${name}: state read by syscall batches equals one-by-one injection`, { skip: !isRoot && 'needs root' }, async () => {
    await withRunningDump('lr-dump-batch-', name, [], async (wl, img) => {
      const other = tempDir('lr-dump-batch-single-');
      try {
        const mapsBefore = readFileSync(`/proc/${wl.pid}/maps`, 'utf8');
        await dumpBoth(wl.pid, img.path, other.path);
        assert.equal(readFileSync(`/proc/${wl.pid}/maps`, 'utf8'), mapsBefore, 'address space as before the dumps');
        const a = await ImageDir.open(img.path);
        const b = await ImageDir.open(other.path);
        const [ps] = await a.pstree();
        for (const tid of ps!.threads) {
          const ca = await a.core(tid);
          const cb = await b.core(tid);
          assert.deepEqual(stable(ca), stable(cb), `core of ${tid}`);
          const ra = remaining(ca);
          const rb = remaining(cb);
          assert.equal(ra.length, rb.length);
          ra.forEach((x, i) => assert.ok(Math.abs(x - rb[i]!) < 2000, `timer ${i}: ${x} vs ${rb[i]} ms remaining`));
          if (tid === wl.pid) {
            // Something was read: 62 sigactions, handlers set by the workload.
            assert.equal(ca.tc!.sigactions.length, 62);
            if (name === 'workload-restore-signals') assert.ok(ca.tc!.sigactions.some((s) => s.sigaction > 1n), 'a handler address');
            if (name === 'workload-timers') assert.equal(ca.tc!.timers!.posix.length, 3);
          }
        }
      } finally {
        other.dispose();
      }
    });
  });
}

test('dump CLI: the injected calls run as batches (only the scratch mmap and munmap one by one)', { skip: !isRoot && 'needs root' }, async () => {
  await withRunningDump('lr-dump-batch-cli-', 'workload-threads', [], async (wl, img) => {
    const env: NodeJS.ProcessEnv = { ...process.env, LR_PHASES: '1' };
    delete env.LR_INJECT_BATCH;
    const out = await promisify(execFile)(process.execPath, [join(projectRoot, 'bin', 'lazy-restore.js'), 'dump', '-t', String(wl.pid), '-D', img.path, '--leave-running'], { env });
    assert.match(out.stderr, /^injected syscalls: 2 calls/m, out.stderr);
    assert.match(out.stderr, /^injected batches \(5 calls\): 4 calls/m, 'one batch per thread');
    assert.match(out.stderr, /^injected batches \(69 calls\): 1 calls/m, 'one batch for the process');
  });
});
