// CLI commands of the lazy area: `lazy-pages`, the CRIU-compatible daemon.
// Keep imports of heavy modules inside the action handlers (dynamic import)
// so `lazy-restore --help` stays fast.
import type { Command } from 'commander';
import { ExitCode, UserError } from '../../errors.js';
import { addRemoteSourceOptions, checkRemoteOptions, openRemoteFromCli, type RemoteCliOptions } from './pageserver.js';

interface LazyPagesCliOptions extends RemoteCliOptions {
  imagesDir: string;
  socket?: string;
  prefetch: boolean;
  bandwidth?: string;
  statsFile?: string;
  engineThreads?: string;
  verify: boolean;
  watchdog: boolean;
  recordWorkingSet?: boolean | string;
  workingSet: boolean;
  workingSetHold?: string;
  pidfile?: string;
  daemon?: boolean;
}

/** Parses "100M", "1.5GiB", "500k", "1048576" (bytes per second; K/M/G are powers of 1024). */
export function parseRate(s: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*([kmg]?)(?:i?b)?(?:\/s)?$/i.exec(s.trim());
  if (!m) throw new UserError(`--bandwidth: cannot parse "${s}" (e.g. 100M, 1G, 512k: bytes per second)`, { exitCode: ExitCode.usage });
  const unit = { '': 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3 }[m[2]!.toLowerCase() as '' | 'k' | 'm' | 'g'];
  const v = Math.floor(Number(m[1]) * unit);
  if (!(v > 0)) throw new UserError(`--bandwidth must be > 0, got "${s}"`, { exitCode: ExitCode.usage });
  return v;
}

/** --working-set-hold MS: a non-negative number of milliseconds. */
export function parseHoldMs(s: string | undefined): number | undefined {
  if (s === undefined) return undefined;
  const v = Number(s);
  if (!(/^\d+$/.test(s.trim()) && Number.isFinite(v))) throw new UserError(`--working-set-hold: milliseconds must be an integer >= 0, got "${s}"`, { exitCode: ExitCode.usage });
  return v;
}

export function register(program: Command): void {
  addRemoteSourceOptions(program
    .command('lazy-pages')
    .description('serve the lazy memory of restored processes from images (CRIU lazy-pages daemon)')
    .requiredOption('-D, --images-dir <dir>', 'image directory (the socket is created here unless --socket)')
    .option('--socket <path>', 'lazy-pages socket path (default: lazy-pages.socket in the work dir, -W, else DIR)')
    .option('--no-prefetch', 'serve faults only, no background push')
    .option('--bandwidth <rate>', 'cap the background push, bytes/s (K/M/G suffixes)')
    .option('--stats-file <file>', 'write statistics as JSON when done')
    .option('--engine-threads <n>', 'fault engine threads')
    .option('--no-verify', 'do not check page data against the lr-checksums images')
    .option('--no-watchdog', 'no daemon-death watchdog (if this daemon dies, processes not yet complete read zero pages)')
    .option('--record-working-set [seconds]', 'record the pages each process faults in the first SECONDS (default 10; SIGUSR2 ends it early) into lr-workingset-<pid>.img')
    .option('--no-working-set', 'do not prefetch a recorded working set first')
    .option('--working-set-hold <ms>', 'hold a restored process at most MS ms until its recorded working set is in (default 250)')
    .option('--pidfile <file>', 'write this daemon\'s pid here once it listens (relative paths: in the work dir, like CRIU)')
    .option('-d, --daemon', 'not supported (CRIU\'s daemon mode): run in the background with --status-fd instead'))
    .action(async (opts: LazyPagesCliOptions) => {
      const code = await runLazyPages(opts);
      if (code !== ExitCode.ok) throw new UserError(code === ExitCode.restoredFailed ? 'some restored processes were killed (see above)' : 'lazy-pages failed', { exitCode: code });
    });
}

