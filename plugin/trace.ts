// Phase timestamps for measuring whole commands (bench, issue 14): with
// LR_TRACE=FILE every process of a command appends "EPOCH_MS PID LABEL"
// lines to FILE (one append per line, so processes may share the file).
// Off (no environment variable) it costs one comparison.
import { appendFileSync } from 'node:fs';

const file = process.env.LR_TRACE;

export const tracing = file !== undefined && file !== '';

export function trace(label: string): void {
  if (!tracing) return;
  try {
    appendFileSync(file!, `${(performance.timeOrigin + performance.now()).toFixed(1)} ${process.pid} ${label}\n`);
  } catch { /* measuring only */ }
}

if (tracing) {
  appendFileSync(file!, `${performance.timeOrigin.toFixed(1)} ${process.pid} node start (time origin) ${process.argv.slice(2, 3).join(' ')}\n`);
}
