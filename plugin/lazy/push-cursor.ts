// Where the background push of one process stands (plugin/lazy/push-scheduler.ts
// walks it): windows near recent faults first, then address order over a
// snapshot of the engine's remaining ranges.
import type { Span } from './span.js';

export class PushCursor {
  /** Page addresses near recent faults (push there first), newest last. */
  hot: bigint[] = [];
  /**
   * Range edges whose origin we know (plan boundaries, our push windows,
   * event ranges). A remaining-range edge not in here was cut by a fault.
   * Undefined after a remap: addresses moved, the heuristic is dropped.
   */
  knownEdges: Set<bigint> | undefined = new Set();
  /** Faults happened since the last look for fault holes. */
  hotCheck = false;
  /** Address-order push: snapshot of remaining ranges and where we are in it. */
  snapshot: Span[] | undefined;
  snapIndex = 0;
  cursor = 0n;
  /** A pass over the snapshot that copied nothing pauses the push until the next fault. */
  passCopied = 0n;
  passChunks = 0;
  paused = false;

  /** A forked child's cursor: it starts over, knowing the parent's edges. */
  forkCopy(): PushCursor {
    const c = new PushCursor();
    c.knownEdges = this.knownEdges ? new Set(this.knownEdges) : undefined;
    return c;
  }

  /** Notes a range edge we know the origin of. */
  noteEdges(start: bigint, end: bigint): void {
    this.knownEdges?.add(start);
    this.knownEdges?.add(end);
  }

  /** New faults: look for their holes, and resume a paused push. */
  onFaults(): void {
    this.hotCheck = true;
    this.paused = false;
  }

  /** The address space moved (mremap): positions and edges mean nothing any more. */
  forget(): void {
    this.snapshot = undefined;
    this.knownEdges = undefined;
    this.hot = [];
  }
}
