// `npm run bench [-- --quick] [-- --only NAME] [-- --out DIR]`: runs every
// suite in bench/suites, prints one table with each figure, its same-run
// baseline and the ratio, and writes results.md and results.json to DIR
// (default bench/). Exits 1 if a suite failed to run (never on timings), so
// `--quick` serves as a smoke test of every benchmark (test/integration/bench-quick).
import { existsSync, mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import { cpus, totalmem, release } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import tmp from 'tmp';
import type { BenchFigure, BenchSuite } from './types.js';

tmp.setGracefulCleanup();
const here = dirname(fileURLToPath(import.meta.url));
const srcBench = join(here, '..', '..', 'bench');

async function main(): Promise<void> {
  const args = process.argv.slice(2);
  const quick = args.includes('--quick');
  const onlyIdx = args.indexOf('--only');
  const only = onlyIdx >= 0 ? args[onlyIdx + 1] : undefined;
  const outIdx = args.indexOf('--out');
  const outDir = outIdx >= 0 ? args[outIdx + 1] : srcBench;
  if (outDir === undefined) throw new Error('--out needs a directory');
  const suiteDir = join(here, 'suites');
  const files = (existsSync(suiteDir) ? readdirSync(suiteDir) : []).filter((f) => f.endsWith('.js')).sort();
  const rows: { suite: string; fig: BenchFigure }[] = [];
  for (const f of files) {
    const mod = (await import(pathToFileURL(join(suiteDir, f)).href)) as { suite: BenchSuite };
    const suite = mod.suite;
    if (only && suite.name !== only) continue;
    const dir = tmp.dirSync({ prefix: `lr-bench-${suite.name}-`, unsafeCleanup: true });
    process.stderr.write(`bench: ${suite.name}...\n`);
    try {
      const figs = await suite.run({ quick, tmpDir: dir.name, log: (l) => process.stderr.write(`  ${l}\n`) });
      for (const fig of figs) rows.push({ suite: suite.name, fig });
    } catch (e) {
      rows.push({ suite: suite.name, fig: { name: 'suite failed', value: NaN, unit: '', notes: e instanceof Error ? e.message : String(e) } });
    } finally {
      dir.removeCallback();
    }
  }
  const md = renderMarkdown(rows, quick);
  process.stdout.write(md);
  mkdirSync(outDir, { recursive: true });
  writeFileSync(join(outDir, 'results.md'), md);
  writeFileSync(join(outDir, 'results.json'), JSON.stringify({ machine: machine(), date: new Date().toISOString(), quick, rows }, null, 2));
  const failed = rows.filter((r) => r.fig.name === 'suite failed');
  for (const r of failed) process.stderr.write(`bench: suite ${r.suite} failed: ${r.fig.notes ?? ''}\n`);
  if (failed.length > 0) process.exitCode = 1;
}

function machine(): string {
  return `${cpus().length} x ${cpus()[0]?.model ?? 'cpu'}, ${(totalmem() / 2 ** 30).toFixed(0)} GiB, Linux ${release()}, node ${process.version}`;
}

function fmt(v: number): string {
  if (!Number.isFinite(v)) return 'n/a';
  const a = Math.abs(v);
  return a >= 100 ? v.toFixed(0) : a >= 10 ? v.toFixed(1) : v.toFixed(2);
}

function renderMarkdown(rows: { suite: string; fig: BenchFigure }[], quick: boolean): string {
  const lines = [
    `# lazy-restore benchmark results${quick ? ' (--quick: small sizes, not representative)' : ''}`,
    '',
    `Machine: ${machine()}. Date: ${new Date().toISOString()}. Medians unless stated; every baseline measured in the same run.`,
    '',
    '| suite | figure | value | baseline | baseline value | ratio | target | met |',
    '|---|---|---|---|---|---|---|---|',
  ];
  for (const { suite, fig } of rows) {
    const ratio = fig.baseline && fig.baseline.value ? fig.value / fig.baseline.value : NaN;
    lines.push(`| ${suite} | ${fig.name} | ${fmt(fig.value)} ${fig.unit} | ${fig.baseline?.name ?? ''} | ${fig.baseline ? `${fmt(fig.baseline.value)} ${fig.unit}` : ''} | ${fig.baseline ? `${fmt(ratio)}x` : ''} | ${fig.target ?? ''} | ${fig.met === undefined ? '' : fig.met ? 'yes' : 'no'} |${fig.notes ? ` ${fig.notes}` : ''}`);
  }
  return `${lines.join('\n')}\n`;
}

await main();
// A failed suite may leave a child (a daemon it started) holding a pipe open:
// do not wait for it.
process.exit(process.exitCode ?? 0);
