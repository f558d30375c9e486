// The native fault engine against real faults from build/bin/uffd-harness:
// byte-exact content, zero ranges, DONTNEED/munmap, fork, mremap, many
// threads, remote supply, prefetch, exit mid-restore, several processes on
// two engine threads; fds and threads back to baseline after close().
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { closeSync, copyFileSync, openSync, stat, truncateSync } from 'node:fs';
import { join } from 'node:path';
import { FaultEngine, type EngineEvent, type LazyRange } from '../../plugin/uffd/engine.js';
import { pidfdOpen } from '../../plugin/inject/memory.js';
import { isRoot, leakedFds, openFds, tempDir, withTimeout } from '../helpers/env.js';
import { startHarness, threadCount, writePattern, type Harness } from '../helpers/uffd.js';

const PAGE = 4096n;
const skip = isRoot ? false : 'needs root (userfaultfd)';

type EvOf<T extends EngineEvent['type']> = EngineEvent extends infer E ? (E extends { type: infer U } ? (T extends U ? E : never) : never) : never;

const engines: FaultEngine[] = [];
const harnesses: Harness[] = [];

/** Engine plus an event log with bounded waits on it. */
function makeEngine(opts: { threads?: number; faultAroundPages?: number } = {}) {
  const events: EngineEvent[] = [];
  let waiters: { pred: (e: EngineEvent) => boolean; resolve: (e: EngineEvent) => void }[] = [];
  const engine = FaultEngine.create({
    ...opts,
    onEvents: (evs) => {
      for (const e of evs) {
        events.push(e);
        waiters = waiters.filter((w) => (w.pred(e) ? (w.resolve(e), false) : true));
      }
    },
  });
  engines.push(engine);
  const waitEvent = <T extends EngineEvent['type']>(type: T, pred: (e: EvOf<T>) => boolean = () => true, ms = 10000) => {
    const p2 = (e: EngineEvent) => e.type === type && pred(e as EvOf<T>);
    const seen = events.find(p2);
    if (seen) return Promise.resolve(seen as EvOf<T>);
    return withTimeout(new Promise<EvOf<T>>((resolve) => waiters.push({ pred: p2, resolve: resolve as (e: EngineEvent) => void })), ms, `engine event ${type}`);
  };
  return { engine, events, waitEvent };
}

async function harness(o: Parameters<typeof startHarness>[0]): Promise<Harness> {
  const h = await startHarness(o);
  harnesses.push(h);
  return h;
}

/** 'file' ranges covering whole regions of a harness. */
function fileRanges(h: Harness, source: number): LazyRange[] {
  return h.regions.map((r) => ({ start: r.addr, end: r.addr + r.len, src: { kind: 'file', source, offset: r.fileoff } }));
}

async function expectDone(h: Harness): Promise<void> {
  const ex = await h.finish();
  assert.equal(ex.code, 0, `harness failed:\n${ex.stdout}\n${ex.stderr}`);
  assert.match(ex.stdout, /\ndone\n$/);
}

