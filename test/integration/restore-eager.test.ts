// Eager restore round trips: dump -> kill -> restore -> the workload
// continues and verifies itself (memory, threads, a tree with a grandchild
// reaped by its restored parent, files at offsets and cwd, signal state),
// and the same program checkpointed and restored twice in a row.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, readlinkSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { holdOriginal } from '../helpers/proc.js';
import { dump } from '../../plugin/dump/index.js';
import { isRoot, leakedFds, openFds, tempDir, withTimeout } from '../helpers/env.js';
import { type Dumped, goAndCheck, restoreAndCheck, restoreTree, startAndDump, withDumped } from '../helpers/restore.js';

const skip = !isRoot && 'needs root';

async function roundTrip(name: string, args: string[] = [], check?: (pid: number, d: Dumped) => void): Promise<void> {
  await withDumped(name, args, async (d) => {
    await restoreAndCheck(d, {}, (tree) => {
      assert.equal(tree.pid, d.wl.pid, 'the root keeps its pid');
      check?.(tree.pid, d);
    });
  });
}

test('eager: mixed memory (anon, scattered, never-touched, heap, read-only, PROT_NONE, file COW, stack)', { skip }, async () => {
  await roundTrip('workload-mem', ['8'], (pid) => {
    const exe = readlinkSync(`/proc/${pid}/exe`);
    assert.match(exe, /workload-mem$/, '/proc/PID/exe is the dumped program, not the stub');
    assert.doesNotMatch(readFileSync(`/proc/${pid}/maps`, 'utf8'), /restore-stub/);
  });
});

test('eager: threads keep tids, registers, TLS and their blocking syscalls', { skip }, async () => {
  await roundTrip('workload-threads', [], (pid, d) => {
    for (const k of ['futex', 'sleep', 'regs']) {
      const tid = Number(d.wl.report[`tid_${k}`]);
      assert.equal(readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8').split(' ')[0], String(tid), `thread ${k} keeps tid ${tid}`);
    }
  });
});

test('eager: tree with a grandchild keeps pids, links and groups; the restored child reaps the grandchild', { skip }, async () => {
  await roundTrip('workload-tree', [], (pid, d) => {
    const child = Number(d.wl.report.child);
    const grand = Number(d.wl.report.grandchild);
    const stat = (p: number): string[] => {
      const s = readFileSync(`/proc/${p}/stat`, 'utf8');
      return s.slice(s.lastIndexOf(')') + 2).split(' ');
    };
    assert.equal(Number(stat(child)[1]), pid, 'child of the restored root');
    assert.equal(Number(stat(grand)[1]), child, 'grandchild of the restored child');
    assert.equal(Number(stat(grand)[2]), grand, 'grandchild leads its own process group');
    assert.equal(Number(stat(child)[3]), Number(stat(pid)[3]), 'same session');
  });
});

test('eager: files at their offsets (shared and separate descriptions), flags, cwd', { skip }, async () => {
  await roundTrip('workload-files');
});

test('eager: signal handlers (SA_SIGINFO, SA_ONSTACK on an altstack), blocked mask, FPU modes', { skip }, async () => {
  await roundTrip('workload-restore-signals');
});

test('eager: the same program checkpointed and restored twice in a row', { skip }, async () => {
  const fds = openFds();
  const d = await startAndDump('workload-mem', ['4']);
  const img2 = tempDir('lr-img2-');
  try {
    const first = await restoreTree(d.images.path);
    const firstExit = first.wait();
    await dump({ pid: first.pid, imagesDir: img2.path, shellJob: true });
    assert.equal((await withTimeout(firstExit, 10000, 'first restore killed by the second dump')).signal, 9);
    await first.close();
    const second = await restoreTree(img2.path);
    assert.equal(second.pid, d.wl.pid);
    await goAndCheck(d, second);
  } finally {
    await d.wl.dispose();
    d.images.dispose();
    img2.dispose();
  }
  assert.deepEqual(leakedFds(fds), []);
});

test('--pidns: the tree keeps its pids in a new pid namespace while the original still runs', { skip }, async () => {
  const fds = openFds();
  const { startWorkload } = await import('../helpers/workload.js');
  const wl = await startWorkload('workload-mem', ['4']);
  const img = tempDir('lr-img-');
  try {
    await dump({ pid: wl.pid, imagesDir: img.path, shellJob: true, leaveRunning: true });
    // The original is held stopped: the verdict file it shares can then only be written by the copy.
    const original = await holdOriginal(wl.pid);
    rmSync(join(wl.ctrlDir, 'result'), { force: true });
    const tree = await restoreTree(img.path, { pidns: true });
    const nspid = (p: number): string => /NSpid:\s*(.*)/.exec(readFileSync(`/proc/${p}/status`, 'utf8'))![1]!.trim();
    assert.match(nspid(tree.pid), /\t1$/, 'the namespace init');
    const root = Number(readFileSync(`/proc/${tree.pid}/task/${tree.pid}/children`, 'utf8').trim());
    assert.equal(nspid(root).split('\t')[1], String(wl.pid), 'the root has its dumped pid inside the namespace');
    process.kill(root, 'SIGUSR1');
    assert.deepEqual(await withTimeout(tree.wait(), 20000, 'namespace init exit'), { code: 0, signal: 0 });
    assert.equal(wl.result(), 'ok');
    assert.equal(original.stillThere(), undefined, 'the original still runs (held) with its pid');
    await tree.close();
  } finally {
    await wl.dispose();
    img.dispose();
  }
  assert.deepEqual(leakedFds(fds), []);
});

test('eager: the scheduling policy keeps SCHED_RESET_ON_FORK and its priority (zdtm sched_policy00)', { skip }, async () => {
  const fds = openFds();
  const { execFileSync } = await import('node:child_process');
  const { startWorkload } = await import('../helpers/workload.js');
  const wl = await startWorkload('workload-mem', ['4']);
  const img = tempDir('lr-img-');
  const policy = (pid: number): string => execFileSync('chrt', ['-p', String(pid)], { encoding: 'utf8' });
  try {
    execFileSync('chrt', ['-r', '--reset-on-fork', '-p', '3', String(wl.pid)]);
    assert.match(policy(wl.pid), /SCHED_RR\|SCHED_RESET_ON_FORK[\s\S]*priority: 3/);
    await dump({ pid: wl.pid, imagesDir: img.path, shellJob: true });
    await withTimeout(wl.exited, 10000, 'workload killed by the dump');
    const core = JSON.parse(execFileSync('crit', ['show', join(img.path, `core-${wl.pid}.img`)], { encoding: 'utf8' })) as
      { entries: { thread_core: { sched_policy: number; sched_prio: number } }[] };
    assert.deepEqual([core.entries[0]!.thread_core.sched_policy, core.entries[0]!.thread_core.sched_prio], [0x40000000 | 2, 3], 'sched_getscheduler value in core.img (CRIU)');
    const tree = await restoreTree(img.path);
    assert.match(policy(tree.pid), /SCHED_RR\|SCHED_RESET_ON_FORK[\s\S]*priority: 3/);
    await goAndCheck({ wl, images: img }, tree);
  } finally {
    await wl.dispose();
    img.dispose();
  }
  assert.deepEqual(leakedFds(fds), []);
});
