// The fault engine as TypeScript sees it: FaultEngine validates everything
// (ranges sorted, page aligned, non-overlapping, inside their source) and
// hands the native engine (native/engine) a flat BigUint64Array. Faults are
// served natively; TypeScript only gets batched events (fork, remap,
// remove/unmap, need, prefetched, complete, exit, error) and answers 'need'
// with supply(). Remote faults can also skip JavaScript: with a connected
// page-server socket attached (attachLink), the worker that reads the fault
// sends the GET and copies the reply itself; 'need' is then only the
// fallback (no link, or the link failed: 'link-error').
import { statSync } from 'node:fs';
import { Errno, sysError } from '../errors.js';
import { addon } from '../native/addon.js';
import type { NativeFaultEngineHandle, RawEngineEvent, RawLinkStats, RawProcStats, RawSharedStats as SharedObjectStatsT } from '../native/types.js';
import { PAGE, PAGE_SIZE } from '../images/memory.js';
import { checkFd, checkRange } from './abi.js';
import { histPercentile } from './latency.js';

export type RangeSource =
  | { kind: 'file'; source: number; offset: bigint } // bytes of the range start in a source added by addSource
  | { kind: 'zero' } // never populated at checkpoint: UFFDIO_ZEROPAGE
  | { kind: 'remote'; imageAddr: bigint } // fault raises a 'need' event; answer with supply()
  | { kind: 'shared'; object: number; offset: bigint }; // object offset of the range start in an object added by addSharedObject

/** One image run of a shared memory object: object bytes [offset, offset+len) are at `fileOffset` of source `source`. */
export interface SharedDataRun {
  offset: bigint;
  len: bigint;
  source: number;
  fileOffset: bigint;
}

/** Run-time addresses, page aligned, end exclusive. */
export interface LazyRange {
  start: bigint;
  end: bigint;
  src: RangeSource;
}

/** The engine's events and link counters, declared once in plugin/native/types.ts. */
export type { RawEngineEvent as EngineEvent, RawLinkStats as LinkStats, RawSharedStats as SharedObjectStats } from '../native/types.js';

export interface LinkOptions {
  /** A link with unanswered GETs and nothing received this long fails with ETIMEDOUT (default 2000). */
  stallMs?: number;
  /** Busy-poll for a reply this long after sending a GET before sleeping (default 300). */
  spinMicros?: number;
}

export interface PullOptions {
  /** Pages per GET (default 256 = 1 MiB). */
  getPages?: number;
  /** Pages asked for and not received, at most (default 2048 = 8 MiB). */
  windowPages?: number;
  /** GETs out and nothing received this long: the pull fails with ETIMEDOUT (default 2000). */
  stallMs?: number;
}

export interface FaultEngineOptions {
  /** Worker threads; each process is served by one of them (default 1). */
  threads?: number;
  /** Pages copied per fault, aligned window clipped to the faulting range (default 1). */
  faultAroundPages?: number;
  /** Busy-poll this long after serving before blocking in epoll (default 100). */
  spinMicros?: number;
  /** Pin worker i to cpus[i % cpus.length] (e.g. away from the restored processes). */
  cpus?: number[];
  onEvents: (events: RawEngineEvent[]) => void;
}

export interface SourceOptions {
  /**
   * CRC32C of every `chunkSize` bytes of the file (the last chunk may be
   * short). The engine verifies a chunk the first time it serves from it; a
   * mismatch is an 'error' event (code EBADMSG, syscall 'verify') naming the
   * file and the chunk's offset, and the process is no longer served.
   */
  checksums?: Uint32Array | readonly number[];
  chunkSize?: number;
}

