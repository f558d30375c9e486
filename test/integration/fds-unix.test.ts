// Unix sockets through dump -> kill -> restore (eager and lazy). The
// workload (workload-unix: a parent and a child) checks from inside after
// the restore that every message queued in a socketpair of each type, on
// connections accepted from a path and an abstract listener, and on a
// bound datagram socket arrives once, whole and in order; the shutdown
// state and SO_PASSCRED hold; the not-yet-accepted connection is still
// there. Here: what the images hold, that crit decodes them, that both
// listeners accept new connections from outside after the restore, and
// the --ext-unix-sk and bad-image paths.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { join } from 'node:path';
import { FdType, ImageDir, KIND, USK_EXTERN, type FileEntry } from '../../plugin/images/index.js';
import { runCli } from '../helpers/cli.js';
import { critCheckDir, critDecode } from '../helpers/critcheck.js';
import { isRoot, leakedFds, openFds, tempDir, withTimeout } from '../helpers/env.js';
import { alive } from '../helpers/proc.js';
import { goAndCheck, restoreTree, startAndDump, type Dumped } from '../helpers/restore.js';
import type { RestoredTree } from '../../plugin/restore/index.js';
import { helperPath } from '../../plugin/native/addon.js';
import { startWorkload, waitForFile } from '../helpers/workload.js';

const skip = !isRoot && 'needs root';

/** Connects to a listener of the restored tree and resolves with what it is sent ("hello"). */
function dialer(path: string): { connected: Promise<void>; answer: Promise<string>; sock: Socket } {
  const sock = connect({ path });
  const chunks: Buffer[] = [];
  sock.on('data', (b: Buffer) => chunks.push(b));
  const connected = new Promise<void>((res, rej) => { sock.once('connect', () => res()); sock.once('error', rej); });
  const answer = new Promise<string>((res, rej) => { sock.once('end', () => res(Buffer.concat(chunks).toString())); sock.once('error', rej); sock.once('close', () => res(Buffer.concat(chunks).toString())); });
  return { connected, answer, sock };
}

/**
 * Connects to both restored listeners from outside before "go", lets the
 * workload check itself, and checks that each new connection got "hello".
 */
async function dialGoAndCheck(d: Dumped, tree: RestoredTree, socks: string): Promise<void> {
  const a = dialer(join(socks, 'listen.sock'));
  const b = dialer(`\0${join(socks, 'abstract')}`);
  let checked = false;
  try {
    await withTimeout(Promise.all([a.connected, b.connected]), 10000, 'connect to the restored listeners');
    const answers = Promise.all([a.answer, b.answer]);
    await goAndCheck(d, tree);
    checked = true;
    assert.deepEqual(await withTimeout(answers, 10000, 'answers'), ['hello', 'hello']);
  } finally {
    if (!checked) await killRestored(tree, Number(d.wl.report.child));
    a.sock.destroy();
    b.sock.destroy();
  }
}

/** A failed check must not leave the restored parent and child running: both are ours (same pids as dumped). */
async function killRestored(tree: RestoredTree, child: number): Promise<void> {
  for (const pid of [child, tree.pid]) {
    if (pid > 0 && alive(pid)) try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ }
  }
  await withTimeout(tree.wait(), 10000, 'restored root reaped').catch(() => undefined);
  await tree.close();
}

function unixFiles(files: readonly FileEntry[]): FileEntry[] {
  return files.filter((f) => f.type === FdType.UNIXSK);
}

async function roundTrip(lazy: boolean): Promise<void> {
  const fds = openFds();
  const socks = tempDir('unix-socks-');
  let d: Dumped | undefined;
  try {
    d = await startAndDump('workload-unix', [socks.path]);
    const dir = await ImageDir.open(d.images.path);
    const files = await dir.files();
    const usk = unixFiles(files).map((f) => f.usk!);
    // 4 socketpairs (8), 2 listeners, 2 accepted pairs (4), 1 in-flight client, dgram server + connected client.
    assert.equal(usk.length, 17, `unix sockets in files.img: ${usk.length}`);
    const listeners = usk.filter((u) => u.state === 10);
    assert.deepEqual(listeners.map((u) => u.name[0] === 0 ? 'abstract' : u.name.toString().replace(/\0+$/, '')).sort(), ['abstract', join(socks.path, 'listen.sock')].sort());
    const server = usk.find((u) => u.type === 2 && u.name.toString() === `${join(socks.path, 'dgram.sock')}\0`)!;
    assert.ok(server, 'the bound datagram socket');
    assert.ok(usk.some((u) => u.type === 2 && u.peer === server.ino), 'a datagram socket connected to it by name');
    const pathL = listeners.find((u) => u.name[0] !== 0)!;
    assert.ok(usk.some((u) => u.type === 1 && u.state === 1 && u.peer === pathL.ino), 'the in-flight connection names its listener as peer');
    assert.ok(usk.some((u) => u.shutdown === 2) && usk.some((u) => u.shutdown === 1), 'the shut-down pair');
    assert.ok(usk.some((u) => u.opts.so_passcred === true), 'SO_PASSCRED');
    const q = await dir.readImage(KIND.skQueues);
    assert.ok(q, 'sk-queues.img');
    const byId = new Map<number, Buffer[]>();
    for (const e of q.entries) {
      const m = e.message as { id_for: number; length: number };
      assert.equal(e.extra?.length, m.length);
      byId.set(m.id_for, [...(byId.get(m.id_for) ?? []), e.extra!]);
    }
    const serverId = unixFiles(files).find((f) => f.usk!.ino === server.ino)!.id;
    assert.deepEqual(byId.get(serverId)?.map((b) => b.toString()), ['dgram-1', 'dgram-22', 'dgram-333'], 'datagrams kept whole, in order');
    critCheckDir(d.images.path);
    const crit = critDecode(join(d.images.path, 'files.img')).entries as { type: string; usk?: { state: number } }[];
    assert.equal(crit.filter((e) => e.type === 'UNIXSK').length, 17, 'crit decodes the unix sockets');
    const cq = critDecode(join(d.images.path, 'sk-queues.img')).entries;
    assert.equal(cq.length, q.entries.length, 'crit decodes sk-queues.img');

    const tree = await restoreTree(d.images.path, { lazy });
    assert.equal(tree.pid, d.wl.pid);
    await dialGoAndCheck(d, tree, socks.path);
  } finally {
    await d?.wl.dispose();
    d?.images.dispose();
    socks.dispose();
  }
  assert.deepEqual(leakedFds(fds), []);
}

