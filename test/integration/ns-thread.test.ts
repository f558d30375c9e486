// The namespace thread (native/ns/ns_thread.h, RunInNamespaces) behind
// nsReadFiles, nsRun and the SysV IPC calls: a child of our own unshares its
// UTS and IPC namespaces, names its host and makes a SysV shm segment. Each
// call sees and changes the child's namespaces, never ours; a failure inside
// the thread comes back as one errno error (code, syscall, detail); and the
// thread is gone, its namespace fds closed, when the call returns.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { closeSync, openSync, readdirSync, readFileSync } from 'node:fs';
import { once } from 'node:events';
import { addon } from '../../plugin/native/addon.js';
import { isRoot, leakedFds, openFds, withTimeout } from '../helpers/env.js';

const skip = !isRoot && 'needs root';

/** A shell in UTS and IPC namespaces of its own, host name set and one shm segment made, waiting on stdin. */
async function withNamespacedChild(body: (pid: number) => void): Promise<void> {
  const ourHost = readFileSync('/proc/sys/kernel/hostname', 'utf8');
  const child: ChildProcess = spawn('unshare', ['--uts', '--ipc', 'sh', '-c', 'hostname s5-ns-thread && ipcmk -M 4096 >/dev/null && echo ready && read x'], {
    stdio: ['pipe', 'pipe', 'inherit'],
  });
  const exited = once(child, 'exit');
  try {
    let out = '';
    await withTimeout(
      new Promise<void>((resolve, reject) => {
        child.stdout!.on('data', (b: Buffer) => {
          out += b.toString();
          if (out.includes('ready')) resolve();
        });
        child.on('exit', (code) => reject(new Error(`the namespaced shell exited (${code}) before it was ready`)));
      }),
      10_000,
      'the namespaced shell to be ready',
    );
    body(child.pid!);
  } finally {
    // Were the thread to stay in our namespace, a step would have renamed this machine: put its name back.
    const host = readFileSync('/proc/sys/kernel/hostname', 'utf8');
    if (host !== ourHost) execFileSync('hostname', [ourHost.trim()]);
    child.stdin!.end();
    try {
      await withTimeout(exited, 10_000, 'the namespaced shell to exit');
    } catch (e) {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      throw e;
    }
    assert.equal(host, ourHost, 'our own host name is unchanged');
  }
}

function threadCount(): number {
  return readdirSync('/proc/self/task').length;
}

function errnoError(fn: () => unknown): NodeJS.ErrnoException {
  try {
    fn();
  } catch (e) {
    return e as NodeJS.ErrnoException;
  }
  assert.fail('expected a throw');
}

test('namespace thread: reads and changes another process\'s UTS and IPC namespaces, not ours', { skip }, async () => {
  const ourHost = readFileSync('/proc/sys/kernel/hostname', 'utf8');
  const ourShm = readFileSync('/proc/sysvipc/shm', 'utf8');
  await withNamespacedChild((pid) => {
    const fds = openFds();
    const threads = threadCount();
    assert.deepEqual(addon.nsReadFiles(pid, 'uts', ['/proc/sys/kernel/hostname']), ['s5-ns-thread\n']);
    addon.nsRun(pid, ['uts'], [{ sys: 'sethostname', what: 'sethostname(renamed)', a: 's5-ns-renamed' }]);
    assert.deepEqual(addon.nsReadFiles(pid, 'uts', ['/proc/sys/kernel/hostname']), ['s5-ns-renamed\n']);
    assert.equal(readFileSync('/proc/sys/kernel/hostname', 'utf8'), ourHost, 'our own host name is unchanged');

    const nsFd = openSync(`/proc/${pid}/ns/ipc`, 'r');
    try {
      const state = addon.sysvIpcDump(nsFd);
      assert.equal(state.shm.length, 1, 'the child\'s one segment is seen');
      assert.equal(state.shm[0]!.size, 4096n);
      const id = state.shm[0]!.desc.id;
      addon.sysvShmRemove(nsFd, [id]);
      assert.equal(addon.sysvIpcDump(nsFd).shm.length, 0, 'removed in the child\'s namespace');
      const e = errnoError(() => addon.sysvShmRemove(nsFd, [id]));
      assert.equal(e.code, 'EINVAL');
      assert.equal(e.syscall, 'shmctl');
      assert.match(e.message, new RegExp(`^EINVAL: .*, shmctl IPC_RMID SysV shm id ${id}$`));
    } finally {
      closeSync(nsFd);
    }
    assert.equal(readFileSync('/proc/sysvipc/shm', 'utf8'), ourShm, 'our own IPC namespace is untouched');
    assert.equal(threadCount(), threads, 'every namespace thread has ended');
    assert.deepEqual(leakedFds(fds), [], 'no namespace fd is left open');
  });
});

test('namespace thread: a failure inside comes back as one errno error, fds closed', { skip }, async () => {
  await withNamespacedChild((pid) => {
    const fds = openFds();
    const threads = threadCount();
    const missing = '/proc/sys/kernel/s5-no-such-file';
    let e = errnoError(() => addon.nsReadFiles(pid, 'uts', ['/proc/sys/kernel/hostname', missing]));
    assert.equal(e.code, 'ENOENT');
    assert.equal(e.syscall, 'open');
    assert.equal(e.message, `ENOENT: No such file or directory, open ${missing} in /proc/${pid}/ns/uts`);

    e = errnoError(() => addon.nsRun(pid, ['uts', 'mnt'], [
      { sys: 'sethostname', what: 'sethostname(first)', a: 's5-ns-first' },
      { sys: 'chdir', what: 'chdir(/s5-no-such-dir)', a: '/s5-no-such-dir' },
      { sys: 'sethostname', what: 'sethostname(never)', a: 's5-ns-never' },
    ]));
    assert.equal(e.code, 'ENOENT');
    assert.equal(e.syscall, 'chdir(/s5-no-such-dir)');
    assert.equal(e.message, `ENOENT: No such file or directory, chdir(/s5-no-such-dir) in the namespaces of pid ${pid}`);
    assert.deepEqual(addon.nsReadFiles(pid, 'uts', ['/proc/sys/kernel/hostname']), ['s5-ns-first\n'], 'steps stop at the first failure');

    e = errnoError(() => addon.nsRun(pid, ['uts', 'pid-of-nothing' as 'uts'], []));
    assert.ok(e instanceof RangeError);
    assert.equal(e.message, 'unknown namespace kind pid-of-nothing');

    assert.equal(threadCount(), threads, 'every namespace thread has ended');
    assert.deepEqual(leakedFds(fds), [], 'no namespace fd is left open, also after a failure');
  });
  // A pid that is gone: the namespace cannot be opened.
  const e = errnoError(() => addon.nsReadFiles(2 ** 22 + 1, 'uts', ['/proc/sys/kernel/hostname']));
  assert.equal(e.code, 'ENOENT');
  assert.equal(e.syscall, 'open');
  assert.match(e.message, /\/proc\/4194305\/ns\/uts$/);
});
