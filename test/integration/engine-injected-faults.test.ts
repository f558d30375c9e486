// Failure paths of the fault engine that the kernel cannot be made to take
// on demand, reached through its test-only fault injection points
// (native/common/fault_injection.h, LR_INJECT_FAULT):
//  - the guard page (the probe copy's source) cannot be mapped: the engine
//    refuses to start instead of running without its mremap/ENOENT race check;
//  - a forked child's uffd cannot be watched: the child is not left
//    registered as if served; it is killed once its pid is known, and the
//    parent goes on being served.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { LazyPagesServer } from '../../plugin/lazy/server.js';
import type { LazyErrorEvent } from '../../plugin/lazy/types.js';
import { FaultEngine } from '../../plugin/uffd/engine.js';
import { isRoot, leakedFds, openFds, tempDir, withTimeout } from '../helpers/env.js';
import type { Harness } from '../helpers/uffd.js';
import { startImagedHarness, stopHarnessCase } from '../helpers/lazy-harness.js';
import { descendantsOf } from '../helpers/proc.js';

const skip = !isRoot && 'needs root (userfaultfd)';

/** Runs `fn` with the injection point `point` armed, then disarms it. */
async function withInjectedFault<T>(point: string, fn: () => Promise<T> | T): Promise<T> {
  process.env.LR_INJECT_FAULT = point;
  try {
    return await fn();
  } finally {
    delete process.env.LR_INJECT_FAULT;
  }
}

test('no guard page: the engine refuses to start (ENOMEM), no thread or fd left', { skip }, async () => {
  const before = openFds();
  await withInjectedFault('engine-guard-mmap', () => {
    assert.throws(
      () => FaultEngine.create({ threads: 2, onEvents: () => undefined }),
      (e: NodeJS.ErrnoException) => e.code === 'ENOMEM' && /guard page/.test(e.message),
    );
  });
  assert.deepEqual(leakedFds(before), []);
  // Disarmed, the same call works.
  const engine = FaultEngine.create({ threads: 2, onEvents: () => undefined });
  await engine.close();
  assert.deepEqual(leakedFds(before), []);
});

test("a forked child's uffd cannot be watched: the child is killed, never left registered; the parent is served", { skip }, async () => {
  const d = tempDir();
  const before = openFds();
  let h: Harness | undefined;
  let server: LazyPagesServer | undefined;
  try {
    let imgDir: string;
    ({ h, imgDir } = await startImagedHarness(d.path, { regions: [64], actions: ['read', '0', '0', '2', 'fork', 'read', '0', '0', '64', 'endfork', 'read', '0', '0', '64'], zeroEvery: 0 }));
    server = await LazyPagesServer.open({ imagesDir: imgDir, prefetch: false, faultAroundPages: 1 });
    const errors: LazyErrorEvent[] = [];
    server.on('error', (e) => errors.push(e));
    await server.adopt(h.pid, h.uffd);
    const harness = h;
    const exit = await withInjectedFault('engine-add-proc', async () => {
      harness.go();
      return withTimeout(harness.finish(), 30_000, 'harness exit');
    });
    // The child ended by SIGKILL (raw wait status 0x9): it neither read zeros
    // nor stayed blocked for ever; the parent then read all its pages.
    assert.match(exit.stdout, /^FAIL fork: child status 0x9$/m, exit.stdout);
    assert.doesNotMatch(exit.stdout, /^ok child done$/m, exit.stdout);
    // One error when the child's pid is known at once (killed), or two when it
    // is found a moment later: "left blocked ... until it is found and
    // killed", then "found: killed with SIGKILL".
    const all = errors.map((e) => e.message).join('\n');
    assert.ok(errors.length === 1 || errors.length === 2, all);
    const cause = errors[0]!;
    assert.match(cause.message, /epoll_ctl/);
    assert.match(cause.message, /ENOSPC/);
    assert.equal(errors.at(-1)!.killed, true, all);
    for (const e of errors) assert.notEqual(e.proc?.hostPid, h.pid, all);
  } finally {
    // A child left blocked in a fault (the failure this test guards against)
    // is the harness's own child: kill it with the harness so a failure ends.
    if (h) for (const pid of descendantsOf(h.pid)) process.kill(pid, 'SIGKILL');
    await stopHarnessCase(h, server);
    d.dispose();
  }
  assert.deepEqual(leakedFds(before), []);
});
