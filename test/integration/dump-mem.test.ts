// Dump of a single process with mixed memory (workload-mem): images decode
// with crit, the VMA list equals /proc/PID/maps, every dumped page is
// byte-equal to the process's memory and exactly the non-zero populated
// pages are dumped, with the pagemap flags of the spec; the process runs on
// unharmed (--leave-running) and verifies itself.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { dump } from '../../plugin/dump/index.js';
import {
  ImageDir, inspectCheckpoint, PE_LAZY, PE_PRESENT, VMA_AREA_VDSO, VMA_AREA_VVAR, VMA_FILE_PRIVATE, type PagemapRecord,
} from '../../plugin/images/index.js';
import { ProcMem, readMaps } from '../../plugin/inject/index.js';
import { computePageChecksums } from '../../plugin/images/checksums.js';
import { projectRoot } from '../../plugin/native/addon.js';
import { critCheckDir } from '../helpers/critcheck.js';
import { isRoot, tempDir, withTimeout } from '../helpers/env.js';
import { withRunningDump } from '../helpers/dump-running.js';
import { startWorkload } from '../helpers/workload.js';

const PAGE = 4096n;

function region(report: Record<string, string>, key: string): { start: bigint; len: number } {
  const [a, l] = report[key]!.split(':');
  return { start: BigInt(a!), len: Number(l) };
}

