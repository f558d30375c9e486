// A restored workload seen from the test: tell it to check its memory and
// read its verdict, reap a restored root that is a child of the test process
// (--restore-sibling, rst_sibling), and kill what a failed check left running
// — by pid, and only while the pid still runs one of our workloads.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { addon } from '../../plugin/native/addon.js';
import type { RestoreExitInfo } from '../../plugin/native/types.js';
import { waitForFile, type Workload } from './workload.js';

/** Sends go to the restored `pid` of `wl`, waits for its verdict file and asserts it says ok. */
export async function verdictOk(wl: Workload, pid: number, what = 'the restored workload found every byte it wrote'): Promise<void> {
  wl.go(pid);
  await waitForFile(join(wl.ctrlDir, 'result'), 30_000);
  assert.equal(wl.result(), 'ok', what);
}

/** Reaps `pid`, a child of this process (a root restored as our sibling's child). */
export function reapChild(pid: number): Promise<RestoreExitInfo> {
  return new Promise((resolve) => {
    const w = new addon.RestoreChildWaiter(pid, (info) => {
      w.close();
      resolve(info);
    });
  });
}

/** SIGKILLs each pid that still runs a test workload (build/bin/workload-*): a restored tree left by a failed check. */
export function killRestoredWorkloads(pids: Iterable<number | undefined>): void {
  for (const pid of pids) {
    if (!pid) continue;
    try {
      if (readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes('/workload-')) process.kill(pid, 'SIGKILL');
    } catch { /* gone */ }
  }
}
