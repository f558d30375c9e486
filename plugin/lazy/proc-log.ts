// One process's share of the engine's fault log: its stats-file timeline
// and the working set being recorded (plugin/lazy/fault-log.ts fills both).
import type { TimelineEvent } from '../stats/format.js';
import type { WorkingSetRecorder } from './workingset.js';

export class ProcLog {
  /** Fault log of this process for the stats file: [tMs, addr, pages, kind]. */
  timeline: TimelineEvent[] = [];
  timelineDropped = 0;
  /** Working set being recorded (roots only). */
  recorder: WorkingSetRecorder | undefined;
}
