// dump(): checkpoint a running process tree into CRIU-format images.
// Order: look (from /proc only) and refuse anything we cannot restore
// faithfully → freeze every thread → look again (the tree may have changed)
// → collect state (ptrace, /proc, injected syscalls) → copy memory → write
// images → kill the tree or let it run. Any failure before the end releases
// the tree untouched.
import { PendingWrites } from './pending-writes.js';
import { FileLockTable, fileLockProblems } from './locks.js';
import { closeSync, existsSync, openSync, readFileSync, readlinkSync, statSync } from 'node:fs';
import {
  ChecksumAlgorithm, ImageDir, KIND, PAGE, PAGE_SIZE, PE_LAZY, TASK_ALIVE, TASK_STOPPED, encodeMessage, encodePagemapEntry,
  joinEntries,
  type CoreEntry, type FdinfoEntry, type InventoryEntry, type MmEntry, type PagemapEntry, type PstreeEntry,
  type TaskKobjIdsEntry, type VmaEntry, type DumpStatsEntry,
} from '../images/index.js';
import { readdir, rm, writeFile } from 'node:fs/promises';
import { UserError, isSystemError, systemUserError } from '../errors.js';
import {
  KCMP, Pagemap, ProcMem, dumpPages, scanPages, findVdsoGadget, getSigmask, kcmpSame, peekSiginfo, type DumpRegion,
} from '../inject/index.js';
import { collectProcess, collectThread, readRlimits, type ThreadState } from './collect.js';
import { SeccompCollector } from './seccomp.js';
import { DEFAULT_GHOST_LIMIT } from './ghost.js';
import { FileTable, checkTreeFds, dumpFdKinds, finishFdKinds, planFds, writeFdImages, type DumpFdKind, type DumpFdOptions, type PlannedFd } from './fds/index.js';
import { FrozenTree } from './freeze.js';
import { listChildren, listTasks, nsId, readAuxv, readSmaps, readStat, readStatus, type ProcStat } from './proc.js';
import { planVma, type PlannedVma } from './vmas.js';
import { isZombieState, zombieCore, zombieProblem } from './taskstate.js';
import { ShmemTable } from './shmem.js';
import { Incremental, copyDirty, uptimeMicros } from './incremental.js';
import { containerProblems, isContainer, openContainer, vtid, type Container, type ContainerOptions } from './container.js';


