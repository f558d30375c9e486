// Remote lazy restore with real page faults: the lazy-pages daemon serves a
// process (lazy-handover, a restorer written to the socket spec) whose
// images hold only PE_LAZY entries, fetching every page from a page server
// over TCP — on demand and with background push — and kills the process
// with a clear error when the page server stays unreachable.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { LazyPagesServer } from '../../plugin/lazy/server.js';
import type { LazyErrorEvent } from '../../plugin/lazy/types.js';
import { PageServer } from '../../plugin/pageserver/server.js';
import { PageServerPageSource } from '../../plugin/pageserver/remote-source.js';
import { isRoot, withTimeout } from '../helpers/env.js';
import { startRemoteLazyCase } from '../helpers/remote-lazy.js';
import { CuttableProxy } from '../helpers/pageserver.js';
import { blockedInFault, until } from '../helpers/proc.js';
import { cliPath, runCli } from '../helpers/cli.js';
import { spawn, type ChildProcess } from 'node:child_process';

const skip = !isRoot ? 'needs root (userfaultfd)' : false;

const NPAGES = 1024; // 4 MiB
/** The restorer's memory: NPAGES pattern pages. */
const MAP = { addr: 0x7e5500000000n, pages: NPAGES, seed: 0x5eed00c0ffeen };

for (const prefetch of [false, true]) {
  test(`remote lazy restore over TCP is byte-exact (${prefetch ? 'background push' : 'pure on-demand'})`, { skip }, async () => {
    const setup = await startRemoteLazyCase(MAP);
    const { h, pid, sock, src, dst } = setup;
    let lazy: LazyPagesServer | undefined;
    let ps: PageServer | undefined;
    let remote: PageServerPageSource | undefined;
    try {
      ps = await PageServer.start({ imagesDir: src, address: '127.0.0.1', port: 0, lazy: true });
      remote = await PageServerPageSource.connect({ address: '127.0.0.1', port: ps.port });
      lazy = await LazyPagesServer.open({ imagesDir: dst, socketPath: sock, remote, prefetch });
      const errors: LazyErrorEvent[] = [];
      lazy.on('error', (e) => errors.push(e));
      h.go();
      assert.deepEqual(await h.exit(), { code: 0, signal: null }, h.stderr);
      assert.ok(h.stdout.includes(`verified ${pid} ${NPAGES} pages`));
      const stats = await withTimeout(lazy.done(), 20_000, 'daemon done');
      assert.deepEqual(errors, []);
      assert.equal(stats.killed, 0);
      await lazy.close();
      await withTimeout(remote.close(), 5000, 'PS_IOV_CLOSE');
      const served = await withTimeout(ps.done, 5000, 'page server done');
      assert.ok(served.pagesServed >= BigInt(NPAGES), `served ${served.pagesServed}`);
      // Plain TCP: faults go out on the engine's native links (JS 'need' only as fallback).
      assert.ok(remote.urgentFetches > 0 || remote.nativeBytes > 0, 'faults went out as urgent GETs');
      if (!prefetch) assert.ok(remote.nativeBytes > 0, 'faults were served on native links');
      if (!prefetch) assert.equal(remote.backgroundBytes, 0);
    } finally {
      await lazy?.close();
      remote?.destroy();
      await ps?.close();
      setup.dispose();
    }
  });
}

test('page server cut for a while: faults wait, then the restore completes byte-exact', { skip }, async () => {
  const setup = await startRemoteLazyCase(MAP);
  const { h, pid, sock, src, dst } = setup;
  let lazy: LazyPagesServer | undefined;
  let ps: PageServer | undefined;
  let remote: PageServerPageSource | undefined;
  let proxy: CuttableProxy | undefined;
  try {
    ps = await PageServer.start({ imagesDir: src, address: '127.0.0.1', port: 0, lazy: true });
    proxy = await CuttableProxy.start(ps.port);
    remote = await PageServerPageSource.connect({ address: '127.0.0.1', port: proxy.port, timeoutMs: 20_000, stallTimeoutMs: 300 });
    lazy = await LazyPagesServer.open({ imagesDir: dst, socketPath: sock, remote, prefetch: false });
    proxy.cut();
    h.go();
    // The process faults while the link is down: its reads wait.
    for (let i = 0; i < 3; i++) await withTimeout(once(remote.client, 'retry'), 10_000, 'reconnect attempts during the cut');
    // Still waiting for its pages: blocked in the fault, not exited, not running on zeros.
    await until(() => blockedInFault(pid), 10_000, 'the process to be blocked in a userfault during the cut');
    assert.equal(h.child.exitCode, null, 'still waiting for its pages');
    assert.ok(!h.stdout.some((l) => l.startsWith('verified')), 'nothing verified while the link is down');
    await proxy.heal();
    assert.deepEqual(await h.exit(), { code: 0, signal: null }, h.stderr);
    const stats = await withTimeout(lazy.done(), 20_000, 'daemon done');
    assert.equal(stats.killed, 0);
    await lazy.close();
    await remote.close();
    await withTimeout(ps.done, 5000, 'page server done');
  } finally {
    await lazy?.close();
    remote?.destroy();
    await ps?.close();
    await proxy?.close();
    setup.dispose();
  }
});

