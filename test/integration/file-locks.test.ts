// File locks with --file-locks (CRIU's option): workload-locks holds a
// flock, two POSIX locks and an OFD lock on one file, and a forked child
// shares the descriptions. The dump writes filelocks.img (crit decodes it;
// each lock once, owned by the parent), the restore (eager and lazy) takes
// every lock again in the parent: another process trying one gets
// EWOULDBLOCK/EAGAIN, byte ranges outside the locks stay free, and the
// restored process can release them all. Without --file-locks at restore
// the locks are left out (as CRIU).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { ImageDir, KIND, type FileLockEntry } from '../../plugin/images/index.js';
import { critDecode } from '../helpers/critcheck.js';
import { cliPath } from '../helpers/cli.js';
import { isRoot, leakedFds, openFds, tempDir, withTimeout } from '../helpers/env.js';
import type { RestoredTree } from '../../plugin/restore/index.js';
import { restoreTree } from '../helpers/restore.js';
import { startWorkload } from '../helpers/workload.js';

const skip = !isRoot && 'needs root';
const run = promisify(execFile);

// Tries each lock from a separate process (python3's fcntl), without waiting.
const PROBE = `
import fcntl, json, os, struct, sys
path = sys.argv[1]
def rng(cmd, typ, start, length):
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.fcntl(fd, cmd, struct.pack('hhqqixxxx', typ, 0, start, length, 0))
        return 'ok'
    except OSError as e:
        return 'EAGAIN' if e.errno in (11, 13) else os.strerror(e.errno)
    finally:
        os.close(fd)
out = {}
fd = os.open(path, os.O_RDWR)
try:
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    out['flock'] = 'ok'
except OSError as e:
    out['flock'] = 'EAGAIN' if e.errno == 11 else os.strerror(e.errno)
os.close(fd)
out['posix 100-109 write'] = rng(fcntl.F_SETLK, fcntl.F_WRLCK, 100, 10)
out['posix 150-159 write'] = rng(fcntl.F_SETLK, fcntl.F_WRLCK, 150, 10)
out['ofd 200-209 write'] = rng(fcntl.F_OFD_SETLK, fcntl.F_WRLCK, 200, 10)
out['posix 300-309 read'] = rng(fcntl.F_SETLK, fcntl.F_RDLCK, 300, 10)
out['posix 300-309 write'] = rng(fcntl.F_SETLK, fcntl.F_WRLCK, 300, 10)
print(json.dumps(out))
`;

async function probe(file: string): Promise<Record<string, string>> {
  const r = await run('/usr/bin/python3', ['-c', PROBE, file], { timeout: 20000 });
  return JSON.parse(r.stdout) as Record<string, string>;
}

const HELD = {
  'flock': 'EAGAIN', 'posix 100-109 write': 'EAGAIN', 'posix 150-159 write': 'ok', 'ofd 200-209 write': 'EAGAIN',
  'posix 300-309 read': 'ok', 'posix 300-309 write': 'EAGAIN',
};
const FREE = {
  'flock': 'ok', 'posix 100-109 write': 'ok', 'posix 150-159 write': 'ok', 'ofd 200-209 write': 'ok',
  'posix 300-309 read': 'ok', 'posix 300-309 write': 'ok',
};

