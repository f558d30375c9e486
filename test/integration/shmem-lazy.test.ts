// Lazily served shared memory (workload-shmem-lazy: a parent and a child
// sharing a MAP_SHARED anonymous region and a memfd, mapped only): after a
// lazy restore neither object has a page in memory until the program
// touches it; both processes read their data, see each other's writes, a
// child forked after the restore shares the one copy, MADV_REMOVE reads
// zeros and MADV_DONTNEED keeps data; every image page is copied once (the
// daemon's per-object counters). A page discarded before it was served
// kills the process that discarded it and any sharer that reads it, with a
// clear message. The same through the lazy-pages daemon + restore
// --lazy-pages -d, and restore --lazy-pages -d's detached daemon pushing
// both processes' copies of the objects.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { ImageDir } from '../../plugin/images/index.js';
import { LazyPagesServer } from '../../plugin/lazy/index.js';
import { runCli } from '../helpers/cli.js';
import { isRoot, leakedFds, openFds, withTimeout } from '../helpers/env.js';
import { alive, until } from '../helpers/proc.js';
import { goAndCheck, restoreTree, startAndDump, withDumped, type Dumped } from '../helpers/restore.js';
import { killRestoredWorkloads } from '../helpers/restored.js';
import { startLazyPagesDaemon } from '../helpers/lazy-daemon.js';
import { waitForFile } from '../helpers/workload.js';

const skip = !isRoot && 'needs root';

/** Pages of each shared memory object that the images hold data for, by the daemon's object name. */
async function dataPages(images: string): Promise<Map<string, number>> {
  const dir = await ImageDir.open(images);
  const out = new Map<string, number>();
  for (const i of await dir.memfdInodes()) {
    let n = 0;
    if (await dir.hasShmemPagemap(i.shmid)) {
      for await (const b of (await dir.pagemapShmem(i.shmid)).batches()) for (const e of b) n += e.nrPages;
    }
    out.set(i.name === '/dev/zero' ? `shared anonymous memory (shmid ${i.shmid})` : `memfd ${i.name}`, n);
  }
  return out;
}

/** Pages of the object mapped at `addr` in `pid` that are in memory (fincore of its map_files entry). */
function residentPages(pid: number, addr: string): number {
  const line = readFileSync(`/proc/${pid}/maps`, 'utf8').split('\n').find((l) => l.startsWith(`${addr.replace(/^0x/, '')}-`));
  assert.ok(line, `pid ${pid}: a mapping at ${addr}`);
  const range = line.split(' ')[0]!;
  const out = execFileSync('fincore', ['-b', '-n', '-o', 'PAGES', `/proc/${pid}/map_files/${range}`], { encoding: 'utf8' });
  return Number(out.trim());
}

interface ObjectStats { name: string; copiedPages: number; zeroPages: number; refilledPages: number; presentPages: number; poisonedPages: number; servedPages: number }

/** Every image page copied exactly once, nothing found there already, nothing poisoned, every page served. */
function assertServedOnce(objects: readonly ObjectStats[], data: Map<string, number>, d: Dumped): void {
  const anonPages = Number(d.wl.report.anon_pages);
  const memfdPages = Number(d.wl.report.memfd_pages);
  assert.deepEqual(objects.map((o) => o.name).sort(), [...data.keys()].sort(), 'both objects served lazily');
  for (const o of objects) {
    const pages = o.name.startsWith('memfd') ? memfdPages : anonPages;
    assert.equal(o.copiedPages, data.get(o.name), `${o.name}: each image page copied once`);
    assert.equal(o.presentPages, 0, `${o.name}: no page was there before it was served`);
    assert.equal(o.poisonedPages, 0, `${o.name}: nothing discarded unserved`);
    assert.equal(o.servedPages, pages, `${o.name}: every page served`);
    assert.equal(o.copiedPages + o.zeroPages, pages, `${o.name}: each page placed once (data or hole)`);
  }
}

test('lazy shared memory: nothing in memory after the restore, data and writes right both ways, MADV_REMOVE zeros, fork shares, each page copied once', { skip }, () => withDumped('workload-shmem-lazy', [], async (d) => {
  const parent = d.wl.pid;
  const child = Number(d.wl.report.child);
  const data = await dataPages(d.images.path);
  assert.equal(data.size, 2);
  const server = await LazyPagesServer.open({ imagesDir: d.images.path, prefetch: false });
  const errors: string[] = [];
  server.on('error', (ev) => errors.push(ev.message));
  try {
    const tree = await restoreTree(d.images.path, { lazy: true, lazyServer: server });
    try {
      for (const pid of [parent, child]) {
        for (const key of ['anon', 'memfd']) assert.equal(residentPages(pid, d.wl.report[key]!), 0, `pid ${pid}: ${key} object empty right after the restore`);
      }
      await goAndCheck(d, tree);
    } catch (e) {
      killRestoredWorkloads([...tree.pids, tree.pid]);
      await tree.close();
      throw e;
    }
    const objects = server.sharedStats();
    assertServedOnce(objects, data, d);
    // The child faulted on the pages the parent had punched out: zero pages, not the image's data.
    // (each punched range is one fault-around window: its first fault is on a punched page)
    for (const o of objects) assert.ok(o.refilledPages >= 1 && o.refilledPages <= 8, `${o.name}: ${o.refilledPages} punched pages faulted again and got zero pages`);
    assert.deepEqual(errors, []);
  } finally {
    await server.close();
  }
}));

