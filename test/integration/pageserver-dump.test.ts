// dump --lazy-pages: lazy memory is left out of the images (PE_LAZY-only
// entries, no bytes on the source disk) and served from the frozen tree
// until the destination's PS_IOV_CLOSE; the tree is then killed. The
// served bytes equal a normal dump of the same (idle) process.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { statSync } from 'node:fs';
import { dump } from '../../plugin/dump/index.js';
import { ImageDir } from '../../plugin/images/index.js';
import { PE_LAZY, PE_PRESENT } from '../../plugin/pageserver/protocol.js';
import { PageServerClient } from '../../plugin/pageserver/client.js';
import { ImageDirPageStore } from '../../plugin/pageserver/store.js';
import { isRoot, tempDir, withTimeout } from '../helpers/env.js';
import { startWorkload } from '../helpers/workload.js';
import { runCli } from '../helpers/cli.js';

test('dump --lazy-pages serves the frozen tree\'s lazy memory, byte-equal to a normal dump; CLOSE kills the tree', { skip: !isRoot && 'needs root' }, async () => {
  const wl = await startWorkload('workload-mem', ['4']);
  const ref = tempDir();
  const lazyDir = tempDir();
  try {
    await dump({ pid: wl.pid, imagesDir: ref.path, leaveRunning: true });
    let listening!: (port: number) => void;
    const port = new Promise<number>((r) => (listening = r));
    const dumped = dump({ pid: wl.pid, imagesDir: lazyDir.path, lazyPages: { address: '127.0.0.1', port: 0, onListening: (_a, p) => listening(p) } });
    dumped.catch(() => undefined);
    const client = await PageServerClient.connect({ address: '127.0.0.1', port: await withTimeout(port, 30_000, 'lazy page server listening') });
    const refStore = await ImageDirPageStore.open(ref.path);
    // The kernel rewrites the thread's struct rseq (cpu_id, ...) whenever the
    // thread returns to user space on another CPU, as it may between the two
    // dumps: those bytes are not compared.
    const rseq = (await (await ImageDir.open(ref.path)).core(wl.pid)).thread_core?.rseq_entry;
    const maskRseq = (vaddr: bigint, b: Buffer): void => {
      if (!rseq) return;
      const off = Number(rseq.rseq_abi_pointer - vaddr);
      if (off > -rseq.rseq_abi_size && off < b.length) b.fill(0, Math.max(0, off), Math.min(b.length, off + rseq.rseq_abi_size));
    };
    try {
      const entries = await (await (await ImageDir.open(lazyDir.path)).pagemap(wl.pid)).toArray();
      const lazyOnly = entries.filter((e) => e.flags === PE_LAZY);
      assert.ok(lazyOnly.length > 0, 'some entries are PE_LAZY only');
      assert.ok(entries.every((e) => e.flags === PE_LAZY || (e.flags & PE_LAZY) === 0), 'no PE_LAZY|PE_PRESENT in a --lazy-pages dump');
      const onDisk = entries.filter((e) => e.flags & PE_PRESENT).reduce((n, e) => n + e.nrPages, 0);
      assert.equal(statSync(`${lazyDir.path}/pages-1.img`).size, onDisk * 4096, 'only eager pages on disk');
      let pages = 0;
      for (const e of lazyOnly) {
        const got = await client.fetch(wl.pid, e.vaddr, e.nrPages, { urgent: pages % 2 === 0 });
        // The lazy dump takes every page the pagemap shows (it reads nothing
        // before serving); the normal dump left out the all-zero ones.
        const buf = Buffer.alloc(e.nrPages * 4096);
        for (let i = 0; i < e.nrPages;) {
          const want = refStore.lookup(wl.pid, e.vaddr + BigInt(i) * 4096n, BigInt(e.nrPages - i));
          if (!want) {
            i++;
            continue;
          }
          want.fill(buf, i * 4096);
          i += Number(want.pages);
        }
        maskRseq(e.vaddr, buf);
        maskRseq(e.vaddr, got);
        assert.ok(got.equals(buf), `lazy pages at 0x${e.vaddr.toString(16)} equal the normal dump`);
        pages += e.nrPages;
      }
      assert.ok(pages >= 256, `served ${pages} lazy pages`);
      // Every page the normal dump holds is in the lazy dump too (served or on disk).
      const inLazyDump = (a: bigint): boolean => entries.some((e) => a >= e.vaddr && a < e.vaddr + BigInt(e.nrPages) * 4096n);
      for (const r of refStore.runs()) for (let a = r.start; a < r.end; a += 4096n) assert.ok(inLazyDump(a), `0x${a.toString(16)} of the normal dump is in the lazy dump`);
      await client.close();
      const r = await withTimeout(dumped, 10_000, 'dump returns after CLOSE');
      assert.equal(r.stats.pagesLazy, pages);
      assert.equal(await withTimeout(wl.exited, 10_000, 'tree killed'), 'SIGKILL');
    } finally {
      client.destroy();
      refStore.close();
    }
  } finally {
    await wl.dispose();
    ref.dispose();
    lazyDir.dispose();
  }
});

test('dump --lazy-pages CLI: needs --port; refuses a non-loopback address without TLS before touching the tree', { skip: !isRoot && 'needs root' }, async () => {
  const wl = await startWorkload('workload-mem', ['1']);
  const d = tempDir();
  try {
    const a = await runCli(['dump', '-t', String(wl.pid), '-D', d.path, '--lazy-pages']);
    assert.equal(a.code, 1);
    assert.match(a.stderr, /--lazy-pages needs --port/);
    const b = await runCli(['dump', '-t', String(wl.pid), '-D', d.path, '--lazy-pages', '--address', '10.9.8.7', '--port', '0', '-R']);
    assert.equal(b.code, 1, b.stderr);
    assert.match(b.stderr, /address 10\.9\.8\.7 is not a loopback address/);
    assert.equal(wl.child.exitCode, null, 'the tree still runs');
  } finally {
    await wl.dispose();
    d.dispose();
  }
});
