// LazyPagesServer: the lazy-pages daemon as a library. It turns images into
// per-process range tables for the native fault engine, keeps the TS-side
// picture of every process (fork tree, state, statistics) and enforces
// failure safety: a process whose page cannot be served is SIGKILLed, never
// left on zeros. Its parts: proc.ts (one process), push-scheduler.ts (the
// background push), socket-sessions.ts (the lazy-pages socket),
// child-tracker.ts (forked children's pids and watchdog guard),
// fault-log.ts and stats-file.ts (the --stats-file), options.ts.
import { mark } from '../phases.js';
import { join } from 'node:path';
import { UserError, sysError } from '../errors.js';
import { PAGE } from '../images/memory.js';
import { histPercentile } from '../uffd/latency.js';
import { loadPageChecksums, noteUnverified } from '../integrity/checksums.js';
import { Watchdog } from '../integrity/watchdog.js';
import { log } from '../log.js';
import { ChildTracker } from './child-tracker.js';
import type { EngineEventLike, EngineFactory, EngineProcStatsLike, FaultEngineLike } from './engine.js';
import { TypedEmitter } from './emitter.js';
import { FaultLogDrain } from './fault-log.js';
import { closeQuietly, errText, toError } from './helpers.js';
import type { AddSharedObject, LazyImageProvider } from './images.js';
import { killPid, type KillOutcome } from './kill.js';
import {
  DEFAULT_CHUNK, DEFAULT_FAULT_AROUND, DEFAULT_PUSH_IN_FLIGHT, DEFAULT_RECORD_SECONDS, DEFAULT_THREADS, DEFAULT_WS_HOLD_MS, validateOptions,
} from './options.js';
import { fileSpansOf, type Plan } from './plan.js';
import { Proc } from './proc.js';
import { identify, isAlive } from './procfs.js';
import { PushScheduler } from './push-scheduler.js';
import type { LazySocket, LazySocketHandlers } from './socket.js';
import { addSharedObjectTo } from './shmem.js';
import { SocketSessions } from './socket-sessions.js';
import type { SharedObjectStats } from '../uffd/engine.js';
import { writeStatsFile } from './stats-file.js';
import type {
  AdoptOptions, EngineLinks, LazyEventMap, LazyPagesServerOptions, LazyProcessState, LazyProcessStats, LazyServerStats,
} from './types.js';
import { loadWorkingSet, WorkingSetRecorder, writeWorkingSet } from './workingset.js';

/** Engine statistics poll and liveness check period. */
const POLL_MS = 50;

/** The watchdog while it starts: each request waits for it (LazyPagesServer.open awaits the start before anything can be adopted). */
class StartingWatchdog implements Pick<Watchdog, 'adopt' | 'watch' | 'done' | 'close'> {
  constructor(private readonly started: Promise<Watchdog>) {}
  async adopt(pid: number, uffd: number): Promise<void> {
    await (await this.started).adopt(pid, uffd);
  }
  async watch(pid: number): Promise<void> {
    await (await this.started).watch(pid);
  }
  async done(pid: number): Promise<void> {
    await (await this.started).done(pid);
  }
  async close(): Promise<void> {
    let w: Watchdog;
    try {
      w = await this.started;
    } catch {
      return; // never started: nothing to close
    }
    await w.close();
  }
}

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

