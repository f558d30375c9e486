// CLI commands of the restore area. Keep imports of heavy modules inside the
// action handlers (dynamic import) so `lazy-restore --help` stays fast.
import type { Command } from 'commander';
import { fstatSync } from 'node:fs';
import { criuOptions } from '../criu-options.js';
import { ExitCode, UserError } from '../../errors.js';
import { parseHoldMs } from './lazy.js';
import { printOut } from '../output.js';

interface RestoreCliOptions {
  imagesDir: string;
  lazyPages?: boolean;
  restoreDetached?: boolean;
  pidfile?: string;
  shellJob?: boolean;
  inheritFd?: string[];
  lazySocket?: string;
  pidns?: boolean;
  verify: boolean;
  recordWorkingSet?: boolean | string;
  workingSet: boolean;
  workingSetHold?: string;
  statsFile?: string;
  prefetch: boolean;
  restoreSibling?: boolean;
  waitLazy?: boolean;
}

/**
 * CRIU's `restore --lazy-pages` hands the userfaultfds to the `lazy-pages`
 * daemon listening in the work dir. Do the same when one is there; without
 * one, serve in-process.
 */
async function daemonSocket(imagesDir: string): Promise<string | undefined> {
  const { statSync } = await import('node:fs');
  const { join } = await import('node:path');
  const { workDirFor } = await import('../global.js');
  const path = join(workDirFor(imagesDir), 'lazy-pages.socket');
  try {
    return statSync(path).isSocket() ? path : undefined;
  } catch {
    return undefined;
  }
}

export function register(program: Command): void {
  program
    .command('restore')
    .description('restore a process tree from images (CRIU restore). Without -d, waits for the root and exits with its status')
    .requiredOption('-D, --images-dir <dir>', 'directory with the images')
    .option('--lazy-pages', 'leave anonymous memory to a lazy-pages daemon: the one listening in the work dir (lazy-pages.socket) as in CRIU, else in-process')
    .option('--lazy-socket <path>', 'hand userfaultfds to an external lazy-pages daemon on this UNIX socket (implies --lazy-pages)')
    .option('-d, --restore-detached', 'return once the tree runs (with --lazy-pages and no daemon in the work dir, a detached lazy-pages daemon serves on: log in WORKDIR/lazy-pages.log)')
    .option('--wait-lazy', 'with -d --lazy-pages: serve in this process and return only once every page is in (no detached daemon; always so with -S)')
    .option('--pidfile <file>', "write the root process's pid to this file (relative paths: in the work dir, like CRIU)")
    .option('--restore-sibling', 'with -d: make the root a child of our parent (CLONE_PARENT), which then reaps it, instead of our own (CRIU\'s -S)')
    .option('--shell-job', "allow a root that is not a session leader (it joins this command's session and group)")
    .option('--inherit-fd <fd[N]:KEY>', "restore the file the image names KEY (e.g. pipe:[12345], an end whose peer was outside the tree) from this command's fd N (CRIU's syntax; repeatable)", (v: string, prev: string[] = []) => [...prev, v])
    .option('--pidns', 'restore into a new pid namespace (the tree keeps its pids inside it)')
    .option('--no-verify', 'do not check page data against the lr-checksums images')
    .option('--record-working-set [seconds]', 'with --lazy-pages (no --lazy-socket): record the pages each process faults in the first SECONDS (default 10; SIGUSR2 ends it early) into lr-workingset-<pid>.img')
    .option('--no-working-set', 'with --lazy-pages: do not prefetch a recorded working set first')
    .option('--working-set-hold <ms>', 'with --lazy-pages (no --lazy-socket): hold a process at most MS ms until its recorded working set is in (default 250)')
    .option('--no-prefetch', 'with --lazy-pages (no --lazy-socket): serve faults only, no background push')
    .option('--stats-file <file>', 'with --lazy-pages (no --lazy-socket): write statistics (with fault timelines) as JSON when done')
    .action(async (o: RestoreCliOptions, cmd: Command) => {
      const { resolveInWorkDir, progressLog, workDirFor } = await import('../global.js');
      if (o.restoreSibling && !o.restoreDetached) {
        const { UserError, ExitCode } = await import('../../errors.js');
        throw new UserError('--restore-sibling only makes sense with --restore-detached (-d)', { exitCode: ExitCode.usage });
      }
      if (o.lazyPages && o.lazySocket === undefined && o.recordWorkingSet === undefined && o.statsFile === undefined) {
        const sock = await daemonSocket(o.imagesDir);
        if (sock !== undefined) o.lazySocket = sock;
      }
      const lazy = o.lazyPages === true || o.lazySocket !== undefined;
      if (o.waitLazy && !(lazy && o.restoreDetached)) {
        const { UserError, ExitCode } = await import('../../errors.js');
        throw new UserError('--wait-lazy only makes sense with --lazy-pages and -d', { exitCode: ExitCode.usage });
      }
      if ((o.recordWorkingSet !== undefined || o.statsFile !== undefined) && (!lazy || o.lazySocket !== undefined)) {
        const { UserError, ExitCode } = await import('../../errors.js');
        throw new UserError('--record-working-set and --stats-file need the in-process daemon: --lazy-pages without --lazy-socket (or give them to the lazy-pages daemon)', { exitCode: ExitCode.usage });
      }
      // -d: the serving must outlive this command, as with CRIU: a detached
      // lazy-pages daemon (plugin/restore/detached-daemon.ts), started first
      // so its start-up overlaps the restore. --wait-lazy (or no -d): serve in-process.
      // (-S: the root is our sibling, outside the tree a socket peer may name, so serve in-process.)
      const detachedDaemon = lazy && o.lazySocket === undefined && o.restoreDetached === true && o.waitLazy !== true && o.restoreSibling !== true
        ? (await import('../../restore/detached-daemon.js')).startDetachedDaemon({
          imagesDir: o.imagesDir,
          workDir: workDirFor(o.imagesDir),
          verify: o.verify,
          prefetch: o.prefetch,
          workingSet: o.workingSet,
          ...(o.workingSetHold !== undefined ? { workingSetHoldMs: parseHoldMs(o.workingSetHold) } : {}),
          ...(o.recordWorkingSet !== undefined ? { recordWorkingSet: parseRecord(o.recordWorkingSet) } : {}),
          ...(o.statsFile !== undefined ? { statsFile: o.statsFile } : {}),
        })
        : undefined;
      // (The restore code loads while the detached daemon starts.)
      const { restore } = await import('../../restore/index.js');
      // In-process daemon opened here so its options (working set, stats) can be set.
      const server = lazy && o.lazySocket === undefined && !detachedDaemon ? await openServer(o) : undefined;
      let tree: Awaited<ReturnType<typeof restore>>;
      try {
        tree = await restore({
          imagesDir: o.imagesDir,
          lazy,
          ...(o.lazySocket !== undefined ? { lazySocket: o.lazySocket } : {}),
          ...(detachedDaemon ? { lazySocket: detachedDaemon.socketPath, lazySocketReady: detachedDaemon.ready } : {}),
          ...(server ? { lazyServer: server } : {}),
          detached: true,
          shellJob: o.shellJob === true,
          inheritFds: parseInheritFds(o.inheritFd ?? []),
          tcpEstablished: criuOptions().tcpEstablished, extUnixSk: criuOptions().extUnixSk,
          fileLocks: criuOptions().fileLocks, fileValidation: criuOptions().fileValidation,
          cgroups: {
            ...(criuOptions().manageCgroups ? { mode: criuOptions().manageCgroups! } : {}), roots: criuOptions().cgroupRoots,
            ...(criuOptions().cgroupYard !== undefined ? { yard: criuOptions().cgroupYard! } : {}),
          },
          pidns: o.pidns === true,
          verify: o.verify,
          ...(o.pidfile !== undefined ? { pidfile: resolveInWorkDir(o.pidfile, o.imagesDir) } : {}),
          ...(o.restoreSibling ? { sibling: true } : {}),
          log: await progressLog(cmd.optsWithGlobals<{ verbose?: boolean }>().verbose === true),
        });
      } catch (e) {
        detachedDaemon?.kill();
        await server?.close();
        throw e;
      }
      if (detachedDaemon) {
        detachedDaemon.release();
        printOut(`${tree.pid}\n`);
        await tree.close();
        return;
      }
      if (o.restoreDetached) {
        printOut(`${tree.pid}\n`);
        // In-process lazy daemon: keep serving until every page is in, then leave the tree running.
        await tree.lazyDone();
        await tree.close();
        await server?.close();
        return;
      }
      const exit = await tree.wait();
      await tree.lazyDone();
      await tree.close();
      await server?.close();
      // Like CRIU: the command's status is the root's.
      process.exit(exit.signal ? 128 + exit.signal : exit.code);
    });
}

