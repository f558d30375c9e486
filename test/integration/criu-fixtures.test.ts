// Images written by CRIU 4.2 itself (test/fixtures/criu-4.2, made once with
// CRIU built from source; README there) restore with lazy-restore: eagerly,
// lazily with the in-process daemon, and lazily with our `lazy-pages` daemon
// over CRIU's socket. Each restored workload verifies itself (memory,
// registers, threads, files at offsets, the process tree) and writes its
// verdict; the test checks that verdict and the exit status. The fixtures
// are run from the fixed paths they were dumped at (/tmp/lr-criu-4.2-
// fixtures/NAME: the binary and the control dir are part of the
// checkpoint), under a lock so that two test runs do not share them, and in a
// new pid namespace (their pids are fixed).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { chmodSync, copyFileSync, cpSync, existsSync, mkdirSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { restore, type RestoredTree } from '../../plugin/restore/index.js';
import { VMA_AREA_VVAR } from '../../plugin/images/memory.js';
import { decodeImage, encodeImage } from '../../plugin/images/image.js';
import { KIND } from '../../plugin/images/magic.js';
import { UserError } from '../../plugin/errors.js';
import type { FileEntry, MmEntry } from '../../plugin/images/index.js';
import { cliPath, projectRoot } from '../helpers/cli.js';
import { isRoot, leakedFds, openFds, tempDir, withTimeout } from '../helpers/env.js';
import { startLazyPagesDaemon } from '../helpers/lazy-daemon.js';
import { waitForFile } from '../helpers/workload.js';

const FIXTURES = join(projectRoot, 'test', 'fixtures', 'criu-4.2');
const BASE = '/tmp/lr-criu-4.2-fixtures';
const LOCK = `${BASE}.lock`;
const NAMES = ['threads', 'tree', 'files', 'seccomp'];
const skip = !isRoot && 'needs root';

