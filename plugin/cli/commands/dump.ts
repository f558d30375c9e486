// CLI commands of the dump area. Keep imports of heavy modules inside the
// action handlers (dynamic import) so `lazy-restore --help` stays fast.
import type { Command } from 'commander';
import { UserError } from '../../errors.js';
import { progressLog } from '../global.js';
import { criuOptions } from '../criu-options.js';
import { addTlsOptions, parsePort, parseSeconds, type TlsCliOptions } from './pageserver.js';
import { printOut } from '../output.js';

interface DumpCliOptions extends TlsCliOptions {
  lazyPages?: boolean;
  address?: string;
  port?: number;
  insecure?: boolean;
  reconnectTimeout?: number;
  idleTimeout?: number;
  tree: string;
  imagesDir: string;
  leaveRunning?: boolean;
  shellJob?: boolean;
  prevImagesDir?: string;
  trackTimeout?: number;
  pageServer?: boolean;
  pidfile?: string;
  timeout?: number;
}

/** CRIU's --timeout (seconds to wait for the tree to freeze) as our bound for each ptrace wait. */
function timeoutMs(o: DumpCliOptions): { timeoutMs?: number } {
  return o.timeout !== undefined ? { timeoutMs: o.timeout * 1000 } : {};
}

/** CRIU's cgroup options at dump time: --freeze-cgroup, --manage-cgroups, --cgroup-dump-controller, --cgroup-root, --cgroup-props(-file), --cgroup-yard. */
async function cgroupDumpOptions(): Promise<Pick<import('../../dump/dump.js').DumpOptions, 'freezeCgroup' | 'cgroups'>> {
  const c = criuOptions();
  const custom = c.cgroupProps !== undefined || c.cgroupPropsFile !== undefined;
  const props = custom ? (await import('../../cgroup/props.js')).propsTableFrom(c.cgroupProps, c.cgroupPropsFile) : undefined;
  return {
    ...(c.freezeCgroup !== undefined ? { freezeCgroup: c.freezeCgroup } : {}),
    cgroups: {
      ...(c.manageCgroups ? { mode: c.manageCgroups } : {}), dumpControllers: c.cgroupDumpControllers, roots: c.cgroupRoots,
      ...(props ? { props } : {}), ...(c.cgroupYard !== undefined ? { yard: c.cgroupYard } : {}),
    },
  };
}