/** --record-working-set [seconds]: true (default duration) or the seconds. */
function parseRecord(v: boolean | string): boolean | number {
  if (v === true || v === false) return v;
  const record = Number(v);
  if (!(record > 0)) throw new UserError(`--record-working-set: seconds must be > 0, got "${v}"`, { exitCode: ExitCode.usage });
  return record;
}

async function openServer(o: RestoreCliOptions): Promise<import('../../lazy/server.js').LazyPagesServer> {
  const { LazyPagesServer } = await import('../../lazy/server.js');
  const record = o.recordWorkingSet !== undefined ? parseRecord(o.recordWorkingSet) : undefined;
  const hold = parseHoldMs(o.workingSetHold);
  const server = await LazyPagesServer.open({
    imagesDir: o.imagesDir,
    workingSet: o.workingSet,
    ...(hold !== undefined ? { workingSetHoldMs: hold } : {}),
    prefetch: o.prefetch,
    verify: o.verify,
    ...(record !== undefined ? { recordWorkingSet: record } : {}),
    ...(o.statsFile !== undefined ? { statsFile: o.statsFile } : {}),
  });
  server.on('error', (ev) => process.stderr.write(`lazy-pages: ${ev.message}\n`));
  server.on('recorded', (ev) => process.stderr.write(`lazy-pages: working set of pid ${ev.pid}: ${ev.pages} pages in ${ev.ranges} runs -> ${ev.path}\n`));
  if (record !== undefined) {
    const onUsr2 = (): void => void server.stopRecording();
    process.on('SIGUSR2', onUsr2);
    server.on('recorded', () => process.off('SIGUSR2', onUsr2));
  }
  return server;
}

/**
 * CRIU's --inherit-fd fd[N]:KEY (KEY as CRIU names files: "pipe:[INO]",
 * "socket:[INO]", a path). N must be open here (CRIU fstat()s it).
 */
export function parseInheritFds(specs: readonly string[]): Map<string, number> {
  const out = new Map<string, number>();
  for (const spec of specs) {
    const m = /^fd\[(\d+)\]:(.+)$/.exec(spec);
    if (!m) throw new UserError(`--inherit-fd ${spec}: invalid inherit fd argument (expected fd[N]:KEY, e.g. fd[3]:pipe:[12345])`);
    const fd = Number(m[1]);
    try {
      fstatSync(fd);
    } catch (e) {
      throw new UserError(`--inherit-fd ${spec}: cannot fstat fd ${fd}: ${(e as NodeJS.ErrnoException).code ?? String(e)}`, { cause: e });
    }
    out.set(m[2]!, fd);
  }
  return out;
}
