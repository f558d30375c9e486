// Fault latency statistics with bounded memory: a reservoir sample, so a
// daemon serving millions of faults keeps a fixed-size picture.

export class LatencyReservoir {
  private readonly samples: number[] = [];
  private seen = 0;
  private sorted: number[] | undefined;

  constructor(private readonly capacity: number) {}

  add(v: number): void {
    this.seen++;
    this.sorted = undefined;
    if (this.samples.length < this.capacity) {
      this.samples.push(v);
      return;
    }
    const i = Math.floor(Math.random() * this.seen);
    if (i < this.capacity) this.samples[i] = v;
  }

  get count(): number {
    return this.seen;
  }

  /** Nearest-rank percentile (0..100); undefined without samples. */
  percentile(p: number): number | undefined {
    if (this.samples.length === 0) return undefined;
    this.sorted ??= [...this.samples].sort((a, b) => a - b);
    const s = this.sorted;
    const i = Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1));
    return s[i];
  }
}