export interface ProcStats {
  proc: number;
  state: 'live' | 'exited' | 'failed' | 'released';
  lazyBytes: bigint;
  faults: number;
  served: number;
  ignored: number;
  unexpected: number;
  zeroPages: number;
  copiedPages: number;
  pushedPages: number;
  suppliedPages: number;
  bytes: bigint;
  needs: number;
  eagain: number;
  eexist: number;
  enoent: number;
  /** GETs sent and pages copied on native page-server links. */
  remoteGets: number;
  remotePages: number;
  /** index i counts fault service times in [2^i, 2^(i+1)) ns, measured from reading the message to the copy. */
  latencyLog2Ns: number[];
  /** Upper bounds of the histogram buckets holding the median / 99th percentile (ns); 0 when no faults. */
  p50Ns: number;
  p99Ns: number;
}

/** One fault-log entry: pages placed at [start, start + pages*4096), when and why. */
export interface FaultLogEntry {
  /** CLOCK_MONOTONIC ns (same clock as process.hrtime.bigint()). */
  tNs: bigint;
  proc: number;
  start: bigint;
  pages: number;
  /** fault = copied for a fault (incl. fault-around), zero = zero page, push = prefetch or working set. */
  kind: 'fault' | 'zero' | 'push';
  /** The faulting page for fault/zero entries; 0n for pushes. */
  fault: bigint;
}

const LOG_KINDS = ['fault', 'zero', 'push'] as const;

export interface EngineStats {
  procs: ProcStats[];
  /** CPU time consumed by each worker thread so far. */
  threadCpuNs: bigint[];
}

export { histPercentile } from './latency.js';

const KIND = { file: 0n, zero: 1n, remote: 2n, shared: 3n } as const;

/**
 * Checks ranges against the known source sizes and returns them sorted and
 * packed as the native engine wants them: [start, end, kind, source, off]*.
 * Throws RangeError/TypeError naming the offending range.
 */
export function packRanges(ranges: readonly LazyRange[], sourceSizes: ReadonlyMap<number, bigint>, objectSizes: ReadonlyMap<number, bigint> = new Map()): BigUint64Array {
  if (!Array.isArray(ranges)) throw new TypeError('ranges must be an array');
  const sorted = [...ranges].sort((a, b) => (a.start < b.start ? -1 : a.start > b.start ? 1 : 0));
  const out = new BigUint64Array(sorted.length * 5);
  let prevEnd = 0n;
  sorted.forEach((r: LazyRange, i: number) => {
    if (typeof r !== 'object' || r === null) throw new TypeError('each range must be an object');
    if (typeof (r.start as unknown) !== 'bigint' || typeof (r.end as unknown) !== 'bigint') throw new TypeError('range start/end must be bigint');
    const name = `lazy range [0x${r.start.toString(16)}, 0x${r.end.toString(16)})`;
    if (r.end <= r.start) throw new RangeError(`${name} is empty or reversed`);
    checkRange(r.start, r.end - r.start, name);
    if (r.start < prevEnd) throw new RangeError(`${name} overlaps the previous range`);
    prevEnd = r.end;
    let source = 0n;
    let off = 0n;
    const src: RangeSource = r.src;
    const kind: string | undefined = (src as RangeSource | undefined)?.kind;
    switch (src?.kind) {
      case 'file': {
        const size = sourceSizes.get(src.source);
        if (size === undefined) throw new RangeError(`${name}: unknown source ${String(src.source)}`);
        if (typeof src.offset !== 'bigint' || src.offset < 0n || src.offset % PAGE !== 0n) {
          throw new RangeError(`${name}: source offset must be a page-aligned bigint`);
        }
        if (src.offset + (r.end - r.start) > size) {
          throw new RangeError(`${name}: needs source ${src.source} bytes up to 0x${(src.offset + r.end - r.start).toString(16)}, the file has 0x${size.toString(16)}`);
        }
        source = BigInt(src.source);
        off = src.offset;
        break;
      }
      case 'zero':
        break;
      case 'remote':
        if (typeof src.imageAddr !== 'bigint' || src.imageAddr < 0n || src.imageAddr % PAGE !== 0n) {
          throw new RangeError(`${name}: imageAddr must be a page-aligned bigint`);
        }
        off = src.imageAddr;
        break;
      case 'shared': {
        const size = objectSizes.get(src.object);
        if (size === undefined) throw new RangeError(`${name}: unknown shared object ${String(src.object)}`);
        if (typeof src.offset !== 'bigint' || src.offset < 0n || src.offset % PAGE !== 0n) {
          throw new RangeError(`${name}: object offset must be a page-aligned bigint`);
        }
        if (src.offset + (r.end - r.start) > size) {
          throw new RangeError(`${name}: needs shared object ${src.object} bytes up to 0x${(src.offset + r.end - r.start).toString(16)}, the object has 0x${size.toString(16)}`);
        }
        source = BigInt(src.object);
        off = src.offset;
        break;
      }
      default:
        throw new TypeError(`${name}: src.kind must be 'file', 'zero', 'remote' or 'shared'`);
    }
    out.set([r.start, r.end, KIND[kind as keyof typeof KIND], source, off], i * 5);
  });
  return out;
}

