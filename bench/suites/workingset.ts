// Working-set record and replay (issue 8 part 1): kv-service, a warmed-up
// service whose requests touch a fixed scattered subset of its memory, is
// checkpointed once, its working set recorded on one lazy restore, then
// restored lazily again and again, alternating with and without the
// recorded working set: synchronous faults and time to the first answer,
// with the background push off (to isolate the effect) and on.
import { checkpointKv, runKv, type KvRun } from '../../test/helpers/kv-service.js';
import type { BenchContext, BenchFigure, BenchSuite } from '../types.js';
import { median } from '../types.js';

export const suite: BenchSuite = {
  name: 'workingset',
  async run(ctx: BenchContext): Promise<BenchFigure[]> {
    const mib = ctx.quick ? 32 : 256;
    const hot = ctx.quick ? 1024 : 4096;
    const reps = ctx.quick ? 1 : 5;
    const cp = await checkpointKv(ctx.tmpDir, mib, hot);
    ctx.log(`kv-service: ${mib} MiB, ${hot} hot page reads, checkpointed (pid ${cp.pid})`);
    let recorded = 0;
    const rec = await runKv(cp, { recordWorkingSet: 60 }, async (s) => {
      await s.stopRecording();
      recorded = s.processes()[0]?.recordedPages ?? 0;
    });
    ctx.log(`recorded ${recorded} pages (${rec.faults} faults while recording)`);
    const runs: Record<'off' | 'on' | 'offPush' | 'onPush', KvRun[]> = { off: [], on: [], offPush: [], onPush: [] };
    for (let i = 0; i < reps; i++) {
      runs.off.push(await runKv(cp, { prefetch: false, workingSet: false }));
      runs.on.push(await runKv(cp, { prefetch: false }));
      runs.offPush.push(await runKv(cp, { workingSet: false }));
      runs.onPush.push(await runKv(cp, {}));
    }
    for (const [k, rs] of Object.entries(runs)) {
      for (const r of rs) if (r.sum !== cp.sum || r.result !== 'ok') throw new Error(`${k}: wrong answer ${r.sum} (want ${cp.sum}) / ${r.result}`);
    }
    const m = (rs: KvRun[], f: (r: KvRun) => number): number => median(rs.map(f));
    const faults = (r: KvRun): number => r.faults;
    const ms = (r: KvRun): number => r.answerMs;
    const fOff = m(runs.off, faults), fOn = m(runs.on, faults);
    const fOffP = m(runs.offPush, faults), fOnP = m(runs.onPush, faults);
    const warmed = median(runs.on.map((r) => r.warmedMs ?? NaN));
    return [
      {
        name: 'sync faults to first answer, working set (push off)', value: fOn, unit: 'faults',
        baseline: { name: 'no working set (push off)', value: fOff },
        target: '>= 3x fewer', met: fOn * 3 <= fOff,
        notes: `${recorded} pages recorded; ${mib} MiB, ${hot} hot reads`,
      },
      {
        name: 'time to first answer, working set (push off)', value: m(runs.on, ms), unit: 'ms',
        baseline: { name: 'no working set (push off)', value: m(runs.off, ms) },
        notes: `replayed set in after ${warmed.toFixed(0)} ms (median, from adoption)`,
      },
      {
        name: 'sync faults to first answer, working set (push on)', value: fOnP, unit: 'faults',
        baseline: { name: 'no working set (push on)', value: fOffP },
        target: '>= 3x fewer', met: fOnP * 3 <= fOffP,
      },
      {
        name: 'time to first answer, working set (push on)', value: m(runs.onPush, ms), unit: 'ms',
        baseline: { name: 'no working set (push on)', value: m(runs.offPush, ms) },
      },
    ];
  },
};
