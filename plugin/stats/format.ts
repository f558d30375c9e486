// The statistics file written by `--stats-file` (lazy-pages daemon and
// restore --lazy-pages) and read by `lazy-restore stats`. JSON, versioned.
// Addresses are hex strings (JSON has no 64-bit integers).
import { bucketUpperNs, histPercentile } from '../uffd/latency.js';

export interface LatencySummary {
  p50Us: number;
  p99Us: number;
  maxUs: number;
  /** Histogram buckets: `count` faults took at most `leUs` microseconds (and more than the previous bucket). */
  histogram: { leUs: number; count: number }[];
}

/** One timeline sample: when (ms since start), where, how many pages, and how (f = fault, p = background push, z = zero page). */
export type TimelineKind = 'f' | 'p' | 'z';
export type TimelineEvent = [tMs: number, addr: string, pages: number, kind: TimelineKind];

export interface ProcessStats {
  /** Host pid when known, else the image pid. */
  pid: number;
  /** Daemon fields (plugin/lazy): server-wide id, pid in the images, state at the end. */
  id?: number;
  imagePid?: number;
  state?: string;
  /** Lazy bytes in the plan and bytes pushed in the background (decimal strings: 64-bit). */
  lazyBytes?: string;
  pushedBytes?: string;
  /** Working set: pages replayed (copied first) or recorded in this run. */
  workingSetPages?: number;
  /** ms from adoption until the replayed working set was in. */
  warmedMs?: number;
  recordedPages?: number;
  /** Timeline entries left out (bounded per process) or lost by the native log. */
  timelineDropped?: number;
  /** Set for processes that appeared by fork after the restore. */
  parentPid?: number;
  faults: number;
  zeroPages: number;
  copiedPages: number;
  pushedPages: number;
  bytes: number;
  /** ms from adoption until nothing was lazy; absent if it exited first. */
  timeToCompleteMs?: number;
  exited?: boolean;
  latency?: LatencySummary;
  timeline?: TimelineEvent[];
}

export interface StatsFile {
  tool: 'lazy-restore';
  version: 1;
  startedAt: string;
  durationMs: number;
  processes: ProcessStats[];
  // Daemon totals (plugin/lazy LazyServerStats; 64-bit byte counts as decimal strings).
  serving?: number;
  complete?: number;
  exited?: number;
  killed?: number;
  faults?: number;
  faultPages?: number;
  zeroPages?: number;
  pushedPages?: number;
  bytesCopied?: string;
  lazyBytes?: string;
  lazyBytesLeft?: string;
  faultLatencyP50Us?: number;
  faultLatencyP99Us?: number;
  elapsedMs?: number;
  zombies?: number;
  /** Lazily served shared memory objects: page counters per object (native/engine/shared.cc). */
  sharedObjects?: { name: string; copiedPages: number; zeroPages: number; refilledPages: number; presentPages: number; poisonedPages: number; servedPages: number }[];
  /** The daemon's own memory when it wrote the file. */
  memory?: { rssBytes: number; rssAnonBytes: number; rssFileBytes: number; hwmBytes: number };
}

/** LatencySummary of a log2-ns histogram (bucket i counts [2^i, 2^(i+1)) ns); undefined when empty. */
export function latencySummary(log2Ns: readonly number[]): LatencySummary | undefined {
  const total = log2Ns.reduce((a, b) => a + b, 0);
  if (total === 0) return undefined;
  let max = 0;
  const histogram: { leUs: number; count: number }[] = [];
  log2Ns.forEach((count, i) => {
    if (count > 0) {
      histogram.push({ leUs: bucketUpperNs(i) / 1000, count });
      max = bucketUpperNs(i) / 1000;
    }
  });
  return { p50Us: histPercentile(log2Ns, 50) / 1000, p99Us: histPercentile(log2Ns, 99) / 1000, maxUs: max, histogram };
}

export function isStatsFile(x: unknown): x is StatsFile {
  const o = x as Partial<StatsFile> | null;
  return typeof o === 'object' && o !== null && o.tool === 'lazy-restore' && o.version === 1 && Array.isArray(o.processes);
}