function n(v: bigint): number {
  return Number(v);
}

export class FaultEngine {
  private native: NativeFaultEngineHandle | undefined;
  private readonly sourceSizes = new Map<number, bigint>();
  private readonly objectSizes = new Map<number, bigint>();
  private closing: Promise<void> | undefined;

  private constructor(native: NativeFaultEngineHandle, readonly threads: number) {
    this.native = native;
  }

  static create(opts: FaultEngineOptions): FaultEngine {
    const threads = opts.threads ?? 1;
    const fa = opts.faultAroundPages ?? 1;
    const spin = opts.spinMicros ?? 100;
    if (!Number.isInteger(threads) || threads < 1 || threads > 64) throw new RangeError('threads must be 1..64');
    if (!Number.isInteger(fa) || fa < 1 || fa > 4096) throw new RangeError('faultAroundPages must be 1..4096');
    if (!Number.isInteger(spin) || spin < 0 || spin > 100000) throw new RangeError('spinMicros must be 0..100000');
    if (typeof opts.onEvents !== 'function') throw new TypeError('onEvents must be a function');
    if (opts.cpus !== undefined && (!Array.isArray(opts.cpus) || !opts.cpus.every((c) => Number.isInteger(c) && c >= 0 && c < 1024))) {
      throw new RangeError('cpus must be an array of CPU numbers');
    }
    const onEvents = opts.onEvents;
    let engine: FaultEngine | undefined;
    const native = new addon.NativeFaultEngine(threads, BigInt(fa), BigInt(spin), (events: RawEngineEvent[]) => {
      if (engine?.native === undefined) return;
      onEvents(events);
    }, opts.cpus);
    engine = new FaultEngine(native, threads);
    return engine;
  }

  private get n(): NativeFaultEngineHandle {
    if (this.native === undefined) throw sysError(Errno.EBADF, 'FaultEngine', undefined, 'EBADF: fault engine is closed');
    return this.native;
  }

  /**
   * Maps a pages file read-only; UFFDIO_COPY reads straight from the mapping.
   * Returns the source id used in 'file' ranges.
   */
  addSource(path: string, opts: SourceOptions = {}): number {
    if (typeof path !== 'string' || path.length === 0) throw new TypeError('path must be a non-empty string');
    let sums: Uint32Array | undefined;
    if (opts.checksums !== undefined) {
      const chunk = opts.chunkSize;
      if (!Number.isInteger(chunk) || chunk! <= 0 || chunk! % PAGE_SIZE) throw new RangeError(`chunkSize must be a positive multiple of ${PAGE_SIZE}`);
      sums = opts.checksums instanceof Uint32Array ? opts.checksums : Uint32Array.from(opts.checksums);
      const want = Math.ceil(statSync(path).size / chunk!);
      if (sums.length !== want) throw new RangeError(`${path}: ${sums.length} checksums for ${want} chunks of ${chunk} bytes`);
    }
    const { id, size } = sums ? this.n.addSource(path, sums, opts.chunkSize) : this.n.addSource(path);
    this.sourceSizes.set(id, size);
    return id;
  }

