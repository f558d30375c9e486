// Inet sockets through dump -> kill -> restore, with real programs:
// Python's http.server (a listening TCP socket) answers after an eager and a
// lazy restore; an IPv6 UDP echo server answers after a restore; a client
// keeps its TCP connection across the checkpoint with --tcp-established
// (restore in the same network namespace after the dump), with data queued
// in both directions at dump time; without the flag the dump is refused
// with CRIU's message and the server keeps running; an image holding a
// socket kind we do not restore fails with pid, fd and kind, nothing left.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createSocket } from 'node:dgram';
import { connect, type Socket } from 'node:net';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { dump } from '../../plugin/dump/index.js';
import { FdType, ImageDir, KIND } from '../../plugin/images/index.js';
import { restore, type RestoredTree } from '../../plugin/restore/index.js';
import { runCli } from '../helpers/cli.js';
import { critCheckDir, critDecode } from '../helpers/critcheck.js';
import { isRoot, leakedFds, openFds, tempDir, withTimeout } from '../helpers/env.js';
import { alive, until } from '../helpers/proc.js';
import { httpGet, idle, killPid, startServer, type Server } from '../helpers/servers.js';
import { pyQueueingPeer } from '../helpers/tcp-peers.js';

const skip = !isRoot && 'needs root';
const PY = '/usr/bin/python3';

async function dumpServer(s: Server, extra: { tcpEstablished?: boolean } = {}): Promise<{ path: string; dispose: () => void }> {
  if (!extra.tcpEstablished) await idle(s.pid);
  const images = tempDir('events-inet-img-');
  try {
    await dump({ pid: s.pid, imagesDir: images.path, ...extra });
    await withTimeout(s.exited, 10000, 'server killed by the dump');
  } catch (e) {
    images.dispose();
    throw e;
  }
  return images;
}

async function restored(imagesDir: string, opts: { lazy: boolean; tcpEstablished?: boolean }): Promise<RestoredTree> {
  return withTimeout(restore({ imagesDir, detached: true, ...opts }), 30000, 'restore');
}

async function finish(tree: RestoredTree): Promise<void> {
  killPid(tree.pid);
  await withTimeout(tree.wait(), 10000, 'restored server reaped');
  await withTimeout(tree.lazyDone(), 10000, 'lazy pages');
  await tree.close();
}

async function httpServerRoundTrip(lazy: boolean): Promise<void> {
  const fds = openFds();
  const s = await startServer(PY, ['-u', '-m', 'http.server', '0', '--bind', '127.0.0.1'], /Serving HTTP on \S+ port \d+/);
  let images: { path: string; dispose: () => void } | undefined;
  let tree: RestoredTree | undefined;
  try {
    const port = Number(/port (\d+)/.exec(s.log())![1]);
    writeFileSync(join(s.dir, 'hello.txt'), 'hello from before the checkpoint\n');
    assert.equal((await httpGet(port, '/hello.txt')).body, 'hello from before the checkpoint\n');
    images = await dumpServer(s);
    const dir = await ImageDir.open(images.path);
    const isk = (await dir.files()).find((f) => f.type === FdType.INETSK)?.isk;
    assert.ok(isk, 'files.img has the listening socket');
    assert.equal(isk.state, 10, 'LISTEN');
    assert.equal(isk.src_port, port);
    assert.deepEqual(isk.src_addr, [0x0100007f], '127.0.0.1 as CRIU stores it');
    assert.equal(isk.opts.reuseaddr, true, 'http.server sets SO_REUSEADDR');
    assert.ok(isk.backlog > 0);
    critCheckDir(images.path);
    const e = critDecode(join(images.path, 'files.img')).entries.find((x) => x['type'] === 'INETSK') as { isk: { src_port: number; state: number } };
    assert.deepEqual([e.isk.src_port, e.isk.state], [port, 10], 'crit shows the socket');
    await assert.rejects(httpGet(port, '/hello.txt', '127.0.0.1', 2000), 'nothing listens between dump and restore');
    tree = await restored(images.path, { lazy });
    assert.equal(tree.pid, s.pid);
    writeFileSync(join(s.dir, 'after.txt'), 'served after the restore\n');
    const a = await httpGet(port, '/hello.txt');
    assert.deepEqual(a, { status: 200, body: 'hello from before the checkpoint\n' });
    assert.equal((await httpGet(port, '/after.txt')).body, 'served after the restore\n');
    assert.equal((await httpGet(port, '/missing')).status, 404);
  } finally {
    if (tree) await finish(tree);
    await s.dispose();
    images?.dispose();
  }
  assert.deepEqual(leakedFds(fds), []);
}

test('inet: Python http.server keeps serving on its port after an eager restore', { skip }, async () => {
  await httpServerRoundTrip(false);
});

