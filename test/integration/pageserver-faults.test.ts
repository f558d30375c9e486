// Fault injection on the page-server protocol (issue 9 item 3), both ways:
//  - our client (PageServerClient, and the lazy-pages daemon on top of it)
//    against a fake server written here that sends malformed headers, an
//    unknown command, replies for the wrong pid or address, more pages than
//    asked, replies to nothing, short replies then a hang-up, a hang-up in
//    the middle of a reply, or nothing at all: the client reconnects and
//    gets the right bytes, or fails with a clear error — it never hands out
//    wrong or zero bytes; the daemon kills only the processes that need the
//    page server, and a process served from local images completes;
//  - our PageServer against fake clients sending garbage, unknown or
//    out-of-place commands, or half a header: each is disconnected alone
//    while a well-behaved client on the same server completes byte-exact.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { once } from 'node:events';
import { PageServer } from '../../plugin/pageserver/server.js';
import { PageServerClient, PageServerUnavailableError } from '../../plugin/pageserver/client.js';
import { PageServerPageSource } from '../../plugin/pageserver/remote-source.js';
import { HEADER_SIZE, PAGE_SIZE, PE_LAZY, PE_PRESENT, PS_IOV_ADD_F, addFHeader, decodeHeader, encodeHeader, getHeader } from '../../plugin/pageserver/protocol.js';
import { LazyPagesServer } from '../../plugin/lazy/server.js';
import type { LazyErrorEvent } from '../../plugin/lazy/types.js';
import { isRoot, leakedFds, openFds, tempDir, withTimeout } from '../helpers/env.js';
import { SyntheticStore, pageData } from '../helpers/pageserver.js';
import { startHarness, writePattern, type Harness } from '../helpers/uffd.js';
import { join } from 'node:path';
import { writeLazyImages } from '../helpers/lazy-images.js';

const BASE = 0x7f5500000000n;
const PID = 4711;

/** The reply a correct server sends to a GET (ADD_F|PRESENT + the pages). */
function goodReply(pid: number, vaddr: bigint, pages: bigint, data = pageData(pid, vaddr, pages)): Buffer {
  return Buffer.concat([encodeHeader({ cmd: PS_IOV_ADD_F, flags: PE_PRESENT, nrPages: pages, vaddr, dstId: BigInt(pid) }), data]);
}

interface Get { pid: number; vaddr: bigint; pages: bigint }

/**
 * A fake page server: every connection's GETs go to `onGet(conn, get, sock)`
 * with the connection's number (from 0) and the GET's number on it.
 */
class FakeServer {
  readonly server: net.Server;
  readonly socks = new Set<net.Socket>();
  connections = 0;
  gets = 0;
  private constructor(onConnect: (sock: net.Socket, conn: number) => void, onGet: (sock: net.Socket, g: Get, conn: number, n: number) => void) {
    this.server = net.createServer((sock) => {
      const conn = this.connections++;
      this.socks.add(sock);
      sock.on('close', () => this.socks.delete(sock));
      sock.on('error', () => {});
      let buf = Buffer.alloc(0);
      let n = 0;
      sock.on('data', (c: Buffer) => {
        buf = Buffer.concat([buf, c]);
        while (buf.length >= HEADER_SIZE && !sock.destroyed) {
          const h = decodeHeader(buf);
          buf = buf.subarray(HEADER_SIZE);
          if (h.cmd !== 7) continue; // CLOSE etc.: not answered
          this.gets++;
          onGet(sock, { pid: Number(h.dstId), vaddr: h.vaddr, pages: h.nrPages }, conn, n++);
        }
      });
      onConnect(sock, conn);
    });
  }

  static async start(onGet: (sock: net.Socket, g: Get, conn: number, n: number) => void, onConnect: (sock: net.Socket, conn: number) => void = () => {}): Promise<FakeServer> {
    const f = new FakeServer(onConnect, onGet);
    f.server.listen(0, '127.0.0.1');
    await withTimeout(once(f.server, 'listening'), 5000, 'fake server listening');
    return f;
  }

  get port(): number {
    return (this.server.address() as net.AddressInfo).port;
  }

  async close(): Promise<void> {
    for (const s of this.socks) s.destroy();
    await new Promise<void>((r) => this.server.close(() => r()));
  }
}