/** Serialises users of BASE across processes: a lock directory holding the owner's pid; a dead owner's lock is taken over. */
async function withBaseLock<T>(fn: () => Promise<T>): Promise<T> {
  const deadline = Date.now() + 180_000;
  for (;;) {
    try {
      mkdirSync(LOCK);
      writeFileSync(join(LOCK, 'pid'), String(process.pid));
      break;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      let owner = 0;
      try { owner = Number(readFileSync(join(LOCK, 'pid'), 'utf8')); } catch { /* being written or removed */ }
      if (owner > 0 && !existsSync(`/proc/${owner}`)) rmSync(LOCK, { recursive: true, force: true });
      if (Date.now() > deadline) throw new Error(`${LOCK} held by pid ${owner} for too long`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  try {
    return await fn();
  } finally {
    rmSync(LOCK, { recursive: true, force: true });
  }
}

/** Puts the binary and the control dir back as they were at the dump; returns a fresh copy of the images. */
function stage(name: string): { images: string; ctrl: string; dispose: () => void } {
  const dir = join(BASE, name);
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  copyFileSync(join(FIXTURES, 'bin', `workload-${name}`), join(dir, `workload-${name}`));
  chmodSync(join(dir, `workload-${name}`), 0o755);
  cpSync(join(FIXTURES, name, 'ctrl'), join(dir, 'ctrl'), { recursive: true });
  // Directories the checkpoint names under BASE (git keeps no empty ones).
  const files = decodeImage(readFileSync(join(FIXTURES, name, 'images', 'files.img')), 'files.img');
  for (const e of files.entries) {
    const reg = (e.message as unknown as FileEntry).reg;
    if (reg?.mode !== undefined && (reg.mode & 0o170000) === 0o040000 && reg.name.startsWith(`${BASE}/`)) mkdirSync(reg.name, { recursive: true });
  }
  rmSync(join(dir, 'ctrl', 'result'), { force: true });
  const img = tempDir('lr-criu42-img-');
  cpSync(join(FIXTURES, name, 'images'), img.path, { recursive: true });
  return { images: img.path, ctrl: join(dir, 'ctrl'), dispose: () => { img.dispose(); rmSync(dir, { recursive: true, force: true }); } };
}

function children(pid: number): number[] {
  return readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number);
}

/** Sends go to the restored root (the namespace init's child), waits, checks the workload's verdict. */
async function goAndCheck(tree: RestoredTree, ctrl: string, what: string): Promise<void> {
  try {
    await checkRestored(tree, ctrl, what);
  } catch (e) {
    // A failed check must not leave the restored tree running: killing the
    // namespace's init (our child) ends every process in it.
    try { process.kill(tree.pid, 'SIGKILL'); } catch { /* gone */ }
    await withTimeout(tree.wait(), 10_000, `${what}: killed tree exit`).catch(() => undefined);
    throw e;
  }
}

async function checkRestored(tree: RestoredTree, ctrl: string, what: string): Promise<void> {
  const [root] = children(tree.pid);
  assert.ok(root !== undefined, `${what}: the restored root runs under the namespace init`);
  // The kernel reads argv for /proc/PID/cmdline without waiting for
  // userfaultfd: a lazy restore must have those pages in already.
  assert.equal(readFileSync(`/proc/${root}/cmdline`, 'utf8'), `${dirname(ctrl)}/workload-${basename(dirname(ctrl))}\0${ctrl}\0`, `${what}: /proc/PID/cmdline`);
  process.kill(root, 'SIGUSR1');
  const exit = await withTimeout(tree.wait(), 60_000, `${what}: restored workload exit`);
  const result = existsSync(join(ctrl, 'result')) ? readFileSync(join(ctrl, 'result'), 'utf8').trim() : '(no result file)';
  assert.equal(result, 'ok', `${what}: workload verdict (exit ${JSON.stringify(exit)})`);
  assert.deepEqual(exit, { code: 0, signal: 0 }, what);
  await withTimeout(tree.lazyDone(), 30_000, `${what}: lazy pages served`);
  await tree.close();
}

test('the fixtures are CRIU 4.2\'s: one 6-page VMA_AREA_VVAR, timens/seccomp images, stdio as fdinfo, pages-N ids, no checksums', () => {
  for (const name of NAMES) {
    const files = readdirSync(join(FIXTURES, name, 'images'));
    for (const f of ['inventory.img', 'pstree.img', 'seccomp.img', 'timens-0.img', 'stats-dump']) assert.ok(files.includes(f), `${name}: ${f}`);
    assert.ok(files.some((f) => /^pages-\d+\.img$/.test(f)), `${name}: pages file`);
    assert.ok(!files.some((f) => f.startsWith('lr-')), `${name}: none of our own images`);
  }
  assert.deepEqual(readdirSync(join(FIXTURES, 'tree', 'images')).filter((f) => f.startsWith('pages-')).sort(), ['pages-1.img', 'pages-2.img', 'pages-3.img']);
  for (const name of NAMES) {
    const dir = join(FIXTURES, name, 'images');
    const mmFile = readdirSync(dir).find((f) => f.startsWith('mm-'))!;
    const mm = decodeImage(readFileSync(join(dir, mmFile)), mmFile).entries[0]!.message as unknown as MmEntry;
    const vvar = mm.vmas.filter((v) => v.status & VMA_AREA_VVAR);
    assert.deepEqual(vvar.map((v) => (v.end - v.start) / 4096n), [6n], `${name}: [vvar]+[vvar_vclock] as one VMA`);
    const fdinfo = decodeImage(readFileSync(join(dir, 'fdinfo-2.img')), 'fdinfo-2.img').entries.map((e) => (e.message as unknown as { fd: number }).fd);
    assert.deepEqual(fdinfo.slice(0, 3), [0, 1, 2], `${name}: stdio in fdinfo`);
  }
});

for (const name of NAMES) {
  test(`CRIU 4.2 images of workload-${name}: eager, lazy in-process and lazy with our lazy-pages daemon`, { skip }, async () => {
    const fds = openFds();
    await withBaseLock(async () => {
      for (const mode of ['eager', 'lazy', 'daemon'] as const) {
        const s = stage(name);
        try {
          const daemon = mode === 'daemon' ? await startLazyPagesDaemon(s.images) : undefined;
          const tree = await withTimeout(restore({
            imagesDir: s.images, detached: true, pidns: true, lazy: mode !== 'eager',
            ...(daemon ? { lazySocket: join(s.images, 'lazy-pages.socket') } : {}),
          }), 60_000, `${name} ${mode}: restore`);
          await goAndCheck(tree, s.ctrl, `${name} ${mode}`);
          if (daemon) {
            const d = await daemon.exit;
            assert.equal(d.code, 0, `lazy-pages: ${d.stderr}`);
          }
        } finally {
          s.dispose();
        }
      }
    });
    assert.deepEqual(leakedFds(fds), []);
  });
}

test('CLI: restore --lazy-pages of CRIU 4.2 images says once per pages file that its pages are unverified (info level)', { skip }, async () => {
  await withBaseLock(async () => {
    const s = stage('tree');
    try {
      const child = spawn(process.execPath, [cliPath, 'restore', '-D', s.images, '--lazy-pages', '--pidns', '--pidfile', 'init.pid', '-v3', '-o', 'restore.log'], { stdio: ['ignore', 'ignore', 'pipe'] });
      let stderr = '';
      child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
      const exit = new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)));
      const pidfile = join(s.images, 'init.pid');
      await Promise.race([
        waitForFile(pidfile, 60_000),
        exit.then((c) => { throw new Error(`restore exited (${c}) before writing its pid file: ${stderr}`); }),
      ]);
      const [root] = children(Number(readFileSync(pidfile, 'utf8')));
      process.kill(root!, 'SIGUSR1');
      assert.equal(await withTimeout(exit, 60_000, 'restore exit'), 0, stderr);
      assert.equal(readFileSync(join(s.ctrl, 'result'), 'utf8').trim(), 'ok');
      const log = readFileSync(join(s.images, 'restore.log'), 'utf8');
      for (const id of [1, 2, 3]) {
        const lines = log.split('\n').filter((l) => l.includes(`pages-${id}.img: no checksums image`));
        assert.equal(lines.length, 1, `one line for pages-${id}.img:\n${lines.join('\n')}`);
        assert.doesNotMatch(lines[0]!, /Warn|Error/);
      }
      assert.equal(stderr, '', 'nothing on stderr at the default level');
    } finally {
      s.dispose();
    }
  });
});

