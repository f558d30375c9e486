// Shared steps of the restore tests: start a self-verifying workload (child of
// the test process), dump it (the dump kills it; node reaps it), restore it
// through the TS API in this process (so the restored root is our child and
// is reaped at once), tell it to go and check what it reports; and the frame
// around such a test (fds before, clean-up, no fd leaked after).
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { dump } from '../../plugin/dump/index.js';
import { ImageDir } from '../../plugin/images/imagedir.js';
import { restore, type RestoredTree, type RestoreOptions } from '../../plugin/restore/index.js';
import { leakedFds, openFds, tempDir, withTimeout } from './env.js';
import { until } from './proc.js';
import { killRestoredWorkloads } from './restored.js';
import { startWorkload, type Workload } from './workload.js';

export interface Dumped {
  wl: Workload;
  images: { path: string; dispose: () => void };
}

/** Starts `name`, dumps it into a fresh image dir and waits until the original is reaped. */
export async function startAndDump(name: string, args: string[] = []): Promise<Dumped> {
  const wl = await startWorkload(name, args);
  const images = tempDir('lr-img-');
  try {
    await dump({ pid: wl.pid, imagesDir: images.path, shellJob: true });
    await withTimeout(wl.exited, 10000, `${name} killed by the dump`);
    // The root is ours to reap; its children went to PID 1, which reaps
    // slowly here: a restore before their pids are free fails with EEXIST.
    const pids = (await (await ImageDir.open(images.path)).pstree()).map((e) => e.pid);
    await until(() => pids.every((p) => !existsSync(`/proc/${p}`)), 30000, () => `the dumped tree's pids ${pids.join(' ')} to be reaped`);
  } catch (e) {
    await wl.dispose();
    images.dispose();
    throw e;
  }
  return { wl, images };
}

export async function restoreTree(imagesDir: string, opts: Partial<RestoreOptions> = {}): Promise<RestoredTree> {
  return withTimeout(restore({ imagesDir, shellJob: true, detached: true, ...opts }), 30000, 'restore');
}

/** Sends go to the restored root, waits for its exit and checks the workload's own verdict. */
export async function goAndCheck(d: Dumped, tree: RestoredTree): Promise<void> {
  d.wl.go(tree.pid);
  const exit = await withTimeout(tree.wait(), 30000, 'restored workload exit');
  const result = existsSync(`${d.wl.ctrlDir}/result`) ? readFileSync(`${d.wl.ctrlDir}/result`, 'utf8').trim() : '(no result file)';
  assert.equal(result, 'ok', `workload verdict (exit ${JSON.stringify(exit)})`);
  assert.deepEqual(exit, { code: 0, signal: 0 });
  await withTimeout(tree.lazyDone(), 30000, 'lazy pages served');
  await tree.close();
}

/**
 * The frame of a restore test: snapshots this process's fds, starts `name`
 * and dumps it, runs `body`, then disposes the workload and its images and
 * asserts that no fd leaked.
 */
export async function withDumped(name: string, args: string[], body: (d: Dumped) => Promise<void>): Promise<void> {
  const fds = openFds();
  const d = await startAndDump(name, args);
  try {
    await body(d);
  } finally {
    await d.wl.dispose();
    d.images.dispose();
  }
  assert.deepEqual(leakedFds(fds), []);
}

/**
 * Restores `d` (eager unless opts say otherwise), runs `inspect` on the
 * restored tree while it waits for go, then lets it verify itself
 * (goAndCheck). When anything fails, the tree's processes still running the
 * workload are killed by pid, the root is reaped and the tree closed.
 */
export async function restoreAndCheck(d: Dumped, opts: Partial<RestoreOptions> = {}, inspect?: (tree: RestoredTree) => void | Promise<void>): Promise<void> {
  const tree = await restoreTree(d.images.path, opts);
  try {
    await inspect?.(tree);
    await goAndCheck(d, tree);
  } catch (e) {
    killRestoredWorkloads([...tree.pids, tree.pid]);
    await withTimeout(tree.wait(), 10_000, 'killed restored root').catch(() => undefined);
    await tree.close();
    throw e;
  }
}

/** True while /proc/PID exists (any state). */
export function pidExists(pid: number): boolean {
  return existsSync(`/proc/${pid}`);
}