test('unix: socketpairs, listeners, accepted, in-flight and datagram sockets with their queues survive an eager restore', { skip }, async () => {
  await roundTrip(false);
});

test('unix: the same after a lazy restore', { skip }, async () => {
  await roundTrip(true);
});

/** Starts the external datagram peer (outside the tree) on abstract NAME. */
async function startPeer(name: string, dir: string): Promise<{ exited: Promise<number | null>; kill: () => void }> {
  const p = spawn(helperPath('unix-dgram-peer'), [name, dir], { stdio: ['ignore', 'ignore', 'inherit'] });
  const exited = new Promise<number | null>((res) => p.on('exit', (c) => res(c)));
  await withTimeout(Promise.race([waitForFile(join(dir, 'ready'), 10000), exited.then(() => { throw new Error('peer exited'); })]), 12000, 'peer ready');
  return { exited, kill: () => { if (p.exitCode === null) p.kill('SIGKILL'); } };
}

test('unix: a peer outside the tree is refused without --ext-unix-sk (workload left running) and reconnected with it', { skip }, async () => {
  const fds = openFds();
  const socks = tempDir('unix-ext-socks-');
  const peerDir = tempDir('unix-ext-peer-');
  const refused = tempDir('unix-ext-refused-');
  const images = tempDir('unix-ext-img-');
  const extName = `${socks.path}/ext-peer`;
  const peer = await startPeer(extName, peerDir.path);
  const wl = await startWorkload('workload-unix', [socks.path, extName]);
  try {
    const child = Number(wl.report.child);
    const r = await runCli(['dump', '-t', String(wl.pid), '-D', refused.path]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, new RegExp(`^lazy-restore: cannot dump: pid ${child}: fd \\d+ \\(socket:\\[\\d+\\]\\): External socket is used\\. Consider using --ext-unix-sk option\\.\\n$`));
    assert.ok(alive(wl.pid) && alive(child), 'a refused dump leaves the workload running');

    const ok = await runCli(['dump', '-t', String(wl.pid), '-D', images.path, '--ext-unix-sk']);
    assert.equal(ok.code, 0, ok.stderr);
    await withTimeout(wl.exited, 10000, 'workload killed by the dump');
    const dir = await ImageDir.open(images.path);
    const ext = unixFiles(await dir.files()).map((f) => f.usk!).filter((u) => u.uflags & USK_EXTERN);
    assert.equal(ext.length, 1, 'one external entry');
    assert.equal(ext[0]!.name.toString(), `\0${extName}`);
    critCheckDir(images.path);

    const without = await runCli(['restore', '-D', images.path, '-d']);
    assert.equal(without.code, 1);
    assert.match(without.stderr, new RegExp(`^lazy-restore: pid ${child}: fd \\d+ \\(unix socket\\): External socket found in image\\. Consider using the --ext-unix-sk option to allow restoring it\\.\\n$`));
    assert.ok(!alive(wl.pid), 'nothing restored');

    const tree = await restoreTree(images.path, { extUnixSk: true });
    await dialGoAndCheck({ wl, images }, tree, socks.path);
    assert.equal(await withTimeout(peer.exited, 10000, 'the external peer got "after-ext"'), 0);
    assert.equal(readFileSync(join(peerDir.path, 'received'), 'utf8'), 'after-ext\n');
  } finally {
    peer.kill();
    await wl.dispose();
    for (const t of [socks, peerDir, refused, images]) t.dispose();
  }
  assert.deepEqual(leakedFds(fds), []);
});

test('unix: an image edited to an unsupported socket state fails naming pid, fd and kind; nothing is left running', { skip }, async () => {
  const socks = tempDir('unix-bad-socks-');
  let d: Dumped | undefined;
  try {
    d = await startAndDump('workload-unix', [socks.path]);
    const dir = await ImageDir.open(d.images.path);
    const files = await dir.files();
    const ids = await dir.ids(d.wl.pid);
    const fdinfo = await dir.fdinfo(ids.files_id);
    const fi = fdinfo.find((x) => files.find((f) => f.id === x.id)?.type === FdType.UNIXSK)!;
    await dir.writeFiles(files.map((f) => (f.id === fi.id ? { ...f, usk: { ...f.usk!, state: 2 } } : f)));
    const r = await runCli(['restore', '-D', d.images.path, '-d']);
    assert.equal(r.code, 1, r.stderr);
    assert.equal(r.stderr, `lazy-restore: pid ${d.wl.pid}: fd ${fi.fd} (unix socket): socket state 2 is not supported (ESTABLISHED, CLOSE, LISTEN)\n`);
    assert.ok(!alive(d.wl.pid) && !alive(Number(d.wl.report.child)), 'nothing restored is left running');
  } finally {
    await d?.wl.dispose();
    d?.images.dispose();
    socks.dispose();
  }
});
