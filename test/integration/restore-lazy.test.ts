// Lazy restore round trips: anonymous memory left to the in-process
// lazy-pages daemon (userfaultfd created inside each restored process), the
// program runs at once and verifies itself; threads faulting together; a tree;
// fork/mremap/MADV_DONTNEED/munmap right after the restore keep exact memory;
// the hand-over to an external daemon over CRIU's lazy-pages socket; and
// lazy restores into a new pid namespace (--pidns): a tree, and a process
// that forks and remaps right after.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createServer, type Socket } from 'node:net';
import { existsSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { holdOriginal } from '../helpers/proc.js';
import { dump } from '../../plugin/dump/index.js';
import { isRoot, leakedFds, openFds, tempDir, withTimeout } from '../helpers/env.js';
import { cliPath } from '../helpers/cli.js';
import { goAndCheck, pidExists, restoreAndCheck, restoreTree, startAndDump, withDumped } from '../helpers/restore.js';
import { startWorkload, waitForFile } from '../helpers/workload.js';

const skip = !isRoot && 'needs root';

async function lazyRoundTrip(name: string, args: string[] = []): Promise<void> {
  await withDumped(name, args, async (d) => {
    await restoreAndCheck(d, { lazy: true });
  });
}

test('lazy: mixed memory served on demand and by the background push', { skip }, async () => {
  await lazyRoundTrip('workload-mem', ['8']);
});

test('lazy: threads that fault at once', { skip }, async () => {
  await lazyRoundTrip('workload-threads');
});

test('lazy: tree with a grandchild (one userfaultfd per process)', { skip }, async () => {
  await lazyRoundTrip('workload-tree');
});

test('lazy: fork, mremap, MADV_DONTNEED and munmap right after the restore keep exact memory', { skip }, async () => {
  await lazyRoundTrip('workload-restore-post', ['16']);
});

test('lazy: signal state and files survive a lazy restore too', { skip }, async () => {
  await lazyRoundTrip('workload-restore-signals');
  await lazyRoundTrip('workload-files');
});

test('lazy: userfaultfds handed to an external lazy-pages daemon over its socket', { skip }, async () => {
  const fds = openFds();
  const d = await startAndDump('workload-mem', ['8']);
  const sock = join(d.images.path, 'lazy-pages.socket');
  const daemon = spawn(process.execPath, [cliPath, 'lazy-pages', '-D', d.images.path, '--socket', sock], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  daemon.stderr!.on('data', (b: Buffer) => (stderr += b.toString()));
  const daemonExit = new Promise<number | null>((r) => daemon.on('exit', (c) => r(c)));
  try {
    await waitForFile(sock, 20000);
    const tree = await restoreTree(d.images.path, { lazySocket: sock });
    await goAndCheck(d, tree);
    assert.equal(await withTimeout(daemonExit, 30000, 'daemon exit after serving everything'), 0, stderr);
  } finally {
    if (daemon.exitCode === null) daemon.kill('SIGKILL');
    await daemonExit;
    await d.wl.dispose();
    d.images.dispose();
  }
  assert.deepEqual(leakedFds(fds), []);
});

test('lazy: a daemon that never takes the userfaultfd: clear error, nothing left running on zero pages', { skip }, async () => {
  const fds = openFds();
  const d = await startAndDump('workload-mem', ['2']);
  const sock = join(d.images.path, 'lazy-pages.socket');
  // A "daemon" that reads the hand-over without its SCM_RIGHTS part (node's
  // sockets cannot receive fds: the kernel drops them) and hangs up: CRIU's
  // protocol has no acknowledgement, so only the restorer can notice.
  const peers = new Set<Socket>();
  const server = createServer((c) => {
    peers.add(c);
    c.on('data', () => c.destroy());
    c.on('close', () => peers.delete(c));
  });
  await new Promise<void>((r) => server.listen(sock, r));
  try {
    const attempt = withTimeout(restoreTree(d.images.path, { lazySocket: sock }), 40000, 'restore gives up');
    // Should the restore wrongly succeed, its tree is ours to kill (by pid), not left running on zeros.
    attempt.then((t) => { try { process.kill(t.pid, 'SIGKILL'); } catch { /* gone */ } }, () => undefined);
    await assert.rejects(attempt, (e: unknown) => e instanceof Error
      && new RegExp(`lazy-pages daemon \\(pid ${process.pid}\\) did not take the userfaultfd of pid ${d.wl.pid} within \\d+ s: ETIMEDOUT`).test(e.message));
    assert.equal(pidExists(d.wl.pid), false, 'no restored process is left');
  } finally {
    for (const c of peers) c.destroy();
    await new Promise<void>((r) => server.close(() => r()));
    await d.wl.dispose();
    d.images.dispose();
  }
  assert.deepEqual(leakedFds(fds), []);
});

test('lazy + --pidns: a tree with a grandchild keeps its pids in a new pid namespace, byte-exact, all reaped', { skip }, async () => {
  const fds = openFds();
  const wl = await startWorkload('workload-tree');
  const img = tempDir('lr-img-');
  try {
    // The original tree keeps running and holding its pids: only a new pid
    // namespace lets the copy have them too.
    await dump({ pid: wl.pid, imagesDir: img.path, shellJob: true, leaveRunning: true });
    // The original is held stopped: the verdict file it shares can then only be written by the copy.
    const original = await holdOriginal(wl.pid);
    rmSync(join(wl.ctrlDir, 'result'), { force: true });
    const tree = await restoreTree(img.path, { lazy: true, pidns: true });
    const nspid = (p: number): string[] => /NSpid:\s*(.*)/.exec(readFileSync(`/proc/${p}/status`, 'utf8'))![1]!.trim().split('\t');
    const children = (p: number): number[] => readFileSync(`/proc/${p}/task/${p}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number);
    assert.deepEqual(nspid(tree.pid).slice(1), ['1'], 'the namespace init');
    const [root] = children(tree.pid) as [number];
    const [child] = children(root) as [number];
    const [grand] = children(child) as [number];
    assert.equal(nspid(root)[1], String(wl.pid), 'root keeps its pid inside');
    assert.equal(nspid(child)[1], wl.report.child, 'child keeps its pid inside');
    assert.equal(nspid(grand)[1], wl.report.grandchild, 'grandchild keeps its pid inside');
    process.kill(root, 'SIGUSR1');
    // The init exits with the root's status: the root verified its memory and
    // reaped the child, which verified its own and reaped the grandchild.
    assert.deepEqual(await withTimeout(tree.wait(), 30000, 'namespace init exit'), { code: 0, signal: 0 });
    assert.equal(wl.result(), 'ok');
    assert.equal(original.stillThere(), undefined, 'the original tree still runs (held) with its pids');
    await withTimeout(tree.lazyDone(), 30000, 'lazy pages served');
    await tree.close();
    for (const p of [tree.pid, root, child, grand]) assert.ok(!existsSync(`/proc/${p}`), `restored pid ${p} is gone (reaped)`);
  } finally {
    await wl.dispose();
    img.dispose();
  }
  assert.deepEqual(leakedFds(fds), []);
});

test('lazy + --pidns: fork, mremap, DONTNEED and munmap right after the restore, inside the namespace', { skip }, async () => {
  await withDumped('workload-restore-post', ['16'], async (d) => {
    const tree = await restoreTree(d.images.path, { lazy: true, pidns: true });
    // The forked child's userfaultfd (UFFD_EVENT_FORK) belongs to a process the daemon only sees by its outer pid.
    const root = Number(readFileSync(`/proc/${tree.pid}/task/${tree.pid}/children`, 'utf8').trim());
    process.kill(root, 'SIGUSR1');
    assert.deepEqual(await withTimeout(tree.wait(), 30000, 'namespace init exit'), { code: 0, signal: 0 });
    assert.equal(d.wl.result(), 'ok');
    await withTimeout(tree.lazyDone(), 30000, 'lazy pages served');
    await tree.close();
    assert.ok(!existsSync(`/proc/${root}`), 'restored root reaped');
  });
});
