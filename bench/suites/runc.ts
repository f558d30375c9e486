// runc checkpoint / restore of a busybox container (a shell loop), with our
// CLI as runc's criu, against CRIU 4.2 built from source as the same-run
// baseline (LR_BENCH_CRIU, default /work/criu-4.2/criu/criu; without it the
// figures have no baseline). runc gets build/bin/lr-criu (answers runc's
// VERSION request natively, runs our CLI for the rest). Wall time of the
// runc commands, medians of 5 (LR_BENCH_RUNC_ROUNDS) alternating runs,
// ours then CRIU's, each on a container of its own (1 with --quick). Needs runc and busybox-static
// (scripts/setup.sh).
import { execFile, spawn } from 'node:child_process';
import { copyFileSync, cpSync, existsSync, mkdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { logTail } from '../log-tail.js';
import { median, type BenchFigure, type BenchSuite } from '../types.js';

const RUNC = '/usr/sbin/runc';
const lrCriu = join(fileURLToPath(import.meta.url), '..', '..', '..', '..', 'build', 'bin', 'lr-criu');

function runc(args: string[], quiet = false): Promise<{ code: number; ms: number; err: string }> {
  const t = performance.now();
  return new Promise((resolve) => {
    if (quiet) {
      const c = spawn(RUNC, args, { stdio: 'ignore' });
      c.on('close', (code) => resolve({ code: code ?? 255, ms: performance.now() - t, err: '' }));
      return;
    }
    execFile(RUNC, args, { timeout: 120_000 }, (e, _o, err) => resolve({ code: e ? 1 : 0, ms: performance.now() - t, err }));
  });
}

function count(file: string): number {
  try {
    return Number(readFileSync(file, 'utf8').trim()) || 0;
  } catch {
    return 0;
  }
}

/** Bounded wait for the container's counter (it writes every 0.1 s). */
async function counted(file: string, min: number): Promise<void> {
  const deadline = Date.now() + 30_000;
  while (count(file) < min) {
    if (Date.now() > deadline) throw new Error(`container counter stuck at ${count(file)}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

export const suite: BenchSuite = {
  name: 'runc',
  async run(ctx) {
    if (!existsSync(RUNC) || !existsSync('/bin/busybox')) throw new Error('runc and busybox-static are needed (scripts/setup.sh)');
    const bundle = join(ctx.tmpDir, 'bundle');
    const rootfs = join(bundle, 'rootfs');
    mkdirSync(join(rootfs, 'bin'), { recursive: true });
    mkdirSync(join(rootfs, 'tmp'));
    copyFileSync('/bin/busybox', join(rootfs, 'bin', 'busybox'));
    for (const x of ['sh', 'sleep']) symlinkSync('busybox', join(rootfs, 'bin', x));
    if ((await runc(['spec', '--bundle', bundle])).code !== 0) throw new Error('runc spec failed');
    const cfg = JSON.parse(readFileSync(join(bundle, 'config.json'), 'utf8')) as { process: { terminal: boolean; args: string[] }; root: { readonly: boolean } };
    cfg.process.terminal = false;
    cfg.process.args = ['/bin/sh', '-c', 'i=0; while true; do i=$((i+1)); echo $i > /tmp/count; sleep 0.1; done'];
    cfg.root.readonly = false;
    writeFileSync(join(bundle, 'config.json'), JSON.stringify(cfg));
    const binDir = join(ctx.tmpDir, 'bin');
    mkdirSync(binDir);
    symlinkSync(lrCriu, join(binDir, 'criu'));
    const criu42 = process.env['LR_BENCH_CRIU'] ?? '/work/criu-4.2/criu/criu';
    const tools: [string, string][] = [['lazy-restore', join(binDir, 'criu')]];
    // --quick (the CI smoke run) only checks that ours runs.
    if (existsSync(criu42) && !ctx.quick) tools.push(['CRIU 4.2', criu42]);
    // LR_BENCH_RUNC_ROUNDS: more alternating rounds when the machine is noisy.
    const reps = ctx.quick ? 1 : Math.max(1, Number(process.env['LR_BENCH_RUNC_ROUNDS'] ?? 5) || 5);
    const times = new Map<string, { cp: number[]; rs: number[] }>();
    // One container per tool (a container CRIU restored lives in a time
    // namespace of its own, which we do not dump), both running; the tools
    // take turns so both see the same load. Each bundle is a copy of the
    // one made above, counting into its own rootfs's /tmp.
    const containers = tools.map(([name, bin], k) => {
      const dir = join(ctx.tmpDir, `bundle-${k}`);
      mkdirSync(join(dir, 'rootfs', 'tmp'), { recursive: true });
      cpSync(join(rootfs, 'bin'), join(dir, 'rootfs', 'bin'), { recursive: true, verbatimSymlinks: true });
      copyFileSync(join(bundle, 'config.json'), join(dir, 'config.json'));
      return { name, bin, dir, id: `lr-bench-runc-${process.pid}-${k}`, file: join(dir, 'rootfs', 'tmp', 'count') };
    });
    try {
      for (const c of containers) {
        if ((await runc(['run', '-d', '--bundle', c.dir, c.id], true)).code !== 0) throw new Error('runc run failed');
        await counted(c.file, count(c.file) + 2);
      }
      for (let i = 0; i < reps; i++) {
        for (const { name, bin, dir, id, file: cf } of containers) {
          let img = join(ctx.tmpDir, `img-${name.replace(/\W/g, '')}-${i}`);
          let cp = await runc(['--criu', bin, 'checkpoint', '--image-path', img, id]);
          if (cp.code !== 0) {
            // A checkpoint that fails leaves the container running (runc says
            // so). The failure is shown with the tail of its dump.log and the
            // step is tried once more: this is a benchmark, runc.test.ts is
            // where a failing checkpoint fails.
            ctx.log(`${name}: runc checkpoint failed, trying once more: ${cp.err.trim()}\n${logTail(join(img, 'dump.log'), { lines: 8 })}`);
            img = `${img}-again`;
            cp = await runc(['--criu', bin, 'checkpoint', '--image-path', img, id]);
            if (cp.code !== 0) throw new Error(`${name}: runc checkpoint failed: ${cp.err}\n${logTail(join(img, 'dump.log'), { lines: 8 })}`);
          }
          const at = count(cf);
          const rs = await runc(['--criu', bin, 'restore', '-d', '--image-path', img, '--bundle', dir, id], true);
          if (rs.code !== 0) throw new Error(`${name}: runc restore failed`);
          await counted(cf, at + 2);
          const t = times.get(name) ?? { cp: [], rs: [] };
          t.cp.push(cp.ms);
          t.rs.push(rs.ms);
          times.set(name, t);
          ctx.log(`${name}: checkpoint ${cp.ms.toFixed(0)} ms, restore -d ${rs.ms.toFixed(0)} ms`);
          rmSync(img, { recursive: true, force: true });
        }
      }
    } finally {
      for (const c of containers) await runc(['delete', '-f', c.id]);
    }
    const ours = times.get('lazy-restore')!;
    const base = times.get('CRIU 4.2');
    const fig = (what: string, mine: number[], theirs: number[] | undefined): BenchFigure => ({
      name: `runc ${what}, busybox shell loop (lazy-restore as criu)`, value: median(mine), unit: 'ms',
      ...(theirs ? { baseline: { name: `runc ${what} with CRIU 4.2`, value: median(theirs) } } : {}),
      notes: 'wall time of the runc command; lr-criu answers VERSION, the request itself starts our CLI (node)',
    });
    return [fig('checkpoint', ours.cp, base?.cp), fig('restore -d', ours.rs, base?.rs)];
  },
};
