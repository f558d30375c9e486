// The engine's fault service-time histogram (ProcStats.latencyLog2Ns):
// bucket i counts service times in [2^i, 2^(i+1)) ns. One percentile rule
// for every reader (engine stats, the daemon's summary, the stats file).

/** Upper bound (ns) of histogram bucket i. */
export function bucketUpperNs(i: number): number {
  return 2 ** (i + 1);
}

/**
 * Upper bound (ns) of the bucket holding the p-th percentile (0..100), by
 * nearest rank; 0 when the histogram is empty. Missing buckets count 0.
 */
export function histPercentile(hist: readonly (number | undefined)[], p: number): number {
  const total = hist.reduce<number>((a, b) => a + (b ?? 0), 0);
  if (total === 0) return 0;
  const rank = Math.max(1, Math.ceil((p / 100) * total));
  let cum = 0;
  for (let i = 0; i < hist.length; i++) {
    cum += hist[i] ?? 0;
    if (cum >= rank) return bucketUpperNs(i);
  }
  return bucketUpperNs(hist.length - 1);
}
