// The lazy-pages server's picture of one adopted process: identity, state
// and counters here; its push cursors, watchdog guard, warm-up and fault-log
// share in their own small classes.
import { ChildGuard } from './child-guard.js';
import type { EngineProcStatsLike } from './engine.js';
import type { ProcIdentity } from './procfs.js';
import { ProcLog } from './proc-log.js';
import { PushCursor } from './push-cursor.js';
import { RemoteCursor } from './remote-cursor.js';
import type { LazyProcessState } from './types.js';
import { WarmUp } from './warm-up.js';

export class Proc {
  state: LazyProcessState = 'serving';
  readonly children: Proc[] = [];
  hostPid: number | undefined;
  identity: ProcIdentity | undefined;
  /** Bytes to copy from images or a page server (zero pages excluded). */
  lazyBytes = 0n;
  pushedBytes = 0n;
  pushedChunks = 0;
  /** Push windows issued and not yet reported. */
  pushInFlight = 0;
  readonly adoptedAtMs = Date.now();
  finishedAtMs: number | undefined;
  /** The engine said complete while our push windows were still being reported: finish after them. */
  completePending = false;
  /** Last engine counters seen (kept after release for the totals). */
  engineStats: EngineProcStatsLike | undefined;
  /** Last bytes-left figure from the engine, and whether the engine stopped answering. */
  lastLeft = 0n;
  leftUnknown?: boolean;
  /** The local push: near faults first, then address order. */
  push = new PushCursor();
  /** The remote (page server) push. */
  remote = new RemoteCursor();
  readonly guard = new ChildGuard();
  readonly warm = new WarmUp();
  readonly log = new ProcLog();

  constructor(
    readonly id: number,
    readonly engineProc: number,
    readonly imagePid: number,
    readonly parent: Proc | undefined,
  ) {}

  /** A child forked by this process (engine handle `engineProc`): same images, its own cursors. */
  fork(id: number, engineProc: number): Proc {
    const c = new Proc(id, engineProc, this.imagePid, this);
    c.lazyBytes = this.lazyBytes;
    c.remote = new RemoteCursor(this.remote.ranges);
    c.push = this.push.forkCopy();
    this.children.push(c);
    return c;
  }

  /** Who this is in error lines. */
  describe(): string {
    return this.parent ? `child of pid ${this.parent.hostPid ?? this.parent.imagePid} (reads image pid ${this.imagePid})` : `pid ${this.imagePid}`;
  }
}
