// CLI commands of the product area: check (like `criu check`) and stats.
// Heavy modules are imported inside the action handlers.
import type { Command } from 'commander';
import { UserError } from '../../errors.js';

export function register(program: Command): void {
  program
    .command('check')
    .description('check that this kernel supports everything lazy-restore uses (like criu check)')
    .option('--json', 'print the results as JSON')
    .option('--feature <name>', 'check one feature only; exit 1 if it is missing (e.g. uffd:EVENT_FORK, lazy-pages)')
    .addHelpText('after', '\nExamples:\n  lazy-restore check\n  lazy-restore check --feature lazy-pages\n  lazy-restore check --json')
    .action(async (opts: { json?: boolean; feature?: string }) => {
      const { runChecks, formatChecks, verdict, lazyRestoreFeatures } = await import('../../check/index.js');
      const results = await runChecks();
      if (opts.feature !== undefined) {
        const names: readonly string[] = opts.feature === 'lazy-pages' ? lazyRestoreFeatures : [opts.feature];
        const sel = results.filter((r) => names.includes(r.name));
        if (sel.length === 0) throw new UserError(`check: unknown feature ${opts.feature}`);
        const bad = sel.filter((r) => r.status !== 'ok');
        process.stdout.write(opts.json ? `${JSON.stringify(sel, null, 2)}\n` : formatChecks(sel).split('\n\n')[0] + '\n');
        if (bad.length) throw new UserError(`check: ${bad.map((r) => r.name).join(', ')} not supported`);
        return;
      }
      if (opts.json) {
        process.stdout.write(`${JSON.stringify({ results, verdict: verdict(results) }, null, 2)}\n`);
      } else {
        process.stdout.write(formatChecks(results));
      }
      if (!verdict(results).ok) throw new UserError('check: required kernel features are missing');
    });

  program
    .command('stats <file>')
    .description('summarise a --stats-file and optionally draw its fault timeline')
    .option('--plot <out.svg>', 'write an SVG: time on x, address on y, faults and background pushes in two colours')
    .option('--pid <pid>', 'only this process', (v) => Number(v))
    .option('--json', 'print the stats file back as JSON (validated)')
    .addHelpText('after', '\nExamples:\n  lazy-restore lazy-pages -D img --stats-file img/stats.json\n  lazy-restore stats img/stats.json --plot timeline.svg')
    .action(async (file: string, opts: { plot?: string; pid?: number; json?: boolean }) => {
      const { readFile, writeFile } = await import('node:fs/promises');
      const { isStatsFile, plotTimeline, summarize } = await import('../../stats/index.js');
      let parsed: unknown;
      try {
        parsed = JSON.parse(await readFile(file, 'utf8'));
      } catch (e) {
        const code = (e as NodeJS.ErrnoException).code;
        throw new UserError(`${file}: ${code ? `cannot read (${code})` : 'not valid JSON'}`);
      }
      if (!isStatsFile(parsed)) throw new UserError(`${file}: not a lazy-restore stats file (version 1)`);
      process.stdout.write(opts.json ? `${JSON.stringify(parsed, null, 2)}\n` : summarize(parsed));
      if (opts.plot !== undefined) {
        await writeFile(opts.plot, plotTimeline(parsed, opts.pid !== undefined ? { pid: opts.pid } : {}));
        process.stdout.write(`timeline written to ${opts.plot}\n`);
      }
    });
}