export class LazyPagesServer extends TypedEmitter<LazyEventMap> {
  private readonly procs = new Map<number, Proc>(); // by engine handle
  private nextId = 1;
  private pendingAdopts = 0;
  /**
   * Plans made ahead, by image pid, each taken by the first adoption of its
   * pid: the daemon plans every process of pstree.img while the restorer is
   * still starting and rebuilding the tree, so an adoption (and the first
   * fault it lets through) does not wait for the images to be read.
   */
  private readonly planned = new Map<number, Promise<Plan>>();
  private planning: Promise<unknown> = Promise.resolve();
  /** Recorded working sets read ahead, by image pid, likewise. */
  private readonly plannedWs = new Map<number, ReturnType<typeof loadWorkingSet>>();
  private restoreFinished = false;
  private closed = false;
  private firstAdoptMs: number | undefined;
  private lastFinishMs: number | undefined;
  private bytesSupplied = 0n;
  private readonly poller: NodeJS.Timeout;
  private idleWaiters: (() => void)[] = [];
  private socket: LazySocket | undefined;
  private readonly sessions: SocketSessions;
  private readonly push: PushScheduler;
  private readonly children: ChildTracker;
  private readonly faultLog: FaultLogDrain;
  private readonly kill: (pid: number) => void;
  private readonly pidfdOpen: ((pid: number) => number | undefined) | undefined;
  /** Processes killed because their images could not serve them (never adopted). */
  private killedAtAdopt = 0;
  private readonly watchdog: LazyPagesServerDeps['watchdog'];
  private readonly startedAt = new Date();
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
    this.kill = deps.kill ?? ((pid) => process.kill(pid, 'SIGKILL'));
    this.pidfdOpen = deps.pidfdOpen;
    this.watchdog = deps.watchdog;
    const rec = options.recordWorkingSet;
    this.recording = rec !== undefined && rec !== false;
    this.recordMs = (typeof rec === 'number' ? rec : DEFAULT_RECORD_SECONDS) * 1000;
    this.faultLog = new FaultLogDrain(engine, Boolean(options.statsFile) || this.recording, options.statsFile !== undefined);
    this.push = new PushScheduler({
      engine,
      remote: options.remote,
      procs: () => this.procs.values(),
      pushAllowed: () => this.restoreFinished && !this.closed && this.options.prefetch !== false && !this.recording,
      finish: (p, state) => this.finish(p, state),
      fail: (p, why, error) => this.failProcess(p, why, error),
    }, BigInt(options.pushChunkBytes ?? Number(DEFAULT_CHUNK)), options.pushInFlight ?? DEFAULT_PUSH_IN_FLIGHT, options.bandwidthBytesPerSec, options.pushChunkBytes === undefined);
    this.children = new ChildTracker({
      engine,
      watchdog: deps.watchdog,
      isClosed: () => this.closed,
      killPid: (pid) => killPid(this.kill, pid),
      snapshotOf: (p) => this.snapshotOf(p),
      emitError: (ev) => this.emit('error', ev),
    });
    this.sessions = new SocketSessions({
      adopt: (pid, fd, opts) => this.adopt(pid, fd, opts),
      killUnserved: (pid) => this.killUnserved(pid),
      emitError: (ev) => this.emit('error', ev),
      emitSocket: (ev) => this.emit('socket', ev),
      restoreFinished: () => {
        this.restoreFinished = true;
      },
      pump: () => this.push.pump(),
      checkIdle: () => this.checkIdle(),
      ack: (conn, pid, errno) => this.socket?.ack(conn, pid, errno),
    });
    // Never keeps the event loop alive by itself: the engine and the socket do.
    this.poller = setInterval(() => this.poll(), POLL_MS);
    this.poller.unref();
  }

  /** Opens the images and starts the engine (and the socket, if asked). */
  static async open(options: LazyPagesServerOptions, deps: LazyPagesServerDeps = {}): Promise<LazyPagesServer> {
    validateOptions(options);
    mark('server open');
    // The watchdog process starts while the images are opened and every
    // process is planned; it must be up before anything is adopted (the
    // socket is attached, and this returns, only after it answered).
    const watchdogStart = !deps.watchdog && (options.watchdog ?? !deps.engineFactory)
      ? Watchdog.start(options.watchdogLogFile !== undefined ? { logFile: options.watchdogLogFile } : {})
      : undefined;
    watchdogStart?.catch(() => {}); // awaited below
    const dropWatchdog = (): void => void watchdogStart?.then((w) => w.close(), () => {}).catch(() => {});
    let images: LazyImageProvider;
    let engine: FaultEngineLike;
    // Engine events reach the server through this indirection, wired once the server exists.
    let sink: ((evs: EngineEventLike[]) => void) | undefined;
    let pidfdOpen: LazyPagesServerDeps['pidfdOpen'];
    try {
      images = deps.images ?? (await (await import('./images.js')).openImageProvider(options.imagesDir, options.remote !== undefined));
      const adapter = deps.engineFactory ? undefined : await import('./engine-adapter.js');
      const factory = deps.engineFactory ?? adapter!.realEngineFactory;
      pidfdOpen = deps.pidfdOpen ?? (deps.engineFactory ? undefined : adapter!.pidfdOpenOrUndefined);
      engine = await factory({
        threads: options.engineThreads ?? DEFAULT_THREADS,
        // Recording wants exactly the touched pages: fault-around would hide neighbours.
        faultAroundPages: options.recordWorkingSet ? 1 : options.faultAroundPages ?? DEFAULT_FAULT_AROUND,
        onEvents: (evs) => sink?.(evs),
      });
    } catch (e) {
      dropWatchdog();
      throw e;
    }
    mark('images + engine');
    const watchdog = deps.watchdog ?? (watchdogStart ? new StartingWatchdog(watchdogStart) : undefined);
    const server = new LazyPagesServer(options, images, engine, { ...deps, ...(pidfdOpen ? { pidfdOpen } : {}), ...(watchdog ? { watchdog } : {}) });
    sink = (evs) => server.onEngineEvents(evs);
    server.planAhead();
    if (watchdogStart) {
      try {
        await watchdogStart;
      } catch (e) {
        clearInterval(server.poller);
        server.closed = true;
        await engine.close();
        throw new UserError(`lazy-pages: cannot start the daemon-death watchdog: ${errText(e)} (--no-watchdog to run without it)`, { cause: e });
      }
    }
    mark('watchdog started');
    // A page source lost for good (page server unreachable past its timeout,
    // or broke the protocol): no process that needs it may run on; kill those
    // now, not at their next fault. Processes served only from local images
    // (no remote range) are not affected and go on.
    options.remote?.onFatal?.((e) => {
      for (const p of server.procs.values()) if (p.remote.ranges.length > 0) server.failProcess(p, `remote page source: ${e.message}`, e);
    });
    await server.bindRemoteLinks();
    if (options.socket || options.socketPath) {
      try {
        const handlers: LazySocketHandlers = {
          onAnnounce: (pid, from) => server.sessions.lookUpAnnounced(pid, from),
          onTask: (pid, fd, from) => void server.sessions.adoptFromSocket(pid, fd, from),
          onEvent: (ev) => server.sessions.onSocketEvent(ev),
        };
        if (options.socket) {
          server.socket = options.socket;
          options.socket.attach(handlers);
        } else {
          const path = options.socketPath === true ? join(options.imagesDir, 'lazy-pages.socket') : options.socketPath as string;
          const { LazySocket } = await import('./socket.js');
          server.socket = new LazySocket(path, handlers);
        }
      } catch (e) {
        clearInterval(server.poller);
        await engine.close();
        await watchdog?.close().catch(() => {});
        throw e;
      }
    }
    mark('server listening');
    return server;
  }

  /** Recorded working sets are copied first (not while recording new ones). */
  private replaysWorkingSets(): boolean {
    return this.options.workingSet !== false && !this.recording && this.engine.prefetchFirst !== undefined;
  }

  /**
   * Starts planning every process of the images (see `planned`). A failure
   * is kept for that pid's adoption, which reports it as before.
   */
  private planAhead(): void {
    this.planning = this.images.pids().then((pids) => {
      // One process after the other (in pstree order, as the restorer hands them over).
      let prev: Promise<unknown> = Promise.resolve();
      for (const pid of pids) {
        if (this.planned.has(pid)) continue;
        if (this.replaysWorkingSets()) {
          const ws = loadWorkingSet(this.images.dir, pid);
          ws.catch(() => {}); // reported when the pid is adopted
          this.plannedWs.set(pid, ws);
        }
        const p = prev.then(() => this.images.plan(pid, (path) => this.addSource(path), this.sharedAdder()));
        p.catch(() => {}); // reported when the pid is adopted
        const ws = this.plannedWs.get(pid);
        if (ws) void Promise.all([p, ws]).then(([plan, set]) => this.verifyAhead(plan, set), () => {});
        this.planned.set(pid, p);
        prev = p.catch(() => {});
      }
      return prev.then(() => mark('planned ahead'));
    }).catch(() => { /* pstree unreadable: each adoption says so */ });
  }

  /**
   * A recorded working set is copied before its process may run (the
   * hold): its chunks are checked now, on an engine thread, while the
   * restorer is still building the process, so the hold only copies.
   */
  private verifyAhead(plan: Plan, ws: readonly { start: bigint; end: bigint }[] | undefined): void {
    if (!ws || ws.length === 0 || !this.engine.verifyAhead || this.closed) return;
    for (const [source, spans] of fileSpansOf(plan.ranges, ws)) {
      try {
        this.engine.verifyAhead(source, spans);
      } catch (e) {
        log.debug(`lazy-pages: pid ${plan.pid}: working set not checked ahead: ${errText(e)}`);
      }
    }
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
    const aheadWs = this.plannedWs.get(pid);
    this.plannedWs.delete(pid);
    const replay = this.replaysWorkingSets()
      ? (aheadWs ?? loadWorkingSet(this.images.dir, pid)).catch((e: unknown) => {
        const message = `pid ${pid}: recorded working set ignored: ${errText(e)}`;
        this.emit('error', { proc: undefined, killed: false, message, error: e instanceof Error ? e : new Error(message) });
        return undefined;
      })
      : Promise.resolve(undefined);
    let plan: Plan;
    try {
      mark(`pid ${pid} adopt: planning`);
      const ahead = this.planned.get(pid);
      this.planned.delete(pid);
      [plan] = await Promise.all([ahead ?? this.images.plan(pid, (path) => this.addSource(path), this.sharedAdder()), replay]);
    } catch (e) {
      this.pendingAdopts--;
      // Kill before closing the uffd: once the last copy is closed the kernel
      // hands the process zero pages.
      const err = this.refuse(pid, hostPid, `cannot serve its memory: ${errText(e)}`, e);
      closeQuietly(uffd);
      throw err;
    }
    mark(`pid ${pid} planned`);
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
    mark(`pid ${pid} watchdog adopted`);
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
      this.children.watchdogDone(hostPid);
      closeQuietly(uffd);
      if (pidfd !== undefined) closeQuietly(pidfd);
      throw err;
    }
    mark(`pid ${pid} engine adopted`);
    this.pendingAdopts--;
    const p = new Proc(this.nextId++, handle, pid, undefined);
    p.hostPid = hostPid;
    p.identity = identify(hostPid);
    p.lazyBytes = plan.fileBytes + plan.remoteBytes;
    for (const r of plan.ranges) {
      if (r.src.kind === 'remote') p.remote.ranges.push({ start: r.src.imageAddr, end: r.src.imageAddr + (r.end - r.start) });
      p.push.noteEdges(r.start, r.end);
    }
    // The engine may have reported 'complete' (empty plan) before the handle was known.
    p.lastLeft = plan.ranges.reduce((n, r) => n + (r.end - r.start), 0n);
    this.procs.set(handle, p);
    if (this.recording) p.log.recorder = new WorkingSetRecorder(process.hrtime.bigint());
    const ws = await replay;
    if (ws && ws.length > 0 && plan.ranges.length > 0) {
      // Queued before the process resumes: the engine copies these first, in fault order.
      p.warm.pages = ws.reduce((n, r) => n + Number((r.end - r.start) / PAGE), 0);
      try {
        this.engine.prefetchFirst!(handle, ws);
        // The restorer resumes the process once adopt() returns: let the
        // working set go in first (nothing can fault yet), within a bound.
        const hold = this.options.workingSetHoldMs ?? DEFAULT_WS_HOLD_MS;
        if (hold > 0 && p.warm.warmedAtMs === undefined && p.state === 'serving') {
          await new Promise<void>((resolve) => {
            const timer = setTimeout(() => p.warm.release(), hold);
            p.warm.waiter = () => {
              clearTimeout(timer);
              p.warm.waiter = undefined;
              resolve();
            };
          });
        }
      } catch (e) {
        this.emit('error', { proc: this.snapshotOf(p), killed: false, message: `pid ${pid}: working set not replayed: ${errText(e)}`, error: toError(e) });
      }
    }
    if (!this.socket) this.restoreFinished = true;
    if (plan.ranges.length === 0) this.finish(p, 'complete');
    this.push.pump();
    return this.snapshotOf(p);
  }

  /** The restore-finished point for in-process use with a socket: start the background push now. */
  startPush(): void {
    this.restoreFinished = true;
    this.push.pump();
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
      const rec = p.log.recorder;
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
    this.push.pump();
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
      faults, faultPages: copied + this.remoteFaultPages, zeroPages, pushedPages: this.push.pushedPages,
      bytesCopied: bytes, lazyBytes: lazy, lazyBytesLeft: left,
      faultLatencyP50Us: histPercentileUs(hist, 50), faultLatencyP99Us: histPercentileUs(hist, 99),
      elapsedMs: this.firstAdoptMs === undefined ? 0 : end - this.firstAdoptMs,
      zombies: this.sessions.zombies,
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
    // Plans still being made register pages files with the engine: let them end first.
    await this.planning;
    this.planned.clear();
    this.plannedWs.clear();
    this.refreshEngineStats();
    for (const p of this.procs.values()) {
      if (p.state === 'serving') this.failProcess(p, 'the lazy-pages server was closed while it still had pages to serve', new Error('server closed'));
    }
    await this.stopRecording();
    this.sharedStats(); // kept for the stats file and callers once the engine is gone
    this.closed = true;
    clearInterval(this.poller);
    this.push.close();
    this.socket?.close();
    this.writeStatsFile();
    this.unbindRemote?.();
    await this.engine.close();
    for (const p of this.procs.values()) p.guard.dropFd();
    try {
      await this.watchdog?.close();
    } catch (e) {
      log.warn(`lazy-pages: closing the watchdog: ${errText(e)}`);
    }
    for (const w of this.idleWaiters.splice(0)) w();
  }

  /** Page counters of the lazily served shared memory objects (native/engine/shared.cc), in the order they were registered. */
  sharedStats(): SharedObjectStats[] {
    if (!this.closed && this.engine.sharedStats) this.lastShared = this.engine.sharedStats();
    return this.lastShared;
  }

  private lastShared: SharedObjectStats[] = [];

  /** Registers a lazily served shared memory object (plugin/lazy/shmem.ts), if the engine can serve one. */
  private sharedAdder(): AddSharedObject | undefined {
    const engine = this.engine;
    if (!engine.addSharedObject) return undefined;
    return (o, addSource) => addSharedObjectTo({ addSharedObject: (...a) => engine.addSharedObject!(...a) }, o, addSource);
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

  // ---- process picture -------------------------------------------------------

  private refuse(pid: number, hostPid: number, why: string, cause: unknown): UserError {
    const killed = this.killUnserved(hostPid) === 'killed';
    const msg = `pid ${pid}: ${why}; ${killed ? `killed pid ${hostPid} with SIGKILL` : `pid ${hostPid} could not be killed`}`;
    const error = new UserError(msg, { cause });
    this.emit('error', { proc: undefined, killed, message: msg, error });
    this.checkIdle();
    return error;
  }

  /** SIGKILLs a process that is refused before it was adopted, and counts it. */
  private killUnserved(hostPid: number): KillOutcome {
    const kill = killPid(this.kill, hostPid);
    if (kill === 'killed') this.killedAtAdopt++;
    return kill;
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
      ...(p.warm.pages !== undefined ? { workingSetPages: p.warm.pages } : {}),
      ...(p.warm.warmedAtMs !== undefined ? { warmedMs: p.warm.warmedAtMs - p.adoptedAtMs } : {}),
      ...(p.log.recorder ? { recordedPages: p.log.recorder.pages } : {}),
    };
  }

  private onEngineEvents(evs: EngineEventLike[]): void {
    for (const ev of evs) {
      if (ev.type === 'link-error') {
        // The engine already closed the link and re-routed its GETs to 'need'.
        for (const l of this.linkErrorListeners) l(ev.slot, ev.message);
        continue;
      }
      if (ev.type === 'pull-end') {
        this.push.onPullEnd(ev);
        continue;
      }
      try {
        this.onEngineEvent(ev);
      } catch (e) {
        this.emit('error', { proc: undefined, killed: false, message: `internal: handling engine event ${ev.type}: ${errText(e)}`, error: toError(e) });
      }
    }
    this.push.pump();
    this.checkIdle();
  }

  private onEngineEvent(ev: EngineEventLike): void {
    const p = this.procs.get(ev.proc);
    if (!p) return;
    switch (ev.type) {
      case 'fork': {
        const c = p.fork(this.nextId++, ev.child);
        this.procs.set(ev.child, c);
        if (this.watchdog && this.engine.dupUffd) {
          // The watchdog must hold the child's own uffd too: if this daemon
          // dies, the engine's copy closes and the kernel would hand the
          // child zero pages before the watchdog's SIGKILL reaches it.
          try {
            c.guard.watchdogFd = this.engine.dupUffd(ev.child);
          } catch (e) {
            log.debug(`lazy-pages: child of pid ${p.imagePid}: no uffd to hand to the watchdog: ${errText(e)}`);
          }
        }
        // The child becomes visible in /proc only after the parent's fork returns.
        this.children.resolve(c);
        this.emit('fork', { parent: this.snapshotOf(p), child: this.snapshotOf(c) });
        break;
      }
      case 'remap':
        if (p.log.recorder) {
          // Later faults are at moved addresses: keep what was recorded so far.
          this.drainLog();
          p.log.recorder.frozen = true;
        }
        p.push.forget();
        this.emit('remap', { proc: this.snapshotOf(p), from: ev.from, to: ev.to, len: ev.len });
        break;
      case 'remove':
      case 'unmap':
        p.push.noteEdges(ev.start, ev.end);
        this.emit(ev.type, { proc: this.snapshotOf(p), start: ev.start, end: ev.end });
        break;
      case 'need':
        void this.serveRemote(p, ev.imageAddr, ev.len);
        break;
      case 'prefetched':
        this.push.onPrefetched(p, ev.copied);
        break;
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
        if (p.warm.warmedAtMs === undefined && p.warm.pages !== undefined) {
          p.warm.warmedAtMs = Date.now();
          mark(`pid ${p.imagePid} working set in`);
          p.warm.release();
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
    p.warm.release();
    this.refreshEngineStats();
    this.drainLog();
    p.state = state;
    p.finishedAtMs = Date.now();
    this.lastFinishMs = p.finishedAtMs;
    this.push.writeOff(p);
    // Closing our uffd copy ends interception. For 'complete' nothing lazy is
    // left; for 'exited' the mm is gone.
    if (p.hostPid === undefined) this.children.resolveNow(p);
    this.children.release(p, p.hostPid);
    if (state === 'complete') this.emit('complete', { proc: this.snapshotOf(p) });
    else if (state === 'exited') this.emit('exit', { proc: this.snapshotOf(p) });
    this.checkIdle();
  }

  /** SIGKILL first, then release: once our uffd is closed the kernel would hand out zero pages. */
  private failProcess(p: Proc, why: string, error: Error): void {
    if (p.state !== 'serving') return;
    p.warm.release();
    this.refreshEngineStats();
    if (p.hostPid === undefined) this.children.resolveNow(p);
    const target = p.hostPid;
    const who = p.describe();
    // 'killed' | 'gone' | an errno name (the kill was refused) | undefined (pid unknown)
    let kill: KillOutcome | undefined;
    if (target !== undefined) kill = p.identity && !isAlive(p.identity) ? 'gone' : killPid(this.kill, target);
    const killed = kill === 'killed';
    p.state = 'killed';
    p.finishedAtMs = Date.now();
    this.lastFinishMs = p.finishedAtMs;
    this.push.writeOff(p);
    // Only a process that is dead (killed or gone) loses its uffd. One whose
    // pid is unknown (a forked child not found yet) or that could not be
    // killed keeps it open in the engine and in the watchdog, so it stays
    // blocked on its faults instead of reading zero pages; an unknown child
    // is looked for and killed once found.
    if (kill === 'killed' || kill === 'gone') {
      this.children.release(p, target);
    } else if (kill === undefined) {
      p.guard.killWhenFound = true;
      this.children.findToKill(p);
    }
    const outcome = kill === 'killed' ? `killed pid ${target} with SIGKILL`
      : kill === 'gone' ? `pid ${target} is already gone`
        : kill === undefined ? 'its pid is unknown: left blocked on its faults until it is found and killed'
          : `pid ${target} could not be killed (${kill}): left blocked on its faults`;
    const message = `${who}: a page could not be served: ${why}; ${outcome}`;
    this.emit('error', { proc: this.snapshotOf(p), killed, message, error });
    this.checkIdle();
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
      this.failProcess(p, `remote page source: ${errText(e)}`, toError(e));
    }
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
        p.push.onFaults();
      }
      if (p.identity && !isAlive(p.identity)) this.finish(p, 'exited');
    }
    if (faults > 0) this.emit('fault', { faults, faultPages: pages, zeroPages: zero, stats: this.stats() });
    this.push.pump();
    this.checkIdle();
  }

  /** Takes the engine's fault log: stats-file timelines and working-set recording. */
  private drainLog(): void {
    this.faultLog.drain(this.procs, (ev) => this.emit('error', ev));
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

  // ---- idle ------------------------------------------------------------------

  private isIdle(): boolean {
    if (this.pendingAdopts > 0 || !this.restoreFinished) return false;
    // A restorer still handing processes over.
    if (this.sessions.restoring()) return false;
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
    writeStatsFile(f, {
      startedAt: this.startedAt, totals: this.stats(), procs: this.procs.values(),
      snapshotOf: (p) => this.snapshotOf(p), logDropped: this.faultLog.dropped, sharedObjects: this.sharedStats(),
    });
  }
}

/** Upper bound (us) of the log2-ns bucket holding the p-th percentile; undefined when empty. */
function histPercentileUs(hist: readonly (number | undefined)[], p: number): number | undefined {
  const ns = histPercentile(hist, p);
  return ns === 0 ? undefined : ns / 1000;
}
