// Dump throughput: a workload-mem process with 256 MiB of patterned memory
// (32 MiB with --quick) is dumped with --leave-running into a scratch
// directory; the same memory (the private VMAs the dump scans) is read with
// plain process_vm_readv in 4 MiB chunks in the same run as the baseline.
// Figures are MiB of those VMAs per second; medians of 3.
import { spawn } from 'node:child_process';
import { closeSync, existsSync, openSync, readFileSync, rmSync, watch } from 'node:fs';
import { join } from 'node:path';
import { dump } from '../../plugin/dump/index.js';
import { readMaps } from '../../plugin/inject/index.js';
import { addon, helperPath } from '../../plugin/native/addon.js';
import { median, type BenchFigure, type BenchSuite } from '../types.js';

function waitFile(path: string, ms: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const dir = join(path, '..');
    const w = watch(dir, () => { if (existsSync(path)) done(); });
    const timer = setTimeout(() => { w.close(); reject(new Error(`timed out waiting for ${path}`)); }, ms);
    const done = (): void => { clearTimeout(timer); w.close(); resolve(); };
    if (existsSync(path)) done();
  });
}

/** The ranges the dump reads: private, readable, not vvar/vsyscall. */
function dumpedRanges(pid: number): { start: bigint; len: number }[] {
  return readMaps(pid)
    .filter((m) => m.perms[3] === 'p' && m.perms[0] === 'r' && !m.path.startsWith('[vvar') && m.path !== '[vsyscall]')
    .map((m) => ({ start: m.start, len: Number(m.end - m.start) }));
}

function rawRead(pid: number, ranges: { start: bigint; len: number }[], buf: Buffer): number {
  let bytes = 0;
  const t = process.hrtime.bigint();
  for (const r of ranges) {
    for (let off = 0; off < r.len; off += buf.length) {
      const n = Math.min(buf.length, r.len - off);
      bytes += addon.processVmReadv(pid, buf, new BigUint64Array([r.start + BigInt(off), BigInt(n)]));
    }
  }
  const s = Number(process.hrtime.bigint() - t) / 1e9;
  return bytes / 2 ** 20 / s;
}

export const suite: BenchSuite = {
  name: 'dump',
  async run(ctx) {
    const mib = ctx.quick ? 32 : 256;
    const ctrl = join(ctx.tmpDir, 'ctrl');
    const { mkdirSync } = await import('node:fs');
    mkdirSync(ctrl);
    const log = openSync(join(ctrl, 'stderr.log'), 'a');
    const child = spawn(helperPath('workload-mem'), [ctrl, String(mib)], { stdio: ['ignore', 'ignore', log], detached: true });
    closeSync(log);
    const exited = new Promise<void>((resolve) => child.on('exit', () => resolve()));
    try {
      await Promise.race([waitFile(join(ctrl, 'ready'), 60000), exited.then(() => { throw new Error('workload-mem exited early'); })]);
      const pid = child.pid!;
      const ranges = dumpedRanges(pid);
      const total = ranges.reduce((s, r) => s + r.len, 0) / 2 ** 20;
      ctx.log(`workload-mem ${mib} MiB: ${ranges.length} private VMAs, ${total.toFixed(1)} MiB`);
      const buf = Buffer.allocUnsafe(4 << 20);
      const raw: number[] = [];
      const mem: number[] = [];
      const whole: number[] = [];
      rawRead(pid, ranges, buf); // warm-up: fault in page tables once
      for (let i = 0; i < 3; i++) {
        raw.push(rawRead(pid, ranges, buf));
        const dir = join(ctx.tmpDir, `img${i}`);
        const r = await dump({ pid, imagesDir: dir, leaveRunning: true });
        mem.push(total / (r.stats.memdumpMs / 1000));
        whole.push(total / (r.stats.totalMs / 1000));
        ctx.log(`rep ${i}: raw ${raw[i]!.toFixed(0)} MiB/s, dump memory ${mem[i]!.toFixed(0)} MiB/s, whole dump ${r.stats.totalMs.toFixed(0)} ms, ${r.stats.pagesWritten} pages written`);
        rmSync(dir, { recursive: true, force: true });
      }
      const base = { name: 'process_vm_readv of the same VMAs', value: median(raw) };
      const m = median(mem);
      const figs: BenchFigure[] = [
        { name: `dump memory phase (${mib} MiB: pagemap + read + zero skip + write)`, value: m, unit: 'MiB/s', baseline: base, target: '>= 0.7x raw read', met: m >= 0.7 * base.value },
        { name: `whole dump command (${mib} MiB, freeze to images written)`, value: median(whole), unit: 'MiB/s', baseline: base },
      ];
      process.kill(pid, 'SIGUSR1');
      await exited;
      const result = readFileSync(join(ctrl, 'result'), 'utf8').trim();
      if (result !== 'ok') figs.push({ name: 'workload check after 3 dumps', value: NaN, unit: '', notes: result });
      return figs;
    } finally {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGKILL');
        await exited;
      }
    }
  },
};
