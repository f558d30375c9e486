// LazyPagesServer: the lazy-pages daemon as a library. It turns images into
// per-process range tables for the native fault engine, keeps the TS-side
// picture of every process (fork tree, state, statistics), decides the
// background push (what, when, how fast) and enforces failure safety: a
// process whose page cannot be served is SIGKILLed, never left on zeros.
import { closeSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { UserError, isSystemError } from '../errors.js';
import type { EngineEventLike, EngineFactory, FaultEngineLike } from './engine.js';
import { TypedEmitter } from './emitter.js';
import type { LazyImageProvider } from './images.js';
import type { Plan } from './plan.js';
import { childrenOf, identify, isAlive, tgidOf, type ProcIdentity } from './procfs.js';
import { LatencyReservoir } from './stats.js';
import type {
  AdoptOptions, LazyEventMap, LazyPagesServerOptions, PlannedRange, LazyProcessState, LazyProcessStats, LazyServerStats,
} from './types.js';
import type { LazySocket } from './socket.js';

const DEFAULT_CHUNK = 2n * 1024n * 1024n;
const LIVENESS_MS = 100;
const RECENT_FAULTS = 4;

/** Internal hooks so tests can run the policy against fakes. */
export interface LazyPagesServerDeps {
  engineFactory?: EngineFactory;
  images?: LazyImageProvider;
  /** Sends SIGKILL; default process.kill. */
  kill?: (pid: number) => void;
}

class Proc {
  state: LazyProcessState = 'serving';
  readonly children: Proc[] = [];
  hostPid: number | undefined;
  identity: ProcIdentity | undefined;
  lazyBytes = 0n;
  pushedBytes = 0n;
  pushedChunks = 0;
  pushInFlight = 0;
  readonly adoptedAtMs = Date.now();
  finishedAtMs: number | undefined;
  /** Dump-time page addresses of recent faults (push near them first). */
  readonly hot: bigint[] = [];
  /** Address-order push: snapshot of remaining data ranges and where we are in it. */
  snapshot: PlannedRange[] | undefined;
  snapIndex = 0;
  cursor = 0n;
  /** Bytes copied by the current address-order pass; a pass that copies nothing pauses the push until a fault. */
  passCopied = 0n;
  passChunks = 0;
  pushPaused = false;
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
  private pushStarted = false;
  private closed = false;
  private firstAdoptMs: number | undefined;
  private lastFinishMs: number | undefined;
  private pushInFlight = 0;
  private readonly latency = new LatencyReservoir(200_000);
  private faults = 0;
  private faultPages = 0;
  private zeroPages = 0;
  private pushedPages = 0;
  private bytesCopied = 0n;
  private tokens = 0;
  private tokensAt = Date.now();
  private bwTimer: NodeJS.Timeout | undefined;
  private readonly liveness: NodeJS.Timeout;
  private idleWaiters: (() => void)[] = [];
  private socket: LazySocket | undefined;
  private readonly chunk: bigint;
  private readonly maxInFlight: number;
  private readonly kill: (pid: number) => void;
  private zombies = 0;

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
    this.liveness = setInterval(() => this.checkLiveness(), LIVENESS_MS);
    this.liveness.unref();
  }

  /** Opens the images (pstree, inventory) and starts the engine (and the socket, if asked). */
  static async open(options: LazyPagesServerOptions, deps: LazyPagesServerDeps = {}): Promise<LazyPagesServer> {
    validateOptions(options);
    const images = deps.images ?? (await (await import('./images.js')).openImageProvider(options.imagesDir, options.remote !== undefined));
    // The engine's events reach the server through this indirection, which is
    // wired once the server exists.
    let sink: ((evs: EngineEventLike[]) => void) | undefined;
    const factory = deps.engineFactory ?? (await import('./engine-adapter.js')).realEngineFactory;
    const engine = await factory({
      ...(options.engineThreads !== undefined ? { threads: options.engineThreads } : {}),
      onEvents: (evs) => sink?.(evs),
    });
    const server = new LazyPagesServer(options, images, engine, deps);
    sink = (evs) => server.onEngineEvents(evs);
    if (options.socketPath) {
      const path = options.socketPath === true ? join(options.imagesDir, 'lazy-pages.socket') : options.socketPath;
      try {
        const { LazySocket } = await import('./socket.js');
        server.socket = new LazySocket(path, {
          onTask: (pid, fd) => void server.adoptFromSocket(pid, fd),
          onEvent: (ev) => server.onSocketEvent(ev),
        });
      } catch (e) {
        await engine.close();
        clearInterval(server.liveness);
        throw e;
      }
    }
    return server;
  }

  /** The socket path when listening. */
  get socketPath(): string | undefined {
    return this.socket?.path;
  }

  /**
   * Takes over `uffd` (owned by the server from now on) for the process with
   * virtual pid `pid` and serves it at once. If the images cannot serve it,
   * the process is killed and this rejects with the reason.
   */
  async adopt(pid: number, uffd: number, opts: AdoptOptions = {}): Promise<LazyProcessStats> {
    if (!Number.isInteger(pid) || pid <= 0) throw new RangeError(`pid must be a positive integer, got ${pid}`);
    if (!Number.isInteger(uffd) || uffd < 0) throw new RangeError(`uffd must be a file descriptor, got ${uffd}`);
    if (this.closed) throw new UserError(`pid ${pid}: lazy-pages server is closed`);
    const hostPid = opts.hostPid ?? pid;
    this.pendingAdopts++;
    this.firstAdoptMs ??= Date.now();
    let plan: Plan;
    try {
      plan = await this.images.plan(pid, (path) => this.engine.addSource(path));
    } catch (e) {
      this.pendingAdopts--;
      closeQuietly(uffd);
      const msg = `pid ${pid}: cannot serve its memory: ${e instanceof Error ? e.message : String(e)}`;
      this.killPid(hostPid);
      this.emit('error', { proc: undefined, killed: true, message: `${msg}; killed pid ${hostPid}`, error: e instanceof Error ? e : new Error(String(e)) });
      this.checkIdle();
      throw new UserError(msg, { cause: e });
    }
    let handle: number;
    try {
      handle = this.engine.adopt(uffd, plan.ranges);
    } catch (e) {
      this.pendingAdopts--;
      closeQuietly(uffd);
      this.killPid(hostPid);
      const msg = `pid ${pid}: engine refused the userfaultfd: ${errText(e)}; killed pid ${hostPid}`;
      this.emit('error', { proc: undefined, killed: true, message: msg, error: e instanceof Error ? e : new Error(String(e)) });
      this.checkIdle();
      throw new UserError(msg, { cause: e });
    }
    this.pendingAdopts--;
    const p = new Proc(this.nextId++, handle, pid, undefined);
    p.hostPid = hostPid;
    p.identity = identify(hostPid);
    p.lazyBytes = plan.fileBytes + plan.remoteBytes;
    this.procs.set(handle, p);
    if (!this.socket) this.restoreFinished = true;
    if (this.restoreFinished) this.startPushInternal();
    if (p.lazyBytes === 0n) this.finish(p, 'complete');
    return this.snapshot(p);
  }

  /** The restore-finished point without a socket: start the background push now. */
  startPush(): void {
    this.restoreFinished = true;
    this.startPushInternal();
    this.checkIdle();
  }

  /** Statistics of every process the server has seen. */
  processes(): LazyProcessStats[] {
    return [...this.procs.values()].map((p) => this.snapshot(p));
  }

  stats(): LazyServerStats {
    let serving = 0, complete = 0, exited = 0, killed = 0;
    let lazy = 0n, left = 0n;
    for (const p of this.procs.values()) {
      if (p.state === 'serving') serving++;
      else if (p.state === 'complete') complete++;
      else if (p.state === 'exited') exited++;
      else killed++;
      lazy += p.lazyBytes;
      left += this.leftOf(p);
    }
    const end = serving === 0 && this.lastFinishMs !== undefined ? this.lastFinishMs : Date.now();
    let engine: Record<string, number | bigint> = {};
    try {
      engine = this.engine.stats();
    } catch {
      /* engine closed */
    }
    return {
      processes: this.procs.size, serving, complete, exited, killed,
      faults: this.faults, faultPages: this.faultPages, zeroPages: this.zeroPages, pushedPages: this.pushedPages,
      bytesCopied: this.bytesCopied, lazyBytes: lazy, lazyBytesLeft: left,
      faultLatencyP50Us: this.latency.percentile(50), faultLatencyP99Us: this.latency.percentile(99),
      elapsedMs: this.firstAdoptMs === undefined ? 0 : end - this.firstAdoptMs,
      zombies: this.zombies,
      engine,
    };
  }

  /** Resolves once restore has finished and every adopted process is complete or gone. */
  whenIdle(): Promise<LazyServerStats> {
    if (this.isIdle()) return Promise.resolve(this.stats());
    return new Promise((resolve) => this.idleWaiters.push(() => resolve(this.stats())));
  }

  done(): Promise<LazyServerStats> {
    return this.whenIdle();
  }

  /** Stops the socket and the engine; processes still serving are left to the kernel's mercy, so kill them first if needed. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.liveness);
    if (this.bwTimer) clearTimeout(this.bwTimer);
    this.socket?.close();
    this.writeStatsFile();
    await this.engine.close();
    for (const w of this.idleWaiters.splice(0)) w();
  }

  // -------------------------------------------------------------------------

  private leftOf(p: Proc): bigint {
    if (p.state !== 'serving') return 0n;
    try {
      return this.engine.lazyBytes(p.engineProc);
    } catch {
      return 0n;
    }
  }

  private snapshot(p: Proc): LazyProcessStats {
    return {
      id: p.id, imagePid: p.imagePid, hostPid: p.hostPid, parentId: p.parent?.id,
      lazyBytes: p.lazyBytes, lazyBytesLeft: this.leftOf(p), pushedBytes: p.pushedBytes, pushedChunks: p.pushedChunks,
      adoptedAtMs: p.adoptedAtMs,
      timeToCompleteMs: p.finishedAtMs === undefined ? undefined : p.finishedAtMs - p.adoptedAtMs,
      state: p.state,
    };
  }

  private async adoptFromSocket(pid: number, fd: number): Promise<void> {
    try {
      await this.adopt(pid, fd);
    } catch {
      /* reported through the 'error' event; the process was killed */
    }
  }

  private onSocketEvent(ev: { type: 'connected' | 'refused' | 'zombie' | 'finished' | 'eof' | 'protocol' | 'error'; pid?: number; uid?: number; detail?: string; error?: Error }): void {
    switch (ev.type) {
      case 'zombie':
        this.zombies++;
        break;
      case 'finished':
        this.restoreFinished = true;
        this.startPushInternal();
        break;
      case 'eof':
        if (!this.restoreFinished) {
          this.emit('error', { proc: undefined, killed: false, message: 'restorer unexpectedly closed the lazy-pages connection before restore finished', error: new Error('EOF before RSTF') });
          // Nothing more will arrive: serve what was adopted and let idle happen.
          this.restoreFinished = true;
          this.startPushInternal();
        }
        break;
      case 'protocol':
      case 'error': {
        const message = ev.type === 'protocol' ? `lazy-pages socket: ${ev.detail ?? 'protocol error'}` : `lazy-pages socket: ${errText(ev.error)}`;
        this.emit('error', { proc: undefined, killed: false, message, error: ev.error ?? new Error(message) });
        this.restoreFinished = true;
        this.startPushInternal();
        break;
      }
      default:
        break;
    }
    if (ev.type !== 'protocol' && ev.type !== 'error') {
      this.emit('socket', { type: ev.type, ...(ev.pid !== undefined ? { pid: ev.pid } : {}), ...(ev.uid !== undefined ? { uid: ev.uid } : {}) });
    }
    this.checkIdle();
  }

  private onEngineEvents(evs: EngineEventLike[]): void {
    for (const ev of evs) {
      try {
        this.onEngineEvent(ev);
      } catch (e) {
        this.emit('error', { proc: undefined, killed: false, message: `internal: handling ${ev.type}: ${errText(e)}`, error: e instanceof Error ? e : new Error(String(e)) });
      }
    }
    this.pump();
    this.checkIdle();
  }

  private onEngineEvent(ev: EngineEventLike): void {
    if (ev.type === 'stats') {
      this.faults += ev.faults;
      this.faultPages += ev.faultPages;
      this.zeroPages += ev.zeroPages;
      for (const l of ev.latenciesUs) this.latency.add(l);
      for (const f of ev.faultAddrs) {
        const p = this.procs.get(f.proc);
        if (!p || p.state !== 'serving') continue;
        p.hot.push(f.addr);
        p.pushPaused = false;
        if (p.hot.length > RECENT_FAULTS) p.hot.shift();
      }
      if (ev.faults > 0) this.emit('fault', { faults: ev.faults, faultPages: ev.faultPages, zeroPages: ev.zeroPages, stats: this.stats() });
      for (const p of this.procs.values()) if (p.state === 'serving') this.maybeComplete(p);
      return;
    }
    const p = this.procs.get(ev.proc);
    if (!p) return;
    switch (ev.type) {
      case 'fork': {
        const c = new Proc(this.nextId++, ev.child, p.imagePid, p);
        c.lazyBytes = safe(() => this.engine.lazyBytes(ev.child), 0n);
        p.children.push(c);
        this.procs.set(ev.child, c);
        // The child becomes visible in /proc only after the parent's fork returns.
        this.resolveChildPid(c, 0);
        this.emit('fork', { parent: this.snapshot(p), child: this.snapshot(c) });
        this.maybeComplete(c);
        break;
      }
      case 'remap':
        p.snapshot = undefined;
        this.emit('remap', { proc: this.snapshot(p), from: ev.from, to: ev.to, len: ev.len });
        break;
      case 'remove':
      case 'unmap':
        this.emit(ev.type, { proc: this.snapshot(p), start: ev.start, end: ev.end });
        this.maybeComplete(p);
        break;
      case 'need':
        void this.serveRemote(p, ev.addr, ev.imageAddr, ev.len);
        break;
      case 'prefetched': {
        p.pushInFlight--;
        this.pushInFlight--;
        p.pushedBytes += ev.copied;
        p.passCopied += ev.copied;
        if (ev.copied > 0n) p.pushedChunks++;
        this.pushedPages += Number(ev.copied / 4096n);
        this.bytesCopied += ev.copied;
        this.maybeComplete(p);
        break;
      }
      case 'complete':
        if (p.state === 'serving') this.finish(p, 'complete');
        break;
      case 'exit':
        if (p.state === 'serving') this.finish(p, 'exited');
        break;
      case 'error':
        this.failProcess(p, `${ev.syscall}: ${ev.code} (${ev.message})`, Object.assign(new Error(ev.message), { code: ev.code, errno: ev.errno, syscall: ev.syscall }), ev.tid);
        break;
    }
  }

  private maybeComplete(p: Proc): void {
    if (p.state !== 'serving' || p.pushInFlight > 0) return;
    if (safe(() => this.engine.lazyBytes(p.engineProc), 1n) === 0n) this.finish(p, 'complete');
  }

  private finish(p: Proc, state: LazyProcessState): void {
    if (p.state !== 'serving') return;
    p.state = state;
    p.finishedAtMs = Date.now();
    this.lastFinishMs = p.finishedAtMs;
    // Closing our uffd copy ends interception: only zero ranges (never
    // populated in the image) may be left, and the kernel fills those with zeros.
    try {
      this.engine.release(p.engineProc);
    } catch {
      /* already gone in the engine */
    }
    if (state === 'complete') this.emit('complete', { proc: this.snapshot(p) });
    else if (state === 'exited') this.emit('exit', { proc: this.snapshot(p) });
    this.checkIdle();
  }

  private failProcess(p: Proc, why: string, error: Error, tid?: number): void {
    if (p.state !== 'serving') return;
    let target = p.hostPid;
    if (target === undefined && tid !== undefined) target = tgidOf(tid);
    if (target === undefined) {
      this.resolveChildPidNow(p);
      target = p.hostPid;
    }
    const who = p.parent ? `child of pid ${p.parent.hostPid ?? p.parent.imagePid} (image pid ${p.imagePid})` : `pid ${p.imagePid}`;
    let killed = false;
    if (target !== undefined && (!p.identity || isAlive(p.identity))) {
      killed = this.killPid(target);
    }
    // Kill first, then release: once our uffd is closed the kernel would hand out zero pages.
    p.state = 'killed';
    p.finishedAtMs = Date.now();
    this.lastFinishMs = p.finishedAtMs;
    try {
      this.engine.release(p.engineProc);
    } catch {
      /* gone */
    }
    const message = `${who}: a page could not be served: ${why}; ${killed ? `killed pid ${target} with SIGKILL` : target === undefined ? 'its pid is unknown, it could not be killed' : `pid ${target} is already gone`}`;
    this.emit('error', { proc: this.snapshot(p), killed, message, error });
    this.checkIdle();
  }

  private killPid(pid: number): boolean {
    try {
      this.kill(pid);
      return true;
    } catch {
      return false;
    }
  }

  private async serveRemote(p: Proc, addr: bigint, imageAddr: bigint, len: bigint): Promise<void> {
    const remote = this.options.remote;
    try {
      if (!remote) throw new Error('no remote page source configured');
      const data = await remote.fetch(p.imagePid, imageAddr, Number(len));
      if (data.length !== Number(len)) throw new Error(`remote page source returned ${data.length} of ${len} bytes at 0x${imageAddr.toString(16)}`);
      if (p.state !== 'serving') return;
      this.bytesCopied += this.engine.supply(p.engineProc, addr, data);
      this.maybeComplete(p);
    } catch (e) {
      this.failProcess(p, `remote page source: ${errText(e)}`, e instanceof Error ? e : new Error(String(e)));
    }
  }

  /** Finds a forked child's pid among its parent's children not yet claimed. */
  private resolveChildPid(c: Proc, attempt: number): void {
    if (c.hostPid !== undefined || c.state !== 'serving' || this.closed) return;
    this.resolveChildPidNow(c);
    if (c.hostPid === undefined && attempt < 50) setTimeout(() => this.resolveChildPid(c, attempt + 1), Math.min(2 ** attempt, 50)).unref();
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
    }
  }

  private checkLiveness(): void {
    for (const p of this.procs.values()) {
      if (p.state === 'serving' && p.identity && !isAlive(p.identity)) this.finish(p, 'exited');
    }
  }

  // ---- background push ----------------------------------------------------

  private startPushInternal(): void {
    if (this.options.prefetch === false || this.pushStarted || this.closed) {
      this.pump();
      return;
    }
    this.pushStarted = true;
    this.pump();
  }

  /** Issues background chunks while there is room; faults are never queued behind them (the engine serves faults first). */
  private pump(): void {
    if (!this.pushStarted || this.closed || this.options.prefetch === false) return;
    const serving = [...this.procs.values()].filter((p) => p.state === 'serving');
    let progress = true;
    while (this.pushInFlight < this.maxInFlight && progress) {
      progress = false;
      for (const p of serving) {
        if (this.pushInFlight >= this.maxInFlight) break;
        if (p.state !== 'serving' || p.pushInFlight > 0 || p.pushPaused) continue;
        if (!this.takeTokens(Number(this.chunk))) return;
        const next = this.nextChunk(p);
        if (!next) {
          this.refundTokens(Number(this.chunk));
          continue;
        }
        this.refundTokens(Number(this.chunk - next.len));
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

  /** Next chunk of process p: near a recent fault first, then address order. */
  private nextChunk(p: Proc): { start: bigint; len: bigint } | undefined {
    while (p.hot.length > 0) {
      const addr = p.hot.pop()!;
      const snap = this.refreshSnapshot(p, false);
      const r = snap.find((x) => x.end > addr && x.src.kind !== 'zero' && x.start <= addr + this.chunk);
      if (!r) continue;
      const start = r.start > addr ? r.start : addr - (addr % this.chunk) < r.start ? r.start : addr - (addr % this.chunk);
      const end = start + this.chunk < r.end ? start + this.chunk : r.end;
      if (end > start) return { start, len: end - start };
    }
    for (let pass = 0; pass < 2; pass++) {
      if (pass === 1) {
        // A whole pass without progress (e.g. pages the engine cannot copy
        // yet): wait for the next fault instead of spinning.
        if (p.passChunks > 0 && p.passCopied === 0n) {
          p.pushPaused = true;
          p.passChunks = 0;
          return undefined;
        }
        p.passChunks = 0;
        p.passCopied = 0n;
      }
      const snap = this.refreshSnapshot(p, pass === 1);
      while (p.snapIndex < snap.length) {
        const r = snap[p.snapIndex]!;
        if (r.src.kind === 'zero' || r.end <= p.cursor) {
          p.snapIndex++;
          continue;
        }
        const start = r.start > p.cursor ? r.start : p.cursor;
        const end = start + this.chunk < r.end ? start + this.chunk : r.end;
        p.cursor = end;
        p.passChunks++;
        return { start, len: end - start };
      }
    }
    return undefined;
  }

  private refreshSnapshot(p: Proc, force: boolean): PlannedRange[] {
    if (!p.snapshot || force) {
      p.snapshot = safe(() => this.engine.lazyRanges(p.engineProc).filter((r) => r.src.kind !== 'zero'), []);
      p.snapIndex = 0;
      p.cursor = 0n;
    }
    return p.snapshot;
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
    if (this.pendingAdopts > 0) return false;
    if (!this.restoreFinished) return false;
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
    const body = { ...this.stats(), processes: this.processes() };
    writeFileSync(f, `${JSON.stringify(body, (_, v: unknown) => (typeof v === 'bigint' ? v.toString() : v), 2)}\n`);
  }
}

function validateOptions(o: LazyPagesServerOptions): void {
  if (typeof o.imagesDir !== 'string' || o.imagesDir === '') throw new TypeError('imagesDir must be a non-empty string');
  if (o.bandwidthBytesPerSec !== undefined && !(o.bandwidthBytesPerSec > 0)) throw new RangeError('bandwidthBytesPerSec must be > 0');
  if (o.engineThreads !== undefined && !(Number.isInteger(o.engineThreads) && o.engineThreads >= 1)) throw new RangeError('engineThreads must be an integer >= 1');
  if (o.pushChunkBytes !== undefined && !(Number.isInteger(o.pushChunkBytes) && o.pushChunkBytes >= 4096 && o.pushChunkBytes % 4096 === 0)) {
    throw new RangeError('pushChunkBytes must be a multiple of 4096');
  }
  if (o.pushInFlight !== undefined && !(Number.isInteger(o.pushInFlight) && o.pushInFlight >= 1)) throw new RangeError('pushInFlight must be an integer >= 1');
}

function safe<T>(f: () => T, fallback: T): T {
  try {
    return f();
  } catch {
    return fallback;
  }
}

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

