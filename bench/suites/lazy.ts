// Benchmarks of the lazy-pages daemon: fault throughput of several
// processes faulting at once with 1 vs 2 engine threads, and the daemon's
// memory for a small vs a large image (it must stay flat: interval maps,
// never a per-page table).
import { spawn } from 'node:child_process';
import { mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ImageDir } from '../../plugin/images/imagedir.js';
import { helperPath, projectRoot } from '../../plugin/native/addon.js';
import { LazyPagesServer } from '../../plugin/lazy/server.js';
import type { BenchContext, BenchFigure, BenchSuite } from '../types.js';
import { median } from '../types.js';

const PAGE = 4096;
const PE_LAZY_PRESENT = 6;

/** Bytes of the a ^ seed pattern lazy-handover verifies (fast: 32-bit halves). */
function pattern(addr: bigint, len: number, seed: bigint): Buffer {
  const b = Buffer.allocUnsafe(len);
  const u = new Uint32Array(b.buffer, b.byteOffset, len / 4);
  const seedLo = Number(seed & 0xffffffffn);
  const seedHi = Number(seed >> 32n);
  const base = Number(addr);
  for (let i = 0; i < len / 8; i++) {
    const a = base + i * 8;
    u[2 * i] = ((a % 0x100000000) ^ seedLo) >>> 0;
    u[2 * i + 1] = (Math.floor(a / 0x100000000) ^ seedHi) >>> 0;
  }
  return b;
}

async function writeImages(dir: string, pids: number[], addr: bigint, npages: number, seed: bigint): Promise<void> {
  mkdirSync(dir, { recursive: true });
  const img = await ImageDir.create(dir);
  await img.writePstree(pids.map((pid) => ({ pid, ppid: 0, pgid: pid, sid: pid, threads: [pid] })));
  const chunkPages = 1024;
  let pagesId = 1;
  for (const pid of pids) {
    await img.writeMm(pid, {
      mm_start_code: 0n, mm_end_code: 0n, mm_start_data: 0n, mm_end_data: 0n, mm_start_stack: 0n, mm_start_brk: 0n, mm_brk: 0n,
      mm_arg_start: 0n, mm_arg_end: 0n, mm_env_start: 0n, mm_env_end: 0n, exe_file_id: 0, mm_saved_auxv: [], aios: [],
      vmas: [{ start: addr, end: addr + BigInt(npages * PAGE), pgoff: 0n, shmid: 0n, prot: 3, flags: 0x22, status: 0x201, fd: -1n }],
    });
    const w = await img.pagemapWriter(pid, pagesId++);
    for (let p = 0; p < npages; p += chunkPages) {
      const n = Math.min(chunkPages, npages - p);
      const a = addr + BigInt(p * PAGE);
      await w.add(a, n, PE_LAZY_PRESENT, pattern(a, n * PAGE, seed));
    }
    await w.close();
  }
}

interface Handover { pids: number[]; go(): void; exited: Promise<number | null> }

async function handover(args: string[], ready: number): Promise<Handover> {
  const child = spawn(helperPath('lazy-handover'), args, { stdio: ['pipe', 'pipe', 'inherit'] });
  const pids: number[] = [];
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  await new Promise<void>((resolve, reject) => {
    let buf = '';
    child.stdout!.on('data', (d: Buffer) => {
      buf += d.toString();
      for (const m of buf.matchAll(/^ready (\d+)$/gm)) if (!pids.includes(Number(m[1]))) pids.push(Number(m[1]));
      if (pids.length >= ready) resolve();
    });
    child.on('exit', () => reject(new Error('lazy-handover exited before ready')));
  });
  child.stdout!.resume();
  return { pids, go: () => child.stdin!.write('go\n'), exited };
}

/** Faults/s of `procs` processes each touching (and checking) every one of `pages` lazy pages, all served on demand. */
async function faultRun(ctx: BenchContext, threads: number, procs: number, pages: number, run: number): Promise<number> {
  const dir = join(ctx.tmpDir, `faults-${threads}-${run}`);
  mkdirSync(dir);
  const addr = 0x7e2000000000n;
  const seed = 0x9e3779b97f4a7c15n;
  const sock = join(dir, 'lazy-pages.socket');
  const h = await handover([sock, '--procs', String(procs), '--map', `0x${addr.toString(16)}:${pages}:0x${seed.toString(16)}`, '--touch'], procs);
  await writeImages(dir, h.pids, addr, pages, seed);
  const server = await LazyPagesServer.open({ imagesDir: dir, socketPath: sock, prefetch: false, engineThreads: threads, faultAroundPages: 1 });
  try {
    const t0 = process.hrtime.bigint();
    h.go();
    const code = await h.exited;
    const ns = Number(process.hrtime.bigint() - t0);
    if (code !== 0) throw new Error(`lazy-handover exited ${code}`);
    const st = server.stats();
    return st.faults / (ns / 1e9);
  } finally {
    await server.close();
  }
}

