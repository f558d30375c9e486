// Phase timings of one command, for performance work: with LR_PHASES=1 in
// the environment every mark() records the wall time since the process
// started and the CPU time used so far, printed to stderr at exit. Off (one
// boolean test per mark) otherwise.
// With LR_TRACE=FILE, every mark() of every process of a command (restorer,
// lazy-pages daemon) is also appended to FILE as "EPOCH_MS PID NAME" (one
// append per line, so processes may share it): the timeline across processes.
import { appendFileSync, readFileSync, writeSync } from 'node:fs';

const on = process.env.LR_PHASES === '1';
const traceFile = process.env.LR_TRACE || undefined;

function traceLine(epochMs: number, name: string): void {
  try {
    appendFileSync(traceFile!, `${epochMs.toFixed(1)} ${process.pid} ${name}\n`);
  } catch { /* measuring only */ }
}
if (traceFile) traceLine(performance.timeOrigin, `node start (${process.argv.slice(2, 3).join(' ')})`);
const marks: { name: string; wallMs: number; cpuMs: number; runqMs: number }[] = [];
const counts = new Map<string, { n: number; ms: number }>();

/** Time this thread spent runnable but waiting for a CPU (schedstat), or NaN. */
function runqueueMs(): number {
  try {
    return Number(readFileSync('/proc/thread-self/schedstat', 'utf8').split(' ')[1]) / 1e6;
  } catch {
    return NaN;
  }
}

/** Records that `name` was reached. */
export function mark(name: string): void {
  if (traceFile) traceLine(performance.timeOrigin + performance.now(), name);
  if (!on) return;
  const c = process.cpuUsage();
  marks.push({ name, wallMs: performance.now(), cpuMs: (c.user + c.system) / 1000, runqMs: runqueueMs() });
}

/** Whether phase timing is on (to skip measuring a hot call). */
export const phasesOn = on;

/** Counts one occurrence of `name` taking `ms` (e.g. one injected syscall). */
export function count(name: string, ms: number): void {
  const c = counts.get(name) ?? { n: 0, ms: 0 };
  c.n++;
  c.ms += ms;
  counts.set(name, c);
}

if (on) {
  process.on('exit', () => {
    mark('exit');
    let prevW = 0;
    let prevC = 0;
    let prevQ = marks[0]?.runqMs ?? 0;
    const lines = marks.map((m) => {
      const l = `${m.wallMs.toFixed(1).padStart(8)} ms wall (+${(m.wallMs - prevW).toFixed(1).padStart(6)})  ${m.cpuMs.toFixed(1).padStart(7)} ms cpu (+${(m.cpuMs - prevC).toFixed(1).padStart(6)})  runq +${(m.runqMs - prevQ).toFixed(1).padStart(6)}  ${m.name}`;
      prevW = m.wallMs;
      prevC = m.cpuMs;
      prevQ = m.runqMs;
      return l;
    });
    for (const [k, v] of counts) lines.push(`${k}: ${v.n} calls, ${v.ms.toFixed(1)} ms`);
    try {
      // Straight to fd 2: process.stderr would build a stream (ms of CPU) at exit.
      writeSync(2, `phases (pid ${process.pid}, start-up: ${(globalThis as { __lrStartup?: string }).__lrStartup ?? 'modules'}):\n${lines.join('\n')}\n`);
    } catch { /* measuring only */ }
  });
}
