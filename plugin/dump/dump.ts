// dump(): checkpoint a running process tree into CRIU-format images.
// Order: look (from /proc only) and refuse anything we cannot restore
// faithfully → freeze every thread → look again (the tree may have changed)
// → collect state (ptrace, /proc, injected syscalls) → copy memory → write
// images → kill the tree or let it run. Any failure before the end releases
// the tree untouched. The checks and the freeze are in preflight.ts, the
// images (and memory, memory.ts) in write-images.ts; this module orders them.
import { mark } from '../phases.js';
import { ImageDir, KIND } from '../images/index.js';
import { UserError, systemUserError } from '../errors.js';
import { isContainer, openContainer, type ContainerOptions } from './container.js';
import { dumpFdKinds, finishFdKinds, type DumpFdOptions } from './fds/index.js';
import { DEFAULT_GHOST_LIMIT } from './ghost.js';
import { Incremental } from './incremental.js';
import { LinkRemaps } from './link-remap.js';
import type { FileValidation } from '../images/build-id.js';
import { checkDumpOptions, freezeChecked } from './preflight.js';
import { CgroupFreezer } from './cgroup-freezer.js';
import { CgroupCollector, type CgroupDumpOptions } from './cgroups.js';
import { nsId } from './proc.js';
import { clearStaleImages, collectAndWrite, dumpStatsEntry, nowMs, type DumpStats } from './write-images.js';

export { dumpStatsEntry, inRoot, type DumpStats } from './write-images.js';

export interface DumpOptions {
  /** Root of the tree to dump. */
  pid: number;
  imagesDir: string;
  /** Where stats-dump goes: CRIU writes it in its work dir (podman exports it from there); default the images dir. */
  statsDir?: string;
  /** Let the tree run after the dump (default: kill it). */
  leaveRunning?: boolean;
  /** CRIU's --shell-job: the root may be outside its session/group leader, stdio may be a tty. */
  shellJob?: boolean;
  /** CRIU's --ext-unix-sk: unix sockets whose peer is outside the tree are dumped (restored unconnected to it). */
  extUnixSk?: boolean;
  /**
   * CRIU's --tcp-established: dump established TCP connections (TCP_REPAIR;
   * tcp-stream-<ino>.img). Without it a connected TCP socket is refused.
   */
  tcpEstablished?: boolean;
  /** CRIU's --skip-in-flight: connections waiting in a listening socket's accept queue are left out (the peers see them reset). */
  skipInFlight?: boolean;
  /** CRIU's --ghost-limit (bytes, default 1 MiB): largest deleted-but-open file whose contents the dump carries. */
  ghostLimit?: bigint;
  /**
   * CRIU's --link-remap: a file opened or mapped under a deleted name but
   * still linked elsewhere gets a link-remap name next to it for the restore
   * (plugin/dump/link-remap.ts); without it such a file is refused.
   */
  linkRemap?: boolean;
  /**
   * CRIU's --file-validation: how a restore can tell a file changed since
   * the dump. 'buildid' (default, as CRIU): size and, for ELF files, the
   * build-id; 'filesize': the size only.
   */
  fileValidation?: FileValidation;
  /** Bound for every ptrace wait (ms). */
  timeoutMs?: number;
  /**
   * CRIU's --freeze-cgroup (runc's freeze_cgroup): a freezer cgroup holding
   * the tree; it is frozen while every thread in it is seized, so nothing
   * forks or exits meanwhile (plugin/dump/cgroup-freezer.ts).
   */
  freezeCgroup?: string;
  /**
   * cgroup.img and each thread's cg_set (plugin/dump/cgroups.ts): CRIU's
   * --manage-cgroups (ignore: sets only), --cgroup-dump-controller and
   * --cgroup-root at dump time. Always written; these only shape it.
   */
  cgroups?: Omit<CgroupDumpOptions, 'freezerState' | 'log'>;
  /** CRIU's --file-locks: flock, POSIX and OFD locks held by the tree are dumped to filelocks.img (without it a tree holding one is refused). */
  fileLocks?: boolean;
  log?: (line: string) => void;
  /**
   * CRIU's --lazy-pages (post-copy migration, plugin/pageserver): lazy-eligible
   * pages are not written (PE_LAZY-only entries); after the images are
   * written the frozen tree's memory is served by a page server at this
   * address until the destination sends PS_IOV_CLOSE. Then the tree is
   * killed (or released with leaveRunning).
   */
  lazyPages?: LazyPagesServe;
  /**
   * Incremental dumps (plugin/dump/incremental.ts): the previous image
   * directory (relative paths are relative to imagesDir, as in CRIU). Pages
   * not written since it was dumped become PE_PARENT entries.
   */
  prevImagesDir?: string;
  /** CRIU's pre-dump: copy memory, arm write tracking and let the tree run. */
  preDump?: boolean;
  /** How long the write tracker waits for the next dump (s; default 3600, 0 = until the tree exits). */
  trackTimeoutS?: number;
  /** Warnings (e.g. falling back to a full dump); default: stderr. */
  warn?: (line: string) => void;
  /**
   * CRIU's --page-server: send the pagemaps and pages to this page server
   * (plugin/pageserver/push.ts) instead of keeping them in imagesDir. Sent
   * while the tree is still frozen; on failure the tree is released.
   */
  pageServer?: import('../pageserver/push.js').PushTarget;
  /**
   * CRIU's action scripts (the NOTIFY round trips of its RPC mode,
   * plugin/rpc), awaited at CRIU's points. A hook that throws fails the dump;
   * after the freeze the tree is then released, never killed.
   */
  hooks?: DumpHooks;
  /**
   * A root in its own pid/mount namespaces (a container, plugin/dump/container.ts):
   * external mounts and whether its network namespace is restored empty.
   */
  container?: ContainerOptions;
}

