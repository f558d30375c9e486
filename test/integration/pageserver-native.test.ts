// The native remote fault path: the engine worker that reads a fault sends
// the PS_IOV_GET on an attached socket and copies the reply itself, and the
// page server answers GETs on a native thread. Checked here with real
// faults (uffd-harness, lazy-handover):
//  - byte-exact faults with no JS 'need', answered natively by the server;
//  - short replies are re-requested natively;
//  - a garbled, cut or mismatched reply is never copied: the link fails
//    over to the JS path ('link-error' + 'need') and the bytes are right;
//  - the page server killed while a GET is outstanding: the daemon falls
//    back, reconnects, reopens its links, and the restore completes;
//  - the page server stalled (SIGSTOP) past the timeout: the tree is killed;
//  - natively answered GETs keep a session with --idle-timeout alive.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdirSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import { LazyPagesServer } from '../../plugin/lazy/server.js';
import type { LazyErrorEvent } from '../../plugin/lazy/types.js';
import { PageServer } from '../../plugin/pageserver/server.js';
import { PageServerPageSource } from '../../plugin/pageserver/remote-source.js';
import { HEADER_SIZE, getHeader } from '../../plugin/pageserver/protocol.js';
import { FaultEngine, type EngineEvent } from '../../plugin/uffd/engine.js';
import { isRoot, leakedFds, openFds, tempDir, withTimeout } from '../helpers/env.js';
import { startRemoteLazyCase } from '../helpers/remote-lazy.js';
import { writePattern } from '../helpers/uffd.js';
import { patternImages as patternImagesAt, remoteRig, supplyFrom, until, withConnectedFd, type NeedEvent, type Rig } from '../helpers/remote-engine.js';
import { cliPath } from '../helpers/cli.js';
import { RawPeer } from '../helpers/pageserver.js';
import { blockedInFault } from '../helpers/proc.js';

const skip = isRoot ? false : 'needs root (userfaultfd)';
const BASE = 0x7f4400000000n; // dump-time address of pattern page 0
const PID = 4321;
const PAGE = 4096n;

const patternImages = (dir: string, bytes: Buffer): Promise<void> => patternImagesAt(dir, bytes, BASE, PID);

/** A connected raw socket whose fd is handed to the engine (which keeps a duplicate). */
function attach(engine: FaultEngine, port: number, slot = 0): Promise<void> {
  return withConnectedFd(port, (fd) => engine.attachLink(slot, fd, { stallMs: 2000 }));
}

/** Engine (1 thread) serving a harness whose region is remote (dump-time BASE + offset). */
function rig(dir: string, pages: number, actions: string[], faultAround: number, link: (e: FaultEngine) => Promise<void>, onNeed?: (ev: NeedEvent, e: FaultEngine) => void): Promise<Rig> {
  return remoteRig({ dir, pages, actions, faultAround, base: BASE, pid: PID, link, onNeed });
}

/** Answers a 'need' from the pattern bytes (the JS path, as the daemon would). */
const supplyFromPattern = (bytes: Buffer) => supplyFrom(bytes, BASE);

test('native link: remote faults are byte-exact, with no JS hop, answered natively by the page server', { skip }, async () => {
  const fds = openFds();
  const d = tempDir();
  let ps: PageServer | undefined;
  let r: Rig | undefined;
  try {
    const pages = 512;
    const imgDir = join(d.path, 'img');
    mkdirSync(imgDir);
    r = await rig(d.path, pages, ['touch', '0', '0', '256', 'threads', '4', '0', '256', '256'], 1, async () => {});
    await patternImages(imgDir, r.bytes);
    ps = await PageServer.start({ imagesDir: imgDir, address: '127.0.0.1', port: 0, lazy: true });
    await attach(r.engine, ps.port);
    r.h.go();
    const ex = await r.h.finish(30_000);
    assert.equal(ex.code, 0, `${ex.stdout}\n${ex.stderr}`);
    assert.match(ex.stdout, /touch n=256/);
    assert.deepEqual(r.events.filter((e) => e.type === 'need' || e.type === 'link-error' || e.type === 'error'), []);
    const st = r.engine.stats().procs.find((p) => p.proc === r!.proc)!;
    assert.equal(st.remotePages, pages, 'every page came from a native link reply');
    assert.equal(st.needs, 0);
    const [l] = r.engine.links();
    assert.equal(l!.attached, true);
    assert.equal(l!.failures, 0);
    assert.equal(l!.pages, pages);
    assert.ok(ps.stats.gets >= pages, `page server answered ${ps.stats.gets} GETs`);
    r.engine.release(r.proc);
    r.engine.detachLink(0);
  } finally {
    r?.h.kill();
    await r?.engine.close();
    await ps?.close();
    d.dispose();
  }
  assert.deepEqual(leakedFds(fds), []);
});

