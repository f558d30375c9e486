// LazyPagesServer: the lazy-pages daemon as a library. It turns images into
// per-process range tables for the native fault engine, keeps the TS-side
// picture of every process (fork tree, state, statistics), decides the
// background push (what, when, how fast) and enforces failure safety: a
// process whose page cannot be served is SIGKILLed, never left on zeros.
import { closeSync, readFileSync, readlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { UserError, isSystemError, sysError } from '../errors.js';
import { PAGE, PAGE_SIZE } from '../images/memory.js';
import { histPercentile } from '../uffd/latency.js';
import { loadPageChecksums, noteUnverified } from '../integrity/checksums.js';
import { Watchdog } from '../integrity/watchdog.js';
import { log } from '../log.js';
import type { EngineEventLike, EngineFactory, EngineProcStatsLike, FaultEngineLike } from './engine.js';
import { TypedEmitter } from './emitter.js';
import type { LazyImageProvider } from './images.js';
import type { Plan } from './plan.js';
import { childrenOf, hostPidInTree, identify, isAlive, type ProcIdentity } from './procfs.js';
import type { LazySocket, LazySocketNotice } from './socket.js';
import type {
  AdoptOptions, EngineLinks, LazyEventMap, LazyPagesServerOptions, LazyProcessState, LazyProcessStats, LazyServerStats,
} from './types.js';
import { loadWorkingSet, WorkingSetRecorder, writeWorkingSet } from './workingset.js';
import { latencySummary, type ProcessStats, type StatsFile, type TimelineEvent } from '../stats/format.js';

const DEFAULT_CHUNK = 2n * 1024n * 1024n;
/** Connections per process of a native bulk pull (post-copy background transfer). */
const PULL_STREAMS = Math.min(8, Math.max(1, Number(process.env.LR_PULL_STREAMS ?? 2) || 2));
const DEFAULT_THREADS = 2;
const DEFAULT_FAULT_AROUND = 8;
/** Engine statistics poll and liveness check period. */
const POLL_MS = 50;
const HOT_MAX = 4;
/** Native fault log ring (entries); drained every POLL_MS. */
const LOG_CAPACITY = 1 << 16;
/** Timeline entries kept per process in the stats file. */
const TIMELINE_MAX = 200_000;
const DEFAULT_RECORD_SECONDS = 10;
const DEFAULT_WS_HOLD_MS = 250;

/** Internal hooks so tests can run the policy against fakes. */
export interface LazyPagesServerDeps {
  engineFactory?: EngineFactory;
  images?: LazyImageProvider;
  /** Sends SIGKILL; default process.kill. */
  kill?: (pid: number) => void;
  /** Opens a pidfd for a root process so the engine sees its exit (default: inject's pidfdOpen). */
  pidfdOpen?: (pid: number) => number | undefined;
  /** The daemon-death watchdog (default: started unless options.watchdog === false or a fake engine is used). */
  watchdog?: Pick<Watchdog, 'adopt' | 'watch' | 'done' | 'close'>;
}

interface Span { start: bigint; end: bigint }

class Proc {
  state: LazyProcessState = 'serving';
  readonly children: Proc[] = [];
  hostPid: number | undefined;
  identity: ProcIdentity | undefined;
  /** Bytes to copy from images or a page server (zero pages excluded). */
  lazyBytes = 0n;
  pushedBytes = 0n;
  pushedChunks = 0;
  pushInFlight = 0;
  readonly adoptedAtMs = Date.now();
  finishedAtMs: number | undefined;
  /** Page addresses near recent faults (push there first), newest last. */
  hot: bigint[] = [];
  /**
   * Range edges whose origin we know (plan boundaries, our push windows,
   * event ranges). A remaining-range edge not in here was cut by a fault.
   * Undefined after a remap: addresses moved, the heuristic is dropped.
   */
  knownEdges: Set<bigint> | undefined = new Set();
  lastFaults = 0;
  hotCheck = false;
  /** Address-order push: snapshot of remaining ranges and where we are in it. */
  snapshot: Span[] | undefined;
  snapIndex = 0;
  cursor = 0n;
  /** A pass over the snapshot that copied nothing pauses the push until the next fault. */
  passCopied = 0n;
  passChunks = 0;
  pushPaused = false;
  /** The engine said complete while our push windows were still being reported: finish after them. */
  completePending = false;
  /** Last engine counters seen (kept after release for the totals). */
  engineStats: EngineProcStatsLike | undefined;
  /**
   * Remote (PE_LAZY-only) ranges at dump-time addresses, pushed in address
   * order by pushRemote: the engine's supply() finds the pages wherever they
   * live now and skips those already copied. (plugin/pageserver)
   */
  remoteRanges: Span[] = [];
  remoteIndex = 0;
  remoteCursor = 0n;
  /**
   * The engine's native bulk pull of the remote ranges (one push slot while
   * it runs): 'failed' / 'done' once it ended (failed: fetch() takes over).
   */
  pull: { state: 'starting' | 'running' | 'failed' | 'done'; ids: number[]; pending: number; failed: string | undefined } | undefined;
  /** Fault log of this process for the stats file: [tMs, addr, pages, kind]. */
  timeline: TimelineEvent[] = [];
  timelineDropped = 0;
  /** Working set being recorded (roots only). */
  recorder: WorkingSetRecorder | undefined;
  /** Pages of a replayed working set, and when they were all in. */
  wsPages: number | undefined;
  warmedAtMs: number | undefined;
  /** adopt() waiting for the working set before the process resumes. */
  warmWaiter: (() => void) | undefined;
  /**
   * A forked child's uffd duplicated for the watchdog (ours to close), kept
   * until its pid is known and the watchdog has taken its own copy.
   */
  watchdogFd: number | undefined;
  /** Last bytes-left figure from the engine, and whether the engine stopped answering. */
  lastLeft = 0n;
  leftUnknown?: boolean;
  /** Failed while its pid was unknown: killed (then released) once found. */
  killWhenFound?: boolean;
  constructor(
    readonly id: number,
    readonly engineProc: number,
    readonly imagePid: number,
    readonly parent: Proc | undefined,
  ) {}
}

export class LazyPagesServer extends TypedEmitter<LazyEventMap> {
  private readonly procs = new Map<number, Proc>(); // by engine handle
  private nextId = 1;
  private pendingAdopts = 0;
  private restoreFinished = false;
  private closed = false;
  private firstAdoptMs: number | undefined;
  private lastFinishMs: number | undefined;
  private pushInFlight = 0;
  private pushedPages = 0;
  private bytesSupplied = 0n;
  private tokens = 0;
  private tokensAt = Date.now();
  private bwTimer: NodeJS.Timeout | undefined;
  private readonly poller: NodeJS.Timeout;
  private idleWaiters: (() => void)[] = [];
  private socket: LazySocket | undefined;
  /**
   * Open socket connections: `restorer` once it sent a valid message (a
   * stray peer that only errs or hangs up changes nothing), `finished` after RSTF.
   */
  private readonly sessions = new Map<number, { restorer: boolean; finished: boolean }>();
  /** Host pids each socket peer handed a userfaultfd over for (their trees are the peer's too). */
  private readonly handedBy = new Map<number, Set<number>>();
  /**
   * Per connection: the pid announced last and its host pid, looked up in the
   * peer's tree before the uffd was received (the peer still held its tree
   * then; once it has our copy it may release the tree and exit, and its
   * processes are reparented out of it).
   */
  private readonly announced = new Map<number, { pid: number; hostPid: number | undefined }>();
  private readonly chunk: bigint;
  private readonly maxInFlight: number;
  private readonly kill: (pid: number) => void;
  private readonly pidfdOpen: ((pid: number) => number | undefined) | undefined;
  private zombies = 0;
  /** Processes killed because their images could not serve them (never adopted). */
  private killedAtAdopt = 0;
  private readonly watchdog: LazyPagesServerDeps['watchdog'];
  private readonly t0Ns = process.hrtime.bigint();
  private readonly startedAt = new Date();
  /** The engine's fault log is on (stats file timeline or working-set recording). */
  private logOn = false;
  private logDropped = 0;
  /** The engine's fault log failed to drain once (reported once). */
  private logFailed = false;
  private recording: boolean;
  private readonly recordMs: number;
  private recordTimer: NodeJS.Timeout | undefined;
  private recordWrites: Promise<unknown> | undefined;

  private constructor(
    readonly options: LazyPagesServerOptions,
    private readonly images: LazyImageProvider,
    private readonly engine: FaultEngineLike,
    deps: LazyPagesServerDeps,
  ) {
    super();
    this.chunk = BigInt(options.pushChunkBytes ?? Number(DEFAULT_CHUNK));
    this.maxInFlight = options.pushInFlight ?? 2;
    this.kill = deps.kill ?? ((pid) => process.kill(pid, 'SIGKILL'));
    this.pidfdOpen = deps.pidfdOpen;
    this.watchdog = deps.watchdog;
    const rec = options.recordWorkingSet;
    this.recording = rec !== undefined && rec !== false;
    this.recordMs = (typeof rec === 'number' ? rec : DEFAULT_RECORD_SECONDS) * 1000;
    if ((options.statsFile || this.recording) && engine.setFaultLog && engine.drainFaultLog) {
      engine.setFaultLog(LOG_CAPACITY);
      this.logOn = true;
    }
    // Never keeps the event loop alive by itself: the engine and the socket do.
    this.poller = setInterval(() => this.poll(), POLL_MS);
    this.poller.unref();
  }

  /** Opens the images and starts the engine (and the socket, if asked). */
  static async open(options: LazyPagesServerOptions, deps: LazyPagesServerDeps = {}): Promise<LazyPagesServer> {
    validateOptions(options);
    const images = deps.images ?? (await (await import('./images.js')).openImageProvider(options.imagesDir, options.remote !== undefined));
    // Engine events reach the server through this indirection, wired once the server exists.
    let sink: ((evs: EngineEventLike[]) => void) | undefined;
    const adapter = deps.engineFactory ? undefined : await import('./engine-adapter.js');
    const factory = deps.engineFactory ?? adapter!.realEngineFactory;
    const pidfdOpen = deps.pidfdOpen ?? (deps.engineFactory ? undefined : adapter!.pidfdOpenOrUndefined);
    const engine = await factory({
      threads: options.engineThreads ?? DEFAULT_THREADS,
      // Recording wants exactly the touched pages: fault-around would hide neighbours.
      faultAroundPages: options.recordWorkingSet ? 1 : options.faultAroundPages ?? DEFAULT_FAULT_AROUND,
      onEvents: (evs) => sink?.(evs),
    });
    let watchdog = deps.watchdog;
    if (!watchdog && (options.watchdog ?? !deps.engineFactory)) {
      try {
        watchdog = await Watchdog.start(options.watchdogLogFile !== undefined ? { logFile: options.watchdogLogFile } : {});
      } catch (e) {
        await engine.close();
        throw new UserError(`lazy-pages: cannot start the daemon-death watchdog: ${errText(e)} (--no-watchdog to run without it)`, { cause: e });
      }
    }
    const server = new LazyPagesServer(options, images, engine, { ...deps, ...(pidfdOpen ? { pidfdOpen } : {}), ...(watchdog ? { watchdog } : {}) });
    sink = (evs) => server.onEngineEvents(evs);
    // A page source lost for good (page server unreachable past its timeout,
    // or broke the protocol): no process that needs it may run on; kill those
    // now, not at their next fault. Processes served only from local images
    // (no remote range) are not affected and go on.
    options.remote?.onFatal?.((e) => {
      for (const p of server.procs.values()) if (p.remoteRanges.length > 0) server.failProcess(p, `remote page source: ${e.message}`, e);
    });
    await server.bindRemoteLinks();
    if (options.socketPath) {
      const path = options.socketPath === true ? join(options.imagesDir, 'lazy-pages.socket') : options.socketPath;
      try {
        const { LazySocket } = await import('./socket.js');
        server.socket = new LazySocket(path, {
          onAnnounce: (pid, from) => server.lookUpAnnounced(pid, from),
          onTask: (pid, fd, from) => void server.adoptFromSocket(pid, fd, from),
          onEvent: (ev) => server.onSocketEvent(ev),
        });
      } catch (e) {
        clearInterval(server.poller);
        await engine.close();
        await watchdog?.close().catch(() => {});
        throw e;
      }
    }
    return server;
  }

  /** Lets the remote page source give the engine native links (remote faults then skip JS). */
  private async bindRemoteLinks(): Promise<void> {
    const remote = this.options.remote;
    const eng = this.engine;
    if (!remote?.bindEngine || !eng.attachLink || !eng.detachLink || !eng.threads) return;
    const attach = eng.attachLink.bind(eng);
    const detach = eng.detachLink.bind(eng);
    const links: EngineLinks = {
      slots: eng.threads,
      attach: (slot, fd, opts) => {
        if (this.closed) throw new UserError('lazy-pages server is closed');
        attach(slot, fd, opts);
      },
      detach: (slot) => detach(slot),
      onLinkError: (cb) => {
        this.linkErrorListeners.push(cb);
      },
      stats: () => {
        try {
          return (eng.links?.() ?? []).reduce((t, l) => ({ gets: t.gets + l.gets, pages: t.pages + l.pages }), { gets: 0, pages: 0 });
        } catch {
          return { gets: 0, pages: 0 }; // engine closed
        }
      },
    };
    const bound = remote.bindEngine(links);
    this.unbindRemote = bound.unbind;
    await bound.ready;
  }

  private linkErrorListeners: ((slot: number, message: string) => void)[] = [];
  private unbindRemote: (() => void) | undefined;

  /** The socket path when listening. */
  get socketPath(): string | undefined {
    return this.socket?.path;
  }

  /**
   * Takes over `uffd` (owned by the server from now on, also on failure) for
   * the process with virtual pid `pid` and serves it at once. If the images
   * cannot serve it, the process is killed and this rejects with the reason.
   */
  async adopt(pid: number, uffd: number, opts: AdoptOptions = {}): Promise<LazyProcessStats> {
    if (!Number.isInteger(pid) || pid <= 0) throw new RangeError(`pid must be a positive integer, got ${pid}`);
    if (!Number.isInteger(uffd) || uffd < 0) throw new RangeError(`uffd must be a file descriptor, got ${uffd}`);
    if (opts.hostPid !== undefined && !(Number.isInteger(opts.hostPid) && opts.hostPid > 0)) throw new RangeError(`hostPid must be a positive integer, got ${opts.hostPid}`);
    if (this.closed) throw new UserError(`pid ${pid}: lazy-pages server is closed`);
    const hostPid = opts.hostPid ?? pid;
    this.pendingAdopts++;
    this.firstAdoptMs ??= Date.now();
    if (this.recording && !this.recordTimer) {
      this.recordTimer = setTimeout(() => void this.stopRecording(), this.recordMs);
    }
    const replay = this.options.workingSet !== false && !this.recording && this.engine.prefetchFirst !== undefined
      ? loadWorkingSet(this.images.dir, pid).catch((e: unknown) => {
        const message = `pid ${pid}: recorded working set ignored: ${errText(e)}`;
        this.emit('error', { proc: undefined, killed: false, message, error: e instanceof Error ? e : new Error(message) });
        return undefined;
      })
      : Promise.resolve(undefined);
    let plan: Plan;
    try {
      [plan] = await Promise.all([this.images.plan(pid, (path) => this.addSource(path)), replay]);
    } catch (e) {
      this.pendingAdopts--;
      // Kill before closing the uffd: once the last copy is closed the kernel
      // hands the process zero pages.
      const err = this.refuse(pid, hostPid, `cannot serve its memory: ${errText(e)}`, e);
      closeQuietly(uffd);
      throw err;
    }
    if (this.watchdog) {
      // The watchdog holds its own copy of the uffd before the process may
      // run: if this daemon dies, the process blocks and is killed instead
      // of reading zero pages.
      try {
        await this.watchdog.adopt(hostPid, uffd);
      } catch (e) {
        this.pendingAdopts--;
        const err = this.refuse(pid, hostPid, `the daemon-death watchdog could not take its uffd: ${errText(e)}`, e);
        closeQuietly(uffd);
        throw err;
      }
    }
    const pidfd = this.pidfdOpen?.(hostPid);
    let handle: number;
    try {
      handle = this.engine.adopt(uffd, plan.ranges, {
        ...(pidfd !== undefined ? { pidfd } : {}),
        ...(this.options.remote && plan.remoteBytes > 0n ? { remotePid: pid } : {}),
      });
    } catch (e) {
      this.pendingAdopts--;
      const err = this.refuse(pid, hostPid, `the fault engine refused its userfaultfd: ${errText(e)}`, e);
      this.watchdogDone(hostPid);
      closeQuietly(uffd);
      if (pidfd !== undefined) closeQuietly(pidfd);
      throw err;
    }
    this.pendingAdopts--;
    const p = new Proc(this.nextId++, handle, pid, undefined);
    p.hostPid = hostPid;
    p.identity = identify(hostPid);
    p.lazyBytes = plan.fileBytes + plan.remoteBytes;
    for (const r of plan.ranges) {
      if (r.src.kind === 'remote') p.remoteRanges.push({ start: r.src.imageAddr, end: r.src.imageAddr + (r.end - r.start) });
      p.knownEdges!.add(r.start);
      p.knownEdges!.add(r.end);
    }
    // The engine may have reported 'complete' (empty plan) before the handle was known.
    p.lastLeft = plan.ranges.reduce((n, r) => n + (r.end - r.start), 0n);
    this.procs.set(handle, p);
    if (this.recording) p.recorder = new WorkingSetRecorder(process.hrtime.bigint());
    const ws = await replay;
    if (ws && ws.length > 0 && plan.ranges.length > 0) {
      // Queued before the process resumes: the engine copies these first, in fault order.
      p.wsPages = ws.reduce((n, r) => n + Number((r.end - r.start) / PAGE), 0);
      try {
        this.engine.prefetchFirst!(handle, ws);
        // The restorer resumes the process once adopt() returns: let the
        // working set go in first (nothing can fault yet), within a bound.
        const hold = this.options.workingSetHoldMs ?? DEFAULT_WS_HOLD_MS;
        if (hold > 0 && p.warmedAtMs === undefined && p.state === 'serving') {
          await new Promise<void>((resolve) => {
            const timer = setTimeout(() => p.warmWaiter?.(), hold);
            p.warmWaiter = () => {
              clearTimeout(timer);
              p.warmWaiter = undefined;
              resolve();
            };
          });
        }
      } catch (e) {
        this.emit('error', { proc: this.snapshotOf(p), killed: false, message: `pid ${pid}: working set not replayed: ${errText(e)}`, error: e instanceof Error ? e : new Error(String(e)) });
      }
    }
    if (!this.socket) this.restoreFinished = true;
    if (plan.ranges.length === 0) this.finish(p, 'complete');
    this.pump();
    return this.snapshotOf(p);
  }

  /** The restore-finished point for in-process use with a socket: start the background push now. */
  startPush(): void {
    this.restoreFinished = true;
    this.pump();
    this.checkIdle();
  }

  /** True while working sets are being recorded. */
  get recordingWorkingSet(): boolean {
    return this.recording;
  }

  /**
   * Ends the working-set recording (also at the end of the recording time,
   * and on close): writes lr-workingset-<pid>.img for every recorded root
   * process and lets the background push start. Returns the paths written.
   */
  async stopRecording(): Promise<string[]> {
    if (!this.recording) {
      await this.recordWrites;
      return [];
    }
    this.recording = false;
    if (this.recordTimer) clearTimeout(this.recordTimer);
    this.recordTimer = undefined;
    this.drainLog();
    const writes: Promise<string | undefined>[] = [];
    for (const p of this.procs.values()) {
      const rec = p.recorder;
      if (!rec || rec.done || p.parent) continue;
      rec.done = true;
      writes.push(writeWorkingSet(this.options.imagesDir, p.imagePid, BigInt(p.adoptedAtMs) * 1_000_000n, rec).then((path) => {
        this.emit('recorded', { pid: p.imagePid, path, pages: rec.pages, ranges: rec.ranges().length });
        return path;
      }, (e: unknown) => {
        const message = `pid ${p.imagePid}: cannot write its working set: ${errText(e)}`;
        this.emit('error', { proc: this.snapshotOf(p), killed: false, message, error: e instanceof Error ? e : new Error(message) });
        return undefined;
      }));
    }
    const all = Promise.all(writes);
    this.recordWrites = all;
    const paths = (await all).filter((x): x is string => x !== undefined);
    this.pump();
    this.checkIdle();
    return paths;
  }

  /** Statistics of every process the server has seen. */
  processes(): LazyProcessStats[] {
    return [...this.procs.values()].map((p) => this.snapshotOf(p));
  }

  stats(): LazyServerStats {
    this.refreshEngineStats();
    let serving = 0, complete = 0, exited = 0, killed = 0;
    let lazy = 0n, left = 0n, bytes = this.bytesSupplied;
    let faults = 0, zeroPages = 0, copied = 0;
    const hist: number[] = [];
    for (const p of this.procs.values()) {
      if (p.state === 'serving') serving++;
      else if (p.state === 'complete') complete++;
      else if (p.state === 'exited') exited++;
      else killed++;
      lazy += p.lazyBytes;
      left += this.leftOf(p);
      const es = p.engineStats;
      if (es) {
        faults += es.faults;
        zeroPages += es.zeroPages;
        copied += es.copiedPages + (es.remotePages ?? 0);
        bytes += es.bytes;
        es.latencyLog2Ns.forEach((n, i) => (hist[i] = (hist[i] ?? 0) + (n ?? 0)));
      }
    }
    const end = serving === 0 && this.lastFinishMs !== undefined ? this.lastFinishMs : Date.now();
    return {
      processes: this.procs.size + this.killedAtAdopt, serving, complete, exited, killed: killed + this.killedAtAdopt,
      faults, faultPages: copied + this.remoteFaultPages, zeroPages, pushedPages: this.pushedPages,
      bytesCopied: bytes, lazyBytes: lazy, lazyBytesLeft: left,
      faultLatencyP50Us: histPercentileUs(hist, 50), faultLatencyP99Us: histPercentileUs(hist, 99),
      elapsedMs: this.firstAdoptMs === undefined ? 0 : end - this.firstAdoptMs,
      zombies: this.zombies,
    };
  }

  /** Resolves once restore has finished and every adopted process is complete or gone. */
  whenIdle(): Promise<LazyServerStats> {
    if (this.isIdle() || this.closed) return Promise.resolve(this.stats());
    return new Promise((resolve) => this.idleWaiters.push(() => resolve(this.stats())));
  }

  done(): Promise<LazyServerStats> {
    return this.whenIdle();
  }

  /**
   * Stops the socket and the engine. Processes still being served are
   * SIGKILLed first: closing their uffd would hand them zero pages.
   */
  async close(): Promise<void> {
    if (this.closed) return;
    this.refreshEngineStats();
    for (const p of this.procs.values()) {
      if (p.state === 'serving') this.failProcess(p, 'the lazy-pages server was closed while it still had pages to serve', new Error('server closed'));
    }
    await this.stopRecording();
    this.closed = true;
    clearInterval(this.poller);
    if (this.bwTimer) clearTimeout(this.bwTimer);
    this.socket?.close();
    this.writeStatsFile();
    this.unbindRemote?.();
    await this.engine.close();
    for (const p of this.procs.values()) this.dropWatchdogFd(p);
    try {
      await this.watchdog?.close();
    } catch (e) {
      log.warn(`lazy-pages: closing the watchdog: ${errText(e)}`);
    }
    for (const w of this.idleWaiters.splice(0)) w();
  }

  /** Registers a pages file with the engine, with its checksums unless verification is off. */
  private addSource(path: string): number {
    if (this.options.verify !== false) {
      const c = loadPageChecksums(path);
      if (c) return this.engine.addSource(path, { checksums: c.entry.checksums, chunkSize: c.entry.chunk_size });
      noteUnverified(path);
    }
    return this.engine.addSource(path);
  }

  /** The watchdog no longer needs to guard `pid` (complete, exited or already killed). */
  private watchdogDone(pid: number | undefined): void {
    if (!this.watchdog || pid === undefined) return;
    this.watchdog.done(pid).catch((e: unknown) => log.debug(`lazy-pages: watchdog DONE ${pid}: ${errText(e)}`));
  }

  // ---- process picture -------------------------------------------------------

  private refuse(pid: number, hostPid: number, why: string, cause: unknown): UserError {
    const killed = this.killPid(hostPid) === 'killed';
    if (killed) this.killedAtAdopt++;
    const msg = `pid ${pid}: ${why}; ${killed ? `killed pid ${hostPid} with SIGKILL` : `pid ${hostPid} could not be killed`}`;
    const error = new UserError(msg, { cause });
    this.emit('error', { proc: undefined, killed, message: msg, error });
    this.checkIdle();
    return error;
  }

  private leftOf(p: Proc): bigint {
    if (p.state !== 'serving') return 0n;
    // Bytes left to serve: if the engine cannot say, the last figure stands
    // (0 would read as "complete"), and the failure is logged once.
    try {
      p.lastLeft = this.engine.lazyBytes(p.engineProc);
    } catch (e) {
      if (!p.leftUnknown) log.warn(`lazy-pages: pid ${p.imagePid}: the fault engine cannot count its bytes left: ${errText(e)}`);
      p.leftUnknown = true;
    }
    return p.lastLeft;
  }

  private snapshotOf(p: Proc): LazyProcessStats {
    return {
      id: p.id, imagePid: p.imagePid, hostPid: p.hostPid, parentId: p.parent?.id,
      lazyBytes: p.lazyBytes, lazyBytesLeft: this.leftOf(p), pushedBytes: p.pushedBytes, pushedChunks: p.pushedChunks,
      faults: p.engineStats?.faults ?? 0, zeroPages: p.engineStats?.zeroPages ?? 0,
      adoptedAtMs: p.adoptedAtMs,
      timeToCompleteMs: p.finishedAtMs === undefined ? undefined : p.finishedAtMs - p.adoptedAtMs,
      state: p.state,
      ...(p.wsPages !== undefined ? { workingSetPages: p.wsPages } : {}),
      ...(p.warmedAtMs !== undefined ? { warmedMs: p.warmedAtMs - p.adoptedAtMs } : {}),
      ...(p.recorder ? { recordedPages: p.recorder.pages } : {}),
    };
  }

  /** Who sent a socket message, for error lines. */
  private static peerName(from: { conn: number; peer: number }): string {
    return `peer pid ${from.peer || '?'} (connection ${from.conn})`;
  }

  private socketError(message: string, code: string, killed = false): void {
    const error = sysError(code, 'lazy-pages socket', undefined, message);
    this.emit('error', { proc: undefined, killed, message, error });
  }

  /**
   * Kills `hostPid` (announced on the socket, in the peer's tree) because it
   * cannot be served; never this daemon itself. Returns the outcome text.
   */
  private killAnnounced(hostPid: number | undefined): string {
    if (hostPid === undefined) return 'nothing killed';
    if (hostPid === process.pid) return 'nothing killed (it is this daemon)';
    const kill = this.killPid(hostPid);
    if (kill === 'killed') this.killedAtAdopt++;
    return kill === 'killed' ? `killed pid ${hostPid} with SIGKILL` : kill === 'gone' ? `pid ${hostPid} is already gone` : `pid ${hostPid} could not be killed (${kill})`;
  }

  /** An announced pid, before its uffd arrives: find it in the peer's tree now. */
  private lookUpAnnounced(pid: number, from: { conn: number; peer: number }): void {
    const handed = this.handedBy.get(from.peer) ?? new Set<number>();
    this.announced.set(from.conn, { pid, hostPid: from.peer > 0 ? hostPidInTree(pid, from.peer, handed) : undefined });
  }

  /** The host pid looked up at announcement for `pid` on this connection (once). */
  private takeAnnounced(pid: number, from: { conn: number }): number | undefined {
    const a = this.announced.get(from.conn);
    if (a === undefined || a.pid !== pid) return undefined;
    this.announced.delete(from.conn);
    return a.hostPid;
  }

  private async adoptFromSocket(pid: number, fd: number, from: { conn: number; peer: number }): Promise<void> {
    const who = LazyPagesServer.peerName(from);
    // The socket carries the virtual pid: find the process it names in the
    // peer's own tree (in a migration the frozen source still holds that pid,
    // and a peer must never make us serve or kill a process not its own).
    const handed = this.handedBy.get(from.peer) ?? new Set<number>();
    const hostPid = this.takeAnnounced(pid, from) ?? (from.peer > 0 ? hostPidInTree(pid, from.peer, handed) : undefined);
    if (hostPid === undefined || hostPid === process.pid) {
      closeQuietly(fd);
      this.socketError(`lazy-pages socket: ${who}: pid ${pid} is not a process of the peer's tree (neither the peer nor one of its descendants): hand-over refused, nothing killed (ESRCH)`, 'ESRCH');
      this.checkIdle();
      return;
    }
    let target = '?';
    try {
      target = readlinkSync(`/proc/self/fd/${fd}`);
    } catch {
      /* reported below */
    }
    if (target !== 'anon_inode:[userfaultfd]') {
      // Its real uffd (if any) is not ours: nothing will serve it. Kill first, then close.
      const outcome = this.killAnnounced(hostPid);
      closeQuietly(fd);
      this.socketError(`lazy-pages socket: ${who}: pid ${pid} was handed over with ${target} instead of a userfaultfd (EINVAL); ${outcome}`, 'EINVAL', outcome.startsWith('killed'));
      this.checkIdle();
      return;
    }
    handed.add(hostPid);
    this.handedBy.set(from.peer, handed);
    // A valid hand-over: this connection is a restorer (its EOF before RSTF is an error).
    const session = this.sessions.get(from.conn);
    if (session) session.restorer = true;
    try {
      await this.adopt(pid, fd, { hostPid });
    } catch {
      /* reported through the 'error' event; the process was killed */
    }
  }

  private onSocketEvent(ev: LazySocketNotice): void {
    const from = ev.type === 'error' ? undefined : { conn: ev.conn, peer: ev.peer };
    const session = from ? this.sessions.get(from.conn) : undefined;
    switch (ev.type) {
      case 'connected':
        this.sessions.set(ev.conn, { restorer: false, finished: false });
        break;
      case 'zombie':
        // Unverifiable (no process to look at): counted, but it does not make a restorer.
        this.zombies++;
        break;
      case 'finished':
        if (session) {
          session.restorer = true;
          session.finished = true;
        }
        this.restoreFinished = true;
        break;
      case 'eof':
        this.sessions.delete(ev.conn);
        this.announced.delete(ev.conn);
        if (session?.restorer && !session.finished) {
          this.socketError(`lazy-pages socket: ${LazyPagesServer.peerName(from!)}: the restorer closed the connection before restore finished (ECONNRESET)`, 'ECONNRESET');
          // Nothing more will arrive from it: serve what was adopted, then be idle.
          this.restoreFinished = true;
        }
        break;
      case 'protocol': {
        this.sessions.delete(ev.conn);
        // The announced process (if it is the peer's) will not be served: kill it.
        const host = ev.pid !== undefined ? (this.takeAnnounced(ev.pid, ev) ?? (ev.peer > 0 ? hostPidInTree(ev.pid, ev.peer) : undefined)) : undefined;
        this.announced.delete(ev.conn);
        const outcome = ev.pid !== undefined ? `; ${this.killAnnounced(host)}` : '';
        this.socketError(`lazy-pages socket: ${LazyPagesServer.peerName(from!)}: ${ev.detail} (${ev.code}): connection closed${outcome}`, ev.code, outcome.includes('killed pid'));
        // A restorer cut off mid-way sends nothing more; a stray peer changes nothing.
        if (session?.restorer && !session.finished) this.restoreFinished = true;
        break;
      }
      case 'error':
        this.socketError(`lazy-pages socket: ${errText(ev.error)}`, ev.error.code);
        this.restoreFinished = true;
        break;
      default:
        break;
    }
    if (ev.type === 'connected' || ev.type === 'refused') this.emit('socket', { type: ev.type, pid: ev.pid, uid: ev.uid, conn: ev.conn });
    else if (ev.type === 'zombie') this.emit('socket', { type: ev.type, pid: ev.pid, conn: ev.conn, peer: ev.peer });
    else if (ev.type === 'finished' || ev.type === 'eof') this.emit('socket', { type: ev.type, conn: ev.conn, peer: ev.peer });
    this.pump();
    this.checkIdle();
  }

  private onEngineEvents(evs: EngineEventLike[]): void {
    for (const ev of evs) {
      if (ev.type === 'link-error') {
        // The engine already closed the link and re-routed its GETs to 'need'.
        for (const l of this.linkErrorListeners) l(ev.slot, ev.message);
        continue;
      }
      if (ev.type === 'pull-end') {
        this.onPullEnd(ev);
        continue;
      }
      try {
        this.onEngineEvent(ev);
      } catch (e) {
        this.emit('error', { proc: undefined, killed: false, message: `internal: handling engine event ${ev.type}: ${errText(e)}`, error: e instanceof Error ? e : new Error(String(e)) });
      }
    }
    this.pump();
    this.checkIdle();
  }

  private onEngineEvent(ev: EngineEventLike): void {
    const p = this.procs.get(ev.proc);
    if (!p) return;
    switch (ev.type) {
      case 'fork': {
        const c = new Proc(this.nextId++, ev.child, p.imagePid, p);
        c.lazyBytes = p.lazyBytes;
        c.remoteRanges = p.remoteRanges;
        c.knownEdges = p.knownEdges ? new Set(p.knownEdges) : undefined;
        p.children.push(c);
        this.procs.set(ev.child, c);
        if (this.watchdog && this.engine.dupUffd) {
          // The watchdog must hold the child's own uffd too: if this daemon
          // dies, the engine's copy closes and the kernel would hand the
          // child zero pages before the watchdog's SIGKILL reaches it.
          try {
            c.watchdogFd = this.engine.dupUffd(ev.child);
          } catch (e) {
            log.debug(`lazy-pages: child of pid ${p.imagePid}: no uffd to hand to the watchdog: ${errText(e)}`);
          }
        }
        // The child becomes visible in /proc only after the parent's fork returns.
        this.resolveChildPid(c, 0);
        this.emit('fork', { parent: this.snapshotOf(p), child: this.snapshotOf(c) });
        break;
      }
      case 'remap':
        if (p.recorder) {
          // Later faults are at moved addresses: keep what was recorded so far.
          this.drainLog();
          p.recorder.frozen = true;
        }
        p.snapshot = undefined;
        p.knownEdges = undefined;
        p.hot = [];
        this.emit('remap', { proc: this.snapshotOf(p), from: ev.from, to: ev.to, len: ev.len });
        break;
      case 'remove':
      case 'unmap':
        p.knownEdges?.add(ev.start);
        p.knownEdges?.add(ev.end);
        this.emit(ev.type, { proc: this.snapshotOf(p), start: ev.start, end: ev.end });
        break;
      case 'need':
        void this.serveRemote(p, ev.imageAddr, ev.len);
        break;
      case 'prefetched': {
        if (p.pushInFlight > 0) {
          p.pushInFlight--;
          this.pushInFlight--;
        }
        p.pushedBytes += ev.copied;
        p.passCopied += ev.copied;
        if (ev.copied > 0n) p.pushedChunks++;
        this.pushedPages += Number(ev.copied / PAGE);
        if (p.completePending && p.pushInFlight === 0) this.finish(p, 'complete');
        break;
      }
      case 'complete':
        // The engine reports completion as soon as the map is empty, possibly
        // before the last push window's report: keep the statistics exact.
        if (p.pushInFlight > 0) p.completePending = true;
        else this.finish(p, 'complete');
        break;
      case 'exit':
        this.finish(p, 'exited');
        break;
      case 'warmed':
        if (p.warmedAtMs === undefined && p.wsPages !== undefined) {
          p.warmedAtMs = Date.now();
          p.warmWaiter?.();
          this.emit('warmed', { proc: this.snapshotOf(p) });
        }
        break;
      case 'error':
        this.failProcess(p, `${ev.syscall}: ${ev.code} (${ev.message})`, sysError(ev.errno, ev.syscall, undefined, ev.message));
        break;
    }
  }

  private finish(p: Proc, state: LazyProcessState): void {
    if (p.state !== 'serving') return;
    p.warmWaiter?.();
    this.refreshEngineStats();
    this.drainLog();
    p.state = state;
    p.finishedAtMs = Date.now();
    this.lastFinishMs = p.finishedAtMs;
    if (p.pushInFlight > 0) {
      this.pushInFlight -= p.pushInFlight;
      p.pushInFlight = 0;
    }
    // Closing our uffd copy ends interception. For 'complete' nothing lazy is
    // left; for 'exited' the mm is gone.
    try {
      this.engine.release(p.engineProc);
    } catch {
      /* already gone in the engine */
    }
    if (p.hostPid === undefined) this.resolveChildPidNow(p);
    this.dropWatchdogFd(p);
    this.watchdogDone(p.hostPid);
    if (state === 'complete') this.emit('complete', { proc: this.snapshotOf(p) });
    else if (state === 'exited') this.emit('exit', { proc: this.snapshotOf(p) });
    this.checkIdle();
  }

  /** SIGKILL first, then release: once our uffd is closed the kernel would hand out zero pages. */
  private failProcess(p: Proc, why: string, error: Error): void {
    if (p.state !== 'serving') return;
    p.warmWaiter?.();
    this.refreshEngineStats();
    if (p.hostPid === undefined) this.resolveChildPidNow(p);
    const target = p.hostPid;
    const who = p.parent ? `child of pid ${p.parent.hostPid ?? p.parent.imagePid} (reads image pid ${p.imagePid})` : `pid ${p.imagePid}`;
    // 'killed' | 'gone' | an errno name (the kill was refused) | undefined (pid unknown)
    let kill: KillOutcome | undefined;
    if (target !== undefined) kill = p.identity && !isAlive(p.identity) ? 'gone' : this.killPid(target);
    const killed = kill === 'killed';
    p.state = 'killed';
    p.finishedAtMs = Date.now();
    this.lastFinishMs = p.finishedAtMs;
    if (p.pushInFlight > 0) {
      this.pushInFlight -= p.pushInFlight;
      p.pushInFlight = 0;
    }
    // Only a process that is dead (killed or gone) loses its uffd. One whose
    // pid is unknown (a forked child not found yet) or that could not be
    // killed keeps it open in the engine and in the watchdog, so it stays
    // blocked on its faults instead of reading zero pages; an unknown child
    // is looked for and killed once found.
    if (kill === 'killed' || kill === 'gone') {
      try {
        this.engine.release(p.engineProc);
      } catch {
        /* gone */
      }
      this.dropWatchdogFd(p);
      this.watchdogDone(target);
    } else if (kill === undefined) {
      p.killWhenFound = true;
      this.findToKill(p, 0);
    }
    const outcome = kill === 'killed' ? `killed pid ${target} with SIGKILL`
      : kill === 'gone' ? `pid ${target} is already gone`
        : kill === undefined ? 'its pid is unknown: left blocked on its faults until it is found and killed'
          : `pid ${target} could not be killed (${kill}): left blocked on its faults`;
    const message = `${who}: a page could not be served: ${why}; ${outcome}`;
    this.emit('error', { proc: this.snapshotOf(p), killed, message, error });
    this.checkIdle();
  }

  /** SIGKILL: 'killed', 'gone' (ESRCH) or the errno name that refused it (e.g. EPERM). */
  private killPid(pid: number): KillOutcome {
    try {
      this.kill(pid);
      return 'killed';
    } catch (e) {
      const code = (e as { code?: unknown }).code;
      if (code === 'ESRCH') return 'gone';
      return typeof code === 'string' ? code : errText(e);
    }
  }

  /**
   * A failed process whose pid was unknown (a forked child): keeps looking for
   * it (bounded) and kills it once found; only then is its uffd released.
   */
  private findToKill(p: Proc, attempt: number): void {
    if (!p.killWhenFound || this.closed) return;
    if (p.hostPid === undefined) this.resolveChildPidNow(p);
    if (p.hostPid === undefined) {
      if (attempt < 40) setTimeout(() => this.findToKill(p, attempt + 1), Math.min(2 ** attempt, 50)).unref();
      else log.warn(`lazy-pages: a child forked by pid ${p.parent?.hostPid ?? p.imagePid} that cannot be served was not found: left blocked on its faults`);
      return;
    }
    const kill = p.identity && !isAlive(p.identity) ? 'gone' : this.killPid(p.hostPid);
    if (kill !== 'killed' && kill !== 'gone') {
      log.warn(`lazy-pages: pid ${p.hostPid} (a child that cannot be served) could not be killed (${kill}): left blocked on its faults`);
      return;
    }
    p.killWhenFound = false;
    if (kill === 'killed') this.emit('error', { proc: this.snapshotOf(p), killed: true, message: `pid ${p.hostPid} (forked by pid ${p.parent?.hostPid ?? p.parent?.imagePid}) found: killed with SIGKILL`, error: new Error('killed once found') });
    try {
      this.engine.release(p.engineProc);
    } catch {
      /* gone */
    }
    this.dropWatchdogFd(p);
    this.watchdogDone(p.hostPid);
  }

  /** Pages that faults fetched from the remote source on the JS path (the engine counts its native links'). */
  private remoteFaultPages = 0;

  private async serveRemote(p: Proc, imageAddr: bigint, len: bigint): Promise<void> {
    const remote = this.options.remote;
    try {
      if (!remote) throw new Error('no remote page source configured');
      const data = await remote.fetch(p.imagePid, imageAddr, Number(len), { urgent: true });
      if (data.length !== Number(len)) throw new Error(`remote page source returned ${data.length} of ${len} bytes at 0x${imageAddr.toString(16)}`);
      if (p.state !== 'serving') return;
      const supplied = this.engine.supply(p.engineProc, imageAddr, data);
      this.bytesSupplied += supplied;
      this.remoteFaultPages += Number(supplied / PAGE);
    } catch (e) {
      this.failProcess(p, `remote page source: ${errText(e)}`, e instanceof Error ? e : new Error(String(e)));
    }
  }

  /** Finds a forked child's pid among its parent's children not yet claimed. */
  private resolveChildPid(c: Proc, attempt: number): void {
    if (c.hostPid !== undefined || c.state !== 'serving' || this.closed) return;
    this.resolveChildPidNow(c);
    if (c.hostPid !== undefined) return;
    if (attempt < 40) setTimeout(() => this.resolveChildPid(c, attempt + 1), Math.min(2 ** attempt, 50)).unref();
    else {
      log.warn(`lazy-pages: a child forked by pid ${c.parent?.hostPid ?? c.imagePid} was not found: the watchdog does not guard it`);
      this.dropWatchdogFd(c);
    }
  }

  private resolveChildPidNow(c: Proc): void {
    const parent = c.parent;
    if (!parent || parent.hostPid === undefined || c.hostPid !== undefined) return;
    const claimed = new Set(parent.children.map((x) => x.hostPid).filter((x): x is number => x !== undefined));
    // Forks are reported in order and pids grow, so the earliest unresolved
    // child takes the lowest unclaimed pid.
    const unresolved = parent.children.filter((x) => x.hostPid === undefined);
    const candidates = childrenOf(parent.hostPid).filter((pid) => !claimed.has(pid));
    for (let i = 0; i < unresolved.length && i < candidates.length; i++) {
      const child = unresolved[i]!;
      child.hostPid = candidates[i]!;
      child.identity = identify(child.hostPid);
      if (child.killWhenFound) this.findToKill(child, 0);
      else if (this.watchdog && child.state === 'serving') this.guardChild(child);
      else this.dropWatchdogFd(child);
      for (const gc of child.children) if (gc.hostPid === undefined) this.resolveChildPidNow(gc);
    }
  }

  /**
   * Hands a forked child (pid now known) to the watchdog: ADOPT with a copy
   * of its uffd so it blocks rather than reads zeros if this daemon dies, or
   * just WATCH (killed with its tree) when no copy could be taken.
   */
  private guardChild(child: Proc): void {
    const pid = child.hostPid!;
    const fd = child.watchdogFd;
    child.watchdogFd = undefined;
    const req = fd !== undefined ? this.watchdog!.adopt(pid, fd) : this.watchdog!.watch(pid);
    req.catch((e: unknown) => log.warn(`lazy-pages: forked child pid ${pid}: the watchdog could not take it: ${errText(e)}`))
      .finally(() => {
        if (fd !== undefined) closeQuietly(fd);
      });
  }

  private dropWatchdogFd(p: Proc): void {
    if (p.watchdogFd === undefined) return;
    closeQuietly(p.watchdogFd);
    p.watchdogFd = undefined;
  }

  /** Periodic: engine counters (fault batches), exits the engine cannot see. */
  private poll(): void {
    if (this.closed) return;
    const before = new Map<Proc, EngineProcStatsLike | undefined>();
    for (const p of this.procs.values()) if (p.state === 'serving') before.set(p, p.engineStats);
    this.refreshEngineStats();
    this.drainLog();
    let faults = 0, pages = 0, zero = 0;
    for (const [p, old] of before) {
      const now = p.engineStats;
      if (!now) continue;
      const df = now.faults - (old?.faults ?? 0);
      if (df > 0) {
        faults += df;
        pages += now.copiedPages - (old?.copiedPages ?? 0);
        zero += now.zeroPages - (old?.zeroPages ?? 0);
        p.hotCheck = true;
        p.pushPaused = false;
      }
      if (p.identity && !isAlive(p.identity)) this.finish(p, 'exited');
    }
    if (faults > 0) this.emit('fault', { faults, faultPages: pages, zeroPages: zero, stats: this.stats() });
    this.pump();
    this.checkIdle();
  }

  /** Takes the engine's fault log: stats-file timelines and working-set recording. */
  private drainLog(): void {
    if (!this.logOn) return;
    let log;
    try {
      log = this.engine.drainFaultLog!();
    } catch (e) {
      // Without the log, working sets being recorded would be written with
      // holes: abandon them (never write a wrong one) and say so, once.
      for (const p of this.procs.values()) if (p.recorder && !p.recorder.done) p.recorder.done = true;
      if (!this.logFailed) {
        this.logFailed = true;
        const message = `the fault engine's log cannot be read (${errText(e)}): working sets being recorded are abandoned, stats-file timelines end here`;
        this.emit('error', { proc: undefined, killed: false, message, error: e instanceof Error ? e : new Error(message) });
      }
      return;
    }
    this.logDropped += log.dropped;
    const keep = this.options.statsFile !== undefined;
    for (const e of log.entries) {
      const p = this.procs.get(e.proc);
      if (!p) continue;
      if (e.kind !== 'push' && e.fault !== 0n) p.recorder?.add(e.fault, e.tNs);
      if (!keep) continue;
      if (p.timeline.length >= TIMELINE_MAX) {
        p.timelineDropped++;
        continue;
      }
      const tMs = e.tNs > this.t0Ns ? Math.round(Number(e.tNs - this.t0Ns) / 1000) / 1000 : 0;
      p.timeline.push([tMs, `0x${e.start.toString(16)}`, e.pages, e.kind === 'fault' ? 'f' : e.kind === 'zero' ? 'z' : 'p']);
    }
  }

  private refreshEngineStats(): void {
    let all: EngineProcStatsLike[];
    try {
      all = this.engine.stats().procs;
    } catch {
      return;
    }
    for (const s of all) {
      const p = this.procs.get(s.proc);
      if (p) p.engineStats = s;
    }
  }

  // ---- background push ----------------------------------------------------

  private pushAllowed(): boolean {
    return this.restoreFinished && !this.closed && this.options.prefetch !== false && !this.recording;
  }

  /** Issues background chunks while there is room; the engine serves faults before them. */
  private pump(): void {
    if (!this.pushAllowed()) return;
    let progress = true;
    while (this.pushInFlight < this.maxInFlight && progress) {
      progress = false;
      for (const p of this.procs.values()) {
        if (this.pushInFlight >= this.maxInFlight) break;
        if (p.state !== 'serving' || p.pushInFlight > 0 || p.pushPaused || p.completePending) continue;
        if (this.startPull(p)) {
          progress = true;
          continue;
        }
        if (!this.takeTokens(Number(this.chunk))) return;
        const remote = this.nextRemoteChunk(p);
        if (remote) {
          this.refundTokens(Number(this.chunk - remote.len));
          p.pushInFlight++;
          this.pushInFlight++;
          void this.pushRemote(p, remote);
          progress = true;
          continue;
        }
        const next = this.nextChunk(p);
        if (!next) {
          this.refundTokens(Number(this.chunk));
          continue;
        }
        p.pushInFlight++;
        this.pushInFlight++;
        try {
          this.engine.prefetch(p.engineProc, next.start, next.len);
          progress = true;
        } catch (e) {
          p.pushInFlight--;
          this.pushInFlight--;
          if (isSystemError(e) && (e.code === 'ESRCH' || e.code === 'ENOSPC')) this.finish(p, 'exited');
          else this.failProcess(p, `prefetch: ${errText(e)}`, e instanceof Error ? e : new Error(String(e)));
        }
      }
    }
  }

  // ---- remote background push (plugin/pageserver) ---------------------------

  /**
   * Starts the engine's native bulk pull of p's remote ranges when the
   * engine and the source can (plain TCP, no bandwidth cap): large GETs on
   * connections of their own (PULL_STREAMS streams sharing one cursor),
   * replies copied natively. It holds one push slot until every stream's
   * 'pull-end'; if a stream fails, fetch() pushes what is left after them.
   */
  private startPull(p: Proc): boolean {
    const remote = this.options.remote;
    const eng = this.engine;
    if (p.pull !== undefined || p.remoteRanges.length === 0 || p.remoteIndex > 0 || p.remoteCursor > 0n) return false;
    if (!remote?.openPullSocket || !eng.startPull || !eng.stopPull || this.options.bandwidthBytesPerSec) return false;
    const pull: NonNullable<Proc['pull']> = { state: 'starting', ids: [], pending: PULL_STREAMS, failed: undefined };
    p.pull = pull;
    p.pushInFlight++;
    this.pushInFlight++;
    for (let i = 0; i < PULL_STREAMS; i++) {
      void remote.openPullSocket().then((sock) => {
        if (!sock) return this.pullStreamEnded(p, pull, '');
        try {
          if (p.state !== 'serving' || this.closed) return this.pullStreamEnded(p, pull, '');
          const id = eng.startPull!(p.engineProc, sock.fd, { stallMs: sock.stallMs });
          pull.ids.push(id);
          pull.state = 'running';
          this.pulls.set(id, p);
        } catch (e) {
          this.pullStreamEnded(p, pull, `could not start (${errText(e)})`);
        } finally {
          sock.close();
        }
      }, (e: unknown) => this.pullStreamEnded(p, pull, `has no connection (${errText(e)})`));
    }
    return true;
  }

  /** Bulk pull streams running, by id. */
  private pulls = new Map<number, Proc>();

  private onPullEnd(ev: Extract<EngineEventLike, { type: 'pull-end' }>): void {
    this.engine.stopPull?.(ev.pull);
    const p = this.pulls.get(ev.pull);
    this.pulls.delete(ev.pull);
    if (!p?.pull || !p.pull.ids.includes(ev.pull)) return;
    this.pushedPages += ev.pages;
    p.pushedBytes += BigInt(ev.pages) * PAGE;
    this.pullStreamEnded(p, p.pull, ev.code === undefined ? undefined : `stopped (${ev.message ?? ev.code})`);
  }

  /** One stream of p's pull ended (why: undefined = done; '' = not started, nothing to say). */
  private pullStreamEnded(p: Proc, pull: NonNullable<Proc['pull']>, why: string | undefined): void {
    if (why !== undefined) pull.failed ??= why;
    if (--pull.pending > 0) return;
    pull.state = pull.failed === undefined ? 'done' : 'failed';
    if (pull.state === 'done') p.remoteIndex = p.remoteRanges.length;
    else if (pull.failed && p.state === 'serving') log.warn(`lazy-pages: pid ${p.imagePid}: native bulk transfer ${pull.failed}; pushing the rest through the page-server client`);
    if (p.pushInFlight > 0) {
      p.pushInFlight--;
      this.pushInFlight--;
    }
    if (p.completePending && p.pushInFlight === 0) this.finish(p, 'complete');
    this.pump();
  }

  /** Next chunk of p's remote ranges (dump-time addresses), or undefined when all were fetched. */
  private nextRemoteChunk(p: Proc): { start: bigint; len: bigint } | undefined {
    if (!this.options.remote) return undefined;
    while (p.remoteIndex < p.remoteRanges.length) {
      const r = p.remoteRanges[p.remoteIndex]!;
      const start = p.remoteCursor > r.start ? p.remoteCursor : r.start;
      if (start >= r.end) {
        p.remoteIndex++;
        continue;
      }
      const end = start + this.chunk < r.end ? start + this.chunk : r.end;
      p.remoteCursor = end;
      return { start, len: end - start };
    }
    return undefined;
  }

  /** Fetches a remote chunk on the source's background path and supplies it. */
  private async pushRemote(p: Proc, chunk: { start: bigint; len: bigint }): Promise<void> {
    try {
      const data = await this.options.remote!.fetch(p.imagePid, chunk.start, Number(chunk.len), { urgent: false });
      if (p.state !== 'serving') return;
      const copied = this.engine.supply(p.engineProc, chunk.start, data);
      p.pushedBytes += copied;
      p.passCopied += copied;
      if (copied > 0n) p.pushedChunks++;
      this.pushedPages += Number(copied / PAGE);
    } catch (e) {
      this.failProcess(p, `remote page source: ${errText(e)}`, e instanceof Error ? e : new Error(String(e)));
    } finally {
      // finish()/failProcess() may already have written off this window.
      if (p.pushInFlight > 0) {
        p.pushInFlight--;
        this.pushInFlight--;
      }
      if (p.completePending && p.pushInFlight === 0) this.finish(p, 'complete');
      this.pump();
    }
  }

  /** Next window of process p: near recent faults first, then address order. */
  private nextChunk(p: Proc): { start: bigint; len: bigint } | undefined {
    if (p.hotCheck) {
      p.hotCheck = false;
      this.findFaultHoles(p);
    }
    while (p.hot.length > 0) {
      const addr = p.hot.pop()!;
      const start = addr - (addr % this.chunk);
      p.knownEdges?.add(start);
      p.knownEdges?.add(start + this.chunk);
      return { start, len: this.chunk };
    }
    for (let pass = 0; pass < 2; pass++) {
      if (pass === 1 || !p.snapshot) {
        if (pass === 1 && p.passChunks > 0 && p.passCopied === 0n) {
          // A whole pass copied nothing (pages the engine cannot copy yet):
          // wait for the next fault instead of spinning.
          p.pushPaused = true;
          p.passChunks = 0;
          p.snapshot = undefined;
          return undefined;
        }
        const ranges = this.rangesOf(p);
        if (ranges === undefined) return undefined;
        p.snapshot = ranges;
        p.snapIndex = 0;
        p.cursor = 0n;
        p.passChunks = 0;
        p.passCopied = 0n;
      }
      const snap = p.snapshot;
      while (p.snapIndex < snap.length && snap[p.snapIndex]!.end <= p.cursor) p.snapIndex++;
      if (p.snapIndex < snap.length) {
        const r = snap[p.snapIndex]!;
        const start = r.start > p.cursor ? r.start : p.cursor;
        p.cursor = start + this.chunk;
        p.passChunks++;
        p.knownEdges?.add(start);
        p.knownEdges?.add(p.cursor);
        return { start, len: this.chunk };
      }
      if (snap.length === 0) return undefined;
    }
    return undefined;
  }

  /**
   * The engine's remaining lazy ranges of p. If the engine cannot say (it
   * lost the process), the process is finished as exited when it is gone and
   * killed otherwise — never left with the push silently stopped.
   */
  private rangesOf(p: Proc): { start: bigint; end: bigint }[] | undefined {
    try {
      return this.engine.lazyRanges(p.engineProc);
    } catch (e) {
      if (p.identity && !isAlive(p.identity)) this.finish(p, 'exited');
      else this.failProcess(p, `the fault engine cannot list its lazy ranges: ${errText(e)}`, e instanceof Error ? e : new Error(String(e)));
      return undefined;
    }
  }

  /** Remaining-range edges we did not make are fault holes: push around them next. */
  private findFaultHoles(p: Proc): void {
    const known = p.knownEdges;
    if (!known) return;
    const ranges = this.rangesOf(p);
    if (ranges === undefined) return;
    const found: bigint[] = [];
    for (const r of ranges) {
      if (!known.has(r.start)) found.push(r.start);
      if (!known.has(r.end)) found.push(r.end > this.chunk ? r.end - this.chunk : 0n);
      if (found.length >= HOT_MAX * 4) break;
    }
    for (const a of found.slice(-HOT_MAX)) p.hot.push(a);
    if (p.hot.length > HOT_MAX) p.hot = p.hot.slice(-HOT_MAX);
  }

  private refundTokens(n: number): void {
    if (this.options.bandwidthBytesPerSec) this.tokens += n;
  }

  /** Token bucket for the bandwidth cap; schedules a retry when empty. */
  private takeTokens(n: number): boolean {
    const rate = this.options.bandwidthBytesPerSec;
    if (!rate) return true;
    const now = Date.now();
    this.tokens = Math.min(rate, this.tokens + ((now - this.tokensAt) / 1000) * rate);
    this.tokensAt = now;
    // A chunk larger than one second's budget goes when the bucket is full.
    const need = Math.min(n, rate);
    if (this.tokens >= need) {
      this.tokens -= n;
      return true;
    }
    if (!this.bwTimer) {
      const wait = Math.max(1, Math.ceil(((need - this.tokens) / rate) * 1000));
      this.bwTimer = setTimeout(() => {
        this.bwTimer = undefined;
        this.pump();
      }, wait);
    }
    return false;
  }

  // ---- idle ------------------------------------------------------------------

  private isIdle(): boolean {
    if (this.pendingAdopts > 0 || !this.restoreFinished) return false;
    // A restorer still handing processes over.
    for (const s of this.sessions.values()) if (s.restorer && !s.finished) return false;
    for (const p of this.procs.values()) if (p.state === 'serving') return false;
    return true;
  }

  private checkIdle(): void {
    if (!this.isIdle() || this.idleWaiters.length === 0) return;
    const stats = this.stats();
    this.writeStatsFile();
    this.emit('idle', stats);
    for (const w of this.idleWaiters.splice(0)) w();
  }

  private writeStatsFile(): void {
    const f = this.options.statsFile;
    if (!f) return;
    this.drainLog();
    const { processes: _count, ...totals } = this.stats();
    const procs: ProcessStats[] = [...this.procs.values()].map((p) => {
      const s = this.snapshotOf(p);
      const es = p.engineStats;
      const latency = es ? latencySummary(es.latencyLog2Ns) : undefined;
      return {
        pid: p.hostPid ?? p.imagePid,
        ...(p.parent ? { parentPid: p.parent.hostPid ?? p.parent.imagePid } : {}),
        id: p.id, imagePid: p.imagePid, state: p.state,
        faults: es?.faults ?? 0, zeroPages: es?.zeroPages ?? 0, copiedPages: es?.copiedPages ?? 0,
        pushedPages: es?.pushedPages ?? 0, bytes: Number(es?.bytes ?? 0n),
        lazyBytes: p.lazyBytes.toString(), pushedBytes: p.pushedBytes.toString(),
        ...(s.timeToCompleteMs !== undefined && p.state === 'complete' ? { timeToCompleteMs: s.timeToCompleteMs } : {}),
        ...(p.state === 'exited' ? { exited: true } : {}),
        ...(latency ? { latency } : {}),
        ...(s.workingSetPages !== undefined ? { workingSetPages: s.workingSetPages } : {}),
        ...(s.warmedMs !== undefined ? { warmedMs: s.warmedMs } : {}),
        ...(s.recordedPages !== undefined ? { recordedPages: s.recordedPages } : {}),
        ...(p.timelineDropped + this.logDropped > 0 ? { timelineDropped: p.timelineDropped + this.logDropped } : {}),
        timeline: p.timeline,
      };
    });
    const body: StatsFile = {
      tool: 'lazy-restore', version: 1, startedAt: this.startedAt.toISOString(),
      durationMs: Date.now() - this.startedAt.getTime(),
      ...totals,
      bytesCopied: totals.bytesCopied.toString(), lazyBytes: totals.lazyBytes.toString(), lazyBytesLeft: totals.lazyBytesLeft.toString(),
      processes: procs, memory: selfMemory(),
    } as StatsFile;
    writeFileSync(f, `${JSON.stringify(body, (_, v: unknown) => (typeof v === 'bigint' ? v.toString() : v), 2)}\n`);
  }
}

/** This process's memory (bytes) from /proc/self/status: anonymous vs file-backed (mapped pages files). */
function selfMemory(): { rssBytes: number; rssAnonBytes: number; rssFileBytes: number; hwmBytes: number } {
  const st = readFileSync('/proc/self/status', 'latin1');
  const kb = (k: string): number => Number(new RegExp(`^${k}:\\s+(\\d+) kB`, 'm').exec(st)?.[1] ?? 0) * 1024;
  return { rssBytes: kb('VmRSS'), rssAnonBytes: kb('RssAnon'), rssFileBytes: kb('RssFile'), hwmBytes: kb('VmHWM') };
}

function validateOptions(o: LazyPagesServerOptions): void {
  if (typeof o.imagesDir !== 'string' || o.imagesDir === '') throw new TypeError('imagesDir must be a non-empty string');
  if (o.bandwidthBytesPerSec !== undefined && !(o.bandwidthBytesPerSec > 0)) throw new RangeError('bandwidthBytesPerSec must be > 0');
  if (o.engineThreads !== undefined && !(Number.isInteger(o.engineThreads) && o.engineThreads >= 1)) throw new RangeError('engineThreads must be an integer >= 1');
  if (o.pushChunkBytes !== undefined && !(Number.isInteger(o.pushChunkBytes) && o.pushChunkBytes >= PAGE_SIZE && o.pushChunkBytes % PAGE_SIZE === 0)) {
    throw new RangeError('pushChunkBytes must be a multiple of 4096');
  }
  if (o.faultAroundPages !== undefined && !(Number.isInteger(o.faultAroundPages) && o.faultAroundPages >= 1 && o.faultAroundPages <= 512)) throw new RangeError('faultAroundPages must be 1..512');
  if (o.workingSetHoldMs !== undefined && !(Number.isFinite(o.workingSetHoldMs) && o.workingSetHoldMs >= 0)) throw new RangeError('workingSetHoldMs must be >= 0');
  if (typeof o.recordWorkingSet === 'number' && !(Number.isFinite(o.recordWorkingSet) && o.recordWorkingSet > 0)) throw new RangeError('recordWorkingSet must be true or a number of seconds > 0');
  if (o.pushInFlight !== undefined && !(Number.isInteger(o.pushInFlight) && o.pushInFlight >= 1)) throw new RangeError('pushInFlight must be an integer >= 1');
}

/** Upper bound (us) of the log2-ns bucket holding the p-th percentile; undefined when empty. */
function histPercentileUs(hist: readonly (number | undefined)[], p: number): number | undefined {
  const ns = histPercentile(hist, p);
  return ns === 0 ? undefined : ns / 1000;
}

type KillOutcome = 'killed' | 'gone' | string;


function closeQuietly(fd: number): void {
  try {
    closeSync(fd);
  } catch {
    /* already closed */
  }
}

function errText(e: unknown): string {
  if (isSystemError(e)) return `${e.syscall}: ${e.code} (${e.message})`;
  return e instanceof Error ? e.message : String(e);
}