export interface DumpHooks {
  /** Before anything is touched (pre-dump). */
  preDump?(): Promise<void>;
  /** Once frozen, when the root has its own network namespace (network-lock). */
  networkLock?(): Promise<void>;
  /** Every image written, the tree still frozen (post-dump). */
  postDump?(): Promise<void>;
  /** After network-lock, when the tree goes on running: a failed dump or leaveRunning (network-unlock). */
  networkUnlock?(): Promise<void>;
}

export interface LazyPagesServe {
  address: string;
  port: number;
  tls?: import('../pageserver/transport.js').TlsMaterial;
  insecure?: boolean;
  reconnectTimeoutMs?: number;
  idleTimeoutMs?: number;
  /** Called once the page server listens (its port, e.g. when 0 was asked). */
  onListening?: (address: string, port: number) => void;
  /** Ends the page server session early (the destination gave up). */
  signal?: AbortSignal;
  /** When the session fails, let the tree run on instead of killing it (migration aborted). */
  releaseOnFailure?: boolean;
}

export interface DumpResult {
  pids: number[];
  stats: DumpStats;
}

/** Checkpoints the tree rooted at opts.pid into opts.imagesDir. */
export async function dump(opts: DumpOptions): Promise<DumpResult> {
  mark('dump start');
  const t0 = nowMs();
  const log = opts.log ?? ((): void => {});
  const timeoutMs = opts.timeoutMs ?? 5000;
  const shellJob = opts.shellJob === true;
  const root = opts.pid;
  await checkDumpOptions(opts);
  // --lazy-pages: the page server's modules load while the tree is dumped (it listens right after).
  const lazySourceModule = opts.lazyPages ? import('../pageserver/lazy-source.js') : undefined;
  lazySourceModule?.catch(() => {});
  const incremental = opts.preDump === true || opts.prevImagesDir !== undefined;
  const dir = await ImageDir.create(opts.imagesDir);
  const hooks = opts.hooks ?? {};
  await hooks.preDump?.();

  const fdOpts: DumpFdOptions = { shellJob, extUnixSk: opts.extUnixSk === true, tcpEstablished: opts.tcpEstablished === true, skipInFlight: opts.skipInFlight === true,
    ghostLimit: opts.ghostLimit ?? DEFAULT_GHOST_LIMIT, ...(opts.linkRemap ? { linkRemaps: new LinkRemaps() } : {}),
    buildIds: opts.fileValidation !== 'filesize' };
  const kinds = dumpFdKinds();
  // 1. Look without touching, 2. freeze, 3. look again at the frozen tree.
  const container = isContainer(root);
  const freezer = opts.freezeCgroup !== undefined ? new CgroupFreezer(opts.freezeCgroup) : undefined;
  const { tree, post } = await freezeChecked(root, kinds, fdOpts, { timeoutMs, container, ...(freezer ? { freezer } : {}), ...(opts.container ? { containerOpts: opts.container } : {}), fileLocks: opts.fileLocks === true });
  mark('frozen, planned');
  const tFrozen = nowMs();
  log(`froze ${tree.processes.length} processes, ${tree.tids.length} threads in ${(tFrozen - t0).toFixed(1)} ms${freezer ? ` (seized in freezer cgroup ${freezer.dir})` : ''}`);

  let stats: DumpStats;
  let inc: Incremental | undefined;
  const lazyRanges: { pid: number; vaddr: bigint; nrPages: bigint; hostPid?: number }[] | undefined = opts.lazyPages ? [] : undefined;
  let netLocked = false;
  try {
    if (hooks.networkLock && nsId(root, 'net') !== nsId(process.pid, 'net')) {
      netLocked = true;
      await hooks.networkLock();
    }
    const frozenPids = tree.processes.map((p) => p.pid);
    const ct = container ? openContainer(root, opts.container ?? {}) : undefined;
    for (const p of post.plans) {
      const f = tree.processes.find((q) => q.pid === p.pid)!;
      p.tids = f.tids;
      if (f.stopSignal !== undefined) p.stopSignal = f.stopSignal;
      if ((p.zombie === true) !== (f.zombie === true)) throw new UserError(`pid ${p.pid}: changed state while the tree was frozen (zombie)`);
    }

    // 4. Collect and write (incremental: only pages written since the parent).
    await clearStaleImages(dir);
    if (incremental) {
      inc = await Incremental.open({
        imagesDir: opts.imagesDir, ...(opts.prevImagesDir !== undefined ? { prevImagesDir: opts.prevImagesDir } : {}),
        preDump: opts.preDump === true, root, trackTimeoutS: opts.trackTimeoutS ?? 3600, log,
        ...(ct ? { imagePid: (h: number) => ct.vpid(h) } : {}),
        warn: opts.warn ?? ((l) => process.stderr.write(`${l}\n`)),
      }, tree.processes.filter((p) => !p.zombie).map((p) => p.pid));
    }
    mark('stale images cleared');
    const cgroups = new CgroupCollector({ ...opts.cgroups, log, ...(freezer ? { freezerState: () => freezer.stateBefore() } : {}) });
    try {
      stats = await collectAndWrite(dir, post.plans, kinds, fdOpts, timeoutMs, log, lazyRanges, inc, ct, opts.container?.externalNet !== undefined, opts.fileLocks === true, cgroups);
    } finally {
      cgroups.close();
    }
    if (inc) await inc.commit();
    if (opts.pageServer) {
      const { pushToPageServer } = await import('../pageserver/push.js');
      const pushed = await pushToPageServer({ ...opts.pageServer, imagesDir: opts.imagesDir, pids: frozenPids });
      log(`sent ${pushed.pagemaps} pagemaps, ${pushed.pages} pages to the page server ${opts.pageServer.address}:${opts.pageServer.port}`);
    }
    await hooks.postDump?.();
  } catch (e) {
    inc?.close();
    fdOpts.linkRemaps?.rollback();
    finishFdKinds(kinds, true);
    tree.release();
    if (netLocked) await hooks.networkUnlock?.().catch(() => {});
    if (e instanceof UserError) throw e;
    throw systemUserError(`pid ${root}`, e);
  }
  const tDone = nowMs();
  mark('images written');

  // 4b. --lazy-pages: serve the lazy memory from the frozen tree until the
  // destination has all of it (plugin/pageserver), then let it go as usual.
  let lazyError: unknown;
  if (opts.lazyPages && lazyRanges) {
    try {
      const { startLazySource } = await lazySourceModule!;
      const l = opts.lazyPages;
      const src = await startLazySource({
        imagesDir: opts.imagesDir, address: l.address, port: l.port, ranges: lazyRanges,
        ...(l.tls ? { tls: l.tls } : {}), insecure: l.insecure === true,
        ...(l.reconnectTimeoutMs !== undefined ? { reconnectTimeoutMs: l.reconnectTimeoutMs } : {}),
        ...(l.idleTimeoutMs !== undefined ? { idleTimeoutMs: l.idleTimeoutMs } : {}),
      });
      log(`serving ${lazyRanges.reduce((n, r) => n + r.nrPages, 0n)} lazy pages on ${src.server.address}:${src.server.port}`);
      l.onListening?.(src.server.address, src.server.port);
      mark('page server listening');
      const abort = (): void => void src.server.close();
      if (l.signal?.aborted) abort();
      l.signal?.addEventListener('abort', abort);
      const served = await src.done.finally(() => l.signal?.removeEventListener('abort', abort));
      log(`page server session closed: ${served.pagesServed} pages served in ${served.gets} GETs`);
    } catch (e) {
      lazyError = e;
    }
  }

  // 5. Let it go.
  // Repaired connections: repair off for a tree that runs on; a killed
  // tree's connections close silently (repair mode sends no FIN/RST).
  if (opts.leaveRunning || opts.preDump || (lazyError !== undefined && opts.lazyPages?.releaseOnFailure)) {
    // A tree that goes on running keeps its files; the link-remap names go (as CRIU's delete_link_remaps).
    fdOpts.linkRemaps?.rollback();
    finishFdKinds(kinds, true);
    tree.release();
    if (netLocked) await hooks.networkUnlock?.().catch(() => {});
  } else {
    tree.kill();
    finishFdKinds(kinds, false);
    fdOpts.linkRemaps?.keep();
  }
  mark('tree killed/released');
  if (lazyError !== undefined) throw lazyError instanceof UserError ? lazyError : systemUserError(`pid ${root}: lazy page server`, lazyError);
  stats.freezeMs = tFrozen - t0;
  stats.frozenMs = tDone - tFrozen;
  stats.totalMs = nowMs() - t0;
  // stats-dump, with every field CRIU 4.2 writes (times in µs); informational
  // only. memwrite_time is 0: pages are written to the images while they are
  // copied (native reader/writer threads), so that time is in memdump_time;
  // irmap_resolve is 0: no inotify watch paths are resolved.
  const us = (ms: number): number => Math.min(0xffffffff, Math.round(ms * 1000));
  const statsDir = opts.statsDir !== undefined && opts.statsDir !== opts.imagesDir ? await ImageDir.open(opts.statsDir) : dir;
  await statsDir.writeImage(KIND.stats, 'dump', [{ dump: dumpStatsEntry(stats, us) }]);
  return { pids: tree.processes.map((p) => p.pid), stats };
}