async function roundTrip(lazy: boolean): Promise<void> {
  const fds = openFds();
  const work = tempDir('lazyshm-locks-');
  const file = join(work.path, 'locked');
  writeFileSync(file, Buffer.alloc(4096, 0x61));
  const images = join(work.path, 'img');
  const wl = await startWorkload('workload-locks', [file]);
  let live: RestoredTree | undefined;
  try {
    const pid = wl.pid;
    const child = Number(wl.report.child);
    assert.deepEqual(await probe(file), HELD, 'the workload holds its locks');
    // Without --file-locks the dump is refused (as CRIU) and the tree keeps running.
    const refused = await run(process.execPath, [cliPath, 'dump', '-t', String(pid), '-D', images]).then(() => ({ code: 0, stderr: '' }), (e: { code: number; stderr: string }) => e);
    assert.equal(refused.code, 1);
    assert.match(refused.stderr, new RegExp(`pid ${pid}: fd ${wl.report.flock} holds a file lock \\(FLOCK ADVISORY WRITE\\); use --file-locks`));
    assert.deepEqual(await probe(file), HELD, 'still held after the refused dump');

    await run(process.execPath, [cliPath, 'dump', '-t', String(pid), '-D', images, '--file-locks'], { timeout: 60000 });
    await withTimeout(wl.exited, 10000, 'workload killed by the dump');
    assert.deepEqual(await probe(file), FREE, 'the killed original held nothing');

    const dir = await ImageDir.open(images);
    const locks = (await dir.readEntries<FileLockEntry>(KIND.fileLocks))
      .map((l) => ({ ...l, start: Number(l.start), len: Number(l.len) }))
      .sort((a, b) => a.flag - b.flag || a.start - b.start);
    const [fa, fb, fc] = [Number(wl.report.flock), Number(wl.report.posix), Number(wl.report.ofd)];
    assert.deepEqual(locks, [
      { flag: 1, type: 1, pid, fd: fb, start: 100, len: 10 },
      { flag: 1, type: 0, pid, fd: fb, start: 300, len: 0 },
      { flag: 2, type: 1, pid, fd: fa, start: 0, len: 0 },
      { flag: 4, type: 1, pid, fd: fc, start: 200, len: 10 },
    ], 'each lock once, owned by the parent (the child only shares the descriptions)');
    const crit = critDecode(join(images, 'filelocks.img'));
    assert.equal(crit.magic, 'FILE_LOCKS');
    assert.equal(crit.entries.length, 4);
    assert.ok(crit.entries.some((e) => e.flag === 4 && e.fd === fc && Number(e.start) === 200 && Number(e.len) === 10), JSON.stringify(crit.entries));

    const tree = (live = await restoreTree(images, { lazy, fileLocks: true }));
    assert.equal(tree.pid, pid);
    assert.deepEqual(await probe(file), HELD, 'every lock is held again after the restore');
    wl.go(pid);
    const exit = await withTimeout(tree.wait(), 30000, 'restored workload exit');
    assert.equal(readFileSync(join(wl.ctrlDir, 'result'), 'utf8').trim(), 'ok', 'the restored process released every lock');
    assert.deepEqual(exit, { code: 0, signal: 0 });
    await withTimeout(tree.lazyDone(), 30000, 'lazy pages served');
    await tree.close();
    live = undefined;
    assert.deepEqual(await probe(file), FREE, 'released');
    assert.ok(child > 0);

    if (!lazy) {
      // The same images without --file-locks at restore: no lock is taken (CRIU's behaviour).
      const again = (live = await restoreTree(images, {}));
      assert.deepEqual(await probe(file), FREE, 'no lock without --file-locks');
      wl.go(pid);
      assert.deepEqual(await withTimeout(again.wait(), 30000, 'second restore exit'), { code: 0, signal: 0 });
      await again.close();
      live = undefined;
    }
  } finally {
    if (live) {
      // A failed check: the restored tree (root and its child, our pids) goes.
      for (const p of [Number(wl.report.child), wl.pid]) try { process.kill(p, 'SIGKILL'); } catch { /* gone */ }
      await withTimeout(live.wait(), 10000, 'killed restored root').catch(() => {});
      await live.close();
    }
    await wl.dispose();
    work.dispose();
  }
  assert.deepEqual(leakedFds(fds), []);
}

test('file locks: flock, POSIX and OFD locks are dumped with --file-locks and held again after an eager restore', { skip }, async () => {
  await roundTrip(false);
});

test('file locks: the same after a lazy restore', { skip }, async () => {
  await roundTrip(true);
});
