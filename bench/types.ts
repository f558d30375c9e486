// Shared shapes for benchmark suites. A suite measures a figure and, in the
// same run, the baseline it is compared with; the runner prints the ratio.

export interface BenchContext {
  /** --quick: small sizes and few repetitions (CI smoke); never assert on time. */
  quick: boolean;
  /** Scratch directory for this suite, removed after the run. */
  tmpDir: string;
  log: (line: string) => void;
}

export interface BenchFigure {
  /** What was measured, e.g. "fault service p50 (engine)". */
  name: string;
  value: number;
  unit: string; // "us", "MiB/s", "ms", "MiB", "faults/s", ...
  /** The same-run baseline this figure is compared with. */
  baseline?: { name: string; value: number };
  /** Target as stated by the issue, e.g. "<= 0.5x blocking handler". */
  target?: string;
  /** true/false when the target can be judged from value/baseline; undefined otherwise. */
  met?: boolean;
  notes?: string;
}

export interface BenchSuite {
  name: string;
  run(ctx: BenchContext): Promise<BenchFigure[]>;
}

/** Median of a non-empty list. */
export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

/** p-th percentile (0..100) by nearest rank. */
export function percentile(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  const i = Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1));
  return s[i]!;
}