type Mode = 'short' | 'bad-vaddr' | 'bad-pid' | 'zero-pages' | 'cut';

/**
 * A page server that misbehaves on purpose. 'short' answers every GET with
 * one page (valid data); the others send one bad reply (with 0xee bytes
 * that must never reach the process) and then, for 'cut', hang up.
 */
async function fakeServer(bytes: Buffer, mode: Mode): Promise<{ port: number; close: () => Promise<void>; gets: number }> {
  const state = { gets: 0 };
  const socks = new Set<net.Socket>();
  const server = net.createServer((s) => {
    socks.add(s);
    s.on('close', () => socks.delete(s));
    s.on('error', () => undefined);
    let buf = Buffer.alloc(0);
    s.on('data', (c: Buffer) => {
      buf = Buffer.concat([buf, c]);
      while (buf.length >= 32) {
        const nr = buf.readBigUInt64LE(8);
        const vaddr = buf.readBigUInt64LE(16);
        const dst = buf.readBigUInt64LE(24);
        buf = buf.subarray(32);
        state.gets++;
        const hdr = Buffer.alloc(32);
        hdr.writeUInt32LE(0x00040006, 0);
        if (mode === 'short') {
          hdr.writeBigUInt64LE(1n, 8);
          hdr.writeBigUInt64LE(vaddr, 16);
          hdr.writeBigUInt64LE(dst, 24);
          const off = Number(vaddr - BASE);
          s.write(Buffer.concat([hdr, bytes.subarray(off, off + 4096)]));
          continue;
        }
        hdr.writeBigUInt64LE(mode === 'zero-pages' ? 0n : nr, 8);
        hdr.writeBigUInt64LE(mode === 'bad-vaddr' ? vaddr + PAGE : vaddr, 16);
        hdr.writeBigUInt64LE(mode === 'bad-pid' ? dst + 1n : dst, 24);
        const garbage = Buffer.alloc(mode === 'cut' ? 2048 : Number(nr) * 4096, 0xee);
        s.write(Buffer.concat([hdr, garbage]));
        if (mode === 'cut') s.end();
        return;
      }
    });
  });
  await new Promise<void>((res) => server.listen({ host: '127.0.0.1', port: 0 }, () => res()));
  return {
    port: (server.address() as net.AddressInfo).port,
    get gets() {
      return state.gets;
    },
    close: async () => {
      for (const s of socks) s.destroy();
      await new Promise<void>((res) => server.close(() => res()));
    },
  };
}

test('native link: short replies are re-requested natively (no JS hop), byte-exact', { skip }, async () => {
  const fds = openFds();
  const d = tempDir();
  let fake: Awaited<ReturnType<typeof fakeServer>> | undefined;
  let r: Rig | undefined;
  try {
    const pages = 64;
    r = await rig(d.path, pages, ['touch', '0', '0', String(pages)], 8, async () => {});
    fake = await fakeServer(r.bytes, 'short');
    await attach(r.engine, fake.port);
    r.h.go();
    const ex = await r.h.finish(30_000);
    assert.equal(ex.code, 0, `${ex.stdout}\n${ex.stderr}`);
    assert.deepEqual(r.events.filter((e) => e.type === 'need' || e.type === 'link-error'), []);
    const [l] = r.engine.links();
    assert.ok(l!.shortReplies > 0, 'short replies seen');
    assert.equal(l!.pages, pages);
    assert.equal(l!.gets, fake.gets);
    r.engine.detachLink(0);
  } finally {
    r?.h.kill();
    await r?.engine.close();
    await fake?.close();
    d.dispose();
  }
  assert.deepEqual(leakedFds(fds), []);
});

