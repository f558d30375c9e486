// The dump's memory copier (native/inject/dumpmem.cc) on a stopped
// workload-mem (anonymous memory with zero pages, a private file mapping,
// r-- and --- pages, the vDSO): the reader/writer-thread copier and the
// inline one (LR_DUMP_INLINE) write byte-equal pages files and the same runs,
// for checksum chunks smaller than, equal to and larger than its slots; the
// checksums it computes while writing equal a pass over the written file;
// every written page equals the process's memory and none of the anonymous
// ones is all zero; a failing write is reported by name in both modes.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { closeSync, openSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { computePageChecksums } from '../../plugin/images/checksums.js';
import {
  CollectMode, Pagemap, ProcMem, dumpPages, dumpPagesAsync, readMaps, type DumpRegion, type DumpedPages,
} from '../../plugin/inject/index.js';
import { isRoot, leakedFds, openFds, tempDir } from '../helpers/env.js';
import { startWorkload } from '../helpers/workload.js';

function regionsOf(pid: number): DumpRegion[] {
  const out: DumpRegion[] = [];
  for (const m of readMaps(pid)) {
    if (m.path === '[vvar]' || m.path === '[vvar_vclock]' || m.path === '[vsyscall]') continue;
    if (m.perms[3] !== 'p') continue;
    const mode = m.path === '[vdso]' ? CollectMode.all : m.path.startsWith('/') ? CollectMode.privateFile : CollectMode.anon;
    out.push({ start: m.start, nPages: Number((m.end - m.start) / 4096n), mode });
  }
  return out;
}

async function withInline<T>(inline: boolean, f: () => Promise<T>): Promise<T> {
  const before = process.env.LR_DUMP_INLINE;
  process.env.LR_DUMP_INLINE = inline ? '1' : '0';
  try {
    return await f();
  } finally {
    if (before === undefined) delete process.env.LR_DUMP_INLINE;
    else process.env.LR_DUMP_INLINE = before;
  }
}

test('dump copier: threaded and inline write the same pages, runs and checksums', { skip: !isRoot && 'needs root' }, async () => {
  const fds = openFds();
  const wl = await startWorkload('workload-mem', ['8']);
  const dir = tempDir('lr-dump-copier-');
  const mem = new ProcMem(wl.pid);
  const pm = new Pagemap(wl.pid);
  process.kill(wl.pid, 'SIGSTOP');
  try {
    const regions = regionsOf(wl.pid);
    let ref: { file: Buffer; r: DumpedPages } | undefined;
    let n = 0;
    for (const chunk of [64 * 1024, 3 * 4096, 4 << 20]) {
      for (const inline of [false, true]) {
        for (const async of [false, true]) {
          const path = join(dir.path, `pages-${n++}.img`);
          const fd = openSync(path, 'w');
          let r: DumpedPages;
          try {
            r = await withInline(inline, async () => (async ? await dumpPagesAsync(mem, pm, fd, 0n, regions, chunk) : dumpPages(mem, pm, fd, 0n, regions, chunk)));
          } finally {
            closeSync(fd);
          }
          const what = `chunk ${chunk}, ${inline ? 'inline' : 'threaded'}, ${async ? 'async' : 'sync'}`;
          const file = readFileSync(path);
          assert.equal(r.bytes, file.length, what);
          const sums = await computePageChecksums(path, 1, chunk);
          assert.deepEqual([...r.checksums!], sums.checksums, `checksums, ${what}`);
          if (!ref) {
            ref = { file, r };
            assert.ok(r.zero > 0 && r.bytes > 1000 * 4096, `zero ${r.zero}, bytes ${r.bytes}`);
          } else {
            assert.ok(file.equals(ref.file), `pages file, ${what}`);
            assert.deepEqual(r.runs, ref.r.runs, `runs, ${what}`);
            assert.deepEqual([r.scanned, r.zero], [ref.r.scanned, ref.r.zero], what);
          }
        }
      }
    }
    // Every written page is the process's, in run order; anonymous ones are never all zero.
    let off = 0;
    for (const run of ref!.r.runs) {
      const len = run.nPages * 4096;
      const data = ref!.file.subarray(off, off + len);
      assert.ok(data.equals(mem.read(run.vaddr, len)), `page contents at ${run.vaddr.toString(16)}`);
      if (regions[run.region]!.mode === CollectMode.anon)
        for (let p = 0; p < len; p += 4096) assert.ok(data.subarray(p, p + 4096).some((b) => b !== 0), `zero page at ${(run.vaddr + BigInt(p)).toString(16)}`);
      off += len;
    }
    assert.equal(off, ref!.file.length);

    // A pages file it cannot write: the write's errno, named, in both modes.
    const ro = join(dir.path, 'ro.img');
    writeFileSync(ro, '');
    for (const inline of [false, true]) {
      const fd = openSync(ro, 'r');
      try {
        await withInline(inline, async () => {
          assert.throws(() => dumpPages(mem, pm, fd, 0n, regions, 64 * 1024), /pwrite.*EBADF|EBADF.*pwrite/);
          await assert.rejects(dumpPagesAsync(mem, pm, fd, 0n, regions, 64 * 1024), /pwrite.*EBADF|EBADF.*pwrite/);
        });
      } finally {
        closeSync(fd);
      }
    }
  } finally {
    process.kill(wl.pid, 'SIGCONT');
    pm.close();
    mem.close();
    await wl.dispose();
    dir.dispose();
  }
  assert.deepEqual(leakedFds(fds), []);
});
