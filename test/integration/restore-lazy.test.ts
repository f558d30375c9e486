// Lazy restore round trips: anonymous memory left to the in-process
// lazy-pages daemon (userfaultfd created inside each restored process), the
// program runs at once and verifies itself; threads faulting together; a tree;
// fork/mremap/MADV_DONTNEED/munmap right after the restore keep exact memory;
// and the hand-over to an external daemon over CRIU's lazy-pages socket.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { isRoot, leakedFds, openFds, withTimeout } from '../helpers/env.js';
import { cliPath } from '../helpers/cli.js';
import { goAndCheck, restoreTree, startAndDump } from '../helpers/restore.js';
import { waitForFile } from '../helpers/workload.js';

const skip = !isRoot && 'needs root';

async function lazyRoundTrip(name: string, args: string[] = []): Promise<void> {
  const fds = openFds();
  const d = await startAndDump(name, args);
  try {
    const tree = await restoreTree(d.images.path, { lazy: true });
    await goAndCheck(d, tree);
  } finally {
    await d.wl.dispose();
    d.images.dispose();
  }
  assert.deepEqual(leakedFds(fds), []);
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