for (const [mode, code] of [['bad-vaddr', 'EPROTO'], ['bad-pid', 'EPROTO'], ['zero-pages', 'EPROTO'], ['cut', 'ECONNRESET']] as const) {
  test(`native link: a ${mode} reply is never copied; the link fails over to the JS path`, { skip }, async () => {
    const fds = openFds();
    const d = tempDir();
    let fake: Awaited<ReturnType<typeof fakeServer>> | undefined;
    let r: Rig | undefined;
    try {
      const pages = 32;
      // The 'need' handler supplies the right bytes (the JS path); the fake's
      // 0xee bytes must never show up: the harness verifies every page.
      let bytes: Buffer | undefined;
      r = await rig(d.path, pages, ['touch', '0', '0', String(pages)], 4, async () => {}, (ev, e) => supplyFromPattern(bytes!)(ev, e));
      bytes = r.bytes;
      fake = await fakeServer(r.bytes, mode);
      await attach(r.engine, fake.port);
      r.h.go();
      const ex = await r.h.finish(30_000);
      assert.equal(ex.code, 0, `garbage reached the process?\n${ex.stdout}\n${ex.stderr}`);
      const errs = r.events.filter((e): e is Extract<EngineEvent, { type: 'link-error' }> => e.type === 'link-error');
      assert.equal(errs.length, 1, JSON.stringify(errs));
      assert.equal(errs[0]!.code, code);
      assert.equal(errs[0]!.slot, 0);
      assert.equal(errs[0]!.lost, 1, 'the unanswered GET went back to JS');
      assert.ok(r.events.some((e) => e.type === 'need'), 'faults took the JS path');
      const [l] = r.engine.links();
      assert.equal(l!.attached, false);
      assert.equal(l!.failures, 1);
      assert.equal(l!.pages, 0, 'nothing from the bad reply counted as received');
      const st = r.engine.stats().procs.find((p) => p.proc === r!.proc)!;
      assert.equal(st.remotePages, 0);
    } finally {
      r?.h.kill();
      await r?.engine.close();
      await fake?.close();
      d.dispose();
    }
    assert.deepEqual(leakedFds(fds), []);
  });
}

// ---- the daemon (LazyPagesServer + PageServerPageSource) against a real page-server process ----

const NPAGES = 1024;
/** The restorer's memory: NPAGES pattern pages. */
const MAP = { addr: 0x7e6600000000n, pages: NPAGES, seed: 0x11aa22bb33ccn };

