// Time to resume: from the restore() call (images read, tree created) to the
// moment every thread of the restored process runs (timings.resumeMs), eager vs lazy, for a
// workload-mem process of 64 MiB and 1 GiB (64 MiB and 256 MiB with --quick).
// The workload is dumped once per size; each timed restore is killed and
// reaped right after it resumes (lazy: the in-process daemon is closed with
// it). The warm-up restore of each size and mode is instead told to verify
// its memory (SIGUSR1) and must report "ok": a wrong restore fails the suite.
// Figures are medians of 3 (1 at the largest size); ratios in the same run.
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, openSync, closeSync, readFileSync, rmSync, watch } from 'node:fs';
import { join } from 'node:path';
import { dump } from '../../plugin/dump/index.js';
import { helperPath } from '../../plugin/native/addon.js';
import { restore } from '../../plugin/restore/index.js';
import { median, type BenchFigure, type BenchSuite } from '../types.js';

function waitFile(path: string, ms: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const w = watch(join(path, '..'), () => { if (existsSync(path)) done(); });
    const timer = setTimeout(() => { w.close(); reject(new Error(`timed out waiting for ${path}`)); }, ms);
    const done = (): void => { clearTimeout(timer); w.close(); resolve(); };
    if (existsSync(path)) done();
  });
}

/** Starts workload-mem with `mib` MiB of anonymous memory, dumps it (killing it) into `dir`. */
async function dumpWorkload(mib: number, dir: string): Promise<void> {
  const ctrl = `${dir}-ctrl`;
  mkdirSync(ctrl, { recursive: true });
  mkdirSync(dir, { recursive: true });
  const log = openSync(join(ctrl, 'stderr.log'), 'a');
  const child = spawn(helperPath('workload-mem'), [ctrl, String(mib)], { stdio: ['ignore', 'ignore', log] });
  closeSync(log);
  const exited = new Promise<void>((resolve) => child.on('exit', () => resolve()));
  try {
    await Promise.race([waitFile(join(ctrl, 'ready'), 120000), exited.then(() => { throw new Error('workload-mem exited early'); })]);
    await dump({ pid: child.pid!, imagesDir: dir, shellJob: true });
    await exited;
  } catch (e) {
    child.kill('SIGKILL');
    await exited;
    throw e;
  }
}

async function timeResume(dir: string, lazy: boolean, verify = false): Promise<number> {
  const result = join(`${dir}-ctrl`, 'result');
  rmSync(result, { force: true });
  const tree = await restore({ imagesDir: dir, shellJob: true, detached: true, lazy });
  // restore() start until the last thread was released (lazy: the daemon may still be planning).
  const ms = tree.timings.resumeMs;
  const exit = tree.wait();
  try {
    if (verify) {
      // The restored workload checks every page itself, writes its verdict and exits.
      process.kill(tree.pid, 'SIGUSR1');
      const st = await Promise.race([exit, new Promise<never>((_, reject) => setTimeout(() => reject(new Error(`restored workload-mem (${lazy ? 'lazy' : 'eager'}) gave no verdict within 120 s`)), 120000).unref())]);
      const verdict = existsSync(result) ? readFileSync(result, 'utf8').trim() : '(no result file)';
      if (st.code !== 0 || st.signal !== 0 || verdict !== 'ok') throw new Error(`restored workload-mem (${lazy ? 'lazy' : 'eager'}): exit ${st.code}/${st.signal}, verdict ${verdict}`);
      await tree.lazyDone();
    } else {
      process.kill(tree.pid, 'SIGKILL');
      await exit;
    }
  } catch (e) {
    try { process.kill(tree.pid, 'SIGKILL'); } catch { /* gone */ }
    await exit;
    throw e;
  } finally {
    await tree.close();
  }
  return ms;
}

export const suite: BenchSuite = {
  name: 'restore',
  async run(ctx) {
    const sizes = ctx.quick ? [64, 256] : [64, 1024];
    const res = new Map<string, number>();
    for (const mib of sizes) {
      const dir = join(ctx.tmpDir, `img-${mib}`);
      await dumpWorkload(mib, dir);
      const reps = mib >= 1024 ? 1 : 3;
      for (const lazy of [false, true]) {
        await timeResume(dir, lazy, true); // warm-up (page cache, module loading), and the restored workload's verdict
        const xs: number[] = [];
        for (let i = 0; i < reps; i++) xs.push(await timeResume(dir, lazy));
        res.set(`${lazy ? 'lazy' : 'eager'}-${mib}`, median(xs));
        ctx.log(`${mib} MiB ${lazy ? 'lazy' : 'eager'}: ${xs.map((x) => x.toFixed(1)).join(', ')} ms`);
      }
      rmSync(dir, { recursive: true, force: true });
    }
    const [small, big] = sizes as [number, number];
    const eS = res.get(`eager-${small}`)!, lS = res.get(`lazy-${small}`)!;
    const eB = res.get(`eager-${big}`)!, lB = res.get(`lazy-${big}`)!;
    const figs: BenchFigure[] = [
      { name: `time to resume, eager, ${small} MiB`, value: eS, unit: 'ms' },
      { name: `time to resume, lazy, ${small} MiB`, value: lS, unit: 'ms', baseline: { name: `eager, ${small} MiB`, value: eS } },
      { name: `time to resume, eager, ${big} MiB`, value: eB, unit: 'ms', baseline: { name: `eager, ${small} MiB`, value: eS } },
      {
        name: `time to resume, lazy, ${big} MiB`, value: lB, unit: 'ms', baseline: { name: `eager, ${big} MiB`, value: eB },
        target: '<= 0.1x eager at the same size', met: lB <= 0.1 * eB,
      },
      {
        name: `time to resume, lazy, ${big} MiB vs lazy ${small} MiB`, value: lB, unit: 'ms', baseline: { name: `lazy, ${small} MiB`, value: lS },
        target: '<= 2x lazy at the small size', met: lB <= 2 * lS,
      },
    ];
    return figs;
  },
};