const clientOpts = (port: number) => ({ address: '127.0.0.1', port, timeoutMs: 1500, stallTimeoutMs: 300 });

test('page-server client against a broken server: protocol violations fail with a clear error, never with data', async () => {
  const fds = openFds();
  const cases: { name: string; reply: (g: Get) => Buffer; error: RegExp }[] = [
    { name: 'garbage header', reply: () => Buffer.concat([Buffer.from('GARBAGE!'.repeat(4)), Buffer.alloc(PAGE_SIZE)]), error: /page-server reply is .* expected ADD_F\|PRESENT/ },
    { name: 'unknown command', reply: (g) => Buffer.concat([encodeHeader({ cmd: 0x77, flags: PE_PRESENT, nrPages: g.pages, vaddr: g.vaddr, dstId: BigInt(g.pid) }), pageData(g.pid, g.vaddr, g.pages)]), error: /page-server reply is 0x77 flags 0x4, expected ADD_F\|PRESENT/ },
    { name: 'wrong pid', reply: (g) => goodReply(g.pid + 1, g.vaddr, g.pages), error: new RegExp(`reply for pid ${PID + 1} 0x${BASE.toString(16)} does not match the oldest request \\(pid ${PID} 0x${BASE.toString(16)}\\)`) },
    { name: 'wrong address', reply: (g) => goodReply(g.pid, g.vaddr + 0x1000n, g.pages), error: new RegExp(`reply for pid ${PID} 0x${(BASE + 0x1000n).toString(16)} does not match the oldest request`) },
    { name: 'more pages than asked', reply: (g) => goodReply(g.pid, g.vaddr, g.pages + 1n), error: /reply of 5 pages at 0x[0-9a-f]+ exceeds the 4 requested/ },
    { name: 'zero-page reply', reply: (g) => encodeHeader({ cmd: PS_IOV_ADD_F, flags: PE_PRESENT, nrPages: 0n, vaddr: g.vaddr, dstId: BigInt(g.pid) }), error: /reply for 0 pages/ },
  ];
  for (const c of cases) {
    const fake = await FakeServer.start((sock, g) => sock.write(c.reply(g)));
    const client = await PageServerClient.connect(clientOpts(fake.port));
    const fatal = once(client, 'fatal');
    await assert.rejects(withTimeout(client.fetch(PID, BASE, 4, { urgent: true }), 5000, c.name),
      (e: unknown) => e instanceof Error && new RegExp(`^page server 127\\.0\\.0\\.1:${fake.port}: `).test(e.message) && c.error.test(e.message), c.name);
    await withTimeout(fatal, 5000, `${c.name}: fatal event`);
    // Once broken, nothing more is fetched from it.
    await assert.rejects(client.fetch(PID, BASE, 1), c.error);
    client.destroy();
    await fake.close();
  }
  // A reply to nothing: the server speaks before any GET.
  const eager = await FakeServer.start(() => {}, (sock) => sock.write(goodReply(PID, BASE, 1n)));
  const client = await PageServerClient.connect(clientOpts(eager.port));
  const [err] = await withTimeout(once(client, 'fatal'), 5000, 'reply to nothing') as [Error];
  assert.match(err.message, /unexpected \d+ bytes from the page server \(no request outstanding\)/);
  await assert.rejects(client.fetch(PID, BASE, 1), /no request outstanding/);
  await eager.close();
  assert.deepEqual(leakedFds(fds), []);
});

