// The lazy-pages server serving real processes (the engine's cooperative
// uffd-harness) from image directories written for them: every scripted
// scenario byte-exact, with and without background push, zero gaps, and
// failure safety (a truncated pages file kills the target with a clear error).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { truncateSync } from 'node:fs';
import { join } from 'node:path';
import { LazyPagesServer } from '../../plugin/lazy/server.js';
import type { LazyErrorEvent } from '../../plugin/lazy/types.js';
import { isRoot, leakedFds, openFds, tempDir, withTimeout } from '../helpers/env.js';
import { startHarness, type Harness } from '../helpers/uffd.js';
import { PAGE, writeLazyImages } from '../helpers/lazy-images.js';
import { imageOfHarness, startImagedHarness, stopHarnessCase, writeSparsePattern } from '../helpers/lazy-harness.js';

const skip = !isRoot && 'needs root (userfaultfd)';

interface Scenario {
  name: string;
  regions: number[];
  actions: string[];
}

const N = 64; // pages per region
const scenarios: Scenario[] = [
  { name: 'read all', regions: [N, N], actions: ['read', '0', '0', `${N}`, 'read', '1', '0', `${N}`] },
  { name: 'random faults', regions: [N], actions: [37, 2, 61, 15, 0, 63, 30, 8].flatMap((p) => ['read', '0', `${p}`, '1']).concat(['read', '0', '0', `${N}`]) },
  { name: 'fork + child verify', regions: [N], actions: ['read', '0', '0', '8', 'fork', 'read', '0', '0', `${N}`, 'write', '0', '0', '4', '7', 'endfork', 'read', '0', '0', `${N}`] },
  { name: 'grandchild', regions: [N], actions: ['fork', 'read', '0', '0', '4', 'fork', 'read', '0', '0', `${N}`, 'endfork', 'read', '0', '0', `${N}`, 'endfork', 'read', '0', '0', `${N}`] },
  { name: 'mremap grow/move', regions: [N], actions: ['read', '0', '0', '4', 'mremap', '0', `${2 * N}`, 'read', '0', '0', `${N}`, 'zero', '0', `${N}`, `${N}`] },
  { name: 'DONTNEED', regions: [N], actions: ['read', '0', '0', '4', 'dontneed', '0', '8', '16', 'zero', '0', '8', '16', 'read', '0', '24', `${N - 24}`] },
  { name: 'munmap', regions: [N], actions: ['munmap', '0', '16', '16', 'read', '0', '0', '16', 'read', '0', '32', `${N - 32}`] },
  { name: '16 threads', regions: [N * 4], actions: ['threads', '16', '0', '0', `${N * 4}`] },
];

async function runScenario(sc: Scenario, prefetch: boolean, windows = true): Promise<void> {
  const d = tempDir();
  const before = openFds();
  let server: LazyPagesServer | undefined;
  let h: Harness | undefined;
  try {
    let imgDir: string;
    ({ h, imgDir } = await startImagedHarness(d.path, { regions: sc.regions, actions: sc.actions, zeroEvery: 5 }));
    // windows: 64 KiB windows chosen in TypeScript; otherwise one window per process that the engine walks, following faults.
    server = await LazyPagesServer.open({ imagesDir: imgDir, prefetch, ...(windows ? { pushChunkBytes: 64 * 1024 } : {}) });
    const errors: LazyErrorEvent[] = [];
    server.on('error', (e) => errors.push(e));
    await server.adopt(h.pid, h.uffd);
    h.go();
    const exit = await h.finish();
    assert.equal(exit.code, 0, `harness failed:\n${exit.stdout}\n${exit.stderr}`);
    assert.match(exit.stdout, /^done$/m);
    assert.deepEqual(errors.map((e) => e.message), []);
    const stats = await withTimeout(server.whenIdle(), 10_000, 'server idle');
    assert.equal(stats.serving, 0);
    assert.equal(stats.killed, 0);
  } finally {
    await stopHarnessCase(h, server);
    d.dispose();
  }
  assert.deepEqual(leakedFds(before), []);
}

for (const prefetch of [true, false]) {
  for (const sc of scenarios) {
    test(`${sc.name} is byte-exact (${prefetch ? 'with' : 'without'} background push)`, { skip }, () => runScenario(sc, prefetch));
  }
}
for (const sc of scenarios) {
  test(`${sc.name} is byte-exact (whole-process push following faults)`, { skip }, () => runScenario(sc, true, false));
}

