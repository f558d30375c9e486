// A replayed working set of one process (plugin/lazy/workingset.ts): its
// size, when it was all in, and adopt() waiting for it.
export class WarmUp {
  /** Pages of the replayed working set. */
  pages: number | undefined;
  /** When they were all in. */
  warmedAtMs: number | undefined;
  /** adopt() waiting for the working set before the process resumes. */
  waiter: (() => void) | undefined;

  /** Lets a waiting adopt() return (the set is in, or the process is done). */
  release(): void {
    this.waiter?.();
  }
}