test('inet: Python http.server keeps serving after a lazy restore', { skip }, async () => {
  await httpServerRoundTrip(true);
});

const UDP_ECHO = `
import socket, sys
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
s.bind(('::1', 0))
print('port', s.getsockname()[1], flush=True)
n = 0
while True:
    data, peer = s.recvfrom(2048)
    n += 1
    s.sendto(b'echo %d ' % n + data, peer)
`;

function udpAsk(port: number, msg: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const c = createSocket('udp6');
    const timer = setTimeout(() => {
      c.close();
      reject(new Error('no UDP answer in 5 s'));
    }, 5000);
    c.on('message', (m) => {
      clearTimeout(timer);
      c.close();
      resolve(m.toString());
    });
    c.send(msg, port, '::1');
  });
}

test('inet: a bound IPv6 UDP socket (v6only) answers after a restore', { skip }, async () => {
  const fds = openFds();
  const s = await startServer(PY, ['-u', '-c', UDP_ECHO], /^port \d+$/m);
  let images: { path: string; dispose: () => void } | undefined;
  let tree: RestoredTree | undefined;
  try {
    const port = Number(/port (\d+)/.exec(s.log())![1]);
    assert.equal(await udpAsk(port, 'one'), 'echo 1 one');
    images = await dumpServer(s);
    const isk = (await (await ImageDir.open(images.path)).files()).find((f) => f.type === FdType.INETSK)!.isk!;
    assert.deepEqual([isk.family, isk.type, isk.proto, isk.state, isk.v6only], [10, 2, 17, 7, true]);
    assert.deepEqual(isk.src_addr, [0, 0, 0, 0x01000000], '::1');
    critCheckDir(images.path);
    tree = await restored(images.path, { lazy: true });
    assert.equal(await udpAsk(port, 'two'), 'echo 2 two', 'the counter went on: same process state');
  } finally {
    if (tree) await finish(tree);
    await s.dispose();
    images?.dispose();
  }
  assert.deepEqual(leakedFds(fds), []);
});

// Accepts one connection; reads "hello\\n"; fills the connection's send
// queue without blocking (the client does not read); reports how much it
// queued; waits for SIGUSR1; then reads two more lines (one sent by the
// client before the dump: it sits in the receive queue; one sent between
// dump and restore: the network lock made the peer retransmit it) and
// answers "got:<line>" for each.
const TCP_PEER = pyQueueingPeer("'127.0.0.1'", { noDelay: true });

function rxQueue(localPort: number): number {
  const hex = localPort.toString(16).toUpperCase().padStart(4, '0');
  for (const line of readFileSync('/proc/net/tcp', 'utf8').split('\n').slice(1)) {
    const f = line.trim().split(/\s+/);
    if (f[1]?.endsWith(`:${hex}`) && f[3] === '01') return parseInt(f[4]!.split(':')[1]!, 16);
  }
  return -1;
}

