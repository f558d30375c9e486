// Fault service time of the native engine against the two classic designs,
// all in the same run, all serving the same mapped pattern file to the same
// harness (build/bin/uffd-harness timestamps every first touch with
// clock_gettime in the faulting process):
//   - blocking C handler: poll() + one UFFDIO_COPY per fault (CRIU's shape)
//   - busy-polling C handler: never sleeps (the floor)
//   - engine: spin briefly after serving, then block in epoll
// Plus sequential first-touch time of a large region with and without
// fault-around, engine CPU time, and fault throughput with 1 vs 2 threads.
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { helperPath } from '../../plugin/native/addon.js';
import { FaultEngine, type LazyRange } from '../../plugin/uffd/engine.js';
import { startHarness, writePattern, type Harness } from '../../test/helpers/uffd.js';
import { withTimeout } from '../../test/helpers/env.js';
import { median, type BenchContext, type BenchFigure, type BenchSuite } from '../types.js';

interface Touch {
  n: number;
  totalNs: number;
  p50Ns: number;
  p99Ns: number;
}

function parseTouch(stdout: string): Touch {
  const m = /touch n=(\d+) total_ns=(\d+) p50_ns=(\d+) p99_ns=(\d+)/.exec(stdout);
  if (!m) throw new Error(`harness printed no touch line:\n${stdout.slice(-500)}`);
  return { n: Number(m[1]), totalNs: Number(m[2]), p50Ns: Number(m[3]), p99Ns: Number(m[4]) };
}

function ranges(h: Harness, source: number): LazyRange[] {
  return h.regions.map((r) => ({ start: r.addr, end: r.addr + r.len, src: { kind: 'file', source, offset: r.fileoff } }));
}

const cpuSum = (e: FaultEngine): bigint => e.stats().threadCpuNs.reduce((a, b) => a + b, 0n);

/** Engine serving `procs` harness processes that each touch `pages` pages. */
async function runEngine(ctx: BenchContext, pattern: string, o: { pages: number; procs?: number; fa: number; spin: number; threads: number; cross?: boolean }): Promise<{ touches: Touch[]; wallNs: number; cpuNs: number }> {
  const engine = FaultEngine.create({ threads: o.threads, faultAroundPages: o.fa, spinMicros: o.spin, onEvents: () => {}, ...(o.cross ? { cpus: [0] } : {}) });
  try {
    const src = engine.addSource(pattern);
    const hs: Harness[] = [];
    for (let i = 0; i < (o.procs ?? 1); i++) {
      hs.push(await startHarness({ dir: ctx.tmpDir, pattern, regions: [o.pages], actions: ['touch', '0', '0', String(o.pages)], ...(o.cross ? { cpu: 1 } : {}) }));
    }
    const procs = hs.map((h) => engine.adopt(h.uffd, ranges(h, src)));
    const cpu0 = cpuSum(engine);
    const t0 = process.hrtime.bigint();
    for (const h of hs) h.go();
    const exits = await Promise.all(hs.map((h) => h.finish(300000)));
    const wallNs = Number(process.hrtime.bigint() - t0);
    const cpuNs = Number(cpuSum(engine) - cpu0);
    for (const p of procs) engine.release(p);
    for (const ex of exits) if (ex.code !== 0) throw new Error(`harness failed: ${ex.stdout.slice(-300)} ${ex.stderr}`);
    return { touches: exits.map((e) => parseTouch(e.stdout)), wallNs, cpuNs };
  } finally {
    await engine.close();
  }
}