test('page-server client: a short reply then a hang-up, or a hang-up mid-reply, is reconnected and served byte-exact; a silent server times out', async () => {
  const fds = openFds();
  // First connection of each lane: one page of the four, then the server hangs up.
  const short = await FakeServer.start((sock, g, conn) => {
    if (conn < 2) {
      sock.write(goodReply(g.pid, g.vaddr, 1n));
      sock.destroy();
    } else sock.write(goodReply(g.pid, g.vaddr, g.pages));
  });
  let c = await PageServerClient.connect(clientOpts(short.port));
  assert.ok((await withTimeout(c.fetch(PID, BASE, 4, { urgent: true }), 5000, 'short then hang-up')).equals(pageData(PID, BASE, 4)));
  assert.ok(c.stats.shortReplies >= 1 && c.stats.reconnects >= 1, JSON.stringify(c.stats, (_, v: unknown) => (typeof v === 'bigint' ? v.toString() : v)));
  c.destroy();
  await short.close();

  // Header and half the data, then the hang-up: the half reply is dropped, the GET re-sent.
  const half = await FakeServer.start((sock, g, conn) => {
    const r = goodReply(g.pid, g.vaddr, g.pages);
    if (conn < 2) {
      sock.write(r.subarray(0, HEADER_SIZE + PAGE_SIZE + 100));
      sock.destroy();
    } else sock.write(r);
  });
  c = await PageServerClient.connect(clientOpts(half.port));
  assert.ok((await withTimeout(c.fetch(PID, BASE + 0x10000n, 3, { urgent: true }), 5000, 'hang-up mid-reply')).equals(pageData(PID, BASE + 0x10000n, 3)));
  assert.ok(c.stats.reconnects >= 1);
  c.destroy();
  await half.close();

  // Accepts, reads, never answers: stall, reconnect, stall... then a clear error.
  const silent = await FakeServer.start(() => {});
  c = await PageServerClient.connect(clientOpts(silent.port));
  await assert.rejects(withTimeout(c.fetch(PID, BASE, 2, { urgent: true }), 10_000, 'silent server'),
    (e: unknown) => e instanceof PageServerUnavailableError && /unreachable for 1500 ms \(urgent connection; last error: ETIMEDOUT\)/.test(e.message));
  assert.ok(silent.connections >= 3, `reconnected to a silent server (${silent.connections} connections)`);
  c.destroy();
  await silent.close();
  assert.deepEqual(leakedFds(fds), []);
});

test('our page server: malformed, unknown or cut-off commands drop only that connection; a well-behaved client completes byte-exact', async () => {
  const fds = openFds();
  const d = tempDir();
  const store = new SyntheticStore([PID], BASE, 256n, 16n);
  const ps = await PageServer.start({ imagesDir: d.path, address: '127.0.0.1', port: 0, lazy: true, store });
  const connErrors: string[] = [];
  ps.on('connection-error', (e: Error) => connErrors.push(e.message));
  try {
    const good = await PageServerClient.connect({ address: '127.0.0.1', port: ps.port, timeoutMs: 5000 });
    const first = await withTimeout(good.fetch(PID, BASE, 40, { urgent: true }), 5000, 'first fetch');
    assert.ok(first.equals(pageData(PID, BASE, 40)));
    const bad: { name: string; bytes: Buffer; error: RegExp }[] = [
      { name: 'garbage', bytes: Buffer.from('this is not a page-server header'), error: /unknown page-server command/ },
      { name: 'unknown command', bytes: encodeHeader({ cmd: 0x55, flags: 0, nrPages: 1n, vaddr: BASE, dstId: BigInt(PID) }), error: /unknown page-server command 0x55/ },
      { name: 'push command in a lazy session', bytes: Buffer.concat([addFHeader(PID, PE_PRESENT, BASE, 1n), Buffer.alloc(PAGE_SIZE)]), error: /ADD_F is not valid in a lazy session/ },
      { name: 'half a header, then a hang-up', bytes: getHeader(PID, BASE, 1n).subarray(0, 13), error: /inside a command header \(13 of 32 bytes\)/ },
    ];
    for (const b of bad) {
      const sock = net.connect({ host: '127.0.0.1', port: ps.port });
      await withTimeout(once(sock, 'connect'), 5000, 'connect');
      let got = 0;
      sock.on('data', (c: Buffer) => (got += c.length));
      sock.on('error', () => {});
      const closed = once(sock, 'close');
      // Meanwhile the good client keeps fetching.
      const during = good.fetch(PID, BASE + 0x30000n, 24);
      if (b.name.startsWith('half')) sock.end(b.bytes);
      else sock.write(b.bytes);
      await withTimeout(closed, 5000, `${b.name}: disconnected`);
      assert.equal(got, 0, `${b.name}: nothing is answered to a bad command`);
      assert.ok((await withTimeout(during, 5000, `${b.name}: good fetch`)).equals(pageData(PID, BASE + 0x30000n, 24)), b.name);
      assert.ok(connErrors.some((m) => b.error.test(m)), `${b.name}: ${connErrors.join(' | ')}`);
    }
    // The good client's connections were never touched.
    assert.equal(good.stats.reconnects, 0);
    assert.ok((await withTimeout(good.fetch(PID, BASE + 0x80000n, 128), 5000, 'last fetch')).equals(pageData(PID, BASE + 0x80000n, 128)));
    await withTimeout(good.close(), 5000, 'CLOSE');
    await withTimeout(ps.done, 5000, 'session ended by the good client');
    assert.equal(connErrors.length, bad.length);
  } finally {
    await ps.close().catch(() => undefined);
    d.dispose();
  }
  assert.deepEqual(leakedFds(fds), []);
});

