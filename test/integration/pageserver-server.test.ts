// PageServer over real loopback TCP: push sessions write CRIU-compatible
// pagemaps/pages (checked with crit), lazy sessions serve GETs in order with
// clamped replies, and every misuse ends the session cleanly.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { PageServer } from '../../plugin/pageserver/server.js';
import {
  HEADER_SIZE,
  PAGE_SIZE,
  PE_LAZY,
  PE_PRESENT,
  PS_IOV_ADD_F,
  closeHeader,
  decodeHeader,
  encodeHeader,
  getHeader,
  open2Header,
} from '../../plugin/pageserver/protocol.js';
import { ImageDir } from '../../plugin/images/index.js';

async function readPagemap(dir: string, pid: number): Promise<{ pagesId: number; entries: { vaddr: bigint; nrPages: bigint; flags: number }[] }> {
  const r = await (await ImageDir.open(dir)).pagemap(pid);
  const recs = await r.toArray();
  return { pagesId: r.head.pages_id, entries: recs.map((x) => ({ vaddr: x.vaddr, nrPages: BigInt(x.nrPages), flags: x.flags })) };
}
import { UserError } from '../../plugin/errors.js';
import { leakedFds, openFds, tempDir, withTimeout } from '../helpers/env.js';
import { RawPeer, pageData, pushStream, type Layout } from '../helpers/pageserver.js';
import { cliPath, runCli } from '../helpers/cli.js';
import { spawn } from 'node:child_process';
import { once } from 'node:events';

const A = 0x7f0000000000n;
const layouts: Layout[] = [
  {
    pid: 4242,
    entries: [
      { vaddr: 0x400000n, pages: 1, flags: PE_PRESENT },
      { vaddr: A, pages: 3, flags: PE_LAZY | PE_PRESENT },
      { vaddr: A + 0x3000n, pages: 2, flags: PE_LAZY | PE_PRESENT }, // adjacent: one run for GETs
      { vaddr: A + 0x10000n, pages: 4, flags: PE_LAZY | PE_PRESENT },
      { vaddr: A + 0x20000n, pages: 5, flags: PE_LAZY }, // lazy-only: no data here
    ],
  },
  { pid: 77, entries: [{ vaddr: 0x10000n, pages: 2, flags: PE_LAZY | PE_PRESENT }] },
];

async function pushSession(dir: string): Promise<void> {
  const ps = await PageServer.start({ imagesDir: dir, address: '127.0.0.1', port: 0 });
  const peer = await RawPeer.connect(ps.port);
  const stream = pushStream(layouts);
  // Write in odd-sized pieces: the server must not depend on segment boundaries.
  for (let i = 0; i < stream.length; i += 1000) peer.write(stream.subarray(i, i + 1000));
  assert.deepEqual(await peer.read(1), Buffer.from([0]), 'OPEN2 reply (no parent)');
  assert.deepEqual(await peer.read(1), Buffer.from([0]));
  assert.deepEqual(await peer.read(4), Buffer.alloc(4), 'CLOSE status');
  peer.sock.end();
  const stats = await withTimeout(ps.done, 5000, 'push session end');
  assert.equal(stats.pagemapsWritten, 2);
  assert.equal(stats.pagesReceived, 1n + 3n + 2n + 4n + 2n);
  peer.close();
}

test('push session writes pagemap + pages files that crit decodes, data byte-exact', async () => {
  const fds = openFds();
  const d = tempDir();
  try {
    await pushSession(d.path);
    assert.deepEqual(readdirSync(d.path).sort(), ['pagemap-4242.img', 'pagemap-77.img', 'pages-65537.img', 'pages-65538.img']);
    const pm = await readPagemap(d.path, 4242);
    assert.equal(pm.pagesId, 0x10001);
    assert.deepEqual(pm.entries, layouts[0]!.entries.map((e) => ({ vaddr: e.vaddr, nrPages: BigInt(e.pages), flags: e.flags })));
    const pages = readFileSync(join(d.path, 'pages-65537.img'));
    const expected = Buffer.concat(layouts[0]!.entries.filter((e) => e.flags & PE_PRESENT).map((e) => pageData(4242, e.vaddr, e.pages)));
    assert.ok(pages.equals(expected), 'pages file holds exactly the pushed data in order');
    // crit (3.17) reads field 2 only: both count fields must be written.
    const json = JSON.parse(execFileSync('crit', ['decode', '-i', join(d.path, 'pagemap-4242.img')], { encoding: 'utf8' })) as {
      magic: string;
      entries: Record<string, unknown>[];
    };
    assert.equal(json.magic, 'PAGEMAP');
    assert.deepEqual(json.entries[0], { pages_id: 0x10001 });
    assert.equal(json.entries[2]!['nr_pages'], 3);
    assert.equal(json.entries[5]!['flags'], PE_LAZY);
    assert.equal(statSync(join(d.path, 'pages-65538.img')).size, 2 * PAGE_SIZE);
  } finally {
    d.dispose();
  }
  assert.deepEqual(leakedFds(fds), []);
});

