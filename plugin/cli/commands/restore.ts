// CLI commands of the restore area. Keep imports of heavy modules inside the
// action handlers (dynamic import) so `lazy-restore --help` stays fast.
import type { Command } from 'commander';

interface RestoreCliOptions {
  imagesDir: string;
  lazyPages?: boolean;
  restoreDetached?: boolean;
  pidfile?: string;
  shellJob?: boolean;
  lazySocket?: string;
  pidns?: boolean;
  verify: boolean;
}

export function register(program: Command): void {
  program
    .command('restore')
    .description('restore a process tree from images (CRIU restore). Without -d, waits for the root and exits with its status')
    .requiredOption('-D, --images-dir <dir>', 'directory with the images')
    .option('--lazy-pages', 'leave anonymous memory to a lazy-pages daemon (in-process unless --lazy-socket)')
    .option('--lazy-socket <path>', 'hand userfaultfds to an external lazy-pages daemon on this UNIX socket (implies --lazy-pages)')
    .option('-d, --restore-detached', 'return once the tree runs; with in-process --lazy-pages the command stays until every page is served')
    .option('--pidfile <file>', "write the root process's pid to this file")
    .option('--shell-job', "allow a root that is not a session leader (it joins this command's session and group)")
    .option('--pidns', 'restore into a new pid namespace (the tree keeps its pids inside it)')
    .option('--no-verify', 'do not check page data against the lr-checksums images')
    .action(async (o: RestoreCliOptions) => {
      const { restore } = await import('../../restore/index.js');
      const tree = await restore({
        imagesDir: o.imagesDir,
        lazy: o.lazyPages === true || o.lazySocket !== undefined,
        ...(o.lazySocket !== undefined ? { lazySocket: o.lazySocket } : {}),
        detached: true,
        shellJob: o.shellJob === true,
        pidns: o.pidns === true,
        verify: o.verify,
        ...(o.pidfile !== undefined ? { pidfile: o.pidfile } : {}),
      });
      if (o.restoreDetached) {
        process.stdout.write(`${tree.pid}\n`);
        // In-process lazy daemon: keep serving until every page is in, then leave the tree running.
        await tree.lazyDone();
        await tree.close();
        return;
      }
      const exit = await tree.wait();
      await tree.lazyDone();
      await tree.close();
      // Like CRIU: the command's status is the root's.
      process.exit(exit.signal ? 128 + exit.signal : exit.code);
    });
}
