// CLI commands of the pageserver area: `page-server` (CRIU's options) and
// `migrate`. Heavy modules are imported inside the actions so
// `lazy-restore --help` stays fast.
import type { Command } from 'commander';
import { ExitCode, UserError } from '../../errors.js';
import type { MigrateSocketOptions } from '../../pageserver/migrate.js';
import { criuOptions } from '../criu-options.js';

/** CRIU's --tcp-established, --ext-unix-sk, --file-locks (accepted anywhere on the line): both halves of a migration get them. */
function migrateSocketOptions(): MigrateSocketOptions {
  const c = criuOptions();
  return { tcpEstablished: c.tcpEstablished, extUnixSk: c.extUnixSk, fileLocks: c.fileLocks };
}

export interface TlsCliOptions {
  tls?: boolean;
  tlsCacert?: string;
  tlsCert?: string;
  tlsKey?: string;
}

export function parsePort(v: string): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0 || n > 65535) throw new UserError(`bad port ${v}`, { exitCode: ExitCode.usage });
  return n;
}

export function parseSeconds(v: string): number {
  const n = Number(v);
  if (!Number.isFinite(n) || n <= 0) throw new UserError(`bad duration ${v} (seconds)`, { exitCode: ExitCode.usage });
  return n;
}

/** Adds --tls, --tls-cacert, --tls-cert, --tls-key (CRIU's names and defaults). */
export function addTlsOptions(cmd: Command): Command {
  return cmd
    .option('--tls', 'use TLS with mutual certificate authentication')
    .option('--tls-cacert <file>', 'CA certificate (default /etc/pki/CA/cacert.pem)')
    .option('--tls-cert <file>', 'this side\'s certificate (default /etc/pki/criu/cert.pem)')
    .option('--tls-key <file>', 'this side\'s private key (default /etc/pki/criu/private/key.pem)');
}

/** Options of a command that fetches pages from a page server (lazy-pages --page-server). */
export interface RemoteCliOptions extends TlsCliOptions {
  pageServer?: boolean;
  address?: string;
  port?: number;
  insecure?: boolean;
  remoteTimeout?: number;
  singleConnection?: boolean;
}

/** Adds --page-server, --address, --port, TLS and timeout options (CRIU's names where they exist). */
export function addRemoteSourceOptions(cmd: Command): Command {
  return addTlsOptions(
    cmd
      .option('--page-server', 'fetch lazy pages from a page server (dump --lazy-pages or page-server --lazy-pages)')
      .option('--address <addr>', 'page server address (with --page-server)')
      .option('--port <port>', 'page server port (with --page-server)', parsePort)
      .option('--insecure', 'allow plain TCP to a non-loopback page server')
      .option('--remote-timeout <seconds>', 'kill the restored tree when the page server is unreachable this long', parseSeconds, 30)
      .option('--single-connection', 'one connection to the page server (for servers that accept only one, like CRIU\'s)'),
  );
}

/** Whether --page-server is given; throws the usage error of a bad --page-server/--address/--port combination. */
export function checkRemoteOptions(o: RemoteCliOptions): boolean {
  if (!o.pageServer) {
    if (o.address !== undefined || o.port !== undefined) throw new UserError('--address/--port need --page-server', { exitCode: ExitCode.usage });
    return false;
  }
  if (o.address === undefined || o.port === undefined) throw new UserError('--page-server needs --address and --port', { exitCode: ExitCode.usage });
  return true;
}

/**
 * Connects the remote page source described by the options, or resolves to
 * undefined without --page-server. Bad option combinations throw at once
 * (before anything is started); the connection itself is the promise.
 */
export function openRemoteFromCli(o: RemoteCliOptions): Promise<import('../../pageserver/remote-source.js').PageServerPageSource | undefined> {
  if (!checkRemoteOptions(o)) return Promise.resolve(undefined);
  const { address, port } = o as RemoteCliOptions & { address: string; port: number };
  return (async () => {
    const { PageServerPageSource } = await import('../../pageserver/remote-source.js');
    const { loadTls } = await import('../../pageserver/transport.js');
    return PageServerPageSource.connect({
      address,
      port,
      insecure: o.insecure === true,
      timeoutMs: (o.remoteTimeout ?? 30) * 1000,
      singleConnection: o.singleConnection === true,
      ...(o.tls ? { tls: loadTls({ cacert: o.tlsCacert, cert: o.tlsCert, key: o.tlsKey }) } : {}),
    });
  })();
}

