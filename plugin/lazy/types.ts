// Public types of the lazy-pages daemon (plugin/lazy): server options, the
// per-process picture, statistics and the typed events the server emits.

/** Where the bytes of a lazy range come from (the engine's RangeSource shape). */
export type PageSource =
  | { kind: 'file'; source: number; offset: bigint }
  | { kind: 'zero' }
  | { kind: 'remote'; imageAddr: bigint }
  /** A shared memory object registered with the engine (plugin/lazy/shmem.ts); `offset`: object offset of the range start. */
  | { kind: 'shared'; object: number; offset: bigint };

/** A run of pages [start, end) with one source; `start`/`end` page-aligned, run-time addresses. */
export interface PlannedRange {
  start: bigint;
  end: bigint;
  src: PageSource;
}

/** Fetches dump-time pages for 'remote' ranges (provided by plugin/pageserver). */
export interface RemotePageSource {
  /**
   * Returns exactly `len` bytes of process `pid` at dump-time address `imageAddr`, or throws.
   * `urgent` (default true): a thread is blocked on it; false for background push.
   */
  fetch(pid: number, imageAddr: bigint, len: number, opts?: { urgent?: boolean }): Promise<Buffer>;
  /** Called once if the source is lost for good: every served process is then killed. */
  onFatal?(cb: (e: Error) => void): void;
  /**
   * Optional native fast path: the source may give the engine connected
   * sockets so remote faults skip JavaScript (fetch() stays the fallback).
   * Called once when the daemon starts; `ready` settles when the first
   * links are attached (or given up); `unbind` stops it (daemon closing).
   */
  bindEngine?(links: EngineLinks): { ready: Promise<void>; unbind(): void };
  /**
   * Optional native bulk transfer: a fresh plain TCP connection to the page
   * server that carries nothing else, for the engine's bulk pull of one
   * process (undefined when the source cannot give one: TLS, a server that
   * takes one connection). The engine keeps a duplicate of `fd`; the caller
   * calls close() once it was handed over.
   */
  openPullSocket?(): Promise<{ fd: number; stallMs: number; close(): void } | undefined>;
}

/** What a remote page source may do with the engine's native page-server links (one per engine thread). */
export interface EngineLinks {
  readonly slots: number;
  /** The engine keeps a duplicate of `fd` (a connected plain TCP socket); the caller closes its own. */
  attach(slot: number, fd: number, opts?: { stallMs?: number }): void;
  detach(slot: number): void;
  /** A link failed and was closed (its GETs went back to fetch()): the source may attach a fresh socket. */
  onLinkError(cb: (slot: number, message: string) => void): void;
  /** GETs sent and pages received on native links so far. */
  stats(): { gets: number; pages: number };
}

export interface LazyPagesServerOptions {
  /** The image directory (pstree.img, mm-<pid>.img, pagemap-<pid>.img, pages-<id>.img, parent/). */
  imagesDir: string;
  /**
   * Listen for a CRIU-style restorer on this unix socket path. `true` = `lazy-pages.socket`
   * in imagesDir. Omitted/false = in-process adoption only.
   */
  socketPath?: string | boolean;
  /**
   * A lazy-pages socket already listening and holding what arrives (a
   * LazySocket made without handlers, e.g. before the daemon's modules were
   * loaded); the server takes it over instead of binding socketPath, and
   * closes it.
   */
  socket?: import('./socket.js').LazySocket;
  /** Background push after restore finished (default true); false = pure on-demand. */
  prefetch?: boolean;
  /** Cap of the background push, bytes per second (faults are never capped). */
  bandwidthBytesPerSec?: number;
  /** Fault engine threads (default 2: faults of several processes use both cores). */
  engineThreads?: number;
  /** Pages copied per fault around the faulting page (default 8). */
  faultAroundPages?: number;
  /** Write the final statistics as JSON here when the server becomes idle/closes. */
  statsFile?: string;
  /** Serves 'remote' ranges (PE_LAZY without PE_PRESENT). Without it such images are refused. */
  remote?: RemotePageSource;
  /**
   * Background window size in bytes. Unset (and no bandwidth cap, no remote
   * source): one window per process that the engine walks itself, going on
   * from each fault it serves; set: windows of this size chosen here (2 MiB
   * with a bandwidth cap or a remote source).
   */
  pushChunkBytes?: number;
  /** Background chunks in flight at once, over all processes (default 2). */
  pushInFlight?: number;
  /**
   * Verify page data against lr-checksums-<id>.img the first time a chunk is
   * served (default true; pages files without one are served unverified).
   * A mismatch kills the process with a message naming file, offset and pid.
   */
  verify?: boolean;
  /**
   * Start the daemon-death watchdog (plugin/integrity, default true with the
   * real engine): it holds a copy of every adopted uffd and SIGKILLs processes
   * not yet complete if this daemon dies, so none runs on zero-filled pages.
   */
  watchdog?: boolean;
  /** Where the watchdog logs (default: this process's stderr). */
  watchdogLogFile?: string;
  /**
   * Record each restored process's working set (pages faulted, first touch,
   * in fault order) into lr-workingset-<pid>.img in imagesDir: for this many
   * seconds (true = 10) from its adoption, or until stopRecording(). While
   * recording, fault-around is off (the set is exactly the touched pages),
   * the background push waits (pushed pages would never fault) and no
   * recorded working set is replayed.
   */
  recordWorkingSet?: boolean | number;
  /** Replay a recorded working set (lr-workingset-<pid>.img) first when there is one (default true). */
  workingSet?: boolean;
  /**
   * adopt() returns (and the restorer resumes the process) once its working
   * set is in, or after this many ms, whichever is first (default 250; 0 =
   * resume at once and copy the working set alongside).
   */
  workingSetHoldMs?: number;
}

