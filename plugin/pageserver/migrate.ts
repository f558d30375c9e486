// Post-copy migration pipeline (`lazy-restore migrate`):
//   source:      dump --lazy-pages (images without the lazy memory; the
//                frozen tree's memory served by a page server)
//   copy:        the small metadata images (+ eager pages) to the destination
//   destination: lazy-pages daemon with the page server as remote source,
//                restore --lazy-pages through its socket (own pid namespace),
//                the process runs at once while pages follow; a progress line
//                (pages transferred / total, rate, faults served) and a final
//                report; at the end PS_IOV_CLOSE lets the source kill the
//                frozen tree.
// The destination half (`migrateReceive`) runs where the tree is restored —
// in another network namespace in the tests, on another host in real use —
// as `lazy-restore migrate-receive`, started by `migrate` or by hand.
import { spawn } from 'node:child_process';
import { cpSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { ExitCode, UserError } from '../errors.js';
import { PAGE } from '../images/memory.js';
import { PageServerPageSource } from './remote-source.js';
import { loadTls, type TlsMaterial, type TlsPaths } from './transport.js';

export interface MigrateProgress {
  pagesTransferred: number;
  pagesTotal: number;
  /** Bytes per second over the last interval. */
  rate: number;
  faults: number;
  elapsedMs: number;
}

export interface MigrateReport {
  /** Host pid of the restored root (with a pid namespace: its init). */
  pid: number;
  /** Pids inside the restored tree (as in the images). */
  pids: number[];
  /** Start of the destination half until the tree ran. */
  runningAfterMs: number;
  /** Start of the destination half until every page was in. */
  totalMs: number;
  pagesTotal: number;
  pagesTransferred: number;
  faults: number;
  gets: number;
  reconnects: number;
  killed: number;
  /** Bytes of images copied before the restore (source side only). */
  copiedBytes?: number;
}

export interface MigrateReceiveOptions {
  imagesDir: string;
  address: string;
  port: number;
  tls?: TlsMaterial;
  insecure?: boolean;
  /** Kill the restored tree when the page server is unreachable this long (default 30 s). */
  timeoutMs?: number;
  /** Background push (default true); false = pure on-demand. */
  prefetch?: boolean;
  pidns?: boolean;
  shellJob?: boolean;
  /** CRIU's restore options that must match the dump's (see MigrateSocketOptions). */
  sockets?: MigrateSocketOptions;
  progressIntervalMs?: number;
  onProgress?: (p: MigrateProgress) => void;
  log?: (line: string) => void;
}

/**
 * CRIU's options that both halves need (given to the dump and to the
 * restore): --tcp-established (a client keeps its connection when the
 * destination has the server's address: the dump locks the connection in
 * the source's network namespace, the restore recreates it in the
 * destination's), --ext-unix-sk, --file-locks.
 */
export interface MigrateSocketOptions {
  tcpEstablished?: boolean;
  extUnixSk?: boolean;
  fileLocks?: boolean;
}

/** The same options as migrate-receive arguments. */
export function socketOptionArgs(o: MigrateSocketOptions | undefined): string[] {
  return [
    ...(o?.tcpEstablished ? ['--tcp-established'] : []),
    ...(o?.extUnixSk ? ['--ext-unix-sk'] : []),
    ...(o?.fileLocks ? ['--file-locks'] : []),
  ];
}

/** Destination half: daemon + restore + wait for every page; the restored tree keeps running. */
export async function migrateReceive(opts: MigrateReceiveOptions): Promise<MigrateReport> {
  const t0 = performance.now();
  const log = opts.log ?? ((): void => {});
  const { LazyPagesServer } = await import('../lazy/server.js');
  const { restore } = await import('../restore/index.js');
  const remote = await PageServerPageSource.connect({
    address: opts.address, port: opts.port, insecure: opts.insecure === true, timeoutMs: opts.timeoutMs ?? 30_000,
    ...(opts.tls ? { tls: opts.tls } : {}),
  });
  const socketPath = join(opts.imagesDir, 'lazy-pages.socket');
  let lazy: Awaited<ReturnType<typeof LazyPagesServer.open>>;
  try {
    lazy = await LazyPagesServer.open({ imagesDir: opts.imagesDir, socketPath, remote, prefetch: opts.prefetch !== false });
  } catch (e) {
    remote.destroy();
    throw e;
  }
  const errors: string[] = [];
  lazy.on('error', (ev) => {
    errors.push(ev.message);
    log(`migrate: ${ev.message}`);
  });
  let timer: NodeJS.Timeout | undefined;
  try {
    const tree = await restore({
      imagesDir: opts.imagesDir, lazySocket: socketPath, detached: true,
      pidns: opts.pidns !== false, shellJob: opts.shellJob === true,
      tcpEstablished: opts.sockets?.tcpEstablished === true, extUnixSk: opts.sockets?.extUnixSk === true,
      fileLocks: opts.sockets?.fileLocks === true,
    });
    const runningAfterMs = performance.now() - t0;
    log(`migrate: tree running as pid ${tree.pid} after ${runningAfterMs.toFixed(0)} ms; pages follow`);
    let lastBytes = 0;
    let lastT = performance.now();
    const sample = (): MigrateProgress => {
      const s = lazy.stats();
      const bytes = remote.urgentBytes + remote.backgroundBytes + remote.nativeBytes;
      const now = performance.now();
      const rate = ((bytes - lastBytes) * 1000) / Math.max(1, now - lastT);
      lastBytes = bytes;
      lastT = now;
      return {
        pagesTotal: Number(s.lazyBytes / PAGE),
        pagesTransferred: Number((s.lazyBytes - s.lazyBytesLeft) / PAGE),
        rate, faults: s.faults, elapsedMs: now - t0,
      };
    };
    if (opts.onProgress) {
      const cb = opts.onProgress;
      timer = setInterval(() => cb(sample()), opts.progressIntervalMs ?? 500);
    }
    const stats = await lazy.done();
    clearInterval(timer);
    const final = sample();
    opts.onProgress?.(final);
    await lazy.close();
    try {
      await remote.close();
    } catch (e) {
      remote.destroy();
      log(`migrate: page server: ${e instanceof Error ? e.message : String(e)}`);
    }
    await tree.close();
    const report: MigrateReport = {
      pid: tree.pid, pids: tree.pids, runningAfterMs, totalMs: performance.now() - t0,
      pagesTotal: final.pagesTotal, pagesTransferred: final.pagesTransferred, faults: stats.faults,
      gets: remote.stats.gets + remote.nativeGets, reconnects: remote.stats.reconnects, killed: stats.killed,
    };
    if (stats.killed > 0) {
      throw Object.assign(new UserError(`migration failed: ${errors[0] ?? 'the restored tree was killed'}`, { exitCode: ExitCode.restoredFailed }), { report });
    }
    return report;
  } catch (e) {
    clearInterval(timer);
    await lazy.close();
    remote.destroy();
    throw e;
  }
}

/** One progress line: "pages 1234/5678 (21%), 12.3 MiB/s, 45 faults served, 1.2 s". */
export function formatProgress(p: MigrateProgress): string {
  const pct = p.pagesTotal ? Math.floor((100 * p.pagesTransferred) / p.pagesTotal) : 100;
  return `pages ${p.pagesTransferred}/${p.pagesTotal} (${pct}%), ${(p.rate / 2 ** 20).toFixed(1)} MiB/s, ${p.faults} faults served, ${(p.elapsedMs / 1000).toFixed(1)} s`;
}

export function formatReport(r: MigrateReport): string {
  return [
    `migrated: root pid ${r.pid} (pids ${r.pids.join(', ')} in the images)`,
    `  running after ${r.runningAfterMs.toFixed(0)} ms, all memory in after ${r.totalMs.toFixed(0)} ms`,
    `  pages ${r.pagesTransferred}/${r.pagesTotal}, ${r.faults} faults served, ${r.gets} GETs, ${r.reconnects} reconnects${r.copiedBytes !== undefined ? `, ${r.copiedBytes} bytes of images copied first` : ''}`,
  ].join('\n');
}

export interface MigrateOptions {
  pid: number;
  sourceDir: string;
  destDir: string;
  /** Address the source page server binds, as the destination reaches it. */
  address: string;
  port?: number;
  /** Run the destination half inside this network namespace (`ip netns exec`). */
  destNetns?: string;
  tls?: TlsPaths;
  /** The destination's certificate (defaults to tls.cert/key). */
  destTls?: TlsPaths;
  insecure?: boolean;
  prefetch?: boolean;
  pidns?: boolean;
  timeoutSec?: number;
  shellJob?: boolean;
  /** Passed to the dump and to the destination's restore. */
  sockets?: MigrateSocketOptions;
  /** Receives the destination's progress lines and messages (default: our stderr). */
  onDestLine?: (line: string) => void;
  log?: (line: string) => void;
}

/** Both halves on this machine: dump here, restore in `destNetns` (or here). */
export async function migrate(opts: MigrateOptions): Promise<MigrateReport> {
  const log = opts.log ?? ((): void => {});
  const { dump } = await import('../dump/index.js');
  let onListening!: (port: number) => void;
  const listening = new Promise<number>((r) => (onListening = r));
  const tls = opts.tls ? loadTls(opts.tls) : undefined;
  const abort = new AbortController();
  const dumped = dump({
    pid: opts.pid, imagesDir: opts.sourceDir, shellJob: opts.shellJob === true,
    tcpEstablished: opts.sockets?.tcpEstablished === true, extUnixSk: opts.sockets?.extUnixSk === true,
    fileLocks: opts.sockets?.fileLocks === true,
    lazyPages: {
      address: opts.address, port: opts.port ?? 0, insecure: opts.insecure === true,
      reconnectTimeoutMs: ((opts.timeoutSec ?? 30) + 30) * 1000,
      ...(tls ? { tls } : {}),
      onListening: (_a, p) => onListening(p),
      // A failed migration leaves the source running: the destination copy is dead.
      signal: abort.signal,
      releaseOnFailure: true,
    },
    log,
  });
  const port = await Promise.race([listening, dumped.then(() => {
    throw new UserError('dump ended before its page server listened');
  })]);
  log(`migrate: source dumped, page server on ${opts.address}:${port}`);
  // The small images travel first (on one host: a copy; across hosts: scp/rsync).
  cpSync(opts.sourceDir, opts.destDir, { recursive: true });
  const copiedBytes = readdirSync(opts.destDir).reduce((n, f) => n + statSync(join(opts.destDir, f)).size, 0);
  log(`migrate: copied ${copiedBytes} bytes of images to ${opts.destDir}`);
  const { projectRoot } = await import('../native/addon.js');
  const dt = opts.destTls ?? opts.tls;
  const args = [join(projectRoot, 'bin', 'lazy-restore.js'), 'migrate-receive', '-D', opts.destDir, '--address', opts.address, '--port', String(port),
    '--remote-timeout', String(opts.timeoutSec ?? 30), '--report-json',
    ...(opts.prefetch === false ? ['--no-prefetch'] : []),
    ...(opts.pidns === false ? ['--no-pidns'] : []),
    ...(opts.insecure ? ['--insecure'] : []),
    ...(opts.shellJob ? ['--shell-job'] : []),
    ...socketOptionArgs(opts.sockets),
    ...(dt ? ['--tls', ...(dt.cacert ? ['--tls-cacert', dt.cacert] : []), ...(dt.cert ? ['--tls-cert', dt.cert] : []), ...(dt.key ? ['--tls-key', dt.key] : [])] : []),
  ];
  const argv = opts.destNetns ? ['ip', 'netns', 'exec', opts.destNetns, process.execPath, ...args] : [process.execPath, ...args];
  const onLine = opts.onDestLine;
  const child = spawn(argv[0]!, argv.slice(1), { stdio: ['ignore', 'pipe', onLine ? 'pipe' : 'inherit'] });
  if (onLine) {
    let partial = '';
    child.stderr!.setEncoding('utf8');
    child.stderr!.on('data', (c: string) => {
      partial += c;
      let i: number;
      while ((i = partial.indexOf('\n')) >= 0) {
        onLine(partial.slice(0, i));
        partial = partial.slice(i + 1);
      }
    });
  }
  let out = '';
  child.stdout!.setEncoding('utf8');
  child.stdout!.on('data', (c: string) => (out += c));
  const code = await new Promise<number | null>((r) => child.on('exit', (c) => r(c)));
  const line = out.split('\n').find((l) => l.startsWith('{'));
  const report = line ? (JSON.parse(line) as MigrateReport) : undefined;
  if (code !== 0 || !report) abort.abort();
  // The destination sent CLOSE (or gave up): the source ends too.
  let dumpError: unknown;
  await dumped.catch((e: unknown) => (dumpError = e));
  if (code !== 0 || !report) {
    throw new UserError(`migration failed: the destination exited with status ${code}; the source tree was left running${dumpError instanceof Error ? ` (${dumpError.message})` : ''}`, { exitCode: code === ExitCode.restoredFailed ? ExitCode.restoredFailed : ExitCode.failure });
  }
  if (dumpError !== undefined) log(`migrate: source: ${dumpError instanceof Error ? dumpError.message : String(dumpError)}`);
  return { ...report, copiedBytes };
}
