// The engine's native bulk pull (post-copy background transfer): a thread
// streams large GETs on a connection of its own and copies each reply into
// the process (native/engine/pull.cc). Checked with real faults
// (uffd-harness) against our page server (native responder) and against
// page servers that misbehave on purpose:
//  - the whole remote region arrives before the program runs, byte-exact,
//    with no fault and no JS 'need'; two streams share the work and the
//    page server serves each page once (no stream asks again for pages
//    another stream's reply is bringing);
//  - a bad reply (wrong address, wrong pid, 0 pages, cut off) is never
//    copied: the pull ends with its errno and the JS path serves the rest
//    byte-exact;
//  - a silent server: the pull ends with ETIMEDOUT; stopPull and close()
//    stop a running pull at once, with no fd left behind.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import { PageServer } from '../../plugin/pageserver/server.js';
import type { EngineEvent } from '../../plugin/uffd/engine.js';
import { isRoot, leakedFds, openFds, tempDir, withTimeout } from '../helpers/env.js';
import { patternImages as patternImagesAt, remoteRig, supplyFrom, until, withConnectedFd, type Rig } from '../helpers/remote-engine.js';

const skip = isRoot ? false : 'needs root (userfaultfd)';
const BASE = 0x7f4500000000n; // dump-time address of pattern page 0
const PID = 4322;

type PullEnd = Extract<EngineEvent, { type: 'pull-end' }>;

/** Engine (1 thread) serving a harness whose one region is remote; 'need' answered from the pattern (the JS path). */
function rig(dir: string, pages: number, actions: string[]): Promise<Rig> {
  return remoteRig({ dir, pages, actions, faultAround: 8, base: BASE, pid: PID, onNeed: (ev, e, bytes) => supplyFrom(bytes, BASE)(ev, e) });
}

const patternImages = (dir: string, bytes: Buffer): Promise<void> => patternImagesAt(dir, bytes, BASE, PID);

/** Starts a pull of r.proc over a fresh connection to port (the engine keeps its own duplicate). */
function pull(r: Rig, port: number, stallMs = 2000): Promise<number> {
  return withConnectedFd(port, (fd) => r.engine.startPull(r.proc, fd, { getPages: 64, windowPages: 256, stallMs }));
}

const ends = (r: Rig): PullEnd[] => r.events.filter((e): e is PullEnd => e.type === 'pull-end');

for (const streams of [1, 2]) {
  test(`bulk pull (${streams} stream${streams > 1 ? 's' : ''}): the remote region arrives before the program runs, byte-exact, no fault, no JS hop`, { skip }, async () => {
    const fds = openFds();
    const d = tempDir();
    let ps: PageServer | undefined;
    let r: Rig | undefined;
    try {
      const pages = 1000; // not a multiple of the GET size: the last GET is shorter
      const imgDir = join(d.path, 'img');
      mkdirSync(imgDir);
      r = await rig(d.path, pages, ['touch', '0', '0', String(pages)]);
      await patternImages(imgDir, r.bytes);
      ps = await PageServer.start({ imagesDir: imgDir, address: '127.0.0.1', port: 0, lazy: true });
      const ids: number[] = [];
      for (let i = 0; i < streams; i++) ids.push(await pull(r, ps.port));
      await until(() => ends(r!).length === streams, 30_000, 'every pull to end');
      for (const id of ids) r.engine.stopPull(id);
      assert.deepEqual(ends(r).map((e) => e.code), ids.map(() => undefined), JSON.stringify(ends(r)));
      assert.equal(ends(r).reduce((n, e) => n + e.pages, 0), pages, 'the pulls placed every page once');
      assert.ok(r.events.some((e) => e.type === 'complete'), 'nothing lazy left');
      r.h.go();
      const ex = await r.h.finish(30_000);
      assert.equal(ex.code, 0, `${ex.stdout}\n${ex.stderr}`);
      assert.match(ex.stdout, new RegExp(`touch n=${pages}`));
      const st = r.engine.stats().procs.find((p) => p.proc === r!.proc)!;
      assert.equal(st.faults, 0, 'the program never faulted');
      assert.equal(st.pushedPages, pages);
      assert.deepEqual(r.events.filter((e) => e.type === 'need' || e.type === 'error'), []);
      assert.ok(ps.stats.gets >= Math.ceil(pages / 64), `page server answered ${ps.stats.gets} GETs`);
      // A stream at the end of its pass does not ask again for what another stream's replies bring.
      assert.equal(ps.stats.pagesServed, BigInt(pages), 'no page was asked for twice');
    } finally {
      r?.h.kill();
      await r?.engine.close();
      await ps?.close();
      d.dispose();
    }
    assert.deepEqual(leakedFds(fds), []);
  });
}