async function runLazyPages(opts: LazyPagesCliOptions): Promise<ExitCode> {
  (await import('../global.js')).refuseDaemon(opts, 'lazy-pages');
  const { join } = await import('node:path');
  const { signalReady, workDirFor, resolveInWorkDir, writePidfile } = await import('../global.js');
  const { mark } = await import('../../phases.js');
  const bandwidth = opts.bandwidth !== undefined ? parseRate(opts.bandwidth) : undefined;
  let threads: number | undefined;
  if (opts.engineThreads !== undefined) {
    threads = Number(opts.engineThreads);
    if (!Number.isInteger(threads) || threads < 1) throw new UserError(`--engine-threads must be an integer >= 1, got "${opts.engineThreads}"`, { exitCode: ExitCode.usage });
  }
  let record: boolean | number | undefined;
  if (opts.recordWorkingSet === true) record = true;
  else if (typeof opts.recordWorkingSet === 'string') {
    record = Number(opts.recordWorkingSet);
    if (!(record > 0)) throw new UserError(`--record-working-set: seconds must be > 0, got "${opts.recordWorkingSet}"`, { exitCode: ExitCode.usage });
  }
  const hold = parseHoldMs(opts.workingSetHold);
  // --page-server: pages the images do not hold come from a page server
  // (plugin/pageserver). Its options are checked now, the connection is made
  // once this daemon listens and said so (as CRIU's lazy-pages connects after
  // its status-fd byte): a restorer started on that byte does not wait for it.
  checkRemoteOptions(opts);
  // Listen (and say so) before the rest of the daemon is loaded: a restorer
  // starting now finds the socket, and what it sends waits in the socket,
  // unread, until the daemon below can serve it.
  const socketPath = opts.socket ?? join(workDirFor(opts.imagesDir), 'lazy-pages.socket');
  await (await import('../../images/dir-check.js')).checkImageDir(opts.imagesDir);
  const socket = new (await import('../../lazy/socket.js')).LazySocket(socketPath);
  process.stderr.write(`lazy-pages: listening on ${socket.path}\n`);
  if (opts.pidfile !== undefined) {
    try {
      writePidfile(resolveInWorkDir(opts.pidfile, opts.imagesDir), process.pid);
    } catch (e) {
      socket.close();
      throw e;
    }
  }
  // --status-fd (a CRIU global option): one NUL byte once listening.
  signalReady();
  mark('lazy-pages ready signalled');
  let remote: Awaited<ReturnType<typeof openRemoteFromCli>>;
  try {
    remote = await openRemoteFromCli(opts);
  } catch (e) {
    socket.close();
    throw e;
  }
  if (remote) mark('page server connected');
  const { LazyPagesServer } = await import('../../lazy/server.js');
  const { formatSummary } = await import('../../lazy/summary.js');
  const server = await LazyPagesServer.open({
    ...(remote ? { remote } : {}),
    imagesDir: opts.imagesDir,
    socket,
    prefetch: opts.prefetch,
    verify: opts.verify,
    watchdog: opts.watchdog,
    ...(bandwidth !== undefined ? { bandwidthBytesPerSec: bandwidth } : {}),
    ...(threads !== undefined ? { engineThreads: threads } : {}),
    ...(opts.statsFile !== undefined ? { statsFile: opts.statsFile } : {}),
    ...(record !== undefined ? { recordWorkingSet: record } : {}),
    workingSet: opts.workingSet,
    ...(hold !== undefined ? { workingSetHoldMs: hold } : {}),
  }).catch((e: unknown) => {
    socket.close();
    remote?.destroy();
    throw e;
  });
  let errors = 0;
  server.on('error', (ev) => {
    errors++;
    process.stderr.write(`lazy-pages: ${ev.message}\n`);
  });
  server.on('socket', (ev) => {
    if (ev.type === 'refused') process.stderr.write(`lazy-pages: refused a connection from pid ${ev.pid} (uid ${ev.uid}): not our uid or root\n`);
  });
  const stop = (): void => {
    process.stderr.write('lazy-pages: interrupted\n');
    void server.close().then(() => process.exit(ExitCode.failure));
  };
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
  const onUsr2 = (): void => void server.stopRecording();
  if (record !== undefined) process.on('SIGUSR2', onUsr2);
  server.on('recorded', (ev) => process.stderr.write(`lazy-pages: working set of pid ${ev.pid}: ${ev.pages} pages in ${ev.ranges} runs -> ${ev.path}\n`));
  const stats = await server.done();
  mark('all served');
  const procs = server.processes();
  await server.close();
  if (remote) {
    // Every page is in: PS_IOV_CLOSE ends the source (a dump --lazy-pages source then kills the frozen tree).
    try {
      await remote.close();
    } catch (e) {
      remote.destroy();
      process.stderr.write(`lazy-pages: page server: ${e instanceof Error ? e.message : String(e)}\n`);
    }
  }
  process.off('SIGINT', stop);
  process.off('SIGTERM', stop);
  process.off('SIGUSR2', onUsr2);
  process.stdout.write(formatSummary(stats, procs));
  if (stats.killed > 0) return ExitCode.restoredFailed;
  return errors > 0 && stats.processes === 0 ? ExitCode.failure : ExitCode.ok;
}
