// Dumps that must be refused: a missing pid, a process already traced
// (EPERM), an unsupported descriptor (socket/pipe), SysV shared memory of
// the dumper's own IPC namespace (CRIU dumps SysV objects only with their
// IPC namespace).
// Each gives one clear line naming the pid (and fd or VMA), and the target
// keeps running unharmed: it still verifies all its memory afterwards.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { dump } from '../../plugin/dump/index.js';
import { UserError } from '../../plugin/errors.js';
import { detach, seizeAndStop } from '../../plugin/inject/index.js';
import { helperPath, projectRoot } from '../../plugin/native/addon.js';
import { isRoot, tempDir, withTimeout } from '../helpers/env.js';
import { startWorkload, waitForFile, type Workload } from '../helpers/workload.js';

const cli = join(projectRoot, 'bin', 'lazy-restore.js');

async function stillFine(wl: Workload): Promise<void> {
  // Not traced, not stopped: it takes the go signal and checks itself.
  wl.go();
  assert.equal(await withTimeout(wl.exited, 30000, 'workload exit'), 0);
  assert.equal(wl.result(), 'ok');
}

test('dump errors: missing pid (API and CLI)', async () => {
  const img = tempDir('lr-dump-err-');
  try {
    await assert.rejects(dump({ pid: 0x3ffffff0, imagesDir: img.path }),
      (e: unknown) => e instanceof UserError && e.message === `pid ${0x3ffffff0}: no such process (ESRCH)`);
    const r = await promisify(execFile)(process.execPath, [cli, 'dump', '-t', String(0x3ffffff0), '-D', img.path])
      .then(() => ({ code: 0, stderr: '' }), (e: { code: number; stderr: string }) => e);
    assert.equal(r.code, 1);
    assert.equal(r.stderr, `lazy-restore: pid ${0x3ffffff0}: no such process (ESRCH)\n`);
  } finally {
    img.dispose();
  }
});

test('dump errors: process already traced (EPERM)', { skip: !isRoot && 'needs root' }, async () => {
  const img = tempDir('lr-dump-err-');
  const wl = await startWorkload('workload-mem', ['2']);
  try {
    seizeAndStop(wl.pid);
    try {
      await assert.rejects(dump({ pid: wl.pid, imagesDir: img.path }),
        (e: unknown) => e instanceof UserError && /^cannot dump: pid \d+: already traced by pid \d+ \(EPERM\)$/.test(e.message) && e.message.includes(String(wl.pid)));
    } finally {
      detach(wl.pid);
    }
    assert.deepEqual(readdirSync(img.path), []);
    await stillFine(wl);
  } finally {
    await wl.dispose();
    img.dispose();
  }
});

test('dump errors: unsupported descriptor (a socket)', { skip: !isRoot && 'needs root' }, async () => {
  const img = tempDir('lr-dump-err-');
  const wl = await startWorkload('workload-mem', ['2', 'socket']);
  try {
    const fd = wl.report.sock!;
    const r = await promisify(execFile)(process.execPath, [cli, 'dump', '-t', String(wl.pid), '-D', img.path])
      .then(() => ({ code: 0, stderr: '' }), (e: { code: number; stderr: string }) => e);
    assert.equal(r.code, 1);
    assert.match(r.stderr, new RegExp(`^lazy-restore: cannot dump: pid ${wl.pid}: fd ${fd} \\(socket:\\[\\d+\\]\\): sockets are not supported; pid ${wl.pid}: fd \\d+ \\(socket:\\[\\d+\\]\\): sockets are not supported\\n$`));
    assert.deepEqual(readdirSync(img.path), []);
    await stillFine(wl);
  } finally {
    await wl.dispose();
    img.dispose();
  }
});

test('dump errors: SysV shared memory of the dumper\'s own IPC namespace names the VMA', { skip: !isRoot && 'needs root' }, async () => {
  const img = tempDir('lr-dump-err-');
  const wl = await startWorkload('workload-mem', ['2', 'sysv']);
  try {
    const start = BigInt(wl.report.sysv!.split(':')[0]!).toString(16);
    await assert.rejects(dump({ pid: wl.pid, imagesDir: img.path }), (e: unknown) => e instanceof UserError
      && e.message.includes(`pid ${wl.pid}: VMA ${start}-`) && e.message.includes('SysV shared memory of the dumper\'s own IPC namespace cannot be dumped'));
    await stillFine(wl);
  } finally {
    await wl.dispose();
    img.dispose();
  }
});