type Mode = 'bad-vaddr' | 'bad-pid' | 'zero-pages' | 'cut' | 'silent';

/** A page server that answers every GET wrongly (0xee bytes that must never reach the process), or never. */
async function fakeServer(mode: Mode): Promise<{ port: number; close: () => Promise<void> }> {
  const socks = new Set<net.Socket>();
  const server = net.createServer((s) => {
    socks.add(s);
    s.on('close', () => socks.delete(s));
    s.on('error', () => undefined);
    let buf = Buffer.alloc(0);
    s.on('data', (c: Buffer) => {
      buf = Buffer.concat([buf, c]);
      if (mode === 'silent' || buf.length < 32) return;
      const nr = buf.readBigUInt64LE(8);
      const vaddr = buf.readBigUInt64LE(16);
      const dst = buf.readBigUInt64LE(24);
      buf = Buffer.alloc(0);
      const hdr = Buffer.alloc(32);
      hdr.writeUInt32LE(0x00040006, 0);
      hdr.writeBigUInt64LE(mode === 'zero-pages' ? 0n : nr, 8);
      hdr.writeBigUInt64LE(mode === 'bad-vaddr' ? vaddr + 4096n : vaddr, 16);
      hdr.writeBigUInt64LE(mode === 'bad-pid' ? dst + 1n : dst, 24);
      s.write(Buffer.concat([hdr, Buffer.alloc(mode === 'cut' ? 2048 : Number(nr) * 4096, 0xee)]));
      s.end();
    });
  });
  await new Promise<void>((res) => server.listen({ host: '127.0.0.1', port: 0 }, () => res()));
  return {
    port: (server.address() as net.AddressInfo).port,
    close: async () => {
      for (const s of socks) s.destroy();
      await new Promise<void>((res) => server.close(() => res()));
    },
  };
}

for (const [mode, code] of [['bad-vaddr', 'EPROTO'], ['bad-pid', 'EPROTO'], ['zero-pages', 'EPROTO'], ['cut', 'ECONNRESET'], ['silent', 'ETIMEDOUT']] as const) {
  test(`bulk pull: a ${mode} server: nothing it sent is copied, the pull ends with ${code}, the JS path serves byte-exact`, { skip }, async () => {
    const fds = openFds();
    const d = tempDir();
    let fake: Awaited<ReturnType<typeof fakeServer>> | undefined;
    let r: Rig | undefined;
    try {
      const pages = 128;
      r = await rig(d.path, pages, ['touch', '0', '0', String(pages)]);
      fake = await fakeServer(mode);
      const id = await pull(r, fake.port, 300);
      await until(() => ends(r!).length === 1, 30_000, 'the pull to end');
      r.engine.stopPull(id);
      const [end] = ends(r);
      assert.equal(end!.code, code, JSON.stringify(end));
      assert.equal(end!.pages, 0);
      assert.equal(r.engine.stats().procs.find((p) => p.proc === r!.proc)!.pushedPages, 0, 'no byte of a bad reply copied');
      // Faults now take the JS path ('need', answered from the pattern): every byte checked by the program.
      r.h.go();
      const ex = await r.h.finish(30_000);
      assert.equal(ex.code, 0, `${ex.stdout}\n${ex.stderr}`);
      assert.match(ex.stdout, new RegExp(`touch n=${pages}`));
      assert.ok(r.events.some((e) => e.type === 'need'));
    } finally {
      r?.h.kill();
      await r?.engine.close();
      await fake?.close();
      d.dispose();
    }
    assert.deepEqual(leakedFds(fds), []);
  });
}

test('bulk pull: stopPull and engine close() stop running pulls at once (no event, no fd left)', { skip }, async () => {
  const fds = openFds();
  const d = tempDir();
  let fake: Awaited<ReturnType<typeof fakeServer>> | undefined;
  let r: Rig | undefined;
  try {
    r = await rig(d.path, 64, ['touch', '0', '0', '64']);
    fake = await fakeServer('silent');
    const a = await pull(r, fake.port, 3_600_000);
    await pull(r, fake.port, 3_600_000);
    r.engine.stopPull(a);
    r.h.kill();
    await withTimeout(r.engine.close(), 5000, 'close with a pull running');
    assert.deepEqual(ends(r), []);
  } finally {
    r?.h.kill();
    await r?.engine.close();
    await fake?.close();
    d.dispose();
  }
  // Node closes the sockets it destroyed on its next turns.
  await until(() => leakedFds(fds).length === 0, 5000, 'sockets to close').catch(() => undefined);
  assert.deepEqual(leakedFds(fds), []);
});
