// The statistics file written by `--stats-file` (lazy-pages daemon and
// restore --lazy-pages) and read by `lazy-restore stats`. JSON, versioned.
// Addresses are hex strings (JSON has no 64-bit integers).

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
  pid: number;
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
}

export function isStatsFile(x: unknown): x is StatsFile {
  const o = x as Partial<StatsFile> | null;
  return typeof o === 'object' && o !== null && o.tool === 'lazy-restore' && o.version === 1 && Array.isArray(o.processes);
}