test('uffd engine', { skip }, async (t) => {
  const dir = tempDir('lr-uffd-engine-');
  // Start libuv's thread pool (used by acceptRecvFds) before taking the baseline.
  await new Promise((resolve) => stat('/', resolve));
  const fdsBefore = openFds();
  const threadsBefore = threadCount();
  const pattern = join(dir.path, 'pattern.img');
  writePattern(pattern, 512);
  t.after(async () => {
    for (const h of harnesses) h.kill();
    for (const e of engines) await e.close();
    dir.dispose();
  });

  await t.test('serves byte-exact content and zero ranges; reports complete', async () => {
    const { engine, waitEvent } = makeEngine();
    const src = engine.addSource(pattern);
    const h = await harness({ dir: dir.path, pattern, regions: [64, 32], actions: ['read', '0', '0', '64', 'read', '1', '0', '16', 'zero', '1', '16', '16'] });
    const r1 = h.regions[1]!;
    const proc = engine.adopt(h.uffd, [
      ...fileRanges(h, src).slice(0, 1),
      { start: r1.addr, end: r1.addr + 16n * PAGE, src: { kind: 'file', source: src, offset: r1.fileoff } },
      { start: r1.addr + 16n * PAGE, end: r1.addr + r1.len, src: { kind: 'zero' } },
    ]);
    assert.equal(engine.lazyBytes(proc), 96n * PAGE);
    h.go();
    await expectDone(h);
    await waitEvent('complete', (e) => e.proc === proc);
    const st = engine.stats().procs.find((p) => p.proc === proc)!;
    assert.equal(st.copiedPages, 80);
    assert.equal(st.zeroPages, 16);
    assert.equal(st.unexpected, 0);
    assert.equal(st.faults, 96);
    assert.ok(st.p50Ns > 0);
    assert.equal(engine.lazyBytes(proc), 0n);
    assert.deepEqual(engine.lazyRanges(proc), []);
    engine.release(proc);
    await engine.close();
  });

  await t.test('fault-around copies a window within the range', async () => {
    const { engine } = makeEngine({ faultAroundPages: 16 });
    const src = engine.addSource(pattern);
    const h = await harness({ dir: dir.path, pattern, regions: [100], actions: ['read', '0', '0', '100'] });
    const proc = engine.adopt(h.uffd, fileRanges(h, src));
    h.go();
    await expectDone(h);
    const st = engine.stats().procs[0]!;
    assert.equal(st.copiedPages, 100);
    assert.ok(st.faults <= 8, `expected ~7 faults with a 16-page window, got ${st.faults}`);
    engine.release(proc);
    await engine.close();
  });

  await t.test('DONTNEED and munmap ranges read back as zero, not image data', async () => {
    const { engine, waitEvent } = makeEngine();
    const src = engine.addSource(pattern);
    const h = await harness({
      dir: dir.path, pattern, regions: [32],
      actions: ['read', '0', '0', '4', 'dontneed', '0', '0', '12', 'zero', '0', '0', '12', 'munmap', '0', '20', '4', 'read', '0', '12', '8', 'read', '0', '24', '8'],
    });
    const proc = engine.adopt(h.uffd, fileRanges(h, src));
    h.go();
    await expectDone(h);
    const base = h.regions[0]!.addr;
    const rm = await waitEvent('remove', (e) => e.proc === proc);
    assert.equal(rm.start, base);
    assert.equal(rm.end, base + 12n * PAGE);
    const um = await waitEvent('unmap', (e) => e.proc === proc);
    assert.equal(um.start, base + 20n * PAGE);
    const st = engine.stats().procs[0]!;
    assert.equal(st.copiedPages, 4 + 16);
    engine.release(proc);
    await engine.close();
  });

  await t.test('fork: the child is served from the checkpoint, its writes stay private', async () => {
    const { engine, waitEvent } = makeEngine();
    const src = engine.addSource(pattern);
    const h = await harness({
      dir: dir.path, pattern, regions: [32],
      actions: ['read', '0', '0', '4', 'fork', 'read', '0', '0', '20', 'write', '0', '20', '4', '7', 'byte', '0', '20', '4', '7', 'endfork', 'read', '0', '4', '28'],
    });
    const proc = engine.adopt(h.uffd, fileRanges(h, src));
    h.go();
    await expectDone(h);
    const f = await waitEvent('fork', (e) => e.proc === proc);
    const stats = engine.stats().procs;
    const child = stats.find((p) => p.proc === f.child)!;
    assert.ok(child, 'child has its own state');
    assert.equal(child.copiedPages, 20, 'child got pages 4..23 from the image (4 before fork were inherited)');
    const parent = stats.find((p) => p.proc === proc)!;
    assert.equal(parent.copiedPages, 32);
    engine.release(proc);
    engine.release(f.child);
    await engine.close();
  });

  await t.test('mremap moves the lazy range with its content; grown tail reads zero', async () => {
    const { engine, waitEvent } = makeEngine();
    const src = engine.addSource(pattern);
    const h = await harness({
      dir: dir.path, pattern, regions: [32],
      actions: ['read', '0', '0', '4', 'mremap', '0', '48', 'read', '0', '0', '32', 'zero', '0', '32', '16'],
    });
    const proc = engine.adopt(h.uffd, fileRanges(h, src));
    h.go();
    await expectDone(h);
    const rmp = await waitEvent('remap', (e) => e.proc === proc);
    assert.equal(rmp.from, h.regions[0]!.addr);
    assert.equal(rmp.len, 32n * PAGE);
    const st = engine.stats().procs[0]!;
    assert.equal(st.copiedPages, 32);
    assert.equal(st.unexpected, 16);
    engine.release(proc);
    await engine.close();
  });

  await t.test('16 threads faulting at once are all served', async () => {
    const { engine } = makeEngine();
    const src = engine.addSource(pattern);
    const h = await harness({ dir: dir.path, pattern, regions: [512], actions: ['threads', '16', '0', '0', '512'] });
    const proc = engine.adopt(h.uffd, fileRanges(h, src));
    h.go();
    await expectDone(h);
    assert.equal(engine.stats().procs[0]!.copiedPages, 512);
    engine.release(proc);
    await engine.close();
  });

  await t.test('remote ranges: need events answered by supply()', async () => {
    const { engine, events } = makeEngine({ faultAroundPages: 4 });
    const patternBytes = writePattern(join(dir.path, 'remote.img'), 64);
    const h = await harness({ dir: dir.path, pattern: join(dir.path, 'remote.img'), regions: [64], actions: ['read', '0', '0', '64', 'mremap', '0', '64', 'read', '0', '0', '64'] });
    const imageBase = 0x7f0000000000n;
    let proc = 0;
    const served = new Promise<void>((resolve, reject) => {
      const check = () => {
        for (const e of events.splice(0)) {
          if (e.type === 'need') {
            const off = Number(e.imageAddr - imageBase);
            engine.supply(e.proc, e.imageAddr, patternBytes.subarray(off, off + Number(e.len)));
          } else if (e.type === 'complete') return resolve();
          else if (e.type === 'error') return reject(new Error(e.message));
        }
        setImmediate(check);
      };
      check();
    });
    proc = engine.adopt(h.uffd, [{ start: h.regions[0]!.addr, end: h.regions[0]!.addr + 64n * PAGE, src: { kind: 'remote', imageAddr: imageBase } }]);
    h.go();
    await withTimeout(served, 10000, 'remote pages served');
    await expectDone(h);
    const st = engine.stats().procs[0]!;
    assert.equal(st.suppliedPages, 64);
    assert.equal(st.needs, 16);
    engine.release(proc);
    await engine.close();
  });

  await t.test('prefetch copies everything in the background', async () => {
    const { engine, waitEvent } = makeEngine();
    const src = engine.addSource(pattern);
    const h = await harness({ dir: dir.path, pattern, regions: [200], actions: ['wait', 'read', '0', '0', '200'] });
    const proc = engine.adopt(h.uffd, fileRanges(h, src));
    h.go();
    await h.waitLine((l) => l === 'wait');
    engine.prefetch(proc, h.regions[0]!.addr, h.regions[0]!.len);
    const pf = await waitEvent('prefetched', (e) => e.proc === proc);
    assert.equal(pf.copied, 200n * PAGE);
    await waitEvent('complete', (e) => e.proc === proc);
    h.go();
    await expectDone(h);
    const st = engine.stats().procs[0]!;
    assert.equal(st.pushedPages, 200);
    assert.equal(st.faults, 0);
    engine.release(proc);
    await engine.close();
  });

  await t.test('a process exiting mid-restore is cleaned up (pidfd and probe)', async () => {
    const { engine, waitEvent } = makeEngine();
    const src = engine.addSource(pattern);
    const h1 = await harness({ dir: dir.path, pattern, regions: [64], actions: ['read', '0', '0', '2', 'exit', '0'] });
    const p1 = engine.adopt(h1.uffd, fileRanges(h1, src), { pidfd: pidfdOpen(h1.pid, 0) });
    const h2 = await harness({ dir: dir.path, pattern, regions: [64], actions: ['read', '0', '0', '2', 'exit', '0'] });
    const p2 = engine.adopt(h2.uffd, fileRanges(h2, src)); // no pidfd: found by the liveness probe
    h1.go();
    h2.go();
    assert.equal((await h1.finish()).code, 0);
    assert.equal((await h2.finish()).code, 0);
    await waitEvent('exit', (e) => e.proc === p1);
    await waitEvent('exit', (e) => e.proc === p2, 5000);
    const st = engine.stats().procs;
    assert.deepEqual(st.map((s) => s.state), ['exited', 'exited']);
    assert.equal(engine.lazyBytes(p1), 0n);
    engine.release(p1);
    engine.release(p2);
    await engine.close();
  });

  await t.test('two engine threads serve several processes', async () => {
    const before = threadCount();
    const { engine } = makeEngine({ threads: 2 });
    assert.equal(threadCount(), before + 2, 'two engine worker threads');
    const src = engine.addSource(pattern);
    const hs: Harness[] = [];
    for (let i = 0; i < 4; i++) hs.push(await harness({ dir: dir.path, pattern, regions: [128], actions: ['threads', '2', '0', '0', '128'] }));
    const procs = hs.map((h) => engine.adopt(h.uffd, fileRanges(h, src)));
    for (const h of hs) h.go();
    for (const h of hs) await expectDone(h);
    assert.equal(engine.stats().threadCpuNs.length, 2);
    for (const p of procs) engine.release(p);
    await engine.close();
  });

  await t.test('a page that cannot be served raises an error event; the process blocks, never reads zeros', async () => {
    const { engine, waitEvent } = makeEngine();
    const shortPath = join(dir.path, 'short.img');
    copyFileSync(pattern, shortPath);
    const src = engine.addSource(shortPath);
    const h = await harness({ dir: dir.path, pattern, regions: [16], actions: ['read', '0', '0', '16'] });
    const proc = engine.adopt(h.uffd, fileRanges(h, src), { pidfd: pidfdOpen(h.pid, 0) });
    truncateSync(shortPath, 0); // the mapping now ends before the data: the kernel copy fails with EFAULT
    h.go();
    const err = await waitEvent('error', (e) => e.proc === proc);
    assert.equal(err.code, 'EFAULT');
    assert.equal(err.syscall, 'ioctl(UFFDIO_COPY)');
    assert.match(err.message, /^EFAULT: .*serving \[0x/);
    assert.equal(engine.stats().procs.find((p) => p.proc === proc)!.state, 'failed');
    engine.kill(proc, 'page source truncated');
    const ex = await h.finish();
    assert.equal(ex.signal, 'SIGKILL');
    assert.doesNotMatch(ex.stdout, /ok read/);
    engine.release(proc);
    await engine.close();
  });

  await t.test('abuse raises errors, never crashes', async () => {
    const { engine } = makeEngine();
    const src = engine.addSource(pattern);
    assert.throws(() => engine.addSource(join(dir.path, 'missing.img')), { code: 'ENOENT' });
    assert.throws(() => engine.adopt(1_000_000, []), { code: 'EBADF' });
    const devnull = openSync('/dev/null', 'r');
    assert.throws(() => engine.adopt(devnull, []), { code: 'EINVAL' });
    closeSync(devnull);
    const h = await harness({ dir: dir.path, pattern, regions: [8], actions: ['read', '0', '0', '8'] });
    const a = h.regions[0]!.addr;
    assert.throws(() => engine.adopt(h.uffd, [{ start: a + 1n, end: a + PAGE, src: { kind: 'zero' } }]), RangeError);
    assert.throws(() => engine.adopt(h.uffd, [{ start: a, end: a + 2n * PAGE, src: { kind: 'zero' } }, { start: a + PAGE, end: a + 3n * PAGE, src: { kind: 'zero' } }]), /overlaps/);
    assert.throws(() => engine.adopt(h.uffd, [{ start: a, end: a + PAGE, src: { kind: 'file', source: src, offset: 1n << 40n } }]), /the file has/);
    assert.throws(() => engine.adopt(h.uffd, [{ start: a, end: a + PAGE, src: { kind: 'file', source: 99, offset: 0n } }]), /unknown source/);
    assert.throws(() => engine.supply(12345, 0n, Buffer.alloc(4096)), { code: 'ENOENT' });
    assert.throws(() => engine.release(12345), { code: 'ENOENT' });
    assert.throws(() => engine.prefetch(0, 0n, PAGE), RangeError);
    const proc = engine.adopt(h.uffd, fileRanges(h, src));
    h.go();
    await expectDone(h);
    engine.release(proc);
    assert.throws(() => engine.release(proc), { code: 'ENOENT' });
    await engine.close();
    await engine.close();
    assert.throws(() => engine.stats(), { code: 'EBADF' });
    assert.throws(() => engine.addSource(pattern), { code: 'EBADF' });
  });

  await t.test('no leaked fds or threads after close', () => {
    assert.deepEqual(leakedFds(fdsBefore), []);
    assert.equal(threadCount(), threadsBefore);
  });
});
