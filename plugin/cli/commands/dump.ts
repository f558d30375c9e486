// CLI commands of the dump area. Keep imports of heavy modules inside the
// action handlers (dynamic import) so `lazy-restore --help` stays fast.
import type { Command } from 'commander';
import { UserError } from '../../errors.js';

interface DumpCliOptions {
  tree: string;
  imagesDir: string;
  leaveRunning?: boolean;
  shellJob?: boolean;
}

export function register(program: Command): void {
  program
    .command('dump')
    .description('checkpoint a running process tree into CRIU-format images')
    .requiredOption('-t, --tree <pid>', 'pid of the root of the tree to dump')
    .requiredOption('-D, --images-dir <dir>', 'directory to write the images into')
    .option('-R, --leave-running', 'let the tree run after the dump (default: kill it)')
    .option('--shell-job', 'the tree is a shell job: allow a root outside its session and stdio on a tty or pipe')
    .action(async (o: DumpCliOptions, cmd: Command) => {
      const pid = Number(o.tree);
      if (!/^\d+$/.test(o.tree) || !Number.isSafeInteger(pid) || pid <= 0) throw new UserError(`invalid pid: ${o.tree}`);
      const verbose = cmd.optsWithGlobals<{ verbose?: boolean }>().verbose === true;
      const { dump } = await import('../../dump/index.js');
      const r = await dump({
        pid, imagesDir: o.imagesDir, leaveRunning: o.leaveRunning === true, shellJob: o.shellJob === true,
        log: verbose ? (l) => process.stderr.write(`${l}\n`) : undefined,
      });
      const s = r.stats;
      process.stdout.write(
        `dumped ${s.processes} process(es), ${s.threads} thread(s) to ${o.imagesDir}: ${s.pagesWritten} pages written` +
        ` (${s.pagesZero} zero pages skipped) in ${s.totalMs.toFixed(0)} ms${o.leaveRunning ? ', tree left running' : ', tree killed'}\n`,
      );
    });
}
