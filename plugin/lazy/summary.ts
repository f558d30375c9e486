// The daemon's end-of-run summary (CLI and logs).
import type { LazyProcessStats, LazyServerStats } from './types.js';

function mib(b: bigint): string {
  return `${(Number(b) / 2 ** 20).toFixed(1)} MiB`;
}

function us(v: number | undefined): string {
  return v === undefined ? 'n/a' : `${v.toFixed(0)} us`;
}

export function formatSummary(s: LazyServerStats, procs: readonly LazyProcessStats[]): string {
  const times = procs.map((p) => p.timeToCompleteMs).filter((t): t is number => t !== undefined);
  const lines = [
    `lazy-pages: ${s.processes} process(es): ${s.complete} complete, ${s.exited} exited, ${s.killed} killed${s.serving ? `, ${s.serving} still serving` : ''}`,
    `  faults served ${s.faults} (${s.faultPages} pages, ${s.zeroPages} zero pages), pages pushed ${s.pushedPages}, bytes copied ${mib(s.bytesCopied)} of ${mib(s.lazyBytes)} lazy`,
    `  time to complete ${times.length ? `${Math.max(...times)} ms (slowest process)` : 'n/a'}, total ${s.elapsedMs} ms`,
    `  fault latency p50 ${us(s.faultLatencyP50Us)}, p99 ${us(s.faultLatencyP99Us)}`,
  ];
  return `${lines.join('\n')}\n`;
}