test('dump: single process with mixed memory', { skip: !isRoot && 'needs root' }, async () => {
  await withRunningDump('lr-dump-mem-', 'workload-mem', ['8'], async (wl, img) => {
    const maps = readMaps(wl.pid);
    const r = await dump({ pid: wl.pid, imagesDir: img.path, leaveRunning: true });
    assert.deepEqual(r.pids, [wl.pid]);
    assert.ok(r.stats.pagesWritten > 2000, `pages written ${r.stats.pagesWritten}`);

    {
      const counts = critCheckDir(img.path);
      for (const f of ['inventory.img', 'pstree.img', `core-${wl.pid}.img`, `mm-${wl.pid}.img`, `pagemap-${wl.pid}.img`, 'files.img', `fs-${wl.pid}.img`, `ids-${wl.pid}.img`, 'stats-dump']) {
        assert.ok(counts.has(f), `crit read ${f}`);
      }
    }

    const dir = await ImageDir.open(img.path);
    // The checksums the copier computed while writing equal a pass over the written file.
    {
      const e = await dir.checksums(1);
      assert.ok(e, 'lr-checksums-1.img');
      const again = await computePageChecksums(dir.pagesPath(1), 1, e.chunk_size);
      assert.equal(e.file_size, again.file_size);
      assert.deepEqual(e.checksums, again.checksums);
    }
    const [ps] = await dir.pstree();
    assert.deepEqual(ps, { pid: wl.pid, ppid: 0, pgid: wl.pid, sid: wl.pid, threads: [wl.pid] });

    // VMAs equal /proc/PID/maps (address, protection, file).
    const mm = await dir.mm(wl.pid);
    const files = await dir.files();
    const nameOf = (id: bigint): string | undefined => files.find((f) => BigInt(f.id) === id)?.reg?.name;
    assert.equal(mm.vmas.length, maps.length);
    mm.vmas.forEach((v, i) => {
      const m = maps[i]!;
      assert.equal(v.start, m.start);
      assert.equal(v.end, m.end);
      const prot = (m.perms[0] === 'r' ? 1 : 0) | (m.perms[1] === 'w' ? 2 : 0) | (m.perms[2] === 'x' ? 4 : 0);
      assert.equal(v.prot, prot, `prot of ${m.start.toString(16)}`);
      if (m.path.startsWith('/')) {
        assert.equal(nameOf(v.shmid), m.path);
        assert.equal(v.pgoff, m.offset);
      }
    });
    assert.equal(nameOf(BigInt(mm.exe_file_id)), readFileSync(`/proc/${wl.pid}/cmdline`, 'utf8').split('\0')[0]);
    assert.ok(mm.mm_brk >= mm.mm_start_brk && mm.mm_brk > 0n);
    assert.ok(mm.mm_saved_auxv.length > 0 && mm.mm_saved_auxv.length <= 44);

    // Pages: byte-equal to the live process; flags per VMA kind.
    const vmaOf = (a: bigint) => mm.vmas.find((v) => v.start <= a && a < v.end)!;
    const head = await dir.pagemap(wl.pid);
    const pages = readFileSync(head.pagesPath);
    await head.close();
    const dumped = new Set<bigint>();
    // The kernel itself rewrites the thread's struct rseq (cpu_id...) each
    // time the thread returns to user space on another CPU, e.g. when it
    // resumes after the dump: those 32 bytes are not compared.
    const rseq = (await dir.core(wl.pid)).thread_core!.rseq_entry!;
    const masked = (vaddr: bigint, b: Buffer): Buffer => {
      const c = Buffer.from(b);
      const off = Number(rseq.rseq_abi_pointer - vaddr);
      if (off > -rseq.rseq_abi_size && off < c.length) c.fill(0, Math.max(0, off), Math.min(c.length, off + rseq.rseq_abi_size));
      return c;
    };
    const mem = new ProcMem(wl.pid);
    try {
      const reader = await dir.pagemap(wl.pid);
      let bytes = 0;
      for await (const rec of reader as AsyncIterable<PagemapRecord>) {
        const v = vmaOf(rec.vaddr);
        assert.ok(rec.end <= v.end, 'entry inside one VMA');
        if (v.status & VMA_AREA_VDSO || v.status & VMA_FILE_PRIVATE) assert.equal(rec.flags, PE_PRESENT);
        else assert.equal(rec.flags, PE_LAZY | PE_PRESENT, `flags at ${rec.vaddr.toString(16)}`);
        assert.equal(v.status & VMA_AREA_VVAR, 0);
        const data = pages.subarray(rec.pagesOffset!, rec.pagesOffset! + rec.nrPages * 4096);
        assert.ok(masked(rec.vaddr, data).equals(masked(rec.vaddr, mem.read(rec.vaddr, data.length))), `page contents at ${rec.vaddr.toString(16)}`);
        for (let i = 0; i < rec.nrPages; i++) dumped.add(rec.vaddr + BigInt(i) * PAGE);
        bytes += data.length;
      }
      assert.equal(bytes, pages.length);

      // Exactly the non-zero pages of the anonymous region (never-touched,
      // zero-written and MADV_DONTNEED'd pages are left out)...
      const anon = region(wl.report, 'anon');
      const live = mem.read(anon.start, anon.len);
      for (let off = 0; off < anon.len; off += 4096) {
        const nonZero = live.subarray(off, off + 4096).some((b) => b !== 0);
        assert.equal(dumped.has(anon.start + BigInt(off)), nonZero, `anon page +${off}`);
      }
      // ...the r-- and --- pages...
      for (const k of ['ro', 'none']) assert.ok(dumped.has(region(wl.report, k).start), `${k} page dumped`);
      // ...and of the private file mapping only the three modified pages.
      const file = region(wl.report, 'file');
      const cow = [];
      for (let p = 0; p < file.len / 4096; p++) if (dumped.has(file.start + BigInt(p) * PAGE)) cow.push(p);
      assert.deepEqual(cow, [1, 5, 60]);
      // The vDSO is dumped whole.
      const vdso = maps.find((m) => m.path === '[vdso]')!;
      for (let a = vdso.start; a < vdso.end; a += PAGE) assert.ok(dumped.has(a), 'vdso page');
    } finally {
      mem.close();
    }

    // `lazy-restore inspect` summarises it: one process, dumped bytes = pages file, nothing outside VMAs.
    const sum = await inspectCheckpoint(img.path);
    assert.equal(sum.processes.length, 1);
    const p0 = sum.processes[0]!;
    assert.equal(p0.pid, wl.pid);
    assert.deepEqual(p0.problems ?? [], []);
    assert.equal(p0.outsideVmas, 0);
    assert.equal(p0.vmas.length, maps.length);
    assert.equal(sum.memory.dumped, pages.length);
    assert.ok(sum.memory.lazy > 0 && sum.memory.lazy < sum.memory.dumped);
    assert.equal(p0.exe, readFileSync(`/proc/${wl.pid}/cmdline`, 'utf8').split('\0')[0]);
    const cliOut = execFileSync(process.execPath, [join(projectRoot, 'bin', 'lazy-restore.js'), 'inspect', img.path], { encoding: 'utf8' });
    assert.match(cliOut, new RegExp(`\\b${wl.pid}\\b`));

    // Signal state: the SIGUSR1 handler with SA_SIGINFO|SA_RESTART, SIGUSR1 blocked.
    const core = await dir.core(wl.pid);
    const usr1 = core.tc!.sigactions[9 - 1]!; // index 9 = signal 10 (signal 9 has no entry)
    assert.equal(core.tc!.sigactions.length, 62);
    assert.notEqual(usr1.sigaction, 0n);
    assert.equal(usr1.flags & 0x14000004n, 0x14000004n);
    assert.equal(core.tc!.blk_sigset & (1n << 9n), 1n << 9n);
    assert.equal(core.thread_core!.creds!.uid, process.getuid!());
    assert.ok(statSync(dir.pagesPath(1)).size > 0);
  });
});

test('dump: default mode kills the tree after writing the images', { skip: !isRoot && 'needs root' }, async () => {
  const img = tempDir('lr-dump-kill-');
  const wl = await startWorkload('workload-mem', ['2']);
  try {
    const r = await dump({ pid: wl.pid, imagesDir: img.path });
    assert.ok(r.stats.pagesWritten > 0);
    assert.equal(await withTimeout(wl.exited, 10000, 'killed workload reaped'), 'SIGKILL');
    const dir = await ImageDir.open(img.path);
    assert.equal((await dir.pstree()).length, 1);
  } finally {
    await wl.dispose();
    img.dispose();
  }
});
