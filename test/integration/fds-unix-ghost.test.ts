// Ghost unix sockets (plugin/restore/fds/unix-ghost.ts): sockets bound to
// path names that were unlinked, inside directories that were removed too
// (CRIU 4.2's bind_on_deleted; zdtm sk-unix01, sk-unix-dgram-ghost). A
// Python workload binds a datagram server to a relative name two new
// directories deep and a listener to an absolute name in the first one,
// connects a datagram client to the server and queues a datagram, then
// unlinks both names and removes both directories. After an eager or lazy
// restore the server still has the queued datagram and the client (which
// connects to the unlinked name during the restore) reaches it again; both
// sockets keep their names, the listener still listens, and no directory
// or socket file is left behind.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { dump } from '../../plugin/dump/index.js';
import { FdType, ImageDir } from '../../plugin/images/index.js';
import { restore, type RestoredTree } from '../../plugin/restore/index.js';
import { isRoot, leakedFds, openFds, tempDir, withTimeout } from '../helpers/env.js';
import { until } from '../helpers/proc.js';
import { killPid, startServer } from '../helpers/servers.js';

const skip = !isRoot && 'needs root';

const GHOST_WORKLOAD = `
import os, signal, socket
signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGUSR1])
os.makedirs('gone/deeper')
srv = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
srv.bind('gone/deeper/dg')
lst = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
lpath = os.path.abspath('gone/lst')
lst.bind(lpath)
lst.listen(4)
cli = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
cli.connect('gone/deeper/dg')
cli.send(b'queued')
os.unlink('gone/deeper/dg')
os.unlink(lpath)
os.rmdir('gone/deeper')
os.rmdir('gone')
print('ready', flush=True)
signal.sigwait([signal.SIGUSR1])
try:
    assert srv.recv(100, socket.MSG_DONTWAIT) == b'queued', 'the queued datagram'
    cli.send(b'after')
    assert srv.recv(100, socket.MSG_DONTWAIT) == b'after', 'the client still reaches the server'
    assert srv.getsockname() == 'gone/deeper/dg', srv.getsockname()
    assert lst.getsockname() == lpath, lst.getsockname()
    assert lst.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) == 1, 'still listening'
    assert not os.path.exists('gone'), 'the removed directories stay removed'
    print('verdict ok', flush=True)
except Exception as e:
    print('verdict FAIL', repr(e), flush=True)
`;

async function ghostRoundTrip(lazy: boolean): Promise<void> {
  const fds = openFds();
  const s = await startServer('/usr/bin/python3', ['-u', '-c', GHOST_WORKLOAD], /^ready$/m);
  const images = tempDir('unix-ghost-img-');
  let tree: RestoredTree | undefined;
  try {
    await dump({ pid: s.pid, imagesDir: images.path });
    await withTimeout(s.exited, 10_000, 'workload killed by the dump');
    const dir = await ImageDir.open(images.path);
    const ghosts = (await dir.files()).filter((f) => f.type === FdType.UNIXSK && f.usk?.deleted).map((f) => f.usk!.name.toString().replace(/\0+$/, ''));
    assert.deepEqual(ghosts.sort(), [join(s.dir, 'gone/lst'), 'gone/deeper/dg'].sort(), 'both names are recorded as deleted');

    tree = await withTimeout(restore({ imagesDir: images.path, detached: true, lazy }), 30_000, 'restore');
    assert.equal(tree.pid, s.pid);
    assert.deepEqual(readdirSync(s.dir).filter((n) => n !== 'server.log'), [], 'no directory or socket file left by the restore');
    process.kill(tree.pid, 'SIGUSR1');
    await until(() => /^verdict /m.test(s.log()), 20_000, () => `the workload's verdict (log: ${s.log().slice(-300)})`);
    assert.match(s.log(), /^verdict ok$/m, s.log());
    assert.deepEqual(await withTimeout(tree.wait(), 10_000, 'workload exit'), { code: 0, signal: 0 });
    await tree.lazyDone();
    await tree.close();
    tree = undefined;
    assert.ok(!existsSync(join(s.dir, 'gone')));
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

test('unix ghosts: sockets bound to names unlinked inside removed directories, with a datagram client of the unlinked name, after an eager restore', { skip }, async () => {
  await ghostRoundTrip(false);
});

test('unix ghosts: the same after a lazy restore', { skip }, async () => {
  await ghostRoundTrip(true);
});
