// Files passed in unix socket queues (SCM_RIGHTS) through dump -> kill ->
// restore, eager and lazy. A Python workload queues, on a datagram
// socketpair, one message carrying a pipe's read end (closed by the sender
// afterwards: it exists only in flight, with bytes queued in the pipe) and
// a file it keeps open too (the same description: a shared offset), and a
// second message carrying the pipe's write end (also kept). After the
// restore it receives both and checks from inside that the pipe is the
// one its kept write end feeds, that the queued bytes are there, and that
// the file offset is shared with its own fd. Here: the images hold the
// scm entries as CRIU writes them (file ids; the in-flight end has an
// entry but no fd), crit decodes them.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { dump } from '../../plugin/dump/index.js';
import { FdType, ImageDir, KIND, type SkPacketEntry } from '../../plugin/images/index.js';
import { restore, type RestoredTree } from '../../plugin/restore/index.js';
import { critCheckDir, critDecode } from '../helpers/critcheck.js';
import { isRoot, leakedFds, openFds, tempDir, withTimeout } from '../helpers/env.js';
import { until } from '../helpers/proc.js';
import { killPid, startServer } from '../helpers/servers.js';

const skip = !isRoot && 'needs root';

const SCM_WORKLOAD = `
import os, signal, socket
signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGUSR1])
a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
r, w = os.pipe()
os.write(w, b'in the pipe\\n')
with open('data.txt', 'wb') as f:
    f.write(b'0123456789')
kept = os.open('data.txt', os.O_RDONLY)
os.lseek(kept, 3, 0)
socket.send_fds(a, [b'first'], [r, kept])
os.close(r)
socket.send_fds(a, [b'second'], [w])
print('ready', r, kept, w, flush=True)
signal.sigwait([signal.SIGUSR1])
try:
    msg, fds, _, _ = socket.recv_fds(b, 100, 4, socket.MSG_DONTWAIT)
    assert msg == b'first' and len(fds) == 2, (msg, fds)
    pr, kf = fds
    assert os.read(pr, 100) == b'in the pipe\\n', 'queued pipe bytes'
    os.write(w, b'after\\n')
    assert os.read(pr, 100) == b'after\\n', 'the received read end is the kept write end\\'s pipe'
    assert os.lseek(kf, 0, os.SEEK_CUR) == 3, 'offset'
    os.lseek(kf, 5, os.SEEK_SET)
    assert os.lseek(kept, 0, os.SEEK_CUR) == 5, 'the received file shares its description with the kept fd'
    msg2, fds2, _, _ = socket.recv_fds(b, 100, 4, socket.MSG_DONTWAIT)
    assert msg2 == b'second' and len(fds2) == 1, (msg2, fds2)
    os.write(fds2[0], b'x')
    assert os.read(pr, 10) == b'x', 'the second message carries the write end'
    print('verdict ok', flush=True)
except Exception as e:
    print('verdict FAIL', repr(e), flush=True)
`;

async function scmRoundTrip(lazy: boolean): Promise<void> {
  const fds = openFds();
  const s = await startServer('/usr/bin/python3', ['-u', '-c', SCM_WORKLOAD], /^ready /m);
  const images = tempDir('sockets-scm-img-');
  let tree: RestoredTree | undefined;
  try {
    const [, , keptFd, wFd] = /^ready (\d+) (\d+) (\d+)$/m.exec(s.log())!.map(Number);
    await dump({ pid: s.pid, imagesDir: images.path });
    await withTimeout(s.exited, 10_000, 'workload killed by the dump');
    const dir = await ImageDir.open(images.path);
    const files = await dir.files();
    const fdinfo = await dir.fdinfo((await dir.ids(s.pid)).files_id);
    const idOf = (fd: number): number => fdinfo.find((x) => x.fd === fd)!.id;
    const q = await dir.readImage(KIND.skQueues);
    assert.ok(q, 'sk-queues.img');
    const msgs = q.entries.map((x) => ({ m: x.message as unknown as SkPacketEntry, data: x.extra!.toString() }));
    assert.deepEqual(msgs.map((x) => x.data), ['first', 'second']);
    const [first, second] = msgs.map((x) => x.m);
    assert.equal(first!.scm.length, 1);
    assert.equal(first!.scm[0]!.type, 1, 'SCM_RIGHTS');
    const [readId, keptId] = first!.scm[0]!.rights;
    assert.equal(keptId, idOf(keptFd!), 'the kept file is referred to by its own files.img id');
    assert.deepEqual(second!.scm[0]!.rights, [idOf(wFd!)], 'so is the kept write end');
    const readEnd = files.find((f) => f.id === readId);
    assert.equal(readEnd?.type, FdType.PIPE, 'the in-flight read end has its own entry');
    assert.equal(readEnd.pipe!.pipe_id, files.find((f) => f.id === idOf(wFd!))!.pipe!.pipe_id, 'of the same pipe');
    assert.ok(!fdinfo.some((x) => x.id === readId), 'and no fd');
    critCheckDir(images.path);
    const decoded = critDecode(join(images.path, 'sk-queues.img')).entries as { scm?: { type: number; rights: number[] }[] }[];
    assert.deepEqual(decoded[0]!.scm, [{ type: 1, rights: [readId, keptId] }]);

    tree = await withTimeout(restore({ imagesDir: images.path, detached: true, lazy }), 30_000, 'restore');
    assert.equal(tree.pid, s.pid);
    process.kill(tree.pid, 'SIGUSR1');
    await until(() => /^verdict /m.test(s.log()), 20_000, () => `the workload's verdict (log: ${s.log().slice(-300)})`);
    assert.match(s.log(), /^verdict ok$/m, s.log());
    assert.deepEqual(await withTimeout(tree.wait(), 10_000, 'workload exit'), { code: 0, signal: 0 });
    await tree.lazyDone();
    await tree.close();
    tree = undefined;
    assert.equal(readFileSync(join(s.dir, 'data.txt'), 'utf8'), '0123456789');
  } finally {
    if (tree) {
      killPid(tree.pid);
      await withTimeout(tree.wait(), 10_000, 'restored workload reaped').catch(() => undefined);
      await tree.close();
    }
    await s.dispose();
    images.dispose();
  }
  assert.deepEqual(leakedFds(fds), []);
}

test('scm: files passed in a unix socket queue (SCM_RIGHTS) arrive working after an eager restore', { skip }, async () => {
  await scmRoundTrip(false);
});

test('scm: the same after a lazy restore', { skip }, async () => {
  await scmRoundTrip(true);
});