/** Runs the CLI daemon on an image of `pages` pages and returns its memory figures (bytes). */
async function daemonMemory(ctx: BenchContext, pages: number, tag: string): Promise<{ rssAnon: number; hwm: number; ms: number }> {
  const dir = join(ctx.tmpDir, `rss-${tag}`);
  mkdirSync(dir);
  const addr = 0x7e3000000000n;
  const seed = 0x5555aaaa1234n;
  const h = await handover([join(dir, 'lazy-pages.socket'), '--map', `0x${addr.toString(16)}:${pages}:0x${seed.toString(16)}`, '--verify'], 1);
  await writeImages(dir, h.pids, addr, pages, seed);
  const statsFile = join(dir, 'stats.json');
  const daemon = spawn(process.execPath, [join(projectRoot, 'bin', 'lazy-restore.js'), 'lazy-pages', '-D', dir, '--stats-file', statsFile, '--status-fd', '3'],
    { stdio: ['ignore', 'ignore', 'inherit', 'pipe'] });
  const daemonExit = new Promise<number | null>((resolve) => daemon.on('exit', (c) => resolve(c)));
  await new Promise<void>((resolve) => (daemon.stdio[3] as NodeJS.ReadableStream).once('data', () => resolve()));
  const t0 = Date.now();
  h.go();
  const code = await h.exited;
  const dcode = await daemonExit;
  if (code !== 0 || dcode !== 0) throw new Error(`memory run ${tag}: handover ${code}, daemon ${dcode}`);
  const st = JSON.parse(readFileSync(statsFile, 'utf8')) as { memory: { rssAnonBytes: number; hwmBytes: number } };
  return { rssAnon: st.memory.rssAnonBytes, hwm: st.memory.hwmBytes, ms: Date.now() - t0 };
}

export const suite: BenchSuite = {
  name: 'lazy',
  async run(ctx: BenchContext): Promise<BenchFigure[]> {
    const figs: BenchFigure[] = [];
    const procs = 4;
    const pages = ctx.quick ? 1024 : 8192;
    const reps = ctx.quick ? 1 : 5;
    const one: number[] = [];
    const two: number[] = [];
    for (let r = 0; r < reps; r++) {
      one.push(await faultRun(ctx, 1, procs, pages, r));
      two.push(await faultRun(ctx, 2, procs, pages, r));
    }
    const f1 = median(one);
    const f2 = median(two);
    ctx.log(`faults/s: 1 thread ${one.map((x) => x.toFixed(0)).join(', ')}; 2 threads ${two.map((x) => x.toFixed(0)).join(', ')}`);
    figs.push({
      name: `fault throughput, ${procs} processes x ${pages * 4 / 1024} MiB, 2 engine threads`, value: f2, unit: 'faults/s',
      baseline: { name: '1 engine thread', value: f1 }, target: '> 1x (faults use both cores)', met: f2 > f1,
    });
    const small = ctx.quick ? 4096 : 16384; // 16 MiB / 64 MiB
    const large = ctx.quick ? 32768 : 262144; // 128 MiB / 1 GiB
    const a = await daemonMemory(ctx, small, 'small');
    const b = await daemonMemory(ctx, large, 'large');
    const growth = (b.rssAnon - a.rssAnon) / 2 ** 20;
    ctx.log(`daemon RssAnon ${(a.rssAnon / 2 ** 20).toFixed(1)} MiB (${small * 4 / 1024} MiB image, ${a.ms} ms) vs ${(b.rssAnon / 2 ** 20).toFixed(1)} MiB (${large * 4 / 1024} MiB image, ${b.ms} ms); VmHWM ${(a.hwm / 2 ** 20).toFixed(1)} vs ${(b.hwm / 2 ** 20).toFixed(1)} MiB`);
    figs.push({
      name: `daemon anonymous RSS, ${large * 4 / 1024} MiB image`, value: b.rssAnon / 2 ** 20, unit: 'MiB',
      baseline: { name: `${small * 4 / 1024} MiB image`, value: a.rssAnon / 2 ** 20 },
      target: 'growth < 8 MiB', met: growth < 8,
      notes: `growth ${growth.toFixed(1)} MiB; pages-file mappings (page cache) excluded`,
    });
    figs.push({
      name: `lazy restore of ${large * 4 / 1024} MiB, handover to verified (push on)`, value: b.ms, unit: 'ms',
      baseline: { name: `${small * 4 / 1024} MiB`, value: a.ms },
    });
    return figs;
  },
};