test('push session cut before CLOSE fails and leaves no half-written images', async () => {
  const d = tempDir();
  try {
    const ps = await PageServer.start({ imagesDir: d.path, address: '127.0.0.1', port: 0 });
    const peer = await RawPeer.connect(ps.port);
    const stream = pushStream(layouts);
    peer.write(stream.subarray(0, HEADER_SIZE * 2 + 100)); // OPEN2, ADD_F, part of its data
    await peer.read(1);
    peer.sock.end();
    await assert.rejects(withTimeout(ps.done, 5000, 'push failure'), (e: unknown) => e instanceof UserError && /not flushed/.test(e.message) && /4096|page data/.test(e.message));
    assert.deepEqual(readdirSync(d.path), []);
    peer.close();
  } finally {
    d.dispose();
  }
});

test('push session rejects an unknown command and descending entries', async () => {
  const d = tempDir();
  try {
    for (const [bytes, re] of [
      [Buffer.concat([open2Header(1), encodeHeader({ cmd: 0x66, flags: 0, nrPages: 0n, vaddr: 0n, dstId: 0n })]), /unknown page-server command 0x66/],
      [pushStream([{ pid: 5, entries: [{ vaddr: 0x5000n, pages: 1, flags: PE_LAZY }, { vaddr: 0x4000n, pages: 1, flags: PE_LAZY }] }]), /must ascend/],
      [getHeader(5, 0x1000n, 1n), /not started with --lazy-pages/],
    ] as const) {
      const ps = await PageServer.start({ imagesDir: d.path, address: '127.0.0.1', port: 0 });
      const peer = await RawPeer.connect(ps.port);
      peer.write(bytes);
      await assert.rejects(withTimeout(ps.done, 5000, 'failure'), re);
      await peer.untilClosed();
      assert.deepEqual(readdirSync(d.path), []);
    }
  } finally {
    d.dispose();
  }
});

test('lazy session: pipelined GETs answered in order, clamped to the stored run', async () => {
  const fds = openFds();
  const d = tempDir();
  try {
    await pushSession(d.path);
    const ps = await PageServer.start({ imagesDir: d.path, address: '127.0.0.1', port: 0, lazy: true });
    const peer = await RawPeer.connect(ps.port);
    const reqs: [number, bigint, bigint, bigint][] = [
      // pid, vaddr, asked, expected M
      [4242, A + 0x1000n, 2n, 2n],
      [4242, A + 0x1000n, 100n, 4n], // two adjacent entries form one 5-page run
      [77, 0x10000n, 9n, 2n],
      [4242, A + 0x12000n, 1n, 1n],
      [4242, 0x400000n, 1n, 1n],
    ];
    peer.write(Buffer.concat(reqs.map(([pid, v, n]) => getHeader(pid, v, n))));
    for (const [pid, v, , m] of reqs) {
      const h = decodeHeader(await peer.read(HEADER_SIZE));
      assert.deepEqual(h, { cmd: PS_IOV_ADD_F, flags: PE_PRESENT, nrPages: m, vaddr: v, dstId: BigInt(pid) });
      assert.ok((await peer.read(Number(m) * PAGE_SIZE)).equals(pageData(pid, v, m)), `data for ${pid} 0x${v.toString(16)}`);
    }
    peer.write(closeHeader());
    assert.deepEqual(await peer.read(4), Buffer.alloc(4));
    const stats = await withTimeout(ps.done, 5000, 'lazy session end');
    assert.equal(stats.gets, 5);
    assert.equal(stats.pagesServed, 2n + 4n + 2n + 1n + 1n);
    await peer.untilClosed();
  } finally {
    d.dispose();
  }
  assert.deepEqual(leakedFds(fds), []);
});

