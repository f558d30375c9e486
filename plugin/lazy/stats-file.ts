// The --stats-file JSON (plugin/stats/format.ts StatsFile): the server's
// totals, each process's counters and fault timeline, and this daemon's memory.
import { readFileSync, writeFileSync } from 'node:fs';
import { latencySummary, type ProcessStats, type StatsFile } from '../stats/format.js';
import type { Proc } from './proc.js';
import type { SharedObjectStats } from '../uffd/engine.js';
import type { LazyProcessStats, LazyServerStats } from './types.js';

export interface StatsFileInput {
  startedAt: Date;
  totals: LazyServerStats;
  procs: Iterable<Proc>;
  snapshotOf(p: Proc): LazyProcessStats;
  /** Fault-log entries the engine dropped (added to every process's timelineDropped). */
  logDropped: number;
  /** Lazily served shared memory objects (omitted from the file when none). */
  sharedObjects?: readonly SharedObjectStats[];
}

export function writeStatsFile(path: string, input: StatsFileInput): void {
  const { processes: _count, ...totals } = input.totals;
  const procs: ProcessStats[] = [...input.procs].map((p) => {
    const s = input.snapshotOf(p);
    const es = p.engineStats;
    const latency = es ? latencySummary(es.latencyLog2Ns) : undefined;
    const dropped = p.log.timelineDropped + input.logDropped;
    return {
      pid: p.hostPid ?? p.imagePid,
      ...(p.parent ? { parentPid: p.parent.hostPid ?? p.parent.imagePid } : {}),
      id: p.id, imagePid: p.imagePid, state: p.state,
      faults: es?.faults ?? 0, zeroPages: es?.zeroPages ?? 0, copiedPages: es?.copiedPages ?? 0,
      pushedPages: es?.pushedPages ?? 0, bytes: Number(es?.bytes ?? 0n),
      lazyBytes: p.lazyBytes.toString(), pushedBytes: p.pushedBytes.toString(),
      ...(s.timeToCompleteMs !== undefined && p.state === 'complete' ? { timeToCompleteMs: s.timeToCompleteMs } : {}),
      ...(p.state === 'exited' ? { exited: true } : {}),
      ...(latency ? { latency } : {}),
      ...(s.workingSetPages !== undefined ? { workingSetPages: s.workingSetPages } : {}),
      ...(s.warmedMs !== undefined ? { warmedMs: s.warmedMs } : {}),
      ...(s.recordedPages !== undefined ? { recordedPages: s.recordedPages } : {}),
      ...(dropped > 0 ? { timelineDropped: dropped } : {}),
      timeline: p.log.timeline,
    };
  });
  const body: StatsFile = {
    tool: 'lazy-restore', version: 1, startedAt: input.startedAt.toISOString(),
    durationMs: Date.now() - input.startedAt.getTime(),
    ...totals,
    bytesCopied: totals.bytesCopied.toString(), lazyBytes: totals.lazyBytes.toString(), lazyBytesLeft: totals.lazyBytesLeft.toString(),
    processes: procs, memory: selfMemory(),
    ...(input.sharedObjects?.length ? { sharedObjects: [...input.sharedObjects] } : {}),
  } as StatsFile;
  writeFileSync(path, `${JSON.stringify(body, (_, v: unknown) => (typeof v === 'bigint' ? v.toString() : v), 2)}\n`);
}

/** This process's memory (bytes) from /proc/self/status: anonymous vs file-backed (mapped pages files). */
function selfMemory(): { rssBytes: number; rssAnonBytes: number; rssFileBytes: number; hwmBytes: number } {
  const st = readFileSync('/proc/self/status', 'latin1');
  const kb = (k: string): number => Number(new RegExp(`^${k}:\\s+(\\d+) kB`, 'm').exec(st)?.[1] ?? 0) * 1024;
  return { rssBytes: kb('VmRSS'), rssAnonBytes: kb('RssAnon'), rssFileBytes: kb('RssFile'), hwmBytes: kb('VmHWM') };
}
