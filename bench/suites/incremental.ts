// Incremental dumps: how long the final dump keeps a process frozen when it
// copies only the pages written since a pre-dump, against a full dump of the
// same process in the same state, same run. The workload (workload-incr)
// holds 1 GiB (256 MiB with --quick; every 7th page never touched) and
// rewrites 5% of its pages between the pre-dump and the dumps. Both dumps
// leave it running, so each repetition is: pre-dump → 5% written →
// incremental dump (prev = the pre-dump) → full dump. Medians of 3.
import { spawn } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, rmSync, watch } from 'node:fs';
import { join } from 'node:path';
import { dump, preDump } from '../../plugin/dump/index.js';
import { helperPath } from '../../plugin/native/addon.js';
import { median, type BenchFigure, type BenchSuite } from '../types.js';

function waitFile(path: string, ms: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const w = watch(join(path, '..'), () => { if (existsSync(path)) done(); });
    const timer = setTimeout(() => { w.close(); reject(new Error(`timed out waiting for ${path}`)); }, ms);
    const done = (): void => { clearTimeout(timer); w.close(); resolve(); };
    if (existsSync(path)) done();
  });
}

export const suite: BenchSuite = {
  name: 'incremental',
  async run(ctx) {
    const mib = ctx.quick ? 256 : 1024;
    const ctrl = join(ctx.tmpDir, 'ctrl');
    mkdirSync(ctrl);
    const log = openSync(join(ctrl, 'stderr.log'), 'a');
    const child = spawn(helperPath('workload-incr'), [ctrl, String(mib)], { stdio: ['ignore', 'ignore', log], detached: true });
    closeSync(log);
    const exited = new Promise<void>((resolve) => child.on('exit', () => resolve()));
    try {
      await Promise.race([waitFile(join(ctrl, 'ready'), 120000), exited.then(() => { throw new Error('workload-incr exited early'); })]);
      const pid = child.pid!;
      const inc: number[] = [];
      const full: number[] = [];
      const incPages: number[] = [];
      const fullPages: number[] = [];
      const warnings: string[] = [];
      for (let i = 0; i < 3; i++) {
        const pre = join(ctx.tmpDir, `pre${i}`);
        const p = await preDump({ pid, imagesDir: pre, trackTimeoutS: 600, warn: (l) => warnings.push(l) });
        process.kill(pid, 'SIGUSR2');
        await waitFile(join(ctrl, `round-${i + 1}`), 60000);
        const written = Number(/written=(\d+)/.exec(readFileSync(join(ctrl, `round-${i + 1}`), 'utf8'))![1]);
        const a = await dump({ pid, imagesDir: join(ctx.tmpDir, `inc${i}`), prevImagesDir: `../pre${i}`, leaveRunning: true, warn: (l) => warnings.push(l) });
        const b = await dump({ pid, imagesDir: join(ctx.tmpDir, `full${i}`), leaveRunning: true });
        // Frozen: from the first stop until the images are written.
        inc.push(a.stats.freezeMs + a.stats.frozenMs);
        full.push(b.stats.freezeMs + b.stats.frozenMs);
        if (a.stats.pagesSkippedParent === 0) throw new Error(`rep ${i}: the incremental dump left no page in its parent (a full copy)`);
        incPages.push(a.stats.pagesWritten);
        fullPages.push(b.stats.pagesWritten);
        ctx.log(`rep ${i}: pre-dump frozen ${(p.stats.freezeMs + p.stats.frozenMs).toFixed(1)} ms; ${written} pages rewritten; ` +
          `incremental dump frozen ${inc[i]!.toFixed(1)} ms (${a.stats.pagesWritten} pages written, ${a.stats.pagesSkippedParent} PE_PARENT); ` +
          `full dump frozen ${full[i]!.toFixed(1)} ms (${b.stats.pagesWritten} pages written)`);
        for (const d of [`pre${i}`, `inc${i}`, `full${i}`]) rmSync(join(ctx.tmpDir, d), { recursive: true, force: true });
      }
      // Incremental means incremental: a fallback to a full dump, or a dump
      // with nothing left in its parent, fails the suite.
      if (warnings.length) throw new Error(`incremental dumps fell back: ${warnings.join('; ')}`);
      // The workload checks every page against its generation table and exits.
      rmSync(join(ctrl, 'result'), { force: true });
      process.kill(pid, 'SIGUSR1');
      await waitFile(join(ctrl, 'result'), 120000);
      await exited;
      const verdict = readFileSync(join(ctrl, 'result'), 'utf8').trim();
      if (verdict !== 'ok' || child.exitCode !== 0) throw new Error(`workload-incr after the dumps: exit ${child.exitCode}, verdict ${verdict}`);
      const m = median(inc);
      const figs: BenchFigure[] = [
        {
          name: `final dump freeze time, incremental (${mib} MiB, 5% rewritten since the pre-dump)`, value: m, unit: 'ms',
          baseline: { name: 'full dump of the same process, same state', value: median(full) },
          notes: `pages written: ${median(incPages)} vs ${median(fullPages)}`,
        },
      ];
      return figs;
    } finally {
      try { process.kill(child.pid!, 'SIGKILL'); } catch { /* gone */ }
      await exited;
    }
  },
};