test('lazy session: a GET outside stored data closes the session without a reply', async () => {
  const d = tempDir();
  try {
    await pushSession(d.path);
    for (const [pid, v] of [[4242, A + 0x20000n], [4242, A + 0x5000n], [999, A]] as const) {
      const ps = await PageServer.start({ imagesDir: d.path, address: '127.0.0.1', port: 0, lazy: true });
      const peer = await RawPeer.connect(ps.port);
      peer.write(Buffer.concat([getHeader(4242, A, 1n), getHeader(pid, v, 1n), getHeader(4242, A, 1n)]));
      await assert.rejects(withTimeout(ps.done, 5000, 'session end'), /no stored pages there/);
      const got = await peer.untilClosed();
      // Exactly the first reply, then a clean close: no 0-page reply, nothing after.
      assert.equal(got.length, HEADER_SIZE + PAGE_SIZE);
      assert.equal(decodeHeader(got).nrPages, 1n);
    }
  } finally {
    d.dispose();
  }
});

test('lazy --keep-going: sessions follow each other; a bad one does not stop the server', async () => {
  const d = tempDir();
  try {
    await pushSession(d.path);
    const ps = await PageServer.start({ imagesDir: d.path, address: '127.0.0.1', port: 0, lazy: true, keepGoing: true });
    for (let i = 0; i < 2; i++) {
      const peer = await RawPeer.connect(ps.port);
      peer.write(Buffer.concat([getHeader(77, 0x10000n, 1n), closeHeader()]));
      await peer.read(HEADER_SIZE + PAGE_SIZE);
      assert.deepEqual(await peer.read(4), Buffer.alloc(4));
      await peer.untilClosed();
    }
    const bad = await RawPeer.connect(ps.port);
    bad.write(getHeader(77, 0x90000n, 1n));
    assert.equal((await bad.untilClosed()).length, 0);
    const peer = await RawPeer.connect(ps.port);
    peer.write(getHeader(77, 0x11000n, 1n));
    assert.ok((await peer.read(HEADER_SIZE + PAGE_SIZE)).subarray(HEADER_SIZE).equals(pageData(77, 0x11000n, 1)));
    peer.close();
    await ps.close();
    assert.equal(ps.stats.sessions, 3);
  } finally {
    d.dispose();
  }
});

test('address policy: plain TCP refuses non-loopback addresses unless --insecure', async () => {
  const d = tempDir();
  try {
    await assert.rejects(PageServer.start({ imagesDir: d.path, address: '0.0.0.0', port: 0 }), /not a loopback address.*--tls.*--insecure/);
    const ps = await PageServer.start({ imagesDir: d.path, address: '0.0.0.0', port: 0, insecure: true });
    assert.equal(ps.address, '0.0.0.0');
    await ps.close();
    await assert.rejects(ps.done, /stopped before the session ended/);
  } finally {
    d.dispose();
  }
});

test('CLI page-server: push session then exit 0; bad address is a one-line error', async () => {
  const d = tempDir();
  try {
    const bad = await runCli(['page-server', '-D', d.path, '--address', '10.1.2.3', '--port', '0']);
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /^lazy-restore: address 10\.1\.2\.3 is not a loopback address/);
    assert.equal(bad.stderr.trim().split('\n').length, 1);
    const missing = await runCli(['page-server', '-D', join(d.path, 'nope'), '--address', '127.0.0.1', '--port', '0', '--lazy-pages']);
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /nope.*ENOENT/);
    assert.ok(!existsSync(join(d.path, 'nope')));
  } finally {
    d.dispose();
  }
});

test('CLI page-server: a push session over TCP, then exit 0 with a summary', async () => {
  const d = tempDir();
  const child = spawn(process.execPath, [cliPath, 'page-server', '-D', d.path, '--address', '127.0.0.1', '--port', '0'], { stdio: ['ignore', 'pipe', 'pipe'] });
  try {
    let out = '';
    child.stdout.setEncoding('utf8');
    const port = await withTimeout(new Promise<number>((resolve, reject) => {
      child.stdout.on('data', (c: string) => {
        out += c;
        const m = /listening on 127\.0\.0\.1:(\d+)/.exec(out);
        if (m) resolve(Number(m[1]));
      });
      child.once('exit', (code) => reject(new Error(`page-server exited ${code}`)));
    }), 10_000, 'page-server listening');
    const peer = await RawPeer.connect(port);
    peer.write(pushStream(layouts));
    await peer.read(1 + 1 + 4);
    peer.sock.end();
    const [code] = (await withTimeout(once(child, 'exit'), 10_000, 'page-server exit')) as [number];
    assert.equal(code, 0);
    assert.match(out, /received 12 pages in 2 pagemaps/);
    assert.equal((await readPagemap(d.path, 77)).entries.length, 1);
    peer.close();
  } finally {
    if (child.exitCode === null) child.kill('SIGKILL');
    d.dispose();
  }
});