test('lazy shared memory: a page discarded before it was served kills the discarding process and a sharer reading it, never served wrong data', { skip }, () => withDumped('workload-shmem-lazy', ['discard'], async (d) => {
  const parent = d.wl.pid;
  const child = Number(d.wl.report.child);
  const server = await LazyPagesServer.open({ imagesDir: d.images.path, prefetch: false });
  const errors: string[] = [];
  server.on('error', (ev) => errors.push(ev.message));
  try {
    const tree = await restoreTree(d.images.path, { lazy: true, lazyServer: server });
    try {
      d.wl.go(tree.pid);
      const exit = await withTimeout(tree.wait(), 30_000, 'the discarding parent killed');
      assert.equal(exit.signal, 9, `killed by SIGKILL, got ${JSON.stringify(exit)}`);
      assert.equal(existsSync(join(d.wl.ctrlDir, 'result')), false, 'the parent never reached its verdict');
      await until(() => errors.length >= 1, 10_000, 'the first error');
      assert.match(errors[0]!, new RegExp(`^pid ${parent}: .*discarded shared memory shared anonymous memory \\(shmid \\d+\\) pages 0x[0-9a-f]+-0x[0-9a-f]+ \\(object offset 0x2bc000\\) that were not restored yet \\(MADV_DONTNEED and MADV_REMOVE cannot be told apart\\): killed, never served wrong data.*killed pid ${parent} with SIGKILL`));
      // The child reads every page, the discarded one too.
      assert.ok(alive(child), 'the child still waits');
      process.kill(child, 'SIGUSR1');
      await until(() => !alive(child), 30_000, 'the child killed');
      await until(() => errors.length >= 2, 10_000, 'the second error');
      assert.match(errors[1]!, new RegExp(`^pid ${child}: .*shared memory shared anonymous memory \\(shmid \\d+\\) page at 0x[0-9a-f]+ \\(object offset 0x2bc000\\) was discarded by a process before it was restored.*killed pid ${child} with SIGKILL`));
      assert.equal(errors.length, 2, errors.join('\n'));
      const anon = server.sharedStats().find((o) => o.name.startsWith('shared anonymous'));
      assert.equal(anon?.poisonedPages, 1);
      await withTimeout(tree.lazyDone(), 10_000, 'daemon idle');
      await tree.close();
    } catch (e) {
      killRestoredWorkloads([...tree.pids, tree.pid, child]);
      await tree.close();
      throw e;
    }
  } finally {
    await server.close();
  }
}));

/** Live lazy-pages daemons (and their watchdogs) whose command line names a socket or the images of `dir`. */
function daemonsOn(dir: string): number[] {
  const out: number[] = [];
  for (const e of readdirSync('/proc')) {
    if (!/^\d+$/.test(e)) continue;
    try {
      const cmd = readFileSync(`/proc/${e}/cmdline`, 'utf8');
      if (cmd.includes('lazy-pages') && cmd.includes(dir) && alive(Number(e))) out.push(Number(e));
    } catch { /* gone */ }
  }
  return out;
}

test('lazy shared memory through the lazy-pages daemon + restore --lazy-pages -d, and restore -d\'s detached daemon', { skip }, async () => {
  const fds = openFds();
  const d = await startAndDump('workload-shmem-lazy');
  const pids: number[] = [];
  try {
    const dir = d.images.path;
    const data = await dataPages(dir);
    for (const mode of ['lazy-pages daemon', 'detached daemon'] as const) {
      const stats = join(dir, `${mode.split(' ')[0]}.json`);
      const daemon = mode === 'lazy-pages daemon' ? await startLazyPagesDaemon(dir, ['--stats-file', stats, '--no-prefetch']) : undefined;
      // The detached daemon pushes: both processes' pushes cover the same
      // object pages, and each must still be copied once.
      const r = await runCli(['restore', '-D', dir, '--lazy-pages', '-d', '--pidfile', `${mode.split(' ')[0]}.pid`, ...(daemon ? [] : ['--stats-file', stats])], { timeoutMs: 60_000 });
      assert.equal(r.code, 0, r.stderr);
      const root = Number(readFileSync(join(dir, `${mode.split(' ')[0]}.pid`), 'utf8'));
      pids.push(root, Number(d.wl.report.child));
      if (daemon) for (const key of ['anon', 'memfd']) assert.equal(residentPages(root, d.wl.report[key]!), 0, `${mode}: ${key} object empty right after the restore`);
      d.wl.go(root);
      await waitForFile(join(d.wl.ctrlDir, 'result'), 30_000);
      assert.equal(d.wl.result(), 'ok', `${mode}: the workload's verdict`);
      await until(() => !alive(root), 30_000, `${mode}: the restored root exits`);
      if (daemon) assert.equal((await daemon.exit).code, 0, 'lazy-pages exits 0');
      await until(() => existsSync(stats), 30_000, `${mode}: the stats file`);
      await until(() => daemonsOn(dir).length === 0, 30_000, `${mode}: no daemon left`);
      const s = JSON.parse(readFileSync(stats, 'utf8')) as { sharedObjects?: ObjectStats[] };
      assertServedOnce(s.sharedObjects ?? [], data, d);
      rmSync(join(d.wl.ctrlDir, 'result'));
    }
  } finally {
    killRestoredWorkloads(pids);
    await d.wl.dispose();
    d.images.dispose();
  }
  assert.deepEqual(leakedFds(fds), []);
});