test('a CRIU 4.2 image edited to another vDSO layout is refused at once, with and without --pidns, nothing left behind', { skip }, async () => {
  const fds = openFds();
  await withBaseLock(async () => {
    for (const pidns of [false, true]) {
      const s = stage('tree');
      try {
        // The vvar VMA of the tree's root one page shorter (its start moved up): not this kernel's layout.
        const root = readdirSync(s.images).filter((f) => /^mm-\d+\.img$/.test(f)).sort()[0]!;
        const path = join(s.images, root);
        const img = decodeImage(readFileSync(path), path);
        const mm = img.entries[0]!.message as unknown as MmEntry;
        const vvar = mm.vmas.find((v) => v.status & VMA_AREA_VVAR)!;
        vvar.start += 4096n;
        writeFileSync(path, encodeImage(KIND.mm, [{ message: mm }]));
        const attempt = withTimeout(restore({ imagesDir: s.images, detached: true, pidns, lazy: true }), 30_000, `restore (pidns ${pidns}) gives up`);
        attempt.then((t) => { try { process.kill(t.pid, 'SIGKILL'); } catch { /* gone */ } }, () => undefined);
        await assert.rejects(attempt, (e: unknown) => e instanceof UserError
          && /^pid \d+: the vDSO layout differs from the dump \(here 6 vvar page\(s\) at vdso-0x6000, 2 vdso page\(s\); in the image 5 vvar page\(s\) at vdso-0x5000, 2 vdso page\(s\)\): restore needs the same kernel$/.test(e.message));
        const pid = Number(root.slice(3, -4));
        assert.ok(!existsSync(`/proc/${pid}`) || pidns, `pid ${pid} is not left behind`);
        assert.ok(!existsSync(join(s.ctrl, 'result')));
      } finally {
        s.dispose();
      }
    }
  });
  assert.deepEqual(leakedFds(fds), []);
});
