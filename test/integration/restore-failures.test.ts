// Restore failures: a pid held by a live process, a missing mapped file, a
// corrupt image and a failure in the middle of a tree restore each give one
// clear error and leave nothing running (checked by pid); and the CLI path:
// without -d it waits for the root and exits with its status.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync, readlinkSync, rmSync, truncateSync } from 'node:fs';
import { join } from 'node:path';
import { dump } from '../../plugin/dump/index.js';
import { UserError } from '../../plugin/errors.js';
import { ImageDir } from '../../plugin/images/index.js';
import { restore } from '../../plugin/restore/index.js';
import { runCli } from '../helpers/cli.js';
import { isRoot, leakedFds, openFds, tempDir, withTimeout } from '../helpers/env.js';
import { withDumped } from '../helpers/restore.js';
import { startWorkload, waitForFile } from '../helpers/workload.js';

const skip = !isRoot && 'needs root';

/** Children of this process that are restore stubs (would be half-restored leftovers). */
function strayStubs(): number[] {
  const out: number[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const s = readFileSync(`/proc/${name}/stat`, 'utf8');
      const f = s.slice(s.lastIndexOf(')') + 2).split(' ');
      if (Number(f[1]) === process.pid && s.includes('(restore-stub)')) out.push(Number(name));
    } catch {
      /* gone meanwhile */
    }
  }
  return out;
}

test('a pid held by a live process: clear error naming the pid, the holder untouched, nothing created', { skip }, async () => {
  const fds = openFds();
  const wl = await startWorkload('workload-mem', ['4']);
  const img = tempDir('lr-img-');
  try {
    await dump({ pid: wl.pid, imagesDir: img.path, shellJob: true, leaveRunning: true });
    await assert.rejects(restore({ imagesDir: img.path, shellJob: true, detached: true }), (e: unknown) => {
      assert.ok(e instanceof UserError);
      assert.match(e.message, new RegExp(`pid ${wl.pid} is in use by a live process \\(workload-mem`));
      return true;
    });
    assert.match(readlinkSync(`/proc/${wl.pid}/exe`), /workload-mem$/, 'the original still holds its pid');
    assert.deepEqual(strayStubs(), []);
    wl.go();
    assert.equal(await withTimeout(wl.exited, 20000, 'original exit'), 0);
    assert.equal(wl.result(), 'ok');
  } finally {
    await wl.dispose();
    img.dispose();
  }
  assert.deepEqual(leakedFds(fds), []);
});

test('a missing mapped file: clear error naming the file and ENOENT, nothing left running', { skip }, async () => {
  await withDumped('workload-mem', ['4'], async (d) => {
    rmSync(join(d.wl.ctrlDir, 'mapped.dat'));
    await assert.rejects(restore({ imagesDir: d.images.path, shellJob: true, detached: true }), (e: unknown) => {
      assert.ok(e instanceof UserError);
      assert.match(e.message, new RegExp(`pid ${d.wl.pid}: mapped file .*mapped\\.dat cannot be opened: ENOENT`));
      return true;
    });
    assert.equal(existsSync(`/proc/${d.wl.pid}`), false);
    assert.deepEqual(strayStubs(), []);
  });
});

test('a corrupt image: an error naming the image file, nothing left running', { skip }, async () => {
  await withDumped('workload-mem', ['4'], async (d) => {
    const core = join(d.images.path, `core-${d.wl.pid}.img`);
    truncateSync(core, 20);
    await assert.rejects(restore({ imagesDir: d.images.path, shellJob: true, detached: true }), (e: unknown) => {
      assert.ok(e instanceof UserError);
      assert.ok(e.message.includes(core), e.message);
      return true;
    });
    assert.equal(existsSync(`/proc/${d.wl.pid}`), false);
    assert.deepEqual(strayStubs(), []);
  });
});

test('a failure deep in a tree restore kills and reaps every process already created', { skip }, async () => {
  await withDumped('workload-tree', [], async (d) => {
    const grand = Number(d.wl.report.grandchild);
    const child = Number(d.wl.report.child);
    // An impossible VMA (above the user address space) in the grandchild:
    // it only fails when the grandchild's memory is being mapped.
    const dir = await ImageDir.open(d.images.path);
    const mm = await dir.mm(grand);
    mm.vmas.push({ start: 0x800000000000n, end: 0x800000001000n, pgoff: 0n, shmid: 0n, prot: 3, flags: 0x22, status: 0x201, fd: -1n });
    mm.vmas.sort((a, b) => (a.start < b.start ? -1 : 1));
    await dir.writeMm(grand, mm);
    await assert.rejects(restore({ imagesDir: d.images.path, shellJob: true, detached: true }), (e: unknown) => {
      assert.ok(e instanceof UserError);
      assert.match(e.message, new RegExp(`pid ${grand}: mmap\\(0x800000000000`));
      return true;
    });
    for (const p of [d.wl.pid, child, grand]) assert.equal(existsSync(`/proc/${p}`), false, `pid ${p} left behind`);
    assert.deepEqual(strayStubs(), []);
  });
});

test('CLI: restore without -d waits for the root and exits with its status; errors are one line', { skip }, async () => {
  await withDumped('workload-mem', ['4'], async (d) => {
    const pidfile = join(d.images.path, 'restored.pid');
    const run = runCli(['restore', '-D', d.images.path, '--shell-job', '--pidfile', pidfile], { timeoutMs: 60000 });
    await waitForFile(pidfile, 30000);
    const pid = Number(readFileSync(pidfile, 'utf8'));
    assert.equal(pid, d.wl.pid, 'pidfile names the restored root');
    d.wl.go(pid);
    const r = await run;
    assert.equal(r.code, 0, r.stderr);
    assert.equal(d.wl.result(), 'ok', r.stderr);
  });
  const bad = await runCli(['restore', '-D', '/nonexistent-lr-images']);
  assert.equal(bad.code, 1, bad.stderr);
  assert.match(bad.stderr, /^lazy-restore: .*\/nonexistent-lr-images/);
  assert.equal(bad.stderr.trim().split('\n').length, 1, bad.stderr);
});