export function register(program: Command): void {
  addTlsOptions(program
    .command('dump')
    .description('checkpoint a running process tree into CRIU-format images')
    .requiredOption('-t, --tree <pid>', 'pid of the root of the tree to dump')
    .requiredOption('-D, --images-dir <dir>', 'directory to write the images into')
    .option('-R, --leave-running', 'let the tree run after the dump (default: kill it)')
    .option('--shell-job', 'the tree is a shell job: allow a root outside its session and stdio on a tty or pipe')
    .option('--prev-images-dir <dir>', 'incremental dump on top of this pre-dump (relative paths are relative to --images-dir)')
    .option('--page-server', 'send the pages to a page server at --address/--port (`page-server` on the other side) instead of writing them here')
    .option('--timeout <seconds>', 'give up when the tree does not freeze within this time (CRIU\'s --timeout)', parseSeconds)
    .option('--pidfile <file>', 'accepted for CRIU compatibility (a dump writes no pid file)')
    // --lazy-pages (plugin/pageserver): post-copy migration source.
    .option('--lazy-pages', 'leave lazy memory out of the images and serve it from the frozen tree over TCP until the destination closes')
    .option('--address <addr>', 'page server address for --lazy-pages (listen) or --page-server (connect)', '127.0.0.1')
    .option('--port <port>', 'page server port for --lazy-pages (0: kernel-chosen, printed) or --page-server', parsePort)
    .option('--insecure', 'allow plain TCP on a non-loopback address')
    .option('--reconnect-timeout <seconds>', '--lazy-pages: how long to wait for a disconnected destination', parseSeconds, 60)
    .option('--idle-timeout <seconds>', '--lazy-pages: give up when the destination sent nothing this long', parseSeconds))
    .action(async (o: DumpCliOptions, cmd: Command) => {
      const pid = Number(o.tree);
      if (!/^\d+$/.test(o.tree) || !Number.isSafeInteger(pid) || pid <= 0) throw new UserError(`invalid pid: ${o.tree}`);
      const verbose = cmd.optsWithGlobals<{ verbose?: boolean }>().verbose === true;
      const { dump } = await import('../../dump/index.js');
      if (o.lazyPages && o.port === undefined) throw new UserError('--lazy-pages needs --port');
      if (o.pageServer && (o.port === undefined || o.port === 0)) throw new UserError('--page-server needs --port (the page server\'s)');
      if (o.pageServer && o.lazyPages) throw new UserError('--page-server and --lazy-pages cannot be combined (use page-server --lazy-pages on the destination instead)');
      let pageServer: import('../../pageserver/push.js').PushTarget | undefined;
      if (o.pageServer) {
        const { loadTls } = await import('../../pageserver/transport.js');
        pageServer = {
          address: o.address ?? '127.0.0.1', port: o.port!, insecure: o.insecure === true,
          ...(o.tls ? { tls: loadTls({ cacert: o.tlsCacert, cert: o.tlsCert, key: o.tlsKey }) } : {}),
        };
      }
      let lazyPages: import('../../dump/dump.js').LazyPagesServe | undefined;
      if (o.lazyPages) {
        const { loadTls } = await import('../../pageserver/transport.js');
        const { signalReady } = await import('../global.js');
        lazyPages = {
          address: o.address ?? '127.0.0.1', port: o.port!, insecure: o.insecure === true,
          ...(o.tls ? { tls: loadTls({ cacert: o.tlsCacert, cert: o.tlsCert, key: o.tlsKey }) } : {}),
          ...(o.reconnectTimeout !== undefined ? { reconnectTimeoutMs: o.reconnectTimeout * 1000 } : {}),
          ...(o.idleTimeout !== undefined ? { idleTimeoutMs: o.idleTimeout * 1000 } : {}),
          onListening: (a, p) => {
            printOut(`page-server: listening on ${a}:${p}\n`);
            signalReady();
          },
        };
      }
      const r = await dump({
        ...(lazyPages ? { lazyPages } : {}),
        ...(pageServer ? { pageServer } : {}),
        ...timeoutMs(o),
        ...(o.prevImagesDir !== undefined ? { prevImagesDir: o.prevImagesDir } : {}),
        ...(await cgroupDumpOptions()),
        pid, imagesDir: o.imagesDir, leaveRunning: o.leaveRunning === true, shellJob: o.shellJob === true, fileLocks: criuOptions().fileLocks,
        tcpEstablished: criuOptions().tcpEstablished, extUnixSk: criuOptions().extUnixSk, skipInFlight: criuOptions().skipInFlight, ghostLimit: criuOptions().ghostLimit, linkRemap: criuOptions().linkRemap, fileValidation: criuOptions().fileValidation,
        log: await progressLog(verbose),
      });
      const s = r.stats;
      printOut(
        `dumped ${s.processes} process(es), ${s.threads} thread(s) to ${o.imagesDir}: ${s.pagesWritten} pages written` +
        ` (${s.pagesZero} zero pages skipped${s.pagesSkippedParent ? `, ${s.pagesSkippedParent} unchanged pages left to the parent` : ''})` +
        `${o.pageServer ? ` and sent to the page server ${o.address}:${o.port}` : ''}` +
        ` in ${s.totalMs.toFixed(0)} ms${o.leaveRunning ? ', tree left running' : ', tree killed'}\n`,
      );
    });

  // Incremental dumps (plugin/dump/incremental.ts).
  program
    .command('pre-dump')
    .description('copy memory during a short freeze and track writes (userfaultfd write-protect) for a later incremental dump')
    .requiredOption('-t, --tree <pid>', 'pid of the root of the tree')
    .requiredOption('-D, --images-dir <dir>', 'directory to write the images into')
    .option('--prev-images-dir <dir>', 'previous pre-dump of a chain (relative paths are relative to --images-dir)')
    .option('--shell-job', 'the tree is a shell job: allow a root outside its session and stdio on a tty or pipe')
    .option('--timeout <seconds>', 'give up when the tree does not freeze within this time (CRIU\'s --timeout)', parseSeconds)
    .option('--pidfile <file>', 'accepted for CRIU compatibility (a pre-dump writes no pid file)')
    .option('--track-timeout <seconds>', 'stop tracking if no further dump comes within this time (0: until the tree exits)', parseSeconds, 3600)
    .action(async (o: DumpCliOptions, cmd: Command) => {
      const pid = Number(o.tree);
      if (!/^\d+$/.test(o.tree) || !Number.isSafeInteger(pid) || pid <= 0) throw new UserError(`invalid pid: ${o.tree}`);
      const verbose = cmd.optsWithGlobals<{ verbose?: boolean }>().verbose === true;
      const { preDump } = await import('../../dump/index.js');
      const r = await preDump({
        ...timeoutMs(o),
        ...(o.prevImagesDir !== undefined ? { prevImagesDir: o.prevImagesDir } : {}),
        pid, imagesDir: o.imagesDir, shellJob: o.shellJob === true, trackTimeoutS: o.trackTimeout ?? 3600,
        // The pre-dump plans the tree's files as the dump will (its link-remap names are removed again: the tree runs on).
        ghostLimit: criuOptions().ghostLimit, linkRemap: criuOptions().linkRemap,
        ...(criuOptions().freezeCgroup !== undefined ? { freezeCgroup: criuOptions().freezeCgroup! } : {}),
        log: await progressLog(verbose),
      });
      const s = r.stats;
      printOut(
        `pre-dumped ${s.processes} process(es) to ${o.imagesDir}: ${s.pagesWritten} pages written` +
        `${s.pagesSkippedParent ? `, ${s.pagesSkippedParent} unchanged pages left to the parent` : ''}; frozen ${s.frozenMs.toFixed(1)} ms, writes tracked\n`,
      );
    });
}
