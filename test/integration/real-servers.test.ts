// Real programs through dump -> kill -> restore: a Node.js HTTP server
// (libuv: epoll, eventfds, pipes, worker threads, a listening socket) with a
// setInterval counter, eager and lazy, and Debian's redis-server with a data
// set answering GET after a lazy restore. Each answers with state from
// before the checkpoint and keeps running its timers afterwards.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createServer } from 'node:net';
import { dump } from '../../plugin/dump/index.js';
import { restore, type RestoredTree } from '../../plugin/restore/index.js';
import { critCheckDir } from '../helpers/critcheck.js';
import { isRoot, leakedFds, openFds, tempDir, withTimeout } from '../helpers/env.js';
import { httpGet, idle, killPid, startServer, type Server } from '../helpers/servers.js';

const skip = !isRoot && 'needs root';
const REDIS = '/usr/bin/redis-server';
const REDIS_CLI = '/usr/bin/redis-cli';

async function dumpAndRestore(s: Server, lazy: boolean): Promise<{ tree: RestoredTree; images: { path: string; dispose: () => void } }> {
  await idle(s.pid);
  const images = tempDir('events-inet-img-');
  try {
    await dump({ pid: s.pid, imagesDir: images.path });
    await withTimeout(s.exited, 10000, 'server killed by the dump');
    critCheckDir(images.path);
    const tree = await withTimeout(restore({ imagesDir: images.path, detached: true, lazy }), 30000, 'restore');
    assert.equal(tree.pid, s.pid);
    return { tree, images };
  } catch (e) {
    images.dispose();
    throw e;
  }
}

async function finish(tree: RestoredTree): Promise<void> {
  killPid(tree.pid);
  await withTimeout(tree.wait(), 10000, 'restored server reaped');
  await withTimeout(tree.lazyDone(), 10000, 'lazy pages');
  await tree.close();
}

// Counts requests and interval ticks; answers "hello <requests> ticks <ticks>".
const NODE_SERVER = `
let n = 0, ticks = 0;
const big = Buffer.alloc(8 << 20, 7); // some heap that must come back
setInterval(() => { ticks++; }, 20);
const s = require('http').createServer((q, r) => { n++; r.end('hello ' + n + ' ticks ' + ticks + ' big ' + big[12345] + '\\n'); });
s.listen(0, '127.0.0.1', () => console.log('port ' + s.address().port));
`;

function parseHello(body: string): { n: number; ticks: number; big: number } {
  const m = /^hello (\d+) ticks (\d+) big (\d+)\n$/.exec(body);
  assert.ok(m, `answer ${JSON.stringify(body)}`);
  return { n: Number(m[1]), ticks: Number(m[2]), big: Number(m[3]) };
}

async function nodeRoundTrip(lazy: boolean): Promise<void> {
  const fds = openFds();
  const s = await startServer(process.execPath, ['-e', NODE_SERVER], /^port \d+$/m);
  let r: Awaited<ReturnType<typeof dumpAndRestore>> | undefined;
  try {
    const port = Number(/port (\d+)/.exec(s.log())![1]);
    const before = parseHello((await httpGet(port, '/')).body);
    assert.equal(before.n, 1);
    r = await dumpAndRestore(s, lazy);
    const after = parseHello((await httpGet(port, '/')).body);
    assert.equal(after.n, 2, 'the request counter from before the checkpoint');
    assert.equal(after.big, 7);
    assert.ok(after.ticks >= before.ticks);
    // setInterval keeps running (libuv's timers and epoll came back).
    let later = after;
    const deadline = Date.now() + 10000;
    while (later.ticks <= after.ticks + 2) {
      if (Date.now() > deadline) assert.fail(`setInterval stopped after the restore (ticks ${later.ticks})`);
      later = parseHello((await httpGet(port, '/')).body);
    }
    assert.ok(later.n > 2);
  } finally {
    if (r) {
      await finish(r.tree);
      r.images.dispose();
    }
    await s.dispose();
  }
  assert.deepEqual(leakedFds(fds), []);
}

test('real servers: a Node.js HTTP server answers with its state after an eager restore, timers running', { skip }, async () => {
  await nodeRoundTrip(false);
});

test('real servers: the Node.js HTTP server after a lazy restore', { skip }, async () => {
  await nodeRoundTrip(true);
});

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const p = (srv.address() as { port: number }).port;
      srv.close(() => resolve(p));
    });
  });
}

function redisCli(port: number, ...args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(REDIS_CLI, ['-p', String(port), ...args], { timeout: 10000, encoding: 'utf8' }, (err, out) => (err ? reject(err) : resolve(out.trim())));
  });
}

test('real servers: redis-server with 20000 keys answers GET after a lazy restore', { skip: skip || (!existsSync(REDIS) && 'redis-server is not installed (scripts/setup.sh installs it)') }, async () => {
  const fds = openFds();
  const port = await freePort();
  const s = await startServer(REDIS, [
    '--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--daemonize', 'no',
    '--enable-debug-command', 'yes', '--dir', '.',
  ], /Ready to accept connections/);
  let r: Awaited<ReturnType<typeof dumpAndRestore>> | undefined;
  try {
    assert.equal(await redisCli(port, 'DEBUG', 'POPULATE', '20000'), 'OK');
    assert.equal(await redisCli(port, 'SET', 'greeting', 'from before the checkpoint'), 'OK');
    r = await dumpAndRestore(s, true);
    assert.equal(await redisCli(port, 'GET', 'greeting'), 'from before the checkpoint');
    assert.equal(await redisCli(port, 'GET', 'key:12345'), 'value:12345');
    assert.equal(await redisCli(port, 'DBSIZE'), '20001');
    assert.equal(await redisCli(port, 'SET', 'after', 'yes'), 'OK');
    assert.equal(await redisCli(port, 'GET', 'after'), 'yes');
  } finally {
    if (r) {
      await finish(r.tree);
      r.images.dispose();
    }
    await s.dispose();
  }
  assert.deepEqual(leakedFds(fds), []);
});