test('page server gone past the timeout: the process is killed with a clear error, never run on zeros', { skip }, async () => {
  const setup = await startRemoteLazyCase(MAP);
  const { h, sock, src, dst } = setup;
  let lazy: LazyPagesServer | undefined;
  let ps: PageServer | undefined;
  let remote: PageServerPageSource | undefined;
  let proxy: CuttableProxy | undefined;
  try {
    ps = await PageServer.start({ imagesDir: src, address: '127.0.0.1', port: 0, lazy: true, reconnectTimeoutMs: 1000 });
    proxy = await CuttableProxy.start(ps.port);
    remote = await PageServerPageSource.connect({ address: '127.0.0.1', port: proxy.port, timeoutMs: 800, stallTimeoutMs: 300 });
    lazy = await LazyPagesServer.open({ imagesDir: dst, socketPath: sock, remote, prefetch: true });
    const errors: LazyErrorEvent[] = [];
    lazy.on('error', (e) => errors.push(e));
    proxy.cut();
    h.go();
    assert.deepEqual(await h.exit(), { code: null, signal: 'SIGKILL' });
    assert.ok(!h.stdout.some((l) => l.startsWith('verified')), 'never verified: it did not run on zero pages');
    assert.ok(errors.some((e) => e.killed && /unreachable for 800 ms/.test(e.message)), errors.map((e) => e.message).join('\n'));
    const stats = await withTimeout(lazy.done(), 10_000, 'daemon done');
    assert.equal(stats.killed, 1);
    await assert.rejects(withTimeout(ps.done, 10_000, 'page server gives up'), /did not reconnect/);
  } finally {
    await lazy?.close();
    remote?.destroy();
    await ps?.close();
    await proxy?.close();
    setup.dispose();
  }
});

test('CLI lazy-pages --page-server: serves a restorer from a page server, then PS_IOV_CLOSE', { skip }, async () => {
  const setup = await startRemoteLazyCase(MAP);
  const { h, sock, src, dst } = setup;
  let ps: PageServer | undefined;
  let daemon: ChildProcess | undefined;
  try {
    ps = await PageServer.start({ imagesDir: src, address: '127.0.0.1', port: 0, lazy: true });
    const usage = await runCli(['lazy-pages', '-D', dst, '--page-server']);
    assert.equal(usage.code, 2);
    assert.match(usage.stderr, /--page-server needs --address and --port/);
    daemon = spawn(process.execPath, [cliPath, 'lazy-pages', '-D', dst, '--socket', sock, '--page-server', '--address', '127.0.0.1', '--port', String(ps.port)], { stdio: ['ignore', 'pipe', 'pipe'] });
    let err = '';
    daemon.stderr!.on('data', (c: Buffer) => (err += c.toString()));
    await withTimeout(new Promise<void>((resolve, reject) => {
      daemon!.stderr!.on('data', () => { if (err.includes('listening on')) resolve(); });
      daemon!.once('exit', (c) => reject(new Error(`lazy-pages exited ${c}: ${err}`)));
    }), 15_000, 'lazy-pages listening');
    h.go();
    assert.deepEqual(await h.exit(), { code: 0, signal: null }, h.stderr);
    const [code] = (await withTimeout(once(daemon, 'exit'), 20_000, 'lazy-pages exit')) as [number];
    assert.equal(code, 0, err);
    const served = await withTimeout(ps.done, 5000, 'page server closed by the daemon');
    assert.ok(served.pagesServed >= BigInt(NPAGES));
  } finally {
    if (daemon && daemon.exitCode === null) daemon.kill('SIGKILL');
    await ps?.close();
    setup.dispose();
  }
});
