// The end of a tool's log file, for a benchmark's error message.
import { readFileSync } from 'node:fs';

/** The last `lines` lines (then at most `chars` characters) of a log file, or why it cannot be read. */
export function logTail(path: string, opts: { lines?: number; chars?: number } = {}): string {
  try {
    let t = readFileSync(path, 'utf8').trimEnd();
    if (opts.lines !== undefined) t = t.split('\n').slice(-opts.lines).join('\n');
    if (opts.chars !== undefined) t = t.slice(-opts.chars);
    return t;
  } catch (e) {
    return `(${path}: ${(e as NodeJS.ErrnoException).code ?? String(e)})`;
  }
}
