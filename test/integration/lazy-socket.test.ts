// The lazy-pages socket listener (native/uffd/lazysock.cc + plugin/lazy/socket.ts)
// against lazy-handover, a restorer written to IMAGE-FORMAT.md §5.3.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, closeSync, existsSync, readlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { LazySocket, type LazySocketNotice } from '../../plugin/lazy/socket.js';
import { UserError } from '../../plugin/errors.js';
import { isRoot, leakedFds, openFds, tempDir, withTimeout } from '../helpers/env.js';
import { startHandover } from '../helpers/lazy.js';

function collect(path: string): { sock: LazySocket; tasks: { pid: number; fd: number }[]; events: LazySocketNotice[]; until: (t: string) => Promise<void> } {
  const tasks: { pid: number; fd: number }[] = [];
  const events: LazySocketNotice[] = [];
  const waiters: { t: string; r: () => void }[] = [];
  const sock = new LazySocket(path, {
    onTask: (pid, fd) => tasks.push({ pid, fd }),
    onEvent: (ev) => {
      events.push(ev);
      for (const w of waiters.filter((x) => x.t === ev.type)) w.r();
    },
  });
  const until = (t: string): Promise<void> =>
    events.some((e) => e.type === t) ? Promise.resolve() : withTimeout(new Promise<void>((r) => waiters.push({ t, r })), 10_000, `socket event ${t}`);
  return { sock, tasks, events, until };
}

test('hand-over: pid + SCM_RIGHTS uffd, zombie, restore finished, EOF', { skip: !isRoot && 'needs root (userfaultfd)' }, async () => {
  const dir = tempDir();
  const before = openFds();
  try {
    const path = join(dir.path, 'lazy-pages.socket');
    writeFileSync(path, ''); // a stale non-socket file is not ours to remove: bind fails
    assert.throws(() => collect(path), (e: unknown) => e instanceof UserError && /EADDRINUSE/.test(e.message));
    const c = collect(join(dir.path, 'other.socket'));
    const h = await startHandover([join(dir.path, 'other.socket'), '--zombie', '4444']);
    h.go();
    await c.until('eof');
    assert.equal(c.tasks.length, 1);
    assert.equal(c.tasks[0]!.pid, h.pids[0]);
    assert.equal(readlinkSync(`/proc/self/fd/${c.tasks[0]!.fd}`), 'anon_inode:[userfaultfd]');
    assert.deepEqual(c.events.map((e) => e.type), ['connected', 'zombie', 'finished', 'eof']);
    assert.deepEqual(c.events[1], { type: 'zombie', pid: 4444, conn: 1, peer: h.pids[0] });
    assert.ok(c.events.every((e) => e.type !== 'error' && e.conn === 1 && e.peer === h.pids[0]), 'every event names its connection and peer');
    assert.equal(existsSync(join(dir.path, 'other.socket')), true, 'connections are independent: still listening');
    assert.deepEqual(await h.exit(), { code: 0, signal: null });
    closeSync(c.tasks[0]!.fd);
    c.sock.close();
    c.sock.close();
    assert.equal(existsSync(join(dir.path, 'other.socket')), false, 'socket unlinked on close');
  } finally {
    dir.dispose();
  }
  assert.deepEqual(leakedFds(before), []);
});

test('32 processes share one connection; every uffd arrives with its own pid', { skip: !isRoot && 'needs root' }, async () => {
  const dir = tempDir();
  try {
    const path = join(dir.path, 's');
    const c = collect(path);
    const h = await startHandover([path, '--procs', '32'], 32);
    h.go();
    await c.until('finished');
    assert.deepEqual(c.tasks.map((t) => t.pid).sort(), [...h.pids].sort());
    for (const t of c.tasks) closeSync(t.fd);
    assert.deepEqual(await h.exit(), { code: 0, signal: null });
    c.sock.close();
  } finally {
    dir.dispose();
  }
});

test('a peer of another uid is refused; the socket stays open for the restorer', { skip: !isRoot && 'needs root (setuid)' }, async () => {
  const dir = tempDir();
  try {
    chmodSync(dir.path, 0o755);
    const path = join(dir.path, 'lazy-pages.socket');
    const c = collect(path);
    chmodSync(path, 0o777);
    const intruder = await startHandover([path, '--setuid', '65534']);
    intruder.go();
    await c.until('refused');
    assert.deepEqual(await intruder.exit(), { code: 0, signal: null });
    assert.ok(intruder.stdout.includes('eof'));
    const r = c.events.find((e) => e.type === 'refused');
    assert.ok(r && r.type === 'refused' && r.uid === 65534 && r.pid === intruder.pids[0]);
    assert.equal(c.tasks.length, 0);
    // the real restorer still gets through
    const h = await startHandover([path]);
    h.go();
    await c.until('finished');
    assert.equal(c.tasks.length, 1);
    closeSync(c.tasks[0]!.fd);
    assert.deepEqual(await h.exit(), { code: 0, signal: null });
    c.sock.close();
  } finally {
    dir.dispose();
  }
});

test('restorer closing before restore-finished is reported as EOF without finished', { skip: !isRoot && 'needs root' }, async () => {
  const dir = tempDir();
  try {
    const path = join(dir.path, 's');
    const c = collect(path);
    const h = await startHandover([path, '--no-finish']);
    h.go();
    await c.until('eof');
    assert.equal(c.events.some((e) => e.type === 'finished'), false);
    for (const t of c.tasks) closeSync(t.fd);
    await h.exit();
    c.sock.close();
  } finally {
    dir.dispose();
  }
});

test('socket path too long is a clear error', () => {
  assert.throws(() => collect(`/tmp/${'x'.repeat(200)}`), (e: unknown) => e instanceof UserError && /ENAMETOOLONG/.test(e.message));
});
