// Cost of page checksum verification in the fault engine (issue 9), same
// run, same pattern file, with and without checksums:
//   - per-fault service time of sequential first touches (fault-around off:
//     one fault in 16 is the first use of a 64 KiB chunk and pays its CRC32C);
//   - background push rate of a whole region (every chunk verified once).
import { join } from 'node:path';
import { computePageChecksums } from '../../plugin/images/checksums.js';
import { FaultEngine, type EngineEvent, type LazyRange } from '../../plugin/uffd/engine.js';
import { startHarness, writePattern } from '../../test/helpers/uffd.js';
import { withTimeout } from '../../test/helpers/env.js';
import { median, type BenchContext, type BenchFigure, type BenchSuite } from '../types.js';

const CHUNK = 64 * 1024;

function parseTouch(stdout: string): { n: number; totalNs: number; p50Ns: number; p99Ns: number } {
  const m = /touch n=(\d+) total_ns=(\d+) p50_ns=(\d+) p99_ns=(\d+)/.exec(stdout);
  if (!m) throw new Error(`harness printed no touch line:\n${stdout.slice(-500)}`);
  return { n: Number(m[1]), totalNs: Number(m[2]), p50Ns: Number(m[3]), p99Ns: Number(m[4]) };
}

async function faults(ctx: BenchContext, pattern: string, pages: number, sums: number[] | undefined): Promise<{ p50: number; p99: number; mean: number }> {
  const engine = FaultEngine.create({ threads: 1, faultAroundPages: 1, onEvents: () => {} });
  try {
    const src = engine.addSource(pattern, sums ? { checksums: sums, chunkSize: CHUNK } : {});
    const h = await startHarness({ dir: ctx.tmpDir, pattern, regions: [pages], actions: ['touch', '0', '0', String(pages)] });
    const ranges: LazyRange[] = h.regions.map((r) => ({ start: r.addr, end: r.addr + r.len, src: { kind: 'file', source: src, offset: r.fileoff } }));
    const proc = engine.adopt(h.uffd, ranges);
    h.go();
    const ex = await h.finish(120_000);
    engine.release(proc);
    if (ex.code !== 0) throw new Error(`harness failed: ${ex.stdout.slice(-300)} ${ex.stderr}`);
    const t = parseTouch(ex.stdout);
    return { p50: t.p50Ns / 1000, p99: t.p99Ns / 1000, mean: t.totalNs / t.n / 1000 };
  } finally {
    await engine.close();
  }
}

async function push(ctx: BenchContext, pattern: string, pages: number, sums: number[] | undefined): Promise<number> {
  let done: ((e: EngineEvent) => void) | undefined;
  const engine = FaultEngine.create({ threads: 1, onEvents: (evs) => { for (const e of evs) if (e.type === 'prefetched') done?.(e); } });
  try {
    const src = engine.addSource(pattern, sums ? { checksums: sums, chunkSize: CHUNK } : {});
    // The harness waits (touching nothing) while the whole region is pushed, then reads it all back.
    const h = await startHarness({ dir: ctx.tmpDir, pattern, regions: [pages], actions: ['wait', 'read', '0', '0', String(pages)] });
    const r0 = h.regions[0]!;
    const proc = engine.adopt(h.uffd, [{ start: r0.addr, end: r0.addr + r0.len, src: { kind: 'file', source: src, offset: r0.fileoff } }]);
    h.go();
    await h.waitLine((l) => l.startsWith('wait'));
    const pushed = new Promise<EngineEvent>((resolve) => (done = resolve));
    const t0 = process.hrtime.bigint();
    engine.prefetch(proc, r0.addr, r0.len);
    await withTimeout(pushed, 120_000, 'push');
    const ns = Number(process.hrtime.bigint() - t0);
    h.go();
    const ex = await h.finish(120_000);
    engine.release(proc);
    if (ex.code !== 0) throw new Error(`harness failed: ${ex.stdout.slice(-300)} ${ex.stderr}`);
    return (Number(r0.len) / 1048576) / (ns / 1e9);
  } finally {
    await engine.close();
  }
}

export const suite: BenchSuite = {
  name: 'integrity',
  async run(ctx: BenchContext): Promise<BenchFigure[]> {
    const pages = ctx.quick ? 4096 : 32768; // 16 / 128 MiB
    const rounds = ctx.quick ? 1 : 3;
    const pattern = join(ctx.tmpDir, 'pattern.img');
    writePattern(pattern, pages);
    const sums = (await computePageChecksums(pattern, 1, CHUNK)).checksums;
    const f: Record<'on' | 'off', { p50: number[]; p99: number[]; mean: number[]; push: number[] }> = {
      on: { p50: [], p99: [], mean: [], push: [] }, off: { p50: [], p99: [], mean: [], push: [] },
    };
    for (let r = 0; r < rounds; r++) {
      for (const mode of ['off', 'on'] as const) {
        const s = mode === 'on' ? sums : undefined;
        const t = await faults(ctx, pattern, pages, s);
        f[mode].p50.push(t.p50);
        f[mode].p99.push(t.p99);
        f[mode].mean.push(t.mean);
        f[mode].push.push(await push(ctx, pattern, pages, s));
        ctx.log(`round ${r}, verify ${mode}: fault p50 ${t.p50.toFixed(1)} us, mean ${t.mean.toFixed(2)} us, push ${f[mode].push.at(-1)!.toFixed(0)} MiB/s`);
      }
    }
    const mib = pages / 256;
    return [
      { name: 'fault service p50, verify on', value: median(f.on.p50), unit: 'us', baseline: { name: 'verify off', value: median(f.off.p50) }, notes: `${pages} sequential faults, fault-around off, CRC32C per 64 KiB chunk` },
      { name: 'fault service p99, verify on', value: median(f.on.p99), unit: 'us', baseline: { name: 'verify off', value: median(f.off.p99) } },
      { name: 'fault mean (first touch total / n), verify on', value: median(f.on.mean), unit: 'us', baseline: { name: 'verify off', value: median(f.off.mean) } },
      { name: `background push ${mib} MiB, verify on`, value: median(f.on.push), unit: 'MiB/s', baseline: { name: 'verify off', value: median(f.off.push) } },
    ];
  },
};
