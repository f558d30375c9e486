// The part of the native fault engine (plugin/uffd) the lazy-pages server
// drives. Kept as an interface so the server's policy (lifecycle, push,
// failure handling) is unit-tested with a fake, and so the real engine is
// plugged in by one adapter (engine-adapter.ts).
import type { PlannedRange } from './types.js';

export type EngineEventLike =
  | { type: 'fork'; proc: number; child: number }
  | { type: 'remap'; proc: number; from: bigint; to: bigint; len: bigint }
  | { type: 'remove'; proc: number; start: bigint; end: bigint }
  | { type: 'unmap'; proc: number; start: bigint; end: bigint }
  | { type: 'need'; proc: number; addr: bigint; imageAddr: bigint; len: bigint }
  | { type: 'prefetched'; proc: number; start: bigint; len: bigint; copied: bigint }
  | { type: 'complete'; proc: number }
  | { type: 'exit'; proc: number }
  | { type: 'error'; proc: number; code: string; errno: number; syscall: string; message: string; tid?: number }
  | { type: 'stats'; faults: number; faultPages: number; zeroPages: number; latenciesUs: number[]; faultAddrs: { proc: number; addr: bigint }[] };

export interface FaultEngineLike {
  addSource(path: string): number;
  adopt(uffd: number, ranges: PlannedRange[]): number;
  supply(proc: number, addr: bigint, data: Buffer): bigint;
  prefetch(proc: number, start: bigint, len: bigint): void;
  /** Remaining ranges that still need a copy (zero ranges may be included). */
  lazyRanges(proc: number): PlannedRange[];
  /** Bytes left that must be copied (file/remote). */
  lazyBytes(proc: number): bigint;
  release(proc: number): void;
  stats(): Record<string, number | bigint>;
  close(): Promise<void>;
}

export interface EngineFactoryOptions {
  threads?: number;
  onEvents(events: EngineEventLike[]): void;
}

export type EngineFactory = (opts: EngineFactoryOptions) => FaultEngineLike | Promise<FaultEngineLike>;
