// Races between the program's address-space changes and the lazy-pages
// engine: the cooperative harness runs random DONTNEED / mremap / munmap /
// fork / write sequences (and a second thread that reads and discards) while
// the daemon serves faults and, in half of the runs, pushes in the
// background. Every page is checked byte-exact against what the program did
// to it; a fault left unwoken shows up as a harness that never finishes.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { LazyPagesServer } from '../../plugin/lazy/server.js';
import { PE_LAZY, PE_PRESENT } from '../../plugin/images/memory.js';
import type { LazyErrorEvent } from '../../plugin/lazy/types.js';
import { isRoot, leakedFds, openFds, tempDir, withTimeout } from '../helpers/env.js';
import { startHarness, type Harness } from '../helpers/uffd.js';
import { PAGE, writeLazyImages } from '../helpers/lazy-images.js';
import { startImagedHarness, stopHarnessCase } from '../helpers/lazy-harness.js';

const skip = !isRoot && 'needs root (userfaultfd)';

function threadStates(pid: number): string {
  try {
    return readdirSync(`/proc/${pid}/task`).map((t) => {
      const wchan = readFileSync(`/proc/${pid}/task/${t}/wchan`, 'utf8');
      const state = readFileSync(`/proc/${pid}/task/${t}/stat`, 'utf8').replace(/^.*\) /, '').split(' ')[0];
      return `${t}:${state}:${wchan}`;
    }).join(' ');
  } catch (e) {
    return (e as Error).message;
  }
}

function stringify(v: unknown): string {
  return JSON.stringify(v, (_k, x: unknown) => (typeof x === 'bigint' ? x.toString() : x));
}

const MAIN_PAGES = 4096; // 16 MiB: the push is still running while the operations go on
const READER_PAGES = 512;
const OPS = 400;

async function stressRun(mix: string, seed: number, prefetch: boolean, mainPages: number): Promise<string> {
  const d = tempDir();
  const before = openFds();
  let server: LazyPagesServer | undefined;
  let h: Harness | undefined;
  try {
    // Every 5th page is zero: left out of the image, never populated.
    let imgDir: string;
    ({ h, imgDir } = await startImagedHarness(d.path, { regions: [mainPages, READER_PAGES], actions: ['stress', '0', '1', `${OPS}`, `${seed}`, mix], zeroEvery: 5, salt: 0x3c3c3c3c }));
    // Large push windows keep the engine copying back to back while the
    // program changes its mappings.
    server = await LazyPagesServer.open({ imagesDir: imgDir, prefetch, pushChunkBytes: 1024 * 1024, pushInFlight: 4 });
    const errors: LazyErrorEvent[] = [];
    server.on('error', (e) => errors.push(e));
    await server.adopt(h.pid, h.uffd);
    h.go();
    const exit = await h.finish(25_000).catch((e: unknown) => {
      // Say where the harness's threads are: waiting in a fault (a lost
      // wake-up) or just slow on a loaded machine.
      throw new Error(`${(e as Error).message}\nthreads: ${threadStates(h!.pid)}\nserver: ${stringify(server!.processes())}`);
    });
    assert.equal(exit.code, 0, `${mix} seed ${seed}: harness failed:\n${exit.stdout.slice(-1500)}\n${exit.stderr}`);
    const line = exit.stdout.split('\n').find((l) => l.startsWith('ok stress'));
    assert.ok(line, exit.stdout);
    assert.deepEqual(errors.map((e) => e.message), []);
    const stats = await withTimeout(server.whenIdle(), 10_000, 'server idle');
    assert.equal(stats.killed, 0);
    return line;
  } finally {
    await stopHarnessCase(h, server);
    d.dispose();
    assert.deepEqual(leakedFds(before), []);
  }
}

/** Runs `runs` harnesses one after another with different seeds. */
async function stress(mix: string, prefetch: boolean, runs: number, mainPages = MAIN_PAGES): Promise<void> {
  for (let i = 1; i <= runs; i++) {
    const line = await stressRun(mix, i * 7919 + (prefetch ? 1 : 0), prefetch, mainPages);
    assert.match(line, new RegExp(`ops=${OPS} `));
  }
}

// (b) of issue 4: a push copy that meets the old address of a region being
// moved gets ENOENT; the pages are not gone, they are about to reappear at
// the REMAP's new address.
test('mremap/munmap/fork/write racing the background push stay byte-exact', { skip }, () => stress('mmmmmmmrwu', true, 3));

// (a) of issue 4: DONTNEED then an immediate read of the discarded pages,
// from two threads; every fault must be woken, and with zeros.
for (const prefetch of [false, true]) {
  test(`DONTNEED then read back never hangs and reads zero (${prefetch ? 'with' : 'without'} background push)`, { skip }, () => stress('rrdddw', prefetch, 3));
}

for (const prefetch of [true, false]) {
  test(`random DONTNEED/mremap/munmap/fork/write sequences stay byte-exact (${prefetch ? 'with' : 'without'} background push)`, { skip }, () => stress('rrrrddddwwwmmmmuf', prefetch, 2));
}

// A range the image holds in one piece but the program split into two VMAs
// (mprotect raises no uffd event): a copy across the split fails with
// ENOENT, and the pages on both sides must still come from the image.
for (const prefetch of [false, true]) {
  test(`a lazy range split by mprotect is served byte-exact (${prefetch ? 'with' : 'without'} background push)`, { skip }, async () => {
    const d = tempDir();
    const before = openFds();
    let server: LazyPagesServer | undefined;
    let h: Harness | undefined;
    try {
      const patternPath = join(d.path, 'pattern');
      const pattern = randomBytes(64 * PAGE);
      writeFileSync(patternPath, pattern);
      h = await startHarness({ dir: d.path, pattern: patternPath, regions: [64], actions: ['mprotect', '0', '10', '10', 'wait', 'read', '0', '0', '64'] });
      const r = h.regions[0]!;
      const imgDir = join(d.path, 'img');
      await writeLazyImages(imgDir, [{ pid: h.pid, vmas: [{ start: r.addr, end: r.addr + r.len }], entries: [{ vaddr: r.addr, pages: 64, flags: PE_LAZY | PE_PRESENT, data: pattern }] }]);
      // Split first (no memory touched, so nothing waits on the uffd yet),
      // then hand the uffd over: a push starts at once with the whole
      // region in one window.
      h.go();
      await h.waitLine((l) => l === 'wait');
      server = await LazyPagesServer.open({ imagesDir: imgDir, prefetch, pushChunkBytes: 64 * PAGE });
      const errors: LazyErrorEvent[] = [];
      server.on('error', (e) => errors.push(e));
      const done = new Promise<void>((resolve) => server!.on('complete', () => resolve()));
      await server.adopt(h.pid, h.uffd);
      if (prefetch) await withTimeout(done, 10_000, 'push complete');
      h.go();
      const exit = await h.finish();
      assert.equal(exit.code, 0, `harness failed:\n${exit.stdout}\n${exit.stderr}`);
      assert.deepEqual(errors.map((e) => e.message), []);
    } finally {
      await stopHarnessCase(h, server);
      d.dispose();
      assert.deepEqual(leakedFds(before), []);
    }
  });
}