test('lazy-pages daemon with a broken page server: the process that needs it is killed with a clear error, never runs on zeros; a process served from local images completes', { skip: !isRoot && 'needs root (userfaultfd)' }, async () => {
  const fds = openFds();
  const d = tempDir('lr-ps-faults-');
  // Every GET gets a reply for the wrong address (on native links and on the client alike).
  const fake = await FakeServer.start((sock, g) => sock.write(goodReply(g.pid, g.vaddr + 0x1000n, g.pages)));
  let server: LazyPagesServer | undefined;
  let remote: PageServerPageSource | undefined;
  const harnesses: Harness[] = [];
  try {
    const patPath = join(d.path, 'pattern');
    const pat = writePattern(patPath, 16);
    // `local` reads 4 pages, waits (still being served) while the page
    // server breaks, then reads the rest; `needsServer` reads from the page server.
    const local = await startHarness({ dir: d.path, pattern: patPath, regions: [16], actions: ['read', '0', '0', '4', 'wait', 'read', '0', '4', '12'] });
    harnesses.push(local);
    const needsServer = await startHarness({ dir: d.path, pattern: patPath, regions: [16], actions: ['read', '0', '0', '4'] });
    harnesses.push(needsServer);
    const lr = local.regions[0]!;
    const rr = needsServer.regions[0]!;
    await writeLazyImages(d.path, [
      { pid: local.pid, vmas: [{ start: lr.addr, end: lr.addr + lr.len }], entries: [{ vaddr: lr.addr, pages: 16, flags: PE_LAZY | PE_PRESENT, data: pat.subarray(0, 16 * PAGE_SIZE) }] },
      // PE_LAZY without data: only the page server has these pages.
      { pid: needsServer.pid, vmas: [{ start: rr.addr, end: rr.addr + rr.len }], entries: [{ vaddr: rr.addr, pages: 16, flags: PE_LAZY }] },
    ]);
    remote = await PageServerPageSource.connect({ address: '127.0.0.1', port: fake.port, timeoutMs: 3000, stallTimeoutMs: 500 });
    server = await LazyPagesServer.open({ imagesDir: d.path, remote, prefetch: false });
    const errors: LazyErrorEvent[] = [];
    server.on('error', (e) => errors.push(e));
    await server.adopt(local.pid, local.uffd);
    await server.adopt(needsServer.pid, needsServer.uffd);
    local.go();
    await local.waitLine((l) => l === 'wait');
    needsServer.go();
    const killed = await needsServer.finish();
    assert.equal(killed.signal, 'SIGKILL', `${JSON.stringify(killed)}`);
    assert.doesNotMatch(killed.stdout, /^ok read/m, 'it never got a page');
    const e = errors.find((x) => x.killed);
    assert.ok(e, errors.map((x) => x.message).join('\n'));
    assert.match(e.message, new RegExp(`^pid ${needsServer.pid}: a page could not be served: remote page source: page server 127\\.0\\.0\\.1:${fake.port}: reply for pid ${needsServer.pid} 0x[0-9a-f]+ does not match the oldest request .*; killed pid ${needsServer.pid} with SIGKILL$`));
    // The process served from local images was still being served, and goes on.
    local.go();
    const ok = await local.finish();
    assert.deepEqual([ok.code, ok.signal], [0, null], ok.stdout + ok.stderr);
    assert.match(ok.stdout, /^done$/m);
    assert.equal(errors.filter((x) => x.killed).length, 1, 'only the process that needs the page server');
    assert.notEqual(server.processes().find((p) => p.imagePid === local.pid)?.state, 'killed');
  } finally {
    for (const h of harnesses) h.kill();
    await Promise.all(harnesses.map((h) => h.finish().catch(() => undefined)));
    await server?.close();
    remote?.destroy();
    await fake.close();
    d.dispose();
  }
  assert.deepEqual(leakedFds(fds), []);
});
