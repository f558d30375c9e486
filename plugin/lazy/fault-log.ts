// Drains the native engine's fault log (native/engine/fault_log.cc) into each
// process's stats-file timeline and working-set recorder.
import type { FaultEngineLike } from './engine.js';
import { errText } from './helpers.js';
import type { Proc } from './proc.js';
import type { LazyErrorEvent } from './types.js';

/** Native fault log ring (entries); drained every poll. */
const LOG_CAPACITY = 1 << 16;
/** Timeline entries kept per process in the stats file. */
const TIMELINE_MAX = 200_000;

export class FaultLogDrain {
  /** Entries the engine's ring dropped (full between drains). */
  dropped = 0;
  /** The log failed to drain once (reported once). */
  private failed = false;
  private readonly t0Ns = process.hrtime.bigint();

  /**
   * Turns the engine's fault log on when `wanted` (and the engine has one);
   * `keepTimeline`: fill the stats-file timelines (else recorders only).
   */
  constructor(private readonly engine: FaultEngineLike, wanted: boolean, private readonly keepTimeline: boolean) {
    this.on = wanted && engine.setFaultLog !== undefined && engine.drainFaultLog !== undefined;
    if (this.on) engine.setFaultLog!(LOG_CAPACITY);
  }

  /** The engine's fault log is on. */
  readonly on: boolean;

  /** Takes the engine's fault log; `procs` by engine handle. */
  drain(procs: ReadonlyMap<number, Proc>, emitError: (ev: LazyErrorEvent) => void): void {
    if (!this.on) return;
    let log;
    try {
      log = this.engine.drainFaultLog!();
    } catch (e) {
      // Without the log, working sets being recorded would be written with
      // holes: abandon them (never write a wrong one) and say so, once.
      for (const p of procs.values()) if (p.log.recorder && !p.log.recorder.done) p.log.recorder.done = true;
      if (!this.failed) {
        this.failed = true;
        const message = `the fault engine's log cannot be read (${errText(e)}): working sets being recorded are abandoned, stats-file timelines end here`;
        emitError({ proc: undefined, killed: false, message, error: e instanceof Error ? e : new Error(message) });
      }
      return;
    }
    this.dropped += log.dropped;
    for (const e of log.entries) {
      const p = procs.get(e.proc);
      if (!p) continue;
      if (e.kind !== 'push' && e.fault !== 0n) p.log.recorder?.add(e.fault, e.tNs);
      if (!this.keepTimeline) continue;
      if (p.log.timeline.length >= TIMELINE_MAX) {
        p.log.timelineDropped++;
        continue;
      }
      const tMs = e.tNs > this.t0Ns ? Math.round(Number(e.tNs - this.t0Ns) / 1000) / 1000 : 0;
      p.log.timeline.push([tMs, `0x${e.start.toString(16)}`, e.pages, e.kind === 'fault' ? 'f' : e.kind === 'zero' ? 'z' : 'p']);
    }
  }
}