/** One of the C baseline handlers serving one harness. */
async function runBaseline(ctx: BenchContext, pattern: string, mode: 'block' | 'spin', pages: number, tag: string, cross: boolean): Promise<{ touch: Touch; cpuNs: number }> {
  const sock = join(ctx.tmpDir, `bl-${mode}-${tag}.sock`);
  const pin = (cpu: number, argv: string[]) => (cross ? ['taskset', '-c', String(cpu), ...argv] : argv);
  const hArgv = pin(0, [helperPath('bench-uffd-handler'), mode, sock, pattern]);
  const handler = spawn(hArgv[0]!, hArgv.slice(1), { stdio: ['ignore', 'pipe', 'pipe'] });
  let hout = '';
  let herr = '';
  handler.stderr.on('data', (d: Buffer) => (herr += d.toString()));
  const handlerDone = new Promise<number | null>((resolve) => handler.on('close', (code) => resolve(code)));
  try {
    await withTimeout(new Promise<void>((resolve) => handler.stdout.on('data', (d: Buffer) => {
      hout += d.toString();
      if (hout.includes('listening\n')) resolve();
    })), 10000, `bench-uffd-handler ${mode} start ${herr}`);
    const argv = pin(1, [helperPath('uffd-harness'), '--sock', sock, '--pattern', pattern, '--regions', String(pages), '--', 'touch', '0', '0', String(pages)]);
    const harness = spawn(argv[0]!, argv.slice(1), { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    harness.stdout.on('data', (d: Buffer) => (out += d.toString()));
    harness.stderr.on('data', (d: Buffer) => (err += d.toString()));
    const code = await withTimeout(new Promise<number | null>((resolve) => harness.on('close', (c) => resolve(c))), 300000, `harness under ${mode} handler`);
    if (code !== 0) throw new Error(`harness under ${mode} handler failed: ${out.slice(-300)} ${err}`);
    await withTimeout(handlerDone, 10000, `bench-uffd-handler ${mode} exit`);
    const m = /cpu_ns (\d+)/.exec(hout);
    return { touch: parseTouch(out), cpuNs: m ? Number(m[1]) : NaN };
  } finally {
    if (handler.exitCode === null && handler.signalCode === null) handler.kill('SIGKILL');
  }
}

export const suite: BenchSuite = {
  name: 'uffd-faults',
  async run(ctx: BenchContext): Promise<BenchFigure[]> {
    const latPages = ctx.quick ? 2000 : 20000;
    const seqPages = (ctx.quick ? 32 : 256) * 256; // MiB -> pages
    const rounds = ctx.quick ? 1 : 3;
    const pattern = join(ctx.tmpDir, 'pattern.img');
    writePattern(pattern, Math.max(latPages, seqPages));

    // Per-fault service time, rounds interleaved so drift hits all three alike.
    // Two placements: the scheduler's choice (handler and faulting thread
    // usually end up on one CPU), and cross-CPU (handler pinned to CPU 0, the
    // faulting process to CPU 1), where every wake-up is an IPI to a vCPU.
    const figs: BenchFigure[] = [];
    for (const cross of [true, false]) {
      const where = cross ? 'cross-CPU' : 'unpinned';
      const eng: Touch[] = [];
      const blk: Touch[] = [];
      const spn: Touch[] = [];
      const engCpu: number[] = [];
      const spnCpu: number[] = [];
      const blkCpu: number[] = [];
      for (let r = 0; r < rounds; r++) {
        const e = await runEngine(ctx, pattern, { pages: latPages, fa: 1, spin: 100, threads: 1, cross });
        eng.push(e.touches[0]!);
        engCpu.push(e.cpuNs / latPages);
        const b = await runBaseline(ctx, pattern, 'block', latPages, `b${r}${where}`, cross);
        blk.push(b.touch);
        blkCpu.push(b.cpuNs / latPages);
        const s = await runBaseline(ctx, pattern, 'spin', latPages, `s${r}${where}`, cross);
        spn.push(s.touch);
        spnCpu.push(s.cpuNs / latPages);
        ctx.log(`${where} round ${r}: p50 engine ${(e.touches[0]!.p50Ns / 1000).toFixed(1)} us, blocking ${(b.touch.p50Ns / 1000).toFixed(1)} us, busy-poll ${(s.touch.p50Ns / 1000).toFixed(1)} us`);
      }
      const us = (xs: Touch[], k: 'p50Ns' | 'p99Ns') => median(xs.map((x) => x[k])) / 1000;
      const e50 = us(eng, 'p50Ns');
      const b50 = us(blk, 'p50Ns');
      const s50 = us(spn, 'p50Ns');
      figs.push(
        { name: `fault service p50, ${where} (engine)`, value: e50, unit: 'us', baseline: { name: 'blocking poll() handler p50', value: b50 }, target: '<= 0.5x', met: e50 <= 0.5 * b50, notes: `${latPages} sequential faults, fault-around off, spin 100 us` },
        { name: `fault service p50, ${where} (engine)`, value: e50, unit: 'us', baseline: { name: 'busy-polling handler p50', value: s50 }, target: '<= 1.3x', met: e50 <= 1.3 * s50 },
        { name: `fault service p99, ${where} (engine)`, value: us(eng, 'p99Ns'), unit: 'us', baseline: { name: 'blocking handler p99', value: us(blk, 'p99Ns') } },
        { name: `fault service p99, ${where} (engine)`, value: us(eng, 'p99Ns'), unit: 'us', baseline: { name: 'busy-polling handler p99', value: us(spn, 'p99Ns') } },
        { name: `handler CPU per fault, ${where} (engine)`, value: median(engCpu) / 1000, unit: 'us', baseline: { name: 'busy-polling handler', value: median(spnCpu) / 1000 }, notes: `blocking handler: ${(median(blkCpu) / 1000).toFixed(1)} us/fault` },
      );
    }

    // Sequential first touch of a large region, with and without fault-around.
    const mib = seqPages / 256;
    const seq: Record<string, { ms: number; cpuMs: number }> = {};
    for (const fa of [1, 16, 64]) {
      const r = await runEngine(ctx, pattern, { pages: seqPages, fa, spin: 100, threads: 1 });
      seq[fa] = { ms: r.touches[0]!.totalNs / 1e6, cpuMs: r.cpuNs / 1e6 };
      ctx.log(`sequential ${mib} MiB, fault-around ${fa}: ${seq[fa]!.ms.toFixed(0)} ms, engine CPU ${seq[fa]!.cpuMs.toFixed(0)} ms`);
    }
    for (const fa of [16, 64]) {
      figs.push({ name: `sequential touch ${mib} MiB, fault-around ${fa} pages`, value: seq[fa]!.ms, unit: 'ms', baseline: { name: 'no fault-around', value: seq[1]!.ms }, notes: `engine CPU ${seq[fa]!.cpuMs.toFixed(0)} ms (vs ${seq[1]!.cpuMs.toFixed(0)} ms)` });
    }
    figs.push({ name: `sequential touch ${mib} MiB, no fault-around`, value: seq[1]!.ms, unit: 'ms', notes: `${((mib / seq[1]!.ms) * 1000).toFixed(0)} MiB/s` });

    // Throughput: several processes faulting at once, 1 vs 2 engine threads.
    const tpPages = ctx.quick ? 2000 : 10000;
    const tp: Record<number, number> = {};
    for (const threads of [1, 2]) {
      const r = await runEngine(ctx, pattern, { pages: tpPages, procs: 4, fa: 1, spin: 100, threads });
      tp[threads] = (4 * tpPages) / (r.wallNs / 1e9);
      ctx.log(`throughput, 4 processes, ${threads} engine thread(s): ${tp[threads]!.toFixed(0)} faults/s`);
    }
    figs.push({ name: 'fault throughput, 4 processes, 2 engine threads', value: tp[2]!, unit: 'faults/s', baseline: { name: '1 engine thread', value: tp[1]! } });
    return figs;
  },
};
