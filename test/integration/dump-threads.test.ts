// Dump of a multi-threaded process (workload-threads): one core image per
// thread with the registers the threads hold (r12..r15 and xmm0 loaded by
// asm, fs_base reported by each thread), syscall state, signal masks, rseq
// and robust lists; the process runs on and verifies itself. Also: the
// default (kill) mode reaps every traced thread.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { dump } from '../../plugin/dump/index.js';
import { projectRoot } from '../../plugin/native/addon.js';
import { ImageDir } from '../../plugin/images/index.js';
import { SYS } from '../../plugin/inject/index.js';
import { critCheckDir } from '../helpers/critcheck.js';
import { isRoot, tempDir, withTimeout } from '../helpers/env.js';
import { withRunningDump } from '../helpers/dump-running.js';
import { startWorkload } from '../helpers/workload.js';

test('dump: multi-threaded process, registers of every thread', { skip: !isRoot && 'needs root' }, async () => {
  await withRunningDump('lr-dump-thr-', 'workload-threads', [], async (wl, img) => {
    const r = wl.report;
    const tids = { futex: Number(r.tid_futex), sleep: Number(r.tid_sleep), regs: Number(r.tid_regs) };
    const mapsBefore = readFileSync(`/proc/${wl.pid}/maps`, 'utf8');
    const res = await dump({ pid: wl.pid, imagesDir: img.path, leaveRunning: true });
    assert.equal(res.stats.threads, 4);
    // The page mapped for the injected calls' buffers is gone again.
    assert.equal(readFileSync(`/proc/${wl.pid}/maps`, 'utf8'), mapsBefore, 'address space as before the dump');
    for (const t of [wl.pid, ...Object.values(tids)]) assert.ok(critCheckDir(img.path).has(`core-${t}.img`));

    const dir = await ImageDir.open(img.path);
    const [ps] = await dir.pstree();
    assert.deepEqual(ps!.threads, [wl.pid, ...Object.values(tids)].sort((a, b) => (a === wl.pid ? -1 : b === wl.pid ? 1 : a - b)));

    const leader = await dir.core(wl.pid);
    assert.ok(leader.tc, 'leader has task_core');
    assert.equal(leader.thread_info!.gpregs.fs_base, BigInt(r.fsbase_main!));
    for (const [name, tid] of Object.entries(tids)) {
      const c = await dir.core(tid);
      assert.equal(c.tc, undefined, 'only the leader carries tc');
      const ti = c.thread_info!;
      assert.equal(ti.gpregs.fs_base, BigInt(r[`fsbase_${name}`]!), `${name} fs_base`);
      assert.notEqual(ti.clear_tid_addr, 0n, `${name} clear_tid_addr (pthread)`);
      const tc = c.thread_core!;
      assert.equal(tc.futex_rla_len, 24);
      assert.notEqual(tc.futex_rla, 0n);
      assert.equal(tc.rseq_entry?.signature, 0x53053053);
      assert.equal(tc.rseq_entry?.rseq_abi_size, 32);
      assert.equal(tc.sas!.ss_flags, 2, 'no alternate stack (SS_DISABLE)');
      assert.equal(ti.fpregs.st_space.length, 32);
      assert.equal(ti.fpregs.xmm_space.length, 64);
    }
    const regs = (await dir.core(tids.regs)).thread_info!;
    assert.equal(regs.gpregs.r12, BigInt(r.r12!));
    assert.equal(regs.gpregs.r13, BigInt(r.r13!));
    assert.equal(regs.gpregs.r14, BigInt(r.r14!));
    assert.equal(regs.gpregs.r15, BigInt(r.r15!));
    assert.equal(regs.gpregs.orig_ax, BigInt(SYS.futex));
    const x = regs.fpregs.xmm_space;
    assert.equal(BigInt(x[0]!) | (BigInt(x[1]!) << 32n), BigInt(r.xmm0_lo!));
    assert.equal(BigInt(x[2]!) | (BigInt(x[3]!) << 32n), BigInt(r.xmm0_hi!));
    const sleeper = (await dir.core(tids.sleep));
    assert.equal(sleeper.thread_info!.gpregs.orig_ax, 230n, 'in clock_nanosleep');
    // SIGUSR2 (bit 11) blocked everywhere but in the sleeper; SIGHUP (bit 0) blocked.
    assert.equal(sleeper.thread_core!.blk_sigset! & (1n << 11n), 0n);
    assert.equal((await dir.core(tids.futex)).thread_core!.blk_sigset! & ((1n << 11n) | 1n), (1n << 11n) | 1n);
  });
});

test('dump CLI: kills a multi-threaded tree it is not the parent of', { skip: !isRoot && 'needs root' }, async () => {
  const img = tempDir('lr-dump-thr-kill-');
  const wl = await startWorkload('workload-threads');
  try {
    // The CLI process traces the tree; the test process is its parent and
    // must still see the exit once the tracer has reaped its threads.
    const out = await promisify(execFile)(process.execPath, [join(projectRoot, 'bin', 'lazy-restore.js'), 'dump', '-t', String(wl.pid), '-D', img.path]);
    assert.match(out.stdout, /^dumped 1 process\(es\), 4 thread\(s\) to .*tree killed\n$/);
    assert.equal(out.stderr, '');
    assert.equal(await withTimeout(wl.exited, 10000, 'killed workload reaped'), 'SIGKILL');
    assert.equal((await (await ImageDir.open(img.path)).pstree())[0]!.threads.length, 4);
    for (const k of ['tid_futex', 'tid_sleep', 'tid_regs']) {
      assert.throws(() => process.kill(Number(wl.report[k]), 0), { code: 'ESRCH' });
    }
  } finally {
    await wl.dispose();
    img.dispose();
  }
});

test('dump: repeated dumps under a signal storm leave the process intact', { skip: !isRoot && 'needs root' }, async () => {
  const img = tempDir('lr-dump-thr-storm-');
  const wl = await startWorkload('workload-threads');
  // SIGUSR2 interrupts the sleeping thread (handler, no SA_RESTART); SIGHUP
  // stays pending (blocked everywhere). Both keep arriving while we freeze,
  // inject and detach.
  const storm = spawn('/bin/sh', ['-c', 'while kill -USR2 $0 && kill -HUP $0; do :; done', String(wl.pid)], { stdio: 'ignore' });
  const stormExit = new Promise((r) => storm.on('exit', r));
  try {
    for (let i = 0; i < 3; i++) {
      const r = await dump({ pid: wl.pid, imagesDir: join(img.path, String(i)), leaveRunning: true });
      assert.equal(r.stats.threads, 4);
    }
    storm.kill('SIGKILL');
    await stormExit;
    wl.go();
    assert.equal(await withTimeout(wl.exited, 30000, 'workload exit'), 0);
    assert.equal(wl.result(), 'ok');
  } finally {
    if (storm.exitCode === null && storm.signalCode === null) { storm.kill('SIGKILL'); await stormExit; }
    await wl.dispose();
    img.dispose();
  }
});
