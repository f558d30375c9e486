// The background push's bandwidth cap: a token bucket holding at most one
// second's budget. When empty it schedules one retry (`onRefill`).
export class TokenBucket {
  private tokens = 0;
  private at = Date.now();
  private timer: NodeJS.Timeout | undefined;

  /** `rate` bytes/s; undefined: no cap (every take succeeds). */
  constructor(private readonly rate: number | undefined, private readonly onRefill: () => void) {}

  /** Takes `n` bytes' worth, or says no and schedules a retry. */
  take(n: number): boolean {
    const rate = this.rate;
    if (!rate) return true;
    const now = Date.now();
    this.tokens = Math.min(rate, this.tokens + ((now - this.at) / 1000) * rate);
    this.at = now;
    // A chunk larger than one second's budget goes when the bucket is full.
    const need = Math.min(n, rate);
    if (this.tokens >= need) {
      this.tokens -= n;
      return true;
    }
    if (!this.timer) {
      const wait = Math.max(1, Math.ceil(((need - this.tokens) / rate) * 1000));
      this.timer = setTimeout(() => {
        this.timer = undefined;
        this.onRefill();
      }, wait);
    }
    return false;
  }

  /** Gives back what a take did not use. */
  refund(n: number): void {
    if (this.rate) this.tokens += n;
  }

  close(): void {
    if (this.timer) clearTimeout(this.timer);
  }
}
