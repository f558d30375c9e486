// dump --lazy-pages finds the pages that hold data from the pagemap alone
// (plugin/inject/memory.ts scanPages): with the kernel's PAGEMAP_SCAN runs
// where it has it, else page by page (LR_PAGEMAP_SCAN=0). Both ways must
// select the same pages: present or swapped, not the kernel's zero page, and
// in a private file mapping only the process's own (COW) copies.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { Pagemap, ProcMem, scanPages, type DumpRegion } from '../../plugin/inject/index.js';
import { readMaps } from '../../plugin/dump/proc.js';
import { isRoot } from '../helpers/env.js';
import { startWorkload } from '../helpers/workload.js';

const PAGE = 4096n;
const MODE_ANON = 0;
const MODE_FILE = 1;

function region(report: Record<string, string>, name: string): { start: bigint; len: bigint } {
  const [a, l] = report[name]!.split(':');
  return { start: BigInt(a!), len: BigInt(l!) };
}

function scanBoth(pid: number, regions: DumpRegion[]): ReturnType<typeof scanPages> {
  const pm = new Pagemap(pid);
  const saved = process.env.LR_PAGEMAP_SCAN;
  try {
    process.env.LR_PAGEMAP_SCAN = '0';
    const pageByPage = scanPages(pid, pm, regions);
    delete process.env.LR_PAGEMAP_SCAN;
    const runs = scanPages(pid, pm, regions);
    assert.deepEqual(runs, pageByPage, 'PAGEMAP_SCAN selects the same pages as the pagemap read page by page');
    return runs;
  } finally {
    if (saved === undefined) delete process.env.LR_PAGEMAP_SCAN;
    else process.env.LR_PAGEMAP_SCAN = saved;
    pm.close();
  }
}

test('the lazy dump\'s page scan: PAGEMAP_SCAN and the page-by-page pagemap read select the same pages', { skip: !isRoot && 'needs root (PFNs)' }, async () => {
  const wl = await startWorkload('workload-mem', ['8']);
  try {
    const anon = region(wl.report, 'anon');
    const file = region(wl.report, 'file');
    // Read two never-touched pages from outside: the kernel maps its zero page there.
    const mem = new ProcMem(wl.pid);
    try {
      mem.read(anon.start + 32n * PAGE, 4096);
      mem.read(anon.start + 48n * PAGE, 4096);
    } finally {
      mem.close();
    }
    // Every private VMA of the process, anonymous ones as anon, file ones as private file.
    const regions: DumpRegion[] = readMaps(wl.pid)
      .filter((v) => v.perms[3] === 'p' && !['[vvar]', '[vvar_vclock]', '[vsyscall]', '[vdso]'].includes(v.path))
      .map((v) => ({ start: v.start, nPages: Number((v.end - v.start) / PAGE), mode: v.path && !v.path.startsWith('[') ? MODE_FILE : MODE_ANON }));
    const out = scanBoth(wl.pid, regions);
    const taken = (a: bigint): boolean => out.runs.some((r) => a >= r.vaddr && a < r.vaddr + BigInt(r.nPages) * PAGE);
    assert.ok(out.zero >= 2, `the zero-page mappings are counted as zero (${out.zero})`);
    const thpAlways = /\[always\]/.test(readFileSync('/sys/kernel/mm/transparent_hugepage/enabled', 'utf8'));
    const n = anon.len / PAGE;
    for (let i = 0n; i < n; i++) {
      const a = anon.start + i * PAGE;
      const half = (anon.len / 2n) & ~(PAGE - 1n);
      const dropped = i * PAGE >= half && i * PAGE < half + (1n << 20n);
      if (i === 32n || i === 48n) assert.ok(!taken(a), `anon page ${i} maps the zero page: not taken`);
      else if (i % 16n === 0n || dropped) {
        if (!thpAlways) assert.ok(!taken(a), `anon page ${i} was never touched (or dropped): not taken`);
      } else assert.ok(taken(a), `anon page ${i} (written${i % 16n === 1n ? ' with zeros' : ''}) is taken`);
    }
    for (let i = 0n; i < file.len / PAGE; i++) {
      const cow = [1n, 5n, 60n].includes(i);
      assert.equal(taken(file.start + i * PAGE), cow, `file page ${i}: ${cow ? 'a COW copy, taken' : 'page cache, not taken'}`);
    }
    // Runs stay within their region and are counted in `scanned`.
    let pages = 0;
    for (const r of out.runs) {
      const g = regions[r.region]!;
      assert.ok(r.vaddr >= g.start && r.vaddr + BigInt(r.nPages) * PAGE <= g.start + BigInt(g.nPages) * PAGE, 'run inside its region');
      pages += r.nPages;
    }
    assert.equal(out.scanned, pages + out.zero);
  } finally {
    await wl.dispose();
  }
});