test('whole-process push: one window completes a process, pages skipped by a fault jump included', { skip }, async () => {
  const d = tempDir();
  let h: Harness | undefined;
  let server: LazyPagesServer | undefined;
  try {
    let imgDir: string;
    // The program reads near the end first (the window jumps there), then waits: the pages below must still be pushed.
    ({ h, imgDir } = await startImagedHarness(d.path, { regions: [1024], actions: ['read', '0', '1000', '8', 'wait', 'read', '0', '0', '1024'], zeroEvery: 4 }));
    server = await LazyPagesServer.open({ imagesDir: imgDir });
    const completed = new Promise<void>((resolve) => server!.on('complete', () => resolve()));
    await server.adopt(h.pid, h.uffd);
    h.go();
    await h.waitLine((l) => l === 'wait');
    await withTimeout(completed, 10_000, 'complete');
    const st = server.processes()[0]!;
    assert.equal(st.state, 'complete');
    assert.ok(Number(st.pushedBytes) > 900 * PAGE, `pushed ${st.pushedBytes}`);
    h.go();
    const exit = await h.finish();
    assert.equal(exit.code, 0, exit.stdout);
  } finally {
    await stopHarnessCase(h, server);
    d.dispose();
  }
});

test('push completes a process that touches nothing; complete carries its statistics', { skip }, async () => {
  const d = tempDir();
  let h: Harness | undefined;
  let server: LazyPagesServer | undefined;
  try {
    let imgDir: string;
    ({ h, imgDir } = await startImagedHarness(d.path, { regions: [256], actions: ['wait', 'read', '0', '0', '256'], zeroEvery: 4 }));
    server = await LazyPagesServer.open({ imagesDir: imgDir, pushChunkBytes: 128 * 1024 });
    const completed = new Promise<number>((resolve) => server!.on('complete', (ev) => resolve(Number(ev.proc.pushedBytes))));
    await server.adopt(h.pid, h.uffd);
    h.go();
    await h.waitLine((l) => l === 'wait');
    const pushed = await withTimeout(completed, 10_000, 'complete');
    assert.equal(pushed, 256 * PAGE, 'all pages (data and zero) pushed');
    const st = server.processes()[0]!;
    assert.equal(st.state, 'complete');
    assert.equal(st.lazyBytes, BigInt(192 * PAGE));
    // after completion the uffd is gone: the process reads its memory on its own
    h.go();
    const exit = await h.finish();
    assert.equal(exit.code, 0, exit.stdout);
  } finally {
    await stopHarnessCase(h, server);
    d.dispose();
  }
});

test('a truncated pages file: the target is SIGKILLed and the daemon says why', { skip }, async () => {
  const d = tempDir();
  let h: Harness | undefined;
  let server: LazyPagesServer | undefined;
  try {
    let imgDir: string;
    ({ h, imgDir } = await startImagedHarness(d.path, { regions: [32], actions: ['read', '0', '0', '32'], zeroEvery: 0 }));
    truncateSync(join(imgDir, 'pages-1.img'), 16 * PAGE);
    server = await LazyPagesServer.open({ imagesDir: imgDir });
    const errors: string[] = [];
    server.on('error', (e) => errors.push(e.message));
    await assert.rejects(server.adopt(h.pid, h.uffd), /pages-1\.img/);
    const exit = await h.finish();
    assert.equal(exit.signal, 'SIGKILL', 'the target must not run on');
    assert.equal(errors.length, 1);
    assert.match(errors[0]!, new RegExp(`pid ${h.pid}: cannot serve its memory: .*pages-1\\.img.*killed pid ${h.pid} with SIGKILL`));
  } finally {
    await stopHarnessCase(h, server);
    d.dispose();
  }
});