export interface AdoptOptions {
  /** The pid to SIGKILL when a page cannot be served, if it differs from the virtual pid (pid namespaces). */
  hostPid?: number;
}

/** Per-process statistics (also the payload of `complete` and `exit`). */
export interface LazyProcessStats {
  /** Server-wide id of this process (stable, also for forked children). */
  id: number;
  /** Virtual pid from pstree (roots); for forked children the image pid they read from. */
  imagePid: number;
  /** Host pid when known (roots: from adopt; children: resolved after the fork). */
  hostPid: number | undefined;
  /** Id of the process it was forked from, if any. */
  parentId: number | undefined;
  /** Lazy (non-zero) bytes in the plan when adopted / forked. */
  lazyBytes: bigint;
  /** Bytes still to be copied. */
  lazyBytesLeft: bigint;
  /** Bytes pushed by the background transfer. */
  pushedBytes: bigint;
  /** Chunks pushed. */
  pushedChunks: number;
  /** Faults the engine served for this process (page copies and zero pages). */
  faults: number;
  zeroPages: number;
  adoptedAtMs: number;
  /** ms from adopt to complete/exit, when finished. */
  timeToCompleteMs: number | undefined;
  state: LazyProcessState;
  /** Pages of the recorded working set queued first (replay), if one was found. */
  workingSetPages?: number;
  /** ms from adopt until the replayed working set was in. */
  warmedMs?: number;
  /** Pages recorded so far (when recording). */
  recordedPages?: number;
}

export type LazyProcessState = 'serving' | 'complete' | 'exited' | 'killed';

/** Aggregate statistics of the server (engine counters included when available). */
export interface LazyServerStats {
  processes: number;
  serving: number;
  complete: number;
  exited: number;
  killed: number;
  faults: number;
  faultPages: number;
  zeroPages: number;
  pushedPages: number;
  bytesCopied: bigint;
  lazyBytes: bigint;
  lazyBytesLeft: bigint;
  faultLatencyP50Us: number | undefined;
  faultLatencyP99Us: number | undefined;
  /** ms from the first adopt until the last process finished (or now). */
  elapsedMs: number;
  /** Zombies announced on the socket. */
  zombies: number;
}

export interface FaultBatchEvent {
  /** Counters since the previous batch (engine statistics tick). */
  faults: number;
  faultPages: number;
  zeroPages: number;
  stats: LazyServerStats;
}
export interface ForkEvent { parent: LazyProcessStats; child: LazyProcessStats }
export interface RemapEvent { proc: LazyProcessStats; from: bigint; to: bigint; len: bigint }
export interface RangeEvent { proc: LazyProcessStats; start: bigint; end: bigint }
export interface ProcessEvent { proc: LazyProcessStats }
export interface RecordedEvent {
  /** Image pid the working set was written for. */
  pid: number;
  path: string;
  pages: number;
  ranges: number;
}
export interface LazyErrorEvent {
  /** The process concerned (killed with SIGKILL when `killed`), if any. */
  proc: LazyProcessStats | undefined;
  killed: boolean;
  message: string;
  error: Error;
}
export interface SocketEvent {
  type: 'connected' | 'refused' | 'zombie' | 'finished' | 'eof';
  pid?: number;
  uid?: number;
  /** Connection number (connections are independent) and the peer's pid. */
  conn?: number;
  peer?: number;
}

export interface LazyEventMap {
  fault: FaultBatchEvent;
  fork: ForkEvent;
  remap: RemapEvent;
  remove: RangeEvent;
  unmap: RangeEvent;
  exit: ProcessEvent;
  complete: ProcessEvent;
  error: LazyErrorEvent;
  socket: SocketEvent;
  idle: LazyServerStats;
  /** The replayed working set of a process is in. */
  warmed: ProcessEvent;
  /** A working set was written. */
  recorded: RecordedEvent;
}