  /**
   * A shared memory object (MAP_SHARED anonymous memory or a memfd) served
   * lazily: `size` bytes (page-rounded), its image data in `data` (sorted,
   * disjoint, inside added sources); the rest of it is zero. Returns the
   * object id used in 'shared' ranges. `name` appears in error messages.
   */
  addSharedObject(name: string, size: bigint, data: readonly SharedDataRun[]): number {
    if (typeof name !== 'string') throw new TypeError('name must be a string');
    if (typeof size !== 'bigint' || size <= 0n || size % PAGE !== 0n) throw new RangeError(`shared object ${name}: size must be a positive multiple of ${PAGE_SIZE}`);
    const packed = new BigUint64Array(data.length * 4);
    let prev = 0n;
    data.forEach((r, i) => {
      const what = `shared object ${name}: run at 0x${r.offset.toString(16)}`;
      if (r.offset % PAGE !== 0n || r.len % PAGE !== 0n || r.fileOffset % PAGE !== 0n || r.len <= 0n) throw new RangeError(`${what} is not page aligned`);
      if (r.offset < prev || r.offset + r.len > size) throw new RangeError(`${what} overlaps the previous run or lies past the object's end`);
      const srcSize = this.sourceSizes.get(r.source);
      if (srcSize === undefined) throw new RangeError(`${what}: unknown source ${r.source}`);
      if (r.fileOffset + r.len > srcSize) throw new RangeError(`${what}: needs source ${r.source} bytes up to 0x${(r.fileOffset + r.len).toString(16)}, the file has 0x${srcSize.toString(16)}`);
      prev = r.offset + r.len;
      packed.set([r.offset, r.offset + r.len, BigInt(r.source), r.fileOffset], i * 4);
    });
    const id = this.n.addSharedObject(name, size, packed);
    this.objectSizes.set(id, size);
    return id;
  }

  /** Page counters of every shared object, in the order they were added. */
  sharedStats(): SharedObjectStatsT[] {
    return this.n.sharedStats();
  }

  /**
   * Takes ownership of `uffd` (and `pidfd`, if given: its readability reports
   * the exit) once this returns; on a throw the caller still owns them.
   * Returns the process handle.
   */
  adopt(uffd: number, ranges: readonly LazyRange[], opts: { pidfd?: number; remotePid?: number } = {}): number {
    checkFd(uffd, 'uffd');
    if (opts.pidfd !== undefined) checkFd(opts.pidfd, 'pidfd');
    if (opts.remotePid !== undefined && !(Number.isInteger(opts.remotePid) && opts.remotePid > 0 && opts.remotePid <= 0x7fffffff)) {
      throw new RangeError(`remotePid must be a positive pid (got ${String(opts.remotePid)})`);
    }
    const packed = packRanges(ranges, this.sourceSizes, this.objectSizes);
    return this.n.adopt(uffd, packed, opts.pidfd ?? -1, opts.remotePid ?? 0);
  }

  /**
   * Gives worker `slot` (0..threads-1) a connected page-server socket for
   * the remote faults of its processes adopted with `remotePid` (GETs carry
   * that pid). The engine keeps its own duplicate of `fd`: the caller closes
   * its copy (and must not read from it). Replaces a previous link.
   */
  attachLink(slot: number, fd: number, opts: LinkOptions = {}): void {
    if (!Number.isInteger(slot) || slot < 0 || slot >= this.threads) throw new RangeError(`slot must be 0..${this.threads - 1}`);
    checkFd(fd, 'fd');
    const stall = opts.stallMs ?? 2000;
    const spin = opts.spinMicros ?? 300;
    if (!Number.isInteger(stall) || stall < 1 || stall > 3_600_000) throw new RangeError('stallMs must be 1..3600000');
    if (!Number.isInteger(spin) || spin < 0 || spin > 100_000) throw new RangeError('spinMicros must be 0..100000');
    this.n.attachLink(slot, fd, BigInt(stall), BigInt(spin));
  }

