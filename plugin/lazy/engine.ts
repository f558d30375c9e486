// The part of the native fault engine (plugin/uffd FaultEngine) that the
// lazy-pages server drives. Kept as an interface so the server's policy
// (lifecycle, push, failure handling) is unit-tested with a fake; the real
// FaultEngine satisfies it structurally (engine-adapter.ts).
import type { EngineEvent, FaultLogEntry, ProcStats, SharedObjectStats } from '../uffd/engine.js';
import type { PlannedRange } from './types.js';

/** The engine's events, as plugin/uffd defines them (one definition). */
export type EngineEventLike = EngineEvent;

/**
 * The per-process counters the server reads (cumulative), as plugin/uffd
 * defines them; remotePages is optional (engines without native links).
 */
export type EngineProcStatsLike = Pick<ProcStats, 'proc' | 'faults' | 'zeroPages' | 'copiedPages' | 'pushedPages' | 'bytes' | 'latencyLog2Ns'>
  & Partial<Pick<ProcStats, 'remotePages'>>;

/** plugin/uffd's FaultLogEntry. */
export type FaultLogEntryLike = FaultLogEntry;

export interface FaultEngineLike {
  /** checksums: CRC32C per chunkSize bytes, verified natively on first use of a chunk. */
  addSource(path: string, opts?: { checksums?: readonly number[]; chunkSize?: number }): number;
  /** Takes ownership of uffd (and pidfd) once it returns; remotePid: the pid its remote GETs carry on native links. */
  adopt(uffd: number, ranges: readonly PlannedRange[], opts?: { pidfd?: number; remotePid?: number }): number;
  /** Copies remote pages dumped at imageAddr to wherever they live now; returns bytes copied. */
  supply(proc: number, imageAddr: bigint, data: Buffer): bigint;
  /** followFaults: one window that goes on from each fault inside it (plugin/uffd/engine.ts). */
  prefetch(proc: number, start: bigint, len: bigint, opts?: { followFaults?: boolean }): void;
  /** Remaining (lazy or in flight) ranges, sorted; zero ranges included. */
  lazyRanges(proc: number): { start: bigint; end: bigint }[];
  lazyBytes(proc: number): bigint;
  /** Working set (optional so policy fakes need not implement it): copied first, in order. */
  prefetchFirst?(proc: number, ranges: readonly { start: bigint; end: bigint }[]): void;
  /** Checks ahead, natively, the chunks of a source holding these spans (optional, as above). */
  verifyAhead?(source: number, spans: readonly { offset: bigint; length: bigint }[]): void;
  /** Native fault log (optional, as above). */
  setFaultLog?(capacity: number): void;
  drainFaultLog?(): { entries: FaultLogEntryLike[]; dropped: number };
  release(proc: number): void;
  /** Shared memory objects served lazily (optional: fakes and old engines have none; their processes are then refused). */
  addSharedObject?(name: string, size: bigint, data: readonly { offset: bigint; len: bigint; source: number; fileOffset: bigint }[]): number;
  sharedStats?(): SharedObjectStats[];
  /** Native page-server links (optional: fakes and old engines have none). */
  readonly threads?: number;
  attachLink?(slot: number, fd: number, opts?: { stallMs?: number }): void;
  detachLink?(slot: number): void;
  links?(): { gets: number; pages: number }[];
  /** Native bulk pull of a process's remote pages over `fd` (optional, as above): its id; ends with 'pull-end'. */
  startPull?(proc: number, fd: number, opts?: { getPages?: number; windowPages?: number; stallMs?: number }): number;
  stopPull?(pull: number): void;
  /** A duplicate of the process's uffd owned by the caller (optional: fakes need not have it). */
  dupUffd?(proc: number): number;
  stats(): { procs: EngineProcStatsLike[] };
  close(): Promise<void>;
}

export interface EngineFactoryOptions {
  threads?: number;
  faultAroundPages?: number;
  onEvents(events: EngineEventLike[]): void;
}

export type EngineFactory = (opts: EngineFactoryOptions) => FaultEngineLike | Promise<FaultEngineLike>;