export interface DumpOptions {
  /** Root of the tree to dump. */
  pid: number;
  imagesDir: string;
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
  /** Bound for every ptrace wait (ms). */
  timeoutMs?: number;
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

export interface DumpStats {
  processes: number;
  threads: number;
  /** Pages selected for dumping (present/swapped, COW'd, vDSO). */
  pagesScanned: number;
  /** Of those, all-zero pages skipped. */
  pagesZero: number;
  pagesWritten: number;
  pagesLazy: number;
  /** Unchanged pages left to the parent images (PE_PARENT). */
  pagesSkippedParent: number;
  /** Pages of shared memory objects (their sizes) and of those, the data pages written (pagemap-shmem). */
  shpagesScanned: number;
  shpagesWritten: number;
  /** Processes whose memory was copied (CRIU's page_pipes: one page pipe per process). */
  pagePipes: number;
  /** Runs of pages copied with their data (CRIU's page_pipe_bufs: the pipe buffers holding them). */
  pagePipeBufs: number;
  freezeMs: number;
  frozenMs: number;
  memdumpMs: number;
  totalMs: number;
}

export interface DumpResult {
  pids: number[];
  stats: DumpStats;
}

const NAMESPACES = ['pid', 'net', 'ipc', 'uts', 'mnt', 'user', 'cgroup', 'time'] as const;
const AUXV_MAX_WORDS = 44; // CRIU rejects more on x86-64

interface ProcPlan {
  pid: number;
  stat: ProcStat;
  /** A zombie (TASK_DEAD): only its pstree entry and core are written. */
  zombie?: boolean;
  /** A stopped process (TASK_STOPPED): the signal that stopped it. */
  stopSignal?: number;
  tids: number[];
  vmas: PlannedVma[];
  fds: PlannedFd[];
  exe: string;
  cwd: string;
  root: string;
}

function nowMs(): number {
  return Number(process.hrtime.bigint() / 1000n) / 1000;
}

/** Walks the tree from /proc without touching it. */
function discover(root: number): number[] {
  const out: number[] = [];
  const walk = (p: number): void => {
    out.push(p);
    for (const c of listChildren(p)) walk(c);
  };
  walk(root);
  return out;
}

function readLink(path: string): string | undefined {
  try {
    return readlinkSync(path);
  } catch {
    return undefined;
  }
}

/**
 * A process group led by a live process outside the tree (and not the
 * root's own with --shell-job). A group whose leader is gone is not: restore
 * recreates it with a helper, as CRIU does (plugin/restore/pgrp.ts).
 */
function foreignGroup(pgid: number, inTree: ReadonlySet<number>, shellJob: boolean | undefined, root: number): boolean {
  if (inTree.has(pgid)) return false;
  if (shellJob && pgid === readStat(root).pgid) return false;
  return existsSync(`/proc/${pgid}`);
}

/**
 * Everything we can check from /proc. Returns per-process plans and the
 * problems found (each names pid, fd or VMA). `pids` parents first.
 */
function plan(pids: readonly number[], kinds: readonly DumpFdKind[], fdOpts: DumpFdOptions, frozen = false): { plans: ProcPlan[]; problems: string[] } {
  const shellJob = fdOpts.shellJob;
  const problems: string[] = [];
  const plans: ProcPlan[] = [];
  const root = pids[0]!;
  const inTree = new Set(pids);
  const rootNs = new Map(NAMESPACES.map((n) => [n, nsId(root, n)]));
  for (const pid of pids) {
    let stat: ProcStat;
    let status: Map<string, string>;
    try {
      stat = readStat(pid);
      status = readStatus(pid);
    } catch {
      problems.push(`pid ${pid}: no such process (ESRCH)`);
      continue;
    }
    if (pid !== root) {
      if (!inTree.has(stat.sid) && !(shellJob && stat.sid === readStat(root).sid)) problems.push(`pid ${pid}: session ${stat.sid} is outside the tree`);
    }
    if (isZombieState(stat.state)) {
      // A zombie (plugin/dump/taskstate.ts): only its exit status is kept.
      const z = zombieProblem(pid, stat, pid === root);
      if (z) problems.push(z);
      else if (foreignGroup(stat.pgid, inTree, shellJob, root)) problems.push(`pid ${pid}: process group ${stat.pgid} is outside the tree; use --shell-job`);
      else plans.push({ pid, stat, zombie: true, tids: [pid], vmas: [], fds: [], exe: '', cwd: '', root: '' });
      continue;
    }
    const tracer = Number(status.get('TracerPid') ?? '0');
    if (tracer !== 0 && !(frozen && tracer === process.pid)) { problems.push(`pid ${pid}: already traced by pid ${tracer} (EPERM)`); continue; }
    if (stat.state === 't' && !frozen) problems.push(`pid ${pid}: in a tracing stop (not supported)`);
    const tids = listTasks(pid);
    for (const t of tids) {
      try {
        const s = readStat(pid, t).state;
        if (s === 'Z' || s === 'X') problems.push(`pid ${pid}: thread ${t} is a zombie (not supported)`);
      } catch { /* exited meanwhile */ }
    }
    for (const n of NAMESPACES) {
      if (nsId(pid, n) !== rootNs.get(n)) problems.push(`pid ${pid}: ${n} namespace differs from the root's (not supported)`);
    }
    if (pid === root && !shellJob && stat.sid !== pid) {
      problems.push(`pid ${pid}: not a session leader (session ${stat.sid}); use --shell-job`);
    }
    if (foreignGroup(stat.pgid, inTree, shellJob, root)) problems.push(`pid ${pid}: process group ${stat.pgid} is outside the tree; use --shell-job`);
    const vmas: PlannedVma[] = [];
    for (const v of readSmaps(pid)) {
      const p = planVma(pid, v, fdOpts.ghostLimit);
      if (typeof p === 'string') problems.push(p);
      else vmas.push(p);
    }
    const f = planFds(kinds, pid, fdOpts, { sid: stat.sid, pgid: stat.pgid });
    problems.push(...f.problems);
    const exe = readLink(`/proc/${pid}/exe`) ?? '';
    const cwd = readLink(`/proc/${pid}/cwd`) ?? '';
    const rootDir = readLink(`/proc/${pid}/root`) ?? '';
    if (!exe.startsWith('/') || exe.endsWith(' (deleted)')) problems.push(`pid ${pid}: executable ${exe || '?'} is not reachable (deleted?)`);
    if (!cwd.startsWith('/') || cwd.endsWith(' (deleted)')) problems.push(`pid ${pid}: working directory ${cwd || '?'} is not reachable (deleted?)`);
    if (rootDir !== '/') problems.push(`pid ${pid}: chroot (${rootDir}) is not supported`);
    plans.push({ pid, stat, tids, vmas, fds: f.fds, exe, cwd, root: rootDir });
  }
  problems.push(...checkTreeFds(kinds, plans.flatMap((p) => p.fds), plans.map((p) => p.pid), fdOpts));
  // Resources shared between processes (not threads) we cannot recreate.
  for (let i = 0; i < plans.length; i++) {
    if (plans[i]!.zombie) continue;
    for (let j = i + 1; j < plans.length; j++) {
      if (plans[j]!.zombie) continue;
      const a = plans[i]!.pid;
      const b = plans[j]!.pid;
      try {
        if (kcmpSame(a, b, KCMP.VM)) problems.push(`pids ${a} and ${b} share their memory (CLONE_VM): not supported`);
        if (kcmpSame(a, b, KCMP.FILES)) problems.push(`pids ${a} and ${b} share their fd table (CLONE_FILES): not supported`);
        if (kcmpSame(a, b, KCMP.SIGHAND)) problems.push(`pids ${a} and ${b} share signal handlers (CLONE_SIGHAND): not supported`);
        if (kcmpSame(a, b, KCMP.FS)) problems.push(`pids ${a} and ${b} share cwd/root (CLONE_FS): not supported`);
      } catch { /* one of them is gone: the frozen pass reports it */ }
    }
  }
  return { plans, problems };
}

/** A path as process `pid` sees it, reached from here (its mount namespace and root). */
export function inRoot(pid: number, path: string): string {
  return `/proc/${pid}/root${path}`;
}

/** A short, growing pause before looking at a changing tree again. */
function pause(attempt: number): Promise<void> {
  return new Promise((r) => setTimeout(r, 10 * attempt));
}

function refuse(problems: string[]): UserError {
  const shown = problems.slice(0, 5).join('; ');
  return new UserError(`cannot dump: ${shown}${problems.length > 5 ? `; and ${problems.length - 5} more` : ''}`);
}

function lsmType(): number {
  if (existsSync('/sys/kernel/security/apparmor')) return 2;
  if (existsSync('/sys/fs/selinux/enforce')) return 1;
  return 0;
}

/** Checkpoints the tree rooted at opts.pid into opts.imagesDir. */
export async function dump(opts: DumpOptions): Promise<DumpResult> {
  const t0 = nowMs();
  const log = opts.log ?? ((): void => {});
  const timeoutMs = opts.timeoutMs ?? 5000;
  const shellJob = opts.shellJob === true;
  const root = opts.pid;
  if (!Number.isSafeInteger(root) || root <= 0) throw new UserError(`invalid pid ${String(root)}`);
  if (root === process.pid) throw new UserError(`pid ${root}: cannot dump the dumping process itself`);
  if (!existsSync(`/proc/${root}`)) throw new UserError(`pid ${root}: no such process (ESRCH)`);
  const incremental = opts.preDump === true || opts.prevImagesDir !== undefined;
  if (incremental && opts.lazyPages) throw new UserError('--lazy-pages cannot be combined with pre-dump or --prev-images-dir');
  if (opts.lazyPages) {
    // Refuse a bad page-server address before the tree is touched.
    const { checkAddressPolicy, resolveAddress } = await import('../pageserver/transport.js');
    const l = opts.lazyPages;
    checkAddressPolicy(await resolveAddress(l.address), l.address, { tls: l.tls !== undefined, insecure: l.insecure === true });
  }
  if (opts.pageServer) {
    if (opts.lazyPages || opts.preDump) throw new UserError('--page-server cannot be combined with --lazy-pages or pre-dump');
    const { checkPushAddress } = await import('../pageserver/push.js');
    await checkPushAddress(opts.pageServer);
  }
  const dir = await ImageDir.create(opts.imagesDir);
  const hooks = opts.hooks ?? {};
  await hooks.preDump?.();

  const fdOpts: DumpFdOptions = { shellJob, extUnixSk: opts.extUnixSk === true, tcpEstablished: opts.tcpEstablished === true, skipInFlight: opts.skipInFlight === true,
    ghostLimit: opts.ghostLimit ?? DEFAULT_GHOST_LIMIT };
  const kinds = dumpFdKinds();
  // 1. Look without touching, 2. freeze, 3. look again at the frozen tree.
  // A child that exits meanwhile (a shell loop's short-lived commands) is
  // a zombie or gone for a moment (its exe and cwd links unreadable while it
  // exits): start over, a few times, before refusing.
  const container = isContainer(root);
  const transient = (problems: string[]): boolean => problems.length > 0
    && problems.every((p) => !p.startsWith(`pid ${root}:`) && /no such process|zombie|(executable|working directory) \? is not reachable/.test(p));
  let tree: FrozenTree;
  let post: ReturnType<typeof plan>;
  for (let attempt = 1; ; attempt++) {
    const again = attempt < 8;
    let pids: number[];
    try {
      pids = discover(root);
    } catch {
      if (again && existsSync(`/proc/${root}`)) { await pause(attempt); continue; }
      throw new UserError(`pid ${root}: no such process (ESRCH)`);
    }
    const pre = plan(pids, kinds, fdOpts);
    if (container) pre.problems.push(...containerProblems(root, opts.container ?? {}));
    if (pre.problems.length) {
      if (again && transient(pre.problems)) { await pause(attempt); continue; }
      throw refuse(pre.problems);
    }
    tree = new FrozenTree(root, timeoutMs);
    try {
      tree.freeze();
    } catch (e) {
      if (isSystemError(e) && e.code === 'ESRCH') {
        if (again && existsSync(`/proc/${root}`)) { await pause(attempt); continue; }
        throw new UserError(`pid ${root}: no such process (ESRCH)`, { cause: e });
      }
      throw systemUserError(`pid ${root}`, e);
    }
    post = plan(tree.processes.map((p) => p.pid), kinds, fdOpts, true);
    for (const p of tree.processes) post.problems.push(...fileLockProblems(p.pid, opts.fileLocks === true));
    if (container) post.problems.push(...containerProblems(root, opts.container ?? {}));
    if (post.problems.length) {
      tree.release();
      if (again && transient(post.problems)) { await pause(attempt); continue; }
      throw refuse(post.problems);
    }
    break;
  }
  const tFrozen = nowMs();
  log(`froze ${tree.processes.length} processes, ${tree.tids.length} threads in ${(tFrozen - t0).toFixed(1)} ms`);

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
    stats = await collectAndWrite(dir, post.plans, kinds, fdOpts, timeoutMs, log, lazyRanges, inc, ct, opts.container?.externalNet !== undefined, opts.fileLocks === true);
    if (inc) await inc.commit();
    if (opts.pageServer) {
      const { pushToPageServer } = await import('../pageserver/push.js');
      const pushed = await pushToPageServer({ ...opts.pageServer, imagesDir: opts.imagesDir, pids: frozenPids });
      log(`sent ${pushed.pagemaps} pagemaps, ${pushed.pages} pages to the page server ${opts.pageServer.address}:${opts.pageServer.port}`);
    }
    await hooks.postDump?.();
  } catch (e) {
    inc?.close();
    finishFdKinds(kinds, true);
    tree.release();
    if (netLocked) await hooks.networkUnlock?.().catch(() => {});
    if (e instanceof UserError) throw e;
    throw systemUserError(`pid ${root}`, e);
  }
  const tDone = nowMs();