test('pages file corrupted after adopt (shrunk under the engine): the target dies, never reads zeros', { skip }, async () => {
  const d = tempDir();
  let h: Harness | undefined;
  let server: LazyPagesServer | undefined;
  try {
    let imgDir: string;
    ({ h, imgDir } = await startImagedHarness(d.path, { regions: [64], actions: ['wait', 'read', '0', '0', '64'], zeroEvery: 0 }));
    server = await LazyPagesServer.open({ imagesDir: imgDir, prefetch: false });
    const errors: string[] = [];
    server.on('error', (e) => errors.push(e.message));
    await server.adopt(h.pid, h.uffd);
    h.go();
    await h.waitLine((l) => l === 'wait');
    truncateSync(join(imgDir, 'pages-1.img'), 0);
    h.go();
    const exit = await h.finish();
    assert.equal(exit.signal, 'SIGKILL', `the target must not run on: ${exit.stdout}`);
    assert.doesNotMatch(exit.stdout, /^done$/m);
    assert.equal(errors.length, 1);
    assert.match(errors[0]!, new RegExp(`pid ${h.pid}: a page could not be served: .*killed pid ${h.pid} with SIGKILL`));
  } finally {
    await stopHarnessCase(h, server);
    d.dispose();
  }
});

test('scale: one server serves 32 processes at once, byte-exact', { skip }, async () => {
  const d = tempDir();
  const hs: Harness[] = [];
  let server: LazyPagesServer | undefined;
  try {
    const patternPath = join(d.path, 'pattern');
    const pattern = writeSparsePattern(patternPath, 64, 7);
    for (let i = 0; i < 32; i++) hs.push(await startHarness({ dir: d.path, pattern: patternPath, regions: [64], actions: ['threads', '2', '0', '0', '64'] }));
    const imgDir = join(d.path, 'img');
    await writeLazyImages(imgDir, hs.map((h) => imageOfHarness(h, pattern)));
    server = await LazyPagesServer.open({ imagesDir: imgDir, engineThreads: 2, pushChunkBytes: 64 * 1024 });
    for (const h of hs) await server.adopt(h.pid, h.uffd);
    for (const h of hs) h.go();
    for (const h of hs) {
      const exit = await h.finish();
      assert.equal(exit.code, 0, `${h.pid}: ${exit.stdout}`);
    }
    const stats = await withTimeout(server.whenIdle(), 20_000, 'idle');
    assert.equal(stats.processes, 32);
    assert.equal(stats.killed, 0);
  } finally {
    for (const h of hs) h.kill();
    await server?.close();
    for (const h of hs) await h.finish().catch(() => undefined);
    d.dispose();
  }
});

test('a page of a forked child cannot be served: the child (pid found after the fork) is SIGKILLed', { skip }, async () => {
  const d = tempDir();
  let h: Harness | undefined;
  let server: LazyPagesServer | undefined;
  try {
    let imgDir: string;
    ({ h, imgDir } = await startImagedHarness(d.path, { regions: [64], actions: ['read', '0', '0', '2', 'fork', 'wait', 'read', '0', '0', '64', 'endfork'], zeroEvery: 0 }));
    server = await LazyPagesServer.open({ imagesDir: imgDir, prefetch: false, faultAroundPages: 1 });
    const errors: LazyErrorEvent[] = [];
    server.on('error', (e) => errors.push(e));
    const forked = new Promise<number>((resolve) => server!.on('fork', (e) => resolve(e.child.id)));
    await server.adopt(h.pid, h.uffd);
    h.go();
    await h.waitLine((l) => l === 'wait');
    assert.equal(await withTimeout(forked, 10_000, 'fork event'), 2);
    truncateSync(join(imgDir, 'pages-1.img'), 0);
    h.go(); // read by the child
    const exit = await h.finish();
    // The parent saw its child end by SIGKILL (raw wait status 0x9), not exit
    // after reading wrong bytes (that would be an exit status, 0x100).
    assert.match(exit.stdout, /^FAIL fork: child status 0x9$/m, exit.stdout);
    assert.doesNotMatch(exit.stdout, /^ok child done$/m, exit.stdout);
    assert.notEqual(exit.code, 0);
    assert.equal(errors.length, 1, `${errors.map((e) => e.message).join('\n')}\n${exit.stdout}\n${JSON.stringify(server.processes(), (_, v: unknown) => (typeof v === 'bigint' ? v.toString() : v))}`);
    const e = errors[0]!;
    assert.equal(e.killed, true);
    assert.equal(e.proc?.parentId, 1);
    assert.match(e.message, new RegExp(`^child of pid ${h.pid} .*a page could not be served: .*killed pid \\d+ with SIGKILL`));
    assert.notEqual(e.proc?.hostPid, h.pid);
  } finally {
    await stopHarnessCase(h, server);
    d.dispose();
  }
});