  /** Closes the link of `slot` (its unanswered GETs become 'need' events); no-op when none or closed. */
  detachLink(slot: number): void {
    if (this.native === undefined) return;
    if (!Number.isInteger(slot) || slot < 0 || slot >= this.threads) throw new RangeError(`slot must be 0..${this.threads - 1}`);
    this.native.detachLink(slot);
  }

  /**
   * Bulk pull (post-copy background transfer): a native thread streams GETs
   * of `getPages` (default 256) over `fd`, a connected page-server socket
   * that carries nothing else (the engine keeps a duplicate; the caller
   * closes its own), at most `windowPages` (default 2048) outstanding, and
   * copies each reply into the process; ends with a 'pull-end' event.
   */
  startPull(proc: number, fd: number, opts: PullOptions = {}): number {
    checkFd(fd, 'fd');
    const get = opts.getPages ?? 256;
    const win = opts.windowPages ?? 2048;
    const stall = opts.stallMs ?? 2000;
    if (!Number.isInteger(get) || get < 1 || get > 4096) throw new RangeError('getPages must be 1..4096');
    if (!Number.isInteger(win) || win < get || win > 65536) throw new RangeError('windowPages must be getPages..65536');
    if (!Number.isInteger(stall) || stall < 1 || stall > 3_600_000) throw new RangeError('stallMs must be 1..3600000');
    return this.n.startPull(proc, fd, BigInt(get), BigInt(win), BigInt(stall));
  }

  /** Stops and joins a pull (after its 'pull-end', or to cancel it: then no event); no-op once closed. */
  stopPull(pull: number): void {
    if (this.native === undefined) return;
    this.native.stopPull(pull);
  }

  /** Per-slot link state and counters. */
  links(): RawLinkStats[] {
    return this.n.links();
  }

  /**
   * Copies remote pages dumped at [imageAddr, imageAddr + data.length) to
   * wherever they now live (matched by dump-time address, so an mremap
   * between 'need' and supply is fine). Pages no longer lazy (served,
   * unmapped, discarded) are skipped. Returns the bytes copied.
   */
  supply(proc: number, imageAddr: bigint, data: Buffer): bigint {
    checkProc(proc);
    if (!Buffer.isBuffer(data)) throw new TypeError('data must be a Buffer');
    checkRange(imageAddr, BigInt(data.length), 'supply');
    return this.n.supply(proc, imageAddr, data);
  }

  /**
   * Background copy of the still-lazy pages in [start, start+len); faults
   * always go first. With followFaults the window goes on from each fault
   * served inside it and starts over from `start` until a pass copies
   * nothing (one window can push a whole process, no call per piece).
   */
  prefetch(proc: number, start: bigint, len: bigint, opts?: { followFaults?: boolean }): void {
    checkProc(proc);
    checkRange(start, len, 'prefetch');
    this.n.prefetch(proc, start, len, opts?.followFaults === true);
  }

  /**
   * Queues the working set of a process: these ranges are copied in this
   * order, before any prefetch() window (faults still go first), skipping
   * pages no longer lazy. A 'warmed' event follows when the queue is done.
   */
  prefetchFirst(proc: number, ranges: readonly { start: bigint; end: bigint }[]): void {
    checkProc(proc);
    const packed = new BigUint64Array(ranges.length * 2);
    ranges.forEach((r, i) => {
      checkRange(r.start, r.end - r.start, 'prefetchFirst');
      packed[2 * i] = r.start;
      packed[2 * i + 1] = r.end;
    });
    this.n.prefetchFirst(proc, packed);
  }

  /**
   * Checks ahead, on a native thread, the checksummed chunks of `source`
   * that hold these spans (a recorded working set before its process is
   * handed over): serving them later only copies. A chunk that does not
   * match is not marked: the serving path finds it and fails that process.
   */
  verifyAhead(source: number, spans: readonly { offset: bigint; length: bigint }[]): void {
    const packed = new BigUint64Array(spans.length * 2);
    spans.forEach((s, i) => {
      packed[2 * i] = s.offset;
      packed[2 * i + 1] = s.length;
    });
    this.n.verifyAhead(source, packed);
  }