/** `lazy-restore page-server --lazy-pages --keep-going` in its own process; resolves with its port. */
async function pageServerProcess(dir: string, port = 0): Promise<{ child: ChildProcess; port: number }> {
  const child = spawn(process.execPath, [cliPath, 'page-server', '-D', dir, '--lazy-pages', '--address', '127.0.0.1', '--port', String(port), '--keep-going'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stderr!.on('data', (c: Buffer) => (err += c.toString()));
  const p = await withTimeout(new Promise<number>((resolve, reject) => {
    child.stdout!.on('data', (c: Buffer) => {
      out += c.toString();
      const m = /listening on [\d.]+:(\d+)/.exec(out);
      if (m) resolve(Number(m[1]));
    });
    child.once('exit', (code) => reject(new Error(`page-server exited ${code}: ${err}`)));
  }), 20_000, 'page server listening');
  return { child, port: p };
}

async function stop(child: ChildProcess | undefined): Promise<void> {
  if (!child || child.exitCode !== null || child.signalCode !== null) return;
  const exited = once(child, 'exit');
  child.kill('SIGKILL');
  await withTimeout(exited, 10_000, 'page server exit');
}

test('page server killed while a native GET is outstanding: fallback, reconnect, links reopened, byte-exact', { skip }, async () => {
  const setup = await startRemoteLazyCase(MAP);
  const { h, pid, sock, src, dst } = setup;
  let lazy: LazyPagesServer | undefined;
  let remote: PageServerPageSource | undefined;
  let srv: { child: ChildProcess; port: number } | undefined;
  try {
    srv = await pageServerProcess(src);
    const port = srv.port;
    remote = await PageServerPageSource.connect({ address: '127.0.0.1', port, timeoutMs: 20_000, stallTimeoutMs: 500 });
    lazy = await LazyPagesServer.open({ imagesDir: dst, socketPath: sock, remote, prefetch: false, engineThreads: 1 });
    const errors: LazyErrorEvent[] = [];
    lazy.on('error', (e) => errors.push(e));
    assert.equal(remote.linkAttaches, 1, 'one native link per engine thread');
    // Frozen server: the first fault's GET goes out natively and waits.
    srv.child.kill('SIGSTOP');
    h.go();
    await until(() => lazy!.stats().faults > 0, 10_000, 'first fault read by the engine');
    await stop(srv.child);
    await until(() => blockedInFault(pid), 10_000, 'the process to wait in a userfault for its pages');
    assert.equal(h.child.exitCode, null, 'the process waits for its pages');
    // Same port again: the JS lanes and the native link come back.
    srv = await pageServerProcess(src, port);
    assert.deepEqual(await h.exit(), { code: 0, signal: null }, h.stderr);
    assert.ok(h.stdout.includes(`verified ${pid} ${NPAGES} pages`));
    const stats = await withTimeout(lazy.done(), 20_000, 'daemon done');
    assert.deepEqual(errors, []);
    assert.equal(stats.killed, 0);
    await until(() => remote!.linkAttaches >= 2, 10_000, 'native link reopened');
    assert.ok(remote.stats.reconnects > 0, 'the JS lanes reconnected');
    await lazy.close();
    await withTimeout(remote.close(), 5000, 'PS_IOV_CLOSE');
  } finally {
    await lazy?.close();
    remote?.destroy();
    await stop(srv?.child);
    setup.dispose();
  }
});

test('page server stalled (SIGSTOP) past the timeout: the native link times out and the tree is killed', { skip }, async () => {
  const setup = await startRemoteLazyCase(MAP);
  const { h, sock, src, dst } = setup;
  let lazy: LazyPagesServer | undefined;
  let remote: PageServerPageSource | undefined;
  let srv: { child: ChildProcess; port: number } | undefined;
  try {
    srv = await pageServerProcess(src);
    remote = await PageServerPageSource.connect({ address: '127.0.0.1', port: srv.port, timeoutMs: 1500, stallTimeoutMs: 300 });
    lazy = await LazyPagesServer.open({ imagesDir: dst, socketPath: sock, remote, prefetch: false, engineThreads: 1 });
    const errors: LazyErrorEvent[] = [];
    lazy.on('error', (e) => errors.push(e));
    srv.child.kill('SIGSTOP');
    h.go();
    assert.deepEqual(await h.exit(), { code: null, signal: 'SIGKILL' });
    assert.ok(!h.stdout.some((l) => l.startsWith('verified')), 'never verified: it did not run on zero pages');
    assert.ok(errors.some((e) => e.killed && /unreachable for 1500 ms/.test(e.message)), errors.map((e) => e.message).join('\n'));
    const stats = await withTimeout(lazy.done(), 10_000, 'daemon done');
    assert.equal(stats.killed, 1);
  } finally {
    await lazy?.close();
    remote?.destroy();
    await stop(srv?.child);
    setup.dispose();
  }
});

test('page server: GETs answered natively count as activity for --idle-timeout; silence still ends the session', async () => {
  const fds = openFds();
  const d = tempDir();
  let ps: PageServer | undefined;
  try {
    const imgDir = join(d.path, 'img');
    mkdirSync(imgDir);
    const bytes = writePattern(join(d.path, 'pattern.img'), 4);
    await patternImages(imgDir, bytes);
    ps = await PageServer.start({ imagesDir: imgDir, address: '127.0.0.1', port: 0, lazy: true, idleTimeoutMs: 1500 });
    const done = ps.done.then(() => 'ended', (e: Error) => e.message);
    const peer = await RawPeer.connect(ps.port);
    // GETs back to back (each waits only for its reply) for twice the idle
    // timeout, all answered natively: the session must outlive the timeout.
    // No pacing sleeps, so only a stall of the whole machine longer than the
    // timeout between two replies could end it.
    let n = 0;
    const until2x = Date.now() + 3000;
    while (Date.now() < until2x) {
      const i = n++;
      peer.write(getHeader(PID, BASE + BigInt(i % 4) * PAGE, 1n));
      const got = await peer.read(HEADER_SIZE + 4096);
      assert.ok(got.subarray(HEADER_SIZE).equals(bytes.subarray((i % 4) * 4096, (i % 4 + 1) * 4096)));
    }
    // The native responder counts a GET just after sending its reply: wait for the last count.
    await until(() => ps!.stats.gets === n, 5000, `all ${n} GETs counted`);
    assert.match(await withTimeout(done, 10_000, 'idle timeout'), /nothing received from the client for 1500 ms/);
    await peer.untilClosed();
    peer.close();
  } finally {
    await ps?.close();
    d.dispose();
  }
  assert.deepEqual(leakedFds(fds), []);
});