test('inet: a client keeps its TCP connection across the checkpoint with --tcp-established, queued data in both directions', { skip }, async () => {
  const fds = openFds();
  const s = await startServer(PY, ['-u', '-c', TCP_PEER], /^port \d+$/m);
  let images: { path: string; dispose: () => void } | undefined;
  let tree: RestoredTree | undefined;
  let client: Socket | undefined;
  try {
    const port = Number(/port (\d+)/.exec(s.log())![1]);
    const received: Buffer[] = [];
    let clientError: Error | undefined;
    let ended = false;
    client = connect(port, '127.0.0.1');
    client.on('error', (e) => { clientError = e; });
    client.on('data', (b: Buffer) => received.push(b));
    client.on('end', () => { ended = true; });
    await withTimeout(new Promise<void>((r) => client!.once('connect', () => r())), 5000, 'connect');
    client.pause();
    client.write('hello\n');
    await until(() => /^sent \d+$/m.test(s.log()), 10000, 'the server filled its send queue');
    const sent = Number(/^sent (\d+)$/m.exec(s.log())![1]);
    // A line the server has not read yet: it waits in the server's receive queue.
    client.write('queued line\n');
    const serverPort = client.localPort!;
    await until(() => rxQueue(port) === 12 || rxQueue(port) > 12, 5000, () => `12 bytes in the server's receive queue (have ${rxQueue(port)}, client port ${serverPort})`);

    // Without --tcp-established: CRIU's refusal, the server untouched.
    const refused = tempDir('events-inet-refused-');
    const r = await runCli(['dump', '-t', String(s.pid), '-D', refused.path]).finally(() => refused.dispose());
    assert.equal(r.code, 1);
    assert.match(r.stderr, new RegExp(`^lazy-restore: cannot dump: pid ${s.pid}: fd \\d+ \\(socket:\\[\\d+\\]\\): Connected TCP socket, consider using --tcp-established option\\.\\n$`));
    assert.ok(alive(s.pid), 'a refused dump leaves the server running');

    // Through the CLI, with CRIU's option.
    images = tempDir('events-inet-img-');
    const dumped = await runCli(['dump', '-t', String(s.pid), '-D', images.path, '--tcp-established']);
    assert.equal(dumped.code, 0, dumped.stderr);
    await withTimeout(s.exited, 10000, 'server killed by the dump');
    const dir = await ImageDir.open(images.path);
    const isk = (await dir.files()).find((f) => f.type === FdType.INETSK)!.isk!;
    assert.equal(isk.state, 1, 'ESTABLISHED');
    assert.equal(isk.dst_port, client.localPort);
    assert.equal(isk.tcp_opts?.nodelay, true);
    const img = await dir.readImage(KIND.tcpStream, isk.ino);
    assert.ok(img, `tcp-stream-${isk.ino.toString(16)}.img`);
    const st = img.entries[0]!.message as { inq_len: number; outq_len: number; unsq_len: number; mss_clamp: number };
    assert.equal(st.inq_len, 12, 'the unread line is in the image');
    assert.equal(img.entries[0]!.extra!.subarray(0, 12).toString(), 'queued line\n');
    assert.ok(st.outq_len > 0, 'data the client has not taken is in the image');
    assert.ok(st.mss_clamp > 0);
    critCheckDir(images.path);
    assert.equal(clientError, undefined, 'the kill of the dumped server sent no RST');
    assert.equal(ended, false, 'nor a FIN');
    // Between dump and restore the connection is locked (nftables): what the
    // client sends now is dropped, not answered with a RST, and retransmitted.
    const chain = ['list', 'chain', 'inet', 'lazy_restore_lock', `c${isk.ino}`];
    assert.match(execFileSync('nft', chain, { encoding: 'utf8' }), /drop/, 'the dumped connection is locked');
    client.write('in the gap\n');

    tree = await restored(images.path, { lazy: true, tcpEstablished: true });
    assert.throws(() => execFileSync('nft', chain, { stdio: 'pipe' }), 'the restore removed the lock');
    process.kill(tree.pid, 'SIGUSR1');
    client.resume();
    await until(() => ended || clientError !== undefined, 20000, () => `the server's answer (${received.reduce((n, b) => n + b.length, 0)} bytes so far)`);
    assert.equal(clientError, undefined);
    const all = Buffer.concat(received);
    const answer = 'got:queued line\ngot:in the gap\n';
    assert.equal(all.length, sent + answer.length, 'every queued byte arrived, none twice');
    for (let i = 0; i < sent; i++) {
      if (all[i] !== i % 251) assert.fail(`byte ${i} is ${all[i]}, expected ${i % 251}`);
    }
    assert.equal(all.subarray(sent).toString(), answer);
    assert.deepEqual(await withTimeout(tree.wait(), 10000, 'server exit'), { code: 0, signal: 0 });
    await tree.lazyDone();
    await tree.close();
    tree = undefined;
  } finally {
    client?.destroy();
    if (tree) await finish(tree);
    await s.dispose();
    images?.dispose();
  }
  assert.deepEqual(leakedFds(fds), []);
});

test('inet: an image with a socket kind we do not restore fails naming pid, fd and kind; nothing is left running', { skip }, async () => {
  const s = await startServer(PY, ['-u', '-m', 'http.server', '0', '--bind', '127.0.0.1'], /Serving HTTP on \S+ port \d+/);
  let images: { path: string; dispose: () => void } | undefined;
  try {
    images = await dumpServer(s);
    const dir = await ImageDir.open(images.path);
    const files = await dir.files();
    const sk = files.find((f) => f.type === FdType.INETSK)!;
    const fdinfo = await dir.fdinfo((await dir.ids(s.pid)).files_id);
    const fd = fdinfo.find((x) => x.id === sk.id)!.fd;
    const { isk: _drop, ...rest } = sk;
    await dir.writeFiles(files.map((f) => (f === sk ? { ...rest, type: FdType.PACKETSK, psk: { id: sk.id } } : f)));
    await dir.writeFdinfo((await dir.ids(s.pid)).files_id, fdinfo.map((x) => (x.id === sk.id ? { ...x, type: FdType.PACKETSK } : x)));
    const r = await runCli(['restore', '-D', images.path, '-d']);
    assert.equal(r.code, 1, r.stderr);
    assert.equal(r.stderr, `lazy-restore: pid ${s.pid}: fd ${fd} is a packet socket (files.img id ${sk.id}, type ${FdType.PACKETSK}), which restore does not support\n`);
    assert.ok(!alive(s.pid), 'nothing restored is left running');
  } finally {
    await s.dispose();
    images?.dispose();
  }
});