  /** Turns the native fault log on with room for `capacity` entries (0 = off); the oldest are dropped when full. */
  setFaultLog(capacity: number): void {
    if (!Number.isInteger(capacity) || capacity < 0 || capacity > 1 << 24) throw new RangeError('capacity must be 0..16777216');
    this.n.setFaultLog(capacity);
  }

  /** Takes every entry logged since the last drain (in order) and the count dropped meanwhile. */
  drainFaultLog(): { entries: FaultLogEntry[]; dropped: number } {
    const raw = this.n.drainFaultLog();
    const e = raw.entries;
    const entries: FaultLogEntry[] = [];
    for (let i = 0; i < e.length; i += 6) {
      entries.push({ tNs: e[i]!, proc: Number(e[i + 1]!), start: e[i + 2]!, pages: Number(e[i + 3]!), kind: LOG_KINDS[Number(e[i + 4]!)] ?? 'push', fault: e[i + 5]! });
    }
    return { entries, dropped: raw.dropped };
  }

  lazyRanges(proc: number): { start: bigint; end: bigint }[] {
    checkProc(proc);
    const raw = this.n.lazyRanges(proc);
    const out: { start: bigint; end: bigint }[] = [];
    for (let i = 0; i < raw.length; i += 2) out.push({ start: raw[i]!, end: raw[i + 1]! });
    return out;
  }

  lazyBytes(proc: number): bigint {
    checkProc(proc);
    return this.n.lazyBytes(proc);
  }

  /** Closes the process's uffd and drops its state. Pages still lazy then read as zero: kill first. */
  release(proc: number): void {
    checkProc(proc);
    this.n.release(proc);
  }

  /** SIGKILL through the pidfd given to adopt() (ESRCH if none). */
  kill(proc: number, reason: string): void {
    checkProc(proc);
    if (typeof reason !== 'string') throw new TypeError('reason must be a string');
    this.n.kill(proc);
  }

  /**
   * A duplicate of the process's uffd, owned by the caller (close it): e.g.
   * for the daemon-death watchdog to take its own copy of a forked child's
   * uffd. Throws ESRCH once the engine closed its copy (process gone).
   */
  dupUffd(proc: number): number {
    checkProc(proc);
    return this.n.dupUffd(proc);
  }

  stats(): EngineStats {
    const raw = this.n.stats();
    return { procs: raw.procs.map(procStats), threadCpuNs: raw.threadCpuNs };
  }

  /** Stops and joins the worker threads, closes every uffd; idempotent. */
  close(): Promise<void> {
    if (this.closing) return this.closing;
    const native = this.native;
    this.native = undefined;
    native?.close();
    this.closing = Promise.resolve();
    return this.closing;
  }
}

function checkProc(proc: number): void {
  if (!Number.isInteger(proc) || proc <= 0) throw new RangeError(`process handle must be a positive integer (got ${String(proc)})`);
}

function procStats(r: RawProcStats): ProcStats {
  return {
    proc: r.proc,
    state: r.state,
    lazyBytes: r.lazyBytes,
    faults: n(r.faults),
    served: n(r.served),
    ignored: n(r.ignored),
    unexpected: n(r.unexpected),
    zeroPages: n(r.zeroPages),
    copiedPages: n(r.copiedPages),
    pushedPages: n(r.pushedPages),
    suppliedPages: n(r.suppliedPages),
    bytes: r.bytes,
    needs: n(r.needs),
    eagain: n(r.eagain),
    eexist: n(r.eexist),
    enoent: n(r.enoent),
    remoteGets: n(r.remoteGets),
    remotePages: n(r.remotePages),
    latencyLog2Ns: r.latencyLog2Ns,
    p50Ns: histPercentile(r.latencyLog2Ns, 50),
    p99Ns: histPercentile(r.latencyLog2Ns, 99),
  };
}

/** Size of a file as the engine will map it (rounded up to pages). */
export function mappedSize(path: string): bigint {
  const s = BigInt(statSync(path).size);
  return ((s + PAGE - 1n) / PAGE) * PAGE;
}
