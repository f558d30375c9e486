// The background push of a process's remote (PE_LAZY-only) ranges, at
// dump-time addresses, in address order: the engine's supply() finds the
// pages wherever they live now and skips those already copied.
// (plugin/pageserver)
import type { Span } from './span.js';

export class RemoteCursor {
  private index = 0;
  private cursor = 0n;

  /** `ranges` may be shared with forked children (each has its own cursor). */
  constructor(readonly ranges: Span[] = []) {}

  /** Nothing handed out yet (a native bulk pull may take the whole push). */
  get fresh(): boolean {
    return this.index === 0 && this.cursor === 0n;
  }

  /** Everything was pushed another way (a native bulk pull): nothing more to hand out. */
  finishAll(): void {
    this.index = this.ranges.length;
  }

  /** Next chunk of at most `chunk` bytes, or undefined when all were handed out. */
  next(chunk: bigint): { start: bigint; len: bigint } | undefined {
    while (this.index < this.ranges.length) {
      const r = this.ranges[this.index]!;
      const start = this.cursor > r.start ? this.cursor : r.start;
      if (start >= r.end) {
        this.index++;
        continue;
      }
      const end = start + chunk < r.end ? start + chunk : r.end;
      this.cursor = end;
      return { start, len: end - start };
    }
    return undefined;
  }
}