test('dump errors: a root that is not a session leader needs --shell-job', { skip: !isRoot && 'needs root' }, async () => {
  const img = tempDir('lr-dump-err-');
  const wl = await startWorkload('workload-mem', ['2'], { detached: false });
  try {
    await assert.rejects(dump({ pid: wl.pid, imagesDir: img.path }), (e: unknown) => e instanceof UserError
      && e.message.includes(`pid ${wl.pid}: not a session leader`) && e.message.includes('--shell-job'));
    const r = await dump({ pid: wl.pid, imagesDir: img.path, shellJob: true, leaveRunning: true });
    assert.deepEqual(r.pids, [wl.pid]);
    await stillFine(wl);
  } finally {
    await wl.dispose();
    img.dispose();
  }
});

test('dump errors: a file lease is refused with and without --file-locks (CRIU refuses locks without it; we dump no leases)', { skip: !isRoot && 'needs root' }, async () => {
  const img = tempDir('lr-dump-err-');
  const { spawn } = await import('node:child_process');
  const { existsSync, readFileSync, writeFileSync } = await import('node:fs');
  const lockFile = join(img.path, '..', `${img.path.split('/').pop()}.lock`);
  writeFileSync(lockFile, '');
  // A process (its own session) holding a read lease on its only fd beyond
  // stdio (flock, POSIX and OFD locks: file-locks.test.ts).
  const holder = spawn('python3', ['-c', 'import os, fcntl, signal, sys\nos.closerange(3, 65536)\nfd = os.open(sys.argv[1], os.O_RDONLY)\nfcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_RDLCK)\nsignal.pause()', lockFile], { detached: true, stdio: 'ignore' });
  const gone = new Promise((r) => holder.on('exit', r));
  try {
    const pid = holder.pid!;
    const deadline = Date.now() + 10000;
    const locked = (): boolean => {
      for (const fd of existsSync(`/proc/${pid}/fdinfo`) ? readdirSync(`/proc/${pid}/fdinfo`) : []) {
        try { if (/^lock:/m.test(readFileSync(`/proc/${pid}/fdinfo/${fd}`, 'utf8'))) return true; } catch { /* closed */ }
      }
      return false;
    };
    while (!locked()) {
      assert.ok(Date.now() < deadline, 'the holder never took its lock');
      await new Promise((r) => setTimeout(r, 10));
    }
    await assert.rejects(dump({ pid, imagesDir: img.path }),
      (e: unknown) => e instanceof UserError && new RegExp(`pid ${pid}: fd \\d+ holds a file lock \\(LEASE ACTIVE READ\\); use --file-locks to dump it`).test(e.message));
    const r = await promisify(execFile)(process.execPath, [cli, 'dump', '-t', String(pid), '-D', img.path, '--file-locks'])
      .then(() => ({ code: 0, stderr: '' }), (e: { code: number; stderr: string }) => e);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /holds a file lock \(LEASE ACTIVE READ\): leases are not supported/);
    assert.equal(r.stderr.trim().split('\n').length, 1);
    // The holder was left running, unfrozen.
    assert.ok(locked());
  } finally {
    holder.kill('SIGKILL');
    await withTimeout(gone, 10000, 'flock exit');
    img.dispose();
    const { rmSync } = await import('node:fs');
    rmSync(lockFile, { force: true });
  }
});

test('dump errors: a root whose thread-group leader exited while a thread runs (zdtm pthread02) is refused in one line', { skip: !isRoot && 'needs root' }, async () => {
  const img = tempDir('lr-dump-err-');
  const ctrl = tempDir('lr-wl-');
  const child = spawn(helperPath('workload-taskstate'), [ctrl.path, 'leader-exit'], { stdio: 'ignore', detached: true });
  const exited = new Promise<unknown>((resolve) => child.once('exit', resolve));
  const pid = child.pid!;
  try {
    await waitForFile(join(ctrl.path, 'ready'), 20000);
    // The leader is a zombie once pthread_exit ran; the thread sleeps on.
    const deadline = Date.now() + 10000;
    while (readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]![0] !== 'Z') {
      assert.ok(Date.now() < deadline, 'the leader never became a zombie');
      await new Promise((r) => setTimeout(r, 20));
    }
    const r = await promisify(execFile)(process.execPath, [cli, 'dump', '-t', String(pid), '-D', img.path])
      .then(() => ({ code: 0, stderr: '' }), (e: { code: number; stderr: string }) => e);
    assert.equal(r.code, 1);
    assert.equal(r.stderr, `lazy-restore: pid ${pid}: the thread group leader exited but 1 threads still run (a zombie leader with threads is not supported)\n`);
    assert.deepEqual(readdirSync(img.path), []);
  } finally {
    try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ }
    await withTimeout(exited, 10000, 'leader-exit workload killed');
    ctrl.dispose();
    img.dispose();
  }
});