  // 4b. --lazy-pages: serve the lazy memory from the frozen tree until the
  // destination has all of it (plugin/pageserver), then let it go as usual.
  let lazyError: unknown;
  if (opts.lazyPages && lazyRanges) {
    try {
      const { startLazySource } = await import('../pageserver/lazy-source.js');
      const l = opts.lazyPages;
      const src = await startLazySource({
        imagesDir: opts.imagesDir, address: l.address, port: l.port, ranges: lazyRanges,
        ...(l.tls ? { tls: l.tls } : {}), insecure: l.insecure === true,
        ...(l.reconnectTimeoutMs !== undefined ? { reconnectTimeoutMs: l.reconnectTimeoutMs } : {}),
        ...(l.idleTimeoutMs !== undefined ? { idleTimeoutMs: l.idleTimeoutMs } : {}),
      });
      log(`serving ${lazyRanges.reduce((n, r) => n + r.nrPages, 0n)} lazy pages on ${src.server.address}:${src.server.port}`);
      l.onListening?.(src.server.address, src.server.port);
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
    finishFdKinds(kinds, true);
    tree.release();
    if (netLocked) await hooks.networkUnlock?.().catch(() => {});
  } else {
    tree.kill();
    finishFdKinds(kinds, false);
  }
  if (lazyError !== undefined) throw lazyError instanceof UserError ? lazyError : systemUserError(`pid ${root}: lazy page server`, lazyError);
  stats.freezeMs = tFrozen - t0;
  stats.frozenMs = tDone - tFrozen;
  stats.totalMs = nowMs() - t0;
  // stats-dump, with every field CRIU 4.2 writes (times in µs); informational
  // only. memwrite_time is 0: pages are written to the images while they are
  // copied (native reader/writer threads), so that time is in memdump_time;
  // irmap_resolve is 0: no inotify watch paths are resolved.
  const us = (ms: number): number => Math.min(0xffffffff, Math.round(ms * 1000));
  await dir.writeImage(KIND.stats, 'dump', [{ dump: dumpStatsEntry(stats, us) }]);
  return { pids: tree.processes.map((p) => p.pid), stats };
}

/** The stats-dump entry (CRIU's DumpStatsEntry) of a dump's statistics. */
export function dumpStatsEntry(stats: DumpStats, us: (ms: number) => number): DumpStatsEntry {
  return {
    freezing_time: us(stats.freezeMs), frozen_time: us(stats.frozenMs), memdump_time: us(stats.memdumpMs),
    memwrite_time: 0, pages_scanned: BigInt(stats.pagesScanned), pages_skipped_parent: BigInt(stats.pagesSkippedParent),
    pages_written: BigInt(stats.pagesWritten), irmap_resolve: 0, pages_lazy: BigInt(stats.pagesLazy),
    page_pipes: BigInt(stats.pagePipes), page_pipe_bufs: BigInt(stats.pagePipeBufs),
    shpages_scanned: BigInt(stats.shpagesScanned), shpages_skipped_parent: 0n, shpages_written: BigInt(stats.shpagesWritten),
  };
}

/** 64 KiB: a lazily served chunk is verified in a few microseconds. */
const CHECKSUM_CHUNK = 64 * 1024;

// Images a dump writes (and checksums of its pages files): stale copies
// from an earlier dump into the same directory would be read as part of
// this one, so they go before anything is written. Other files (a recorded
// working set, which is only a prefetch hint, or the user's) stay.
const OWN_IMAGES = /^(inventory\.img|pstree\.img|files\.img|seccomp\.img|tty-info\.img|memfd\.img|pipes-data\.img|fifo-data\.img|sk-queues\.img|filelocks\.img|stats-dump|(core|ids|mm|fs|pagemap|pages|fdinfo|lr-checksums|pagemap-shmem)-\d+\.img|tcp-stream-[0-9a-f]+\.img)$/;

async function clearStaleImages(dir: ImageDir): Promise<void> {
  for (const name of await readdir(dir.dir)) if (OWN_IMAGES.test(name)) await rm(dir.path(name), { force: true });
}

async function collectAndWrite(dir: ImageDir, plans: ProcPlan[], kinds: readonly DumpFdKind[], fdOpts: DumpFdOptions, timeoutMs: number, log: (l: string) => void,
  lazyRanges?: { pid: number; vaddr: bigint; nrPages: bigint; hostPid?: number }[], inc?: Incremental, ct?: Container, extNet = false, fileLocks = false): Promise<DumpStats> {
  const dumpUptime = uptimeMicros();
  const stats: DumpStats = {
    processes: plans.length, threads: 0, pagesScanned: 0, pagesZero: 0, pagesWritten: 0, pagesLazy: 0, pagesSkippedParent: 0,
    shpagesScanned: 0, shpagesWritten: 0, pagePipes: 0, pagePipeBufs: 0, freezeMs: 0, frozenMs: 0, memdumpMs: 0, totalMs: 0,
  };
  const files = new FileTable(kinds, plans.flatMap((p) => p.fds), plans.map((p) => p.pid), fdOpts, log);
  const shmem = new ShmemTable((make) => files.addEntry(make));
  const locks = fileLocks ? new FileLockTable() : undefined;
  files.memfdEntry = (ref, id, flags, pos) => shmem.fdEntry(ref, id, flags, pos);
  const root = plans[0]!;
  let nextId = 1;
  const rootIds: TaskKobjIdsEntry = { vm_id: nextId++, files_id: nextId++, fs_id: nextId++, sighand_id: nextId++ };
  const nsIds = {
    pid_ns_id: nsId(root.pid, 'pid'), net_ns_id: nsId(root.pid, 'net'), ipc_ns_id: nsId(root.pid, 'ipc'),
    uts_ns_id: nsId(root.pid, 'uts'), mnt_ns_id: nsId(root.pid, 'mnt'), user_ns_id: nsId(root.pid, 'user'),
    cgroup_ns_id: nsId(root.pid, 'cgroup'), time_ns_id: nsId(root.pid, 'time'),
  };
  // CRIU's root_ids are the dumper's own: a restore creates the namespaces
  // in which the root differs. Outside a container we keep the root's (its
  // namespaces are the restorer's, as before).
  Object.assign(rootIds, ct ? {
    // An external network namespace is not restored: the root keeps "ours".
    pid_ns_id: nsId('self', 'pid'), net_ns_id: extNet ? nsIds.net_ns_id : nsId('self', 'net'), ipc_ns_id: nsId('self', 'ipc'),
    uts_ns_id: nsId('self', 'uts'), mnt_ns_id: nsId('self', 'mnt'), user_ns_id: nsId('self', 'user'),
    cgroup_ns_id: nsId('self', 'cgroup'), time_ns_id: nsId('self', 'time'),
  } : nsIds);
  // Pids as the tree sees itself (a container's own pid namespace).
  const vpid = (host: number): number => (ct ? ct.vpid(host) : host);

  const pstree: PstreeEntry[] = [];
  const writes = new PendingWrites();
  const seccomp = new SeccompCollector();
  let pagesId = 0;
  for (const p of plans) {
    const pid = p.pid;
    if (p.zombie) {
      // TASK_DEAD: the pstree entry and a core with the exit status, as CRIU.
      const vz = vpid(pid);
      const vs = ct ? ct.vsid(pid) : { sid: p.stat.sid, pgid: p.stat.pgid };
      pstree.push({ pid: vz, ppid: vpid(p.stat.ppid), pgid: vs.pgid, sid: vs.sid, threads: [vz] });
      writes.push(dir.writeCore(vz, zombieCore(p.stat)));
      log(`pid ${pid}: zombie, exit status 0x${p.stat.exitCode.toString(16)}`);
      continue;
    }
    const opts = { gadget: findVdsoGadget(pid), timeoutMs };
    // Registers and signal state first: the injections below restore them
    // exactly, but reading them untouched is the simplest guarantee.
    const threads: ThreadState[] = p.tids.map((t) => collectThread(pid, t, opts));
    seccomp.addProcess(pid, threads.map((t) => ({ tid: t.tid, core: t.core.thread_core! })));
    stats.threads += threads.length;
    const ps = collectProcess(pid, opts);
    const sharedPending = peekSiginfo(pid, true).map((siginfo) => ({ siginfo }));
    const status = readStatus(pid);

    // Files: VMAs, exe, cwd, root, fds.
    const vmas: VmaEntry[] = p.vmas.map((v) => {
      if (v.shmem) return { ...v.entry, shmid: BigInt(shmem.mappingFile(v.shmem)) };
      if (!v.file) return v.entry;
      if (v.file.ghost) return { ...v.entry, shmid: BigInt(files.ghostPathFile(v.file.path, v.file.fdflags, v.file.ghost.st, v.file.ghost.source)) };
      const st = statSync(inRoot(pid, v.file.path), { bigint: true });
      return { ...v.entry, shmid: BigInt(files.pathFile(v.file.path, v.file.fdflags, st)) };
    });
    const exeId = files.pathFile(p.exe, 0, statSync(inRoot(pid, p.exe), { bigint: true }));
    const cwdId = files.pathFile(p.cwd, 0, statSync(inRoot(pid, p.cwd), { bigint: true }));
    const rootId = files.pathFile(p.root, 0, statSync(inRoot(pid, p.root), { bigint: true }));
    const fdinfo: FdinfoEntry[] = files.addFds(pid, p.fds, Number((status.get('Uid') ?? '0').split(/\s+/)[0]));
    locks?.add(vpid(pid), p.fds.map((f, i) => ({ fd: f.fd, id: fdinfo[i]!.id, fdinfo: f.fdinfo })));

    const ids: TaskKobjIdsEntry = { vm_id: nextId++, files_id: nextId++, fs_id: nextId++, sighand_id: nextId++, ...nsIds };
    let auxv = readAuxv(pid);
    if (auxv.length > AUXV_MAX_WORDS) auxv = auxv.slice(0, AUXV_MAX_WORDS); // drops AT_NULL first; the kernel re-adds it
    const s = p.stat;
    const mm: MmEntry = {
      mm_start_code: s.startCode, mm_end_code: s.endCode, mm_start_data: s.startData, mm_end_data: s.endData,
      mm_start_stack: s.startStack, mm_start_brk: s.startBrk, mm_brk: ps.brk, mm_arg_start: s.argStart,
      mm_arg_end: s.argEnd, mm_env_start: s.envStart, mm_env_end: s.envEnd, exe_file_id: exeId,
      mm_saved_auxv: auxv, vmas, dumpable: ps.dumpable, aios: [], thp_disabled: ps.thpDisabled,
    };

    const leader = threads[0]!;
    const rl = readRlimits(pid);
    const personality = parseInt(readFileSync(`/proc/${pid}/personality`, 'utf8').trim(), 16);
    const leaderCore: CoreEntry = {
      ...leader.core,
      tc: {
        task_state: p.stopSignal !== undefined ? TASK_STOPPED : TASK_ALIVE, exit_code: 0, personality, flags: s.flags, blk_sigset: getSigmask(pid), comm: s.comm,
        timers: { ...ps.itimers, posix: ps.posixTimers }, rlimits: { rlimits: rl }, signals_s: { signals: sharedPending },
        loginuid: Number(readFileSync(`/proc/${pid}/loginuid`, 'utf8').trim()),
        oom_score_adj: Number(readFileSync(`/proc/${pid}/oom_score_adj`, 'utf8').trim()),
        sigactions: ps.sigactions, child_subreaper: ps.childSubreaper,
        ...(p.stopSignal !== undefined ? { stop_signo: p.stopSignal } : {}),
      },
    };

    // Memory, streamed straight into pages-<id>.img.
    pagesId++;
    const tm = nowMs();
    const regions: DumpRegion[] = [];
    const regionPlan: PlannedVma[] = [];
    for (const v of p.vmas) {
      if (v.mode === undefined) continue;
      regions.push({ start: v.entry.start, nPages: Number((v.entry.end - v.entry.start) / PAGE), mode: v.mode });
      regionPlan.push(v);
    }
    const mem = new ProcMem(pid);
    const pm = new Pagemap(pid);
    const pagesFd = openSync(dir.pagesPath(pagesId), 'w');
    let runs;
    let parentEntries: PagemapEntry[] = [];
    /** The pages file's checksums when the copier computed them (it wrote the whole file). */
    let sums: { checksums: Uint32Array; bytes: number } | undefined;
    try {
      if (lazyRanges) {
        // --lazy-pages: lazy-eligible regions are only looked up in the
        // pagemap (which pages hold data); the page server reads them later
        // from the frozen tree, so the time before it listens does not grow
        // with the memory (as CRIU: its lazy pages are not read at dump time).
        const eager = regions.map((g, i) => ({ g, i })).filter(({ i }) => !(regionPlan[i]!.peFlags & PE_LAZY));
        const lazy = regions.map((g, i) => ({ g, i })).filter(({ i }) => (regionPlan[i]!.peFlags & PE_LAZY) !== 0);
        const r = dumpPages(mem, pm, pagesFd, 0n, eager.map((x) => x.g));
        const l = scanPages(pid, pm, lazy.map((x) => x.g));
        runs = [
          ...r.runs.map((x) => ({ ...x, region: eager[x.region]!.i, lazyOnly: false })),
          ...l.runs.map((x) => ({ ...x, region: lazy[x.region]!.i, lazyOnly: true })),
        ].sort((a, b) => (a.vaddr < b.vaddr ? -1 : a.vaddr > b.vaddr ? 1 : 0));
        const imagePid = ct ? ct.vpid(pid) : pid;
        for (const x of runs) if (x.lazyOnly) lazyRanges.push({ pid: imagePid, vaddr: x.vaddr, nrPages: BigInt(x.nPages), ...(imagePid !== pid ? { hostPid: pid } : {}) });
        stats.pagesScanned += r.scanned + l.scanned;
        stats.pagesZero += r.zero + l.zero;
        stats.pagesWritten += r.bytes / PAGE_SIZE;
      } else if (inc) {
        const mp = await inc.planMemory(pid, regions, opts);
        const r = copyDirty(pid, pagesFd, mp, (g, off) => dumpPages(mem, pm, pagesFd, off, g), (addr, into) => { mem.read(addr, PAGE_SIZE, into); });
        runs = r.runs.map((x) => ({ ...x, lazyOnly: false }));
        parentEntries = mp.parent;
        stats.pagesScanned += r.scanned;
        stats.pagesZero += r.zero;
        stats.pagesWritten += r.bytes / PAGE_SIZE;
      } else {
        const r = dumpPages(mem, pm, pagesFd, 0n, regions, CHECKSUM_CHUNK);
        if (r.checksums) sums = { checksums: r.checksums, bytes: r.bytes };
        runs = r.runs.map((x) => ({ ...x, lazyOnly: false }));
        stats.pagesScanned += r.scanned;
        stats.pagesZero += r.zero;
        stats.pagesWritten += r.bytes / PAGE_SIZE;
      }
    } finally {
      closeSync(pagesFd);
      pm.close();
      mem.close();
    }
    stats.memdumpMs += nowMs() - tm;
    stats.pagePipes += 1;
    stats.pagePipeBufs += runs.filter((r) => !r.lazyOnly).length;
    const entries: PagemapEntry[] = runs.map((r) => {
      const flags = r.lazyOnly ? PE_LAZY : regionPlan[r.region]!.peFlags;
      if (flags & PE_LAZY) stats.pagesLazy += r.nPages;
      return { vaddr: r.vaddr, compat_nr_pages: r.nPages, flags, nr_pages: BigInt(r.nPages) };
    });
    // lr-checksums-<id>.img: CRC32C per 64 KiB chunk, checked at restore (plugin/integrity);
    // computed while copying when one call wrote the whole file, else read back.
    writes.push(sums
      ? dir.writeChecksums({ pages_id: pagesId, chunk_size: CHECKSUM_CHUNK, algorithm: ChecksumAlgorithm.CRC32C, file_size: BigInt(sums.bytes), checksums: Array.from(sums.checksums) })
      : dir.checksumPages(pagesId, CHECKSUM_CHUNK));
    if (parentEntries.length) {
      entries.push(...parentEntries);
      entries.sort((a, b) => (a.vaddr < b.vaddr ? -1 : a.vaddr > b.vaddr ? 1 : 0));
    }
    const pagemap = joinEntries(KIND.pagemap, [
      { payload: encodeMessage('pagemap_head', { pages_id: pagesId }) },
      ...entries.map((e) => ({ payload: encodePagemapEntry(e) })),
    ]);

    const vs = ct ? ct.vsid(pid) : { sid: s.sid, pgid: s.pgid };
    const vtids = ct ? p.tids.map((t) => vtid(pid, t)) : p.tids;
    const vp = vpid(pid);
    pstree.push({ pid: vp, ppid: pid === root.pid ? 0 : vpid(s.ppid), pgid: vs.pgid, sid: vs.sid, threads: vtids });
    writes.push(
      writeFile(dir.pathOf(KIND.pagemap, vp), pagemap),
      dir.writeCore(vp, leaderCore),
      ...threads.slice(1).map((t, i) => dir.writeCore(vtids[i + 1]!, t.core)),
      dir.writeIds(vp, ids),
      dir.writeMm(vp, mm),
      dir.writeFs(vp, { cwd_id: cwdId, root_id: rootId, umask: parseInt(status.get('Umask') ?? '22', 8) }),
    );
    if (fdinfo.length) writes.push(dir.writeFdinfo(ids.files_id, fdinfo));
    log(`pid ${pid}: ${threads.length} threads, ${vmas.length} VMAs, ${fdinfo.length} fds, ${entries.length} pagemap entries`);
  }
  // Shared memory objects: contents once per object, after every process is known.
  const sh = await shmem.write(dir, () => ++pagesId);
  for (const id of sh.pagesIds) writes.push(dir.checksumPages(id, CHECKSUM_CHUNK));
  stats.shpagesScanned = sh.stats.scanned;
  stats.shpagesWritten = sh.stats.written;
  if (shmem.size) log(`${shmem.size} shared memory objects, ${sh.stats.written} pages written`);
  const inventory: InventoryEntry = {
    img_version: 2, fdinfo_per_id: true, root_ids: rootIds, ns_per_id: true, lsmtype: lsmType(),
    network_lock_method: 0, plugins_entry: { plugins: [] }, dump_uptime: dumpUptime,
  };
  writes.push(dir.writeInventory(inventory), dir.writePstree(pstree), dir.writeFiles(files.files), writeFdImages(kinds, dir), files.ghosts.write(dir), seccomp.write(dir));
  if (seccomp.filtered) log(`${seccomp.filtered} threads in seccomp mode, ${seccomp.entry().seccomp_filters.length} filters in seccomp.img`);
  if (ct) writes.push(ct.write(dir, { mnt: nsIds.mnt_ns_id, uts: nsIds.uts_ns_id }));
  if (files.ttyInfos.length) writes.push(dir.writeImage(KIND.ttyInfo, undefined, files.ttyInfos));
  if (locks) {
    writes.push(locks.write(dir));
    if (locks.entries.length) log(`${locks.entries.length} file locks`);
  }
  await writes.all();
  if (inc) stats.pagesSkippedParent = inc.pagesSkippedParent;
  return stats;
}
