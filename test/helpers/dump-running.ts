// The frame of a dump test that leaves the workload running (leaveRunning):
// the images are checked, then the workload verifies that the dump did not
// disturb it.
import assert from 'node:assert/strict';
import { leakedFds, openFds, tempDir, withTimeout } from './env.js';
import { startWorkload, type Workload } from './workload.js';

/**
 * Snapshots this process's fds, starts workload `name` and gives it and a
 * fresh image dir (prefix `prefix`) to `body`, which dumps it with
 * leaveRunning and checks the images; then tells the workload to go and
 * checks its exit (0) and verdict ('ok'), disposes it and the images and
 * asserts that no fd leaked.
 */
export async function withRunningDump(prefix: string, name: string, args: string[], body: (wl: Workload, img: { path: string }) => Promise<void>): Promise<void> {
  const fds = openFds();
  const img = tempDir(prefix);
  const wl = await startWorkload(name, args);
  try {
    await body(wl, img);
    wl.go();
    assert.equal(await withTimeout(wl.exited, 30000, 'workload exit'), 0);
    assert.equal(wl.result(), 'ok');
  } finally {
    await wl.dispose();
    img.dispose();
  }
  assert.deepEqual(leakedFds(fds), []);
}