export function register(program: Command): void {
  addTlsOptions(
    program
      .command('page-server')
      .description('serve pages over TCP: receive a dump pushed with --page-server, or with --lazy-pages serve an image directory to a remote lazy-pages daemon')
      .requiredOption('-D, --images-dir <dir>', 'images directory to write (push) or serve (--lazy-pages)')
      .option('--address <addr>', 'address to bind (only this one)', '127.0.0.1')
      .requiredOption('--port <port>', 'TCP port (0: kernel-chosen, printed on stdout)', parsePort)
      .option('--lazy-pages', 'serve PS_IOV_GET requests from the images (remote lazy restore)')
      .option('--insecure', 'allow plain TCP on a non-loopback address')
      .option('--keep-going', 'lazy mode: serve one session after another until killed')
      .option('--reconnect-timeout <seconds>', 'lazy mode: how long a session waits for a disconnected client', parseSeconds, 60)
      .option('--idle-timeout <seconds>', 'lazy mode: end the session when the client sent nothing for this long (default: never)', parseSeconds)
      .option('--pidfile <file>', 'write this server\'s pid here once it listens (relative paths: in the work dir, like CRIU)')
      .option('-d, --daemon', 'not supported (CRIU\'s daemon mode): run in the background with --status-fd instead'),
  )
    .addHelpText('after', `
Examples:
  lazy-restore page-server -D /srv/img --port 27000                      # receive a pushed dump
  lazy-restore page-server -D img --lazy-pages --address 10.0.0.1 --port 27000 --tls \\
      --tls-cacert ca.pem --tls-cert server.pem --tls-key server.key       # serve lazy pages

A lazy session may use several connections (urgent faults and background
transfer) and survives a dropped connection until --reconnect-timeout.`)
    .action(async (o: { imagesDir: string; address: string; port: number; lazyPages?: boolean; insecure?: boolean; keepGoing?: boolean; reconnectTimeout: number; idleTimeout?: number; pidfile?: string; daemon?: boolean } & TlsCliOptions) => {
      const { signalReady, resolveInWorkDir, writePidfile, refuseDaemon } = await import('../global.js');
      refuseDaemon(o, 'page-server');
      const { PageServer } = await import('../../pageserver/server.js');
      const { loadTls } = await import('../../pageserver/transport.js');
      const pidfile = o.pidfile !== undefined ? resolveInWorkDir(o.pidfile, o.imagesDir) : undefined;
      const ps = await PageServer.start({
        imagesDir: o.imagesDir,
        address: o.address,
        port: o.port,
        lazy: o.lazyPages === true,
        insecure: o.insecure === true,
        keepGoing: o.keepGoing === true,
        reconnectTimeoutMs: o.reconnectTimeout * 1000,
        ...(o.idleTimeout !== undefined ? { idleTimeoutMs: o.idleTimeout * 1000 } : {}),
        ...(o.tls ? { tls: loadTls({ cacert: o.tlsCacert, cert: o.tlsCert, key: o.tlsKey }) } : {}),
      });
      process.stdout.write(`page-server: listening on ${ps.address}:${ps.port}\n`);
      if (pidfile !== undefined) {
        try {
          writePidfile(pidfile, process.pid);
        } catch (e) {
          await ps.close();
          throw e;
        }
      }
      signalReady();
      const stop = (): void => void ps.close();
      process.once('SIGTERM', stop);
      process.once('SIGINT', stop);
      try {
        const s = await ps.done;
        process.stdout.write(
          o.lazyPages
            ? `page-server: served ${s.pagesServed} pages in ${s.gets} GETs\n`
            : `page-server: received ${s.pagesReceived} pages in ${s.pagemapsWritten} pagemaps\n`,
        );
      } finally {
        process.off('SIGTERM', stop);
        process.off('SIGINT', stop);
      }
    });

  addTlsOptions(
    program
      .command('migrate')
      .description('post-copy migration on this machine: dump --lazy-pages here, copy the images, restore in --dest-netns (own pid namespace) while the pages follow')
      .requiredOption('-t, --tree <pid>', 'root of the tree to migrate')
      .requiredOption('-D, --images-dir <dir>', 'source images directory')
      .requiredOption('--to <dir>', 'destination images directory')
      .option('--dest-netns <name>', 'run the destination half in this network namespace')
      .option('--address <addr>', 'source page server address as the destination reaches it', '127.0.0.1')
      .option('--port <port>', 'source page server port (0: kernel-chosen)', parsePort, 0)
      .option('--insecure', 'allow plain TCP on a non-loopback address')
      .option('--no-prefetch', 'pure on-demand: no background push')
      .option('--no-pidns', 'restore without a new pid namespace (the source pids must be free)')
      .option('--shell-job', 'the tree is a shell job')
      .option('--timeout <seconds>', 'kill the restored tree when the source is unreachable this long', parseSeconds, 30),
  ).action(async (o: { tree: string; imagesDir: string; to: string; destNetns?: string; address: string; port: number; insecure?: boolean; prefetch: boolean; pidns: boolean; shellJob?: boolean; timeout: number } & TlsCliOptions) => {
    const pid = Number(o.tree);
    if (!/^\d+$/.test(o.tree) || pid <= 0) throw new UserError(`invalid pid: ${o.tree}`, { exitCode: ExitCode.usage });
    const { migrate, formatReport } = await import('../../pageserver/migrate.js');
    const report = await migrate({
      pid, sourceDir: o.imagesDir, destDir: o.to, address: o.address, port: o.port, insecure: o.insecure === true,
      prefetch: o.prefetch, pidns: o.pidns, shellJob: o.shellJob === true, timeoutSec: o.timeout, sockets: migrateSocketOptions(),
      ...(o.destNetns ? { destNetns: o.destNetns } : {}),
      ...(o.tls ? { tls: { cacert: o.tlsCacert, cert: o.tlsCert, key: o.tlsKey } } : {}),
      log: (l) => process.stderr.write(`${l}\n`),
    });
    process.stdout.write(`${formatReport(report)}\n`);
  });

  addRemoteSourceOptions(
    program
      .command('migrate-receive')
      .description('destination half of a migration: lazy-pages daemon fed by the source page server + restore --lazy-pages, progress on stderr')
      .requiredOption('-D, --images-dir <dir>', 'the copied images')
      .option('--no-prefetch', 'pure on-demand: no background push')
      .option('--no-pidns', 'restore without a new pid namespace')
      .option('--shell-job', 'the tree is a shell job')
      .option('--report-json', 'print the final report as one JSON line on stdout'),
  ).action(async (o: RemoteCliOptions & { imagesDir: string; prefetch: boolean; pidns: boolean; shellJob?: boolean; reportJson?: boolean }) => {
    if (o.address === undefined || o.port === undefined) throw new UserError('migrate-receive needs --address and --port', { exitCode: ExitCode.usage });
    const { migrateReceive, formatProgress, formatReport } = await import('../../pageserver/migrate.js');
    const { loadTls } = await import('../../pageserver/transport.js');
    const tty = process.stderr.isTTY === true;
    const report = await migrateReceive({
      imagesDir: o.imagesDir, address: o.address, port: o.port, insecure: o.insecure === true,
      timeoutMs: (o.remoteTimeout ?? 30) * 1000, prefetch: o.prefetch, pidns: o.pidns, shellJob: o.shellJob === true,
      sockets: migrateSocketOptions(),
      ...(o.tls ? { tls: loadTls({ cacert: o.tlsCacert, cert: o.tlsCert, key: o.tlsKey }) } : {}),
      onProgress: (p) => process.stderr.write(tty ? `\r${formatProgress(p)}\x1b[K` : `migrate: ${formatProgress(p)}\n`),
      log: (l) => process.stderr.write(`${tty ? '\n' : ''}${l}\n`),
    });
    if (tty) process.stderr.write('\n');
    process.stderr.write(`${formatReport(report)}\n`);
    if (o.reportJson) process.stdout.write(`${JSON.stringify(report)}\n`);
  });
}
