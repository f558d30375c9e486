// Helpers for the lazy-pages tests: the lazy-handover client (a restorer
// written to the socket protocol spec) started and reaped by the test, and
// the page pattern it verifies (the 64-bit word at address a = a ^ seed).
import { spawn, type ChildProcess } from 'node:child_process';
import { helperPath } from '../../plugin/native/addon.js';
import { withTimeout } from './env.js';

export const PAGE = 4096n;

/** The bytes the client expects at [addr, addr + len). */
export function pattern(addr: bigint, len: number, seed: bigint): Buffer {
  const b = Buffer.alloc(len);
  for (let i = 0; i < len; i += 8) b.writeBigUInt64LE((addr + BigInt(i)) ^ seed, i);
  return b;
}

export interface Handover {
  child: ChildProcess;
  /** pids that announced "ready" (the processes whose memory is served). */
  pids: number[];
  stdout: string[];
  stderr: string;
  /** Tells the client to connect and hand over. */
  go(): void;
  /** Exit code and signal, bounded. */
  exit(ms?: number): Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/** Starts lazy-handover and waits until `readyCount` processes reported ready. */
export async function startHandover(args: string[], readyCount = 1): Promise<Handover> {
  const child = spawn(helperPath('lazy-handover'), args, { stdio: ['pipe', 'pipe', 'pipe'] });
  const h: Handover = {
    child,
    pids: [],
    stdout: [],
    stderr: '',
    go: () => child.stdin!.write('go\n'),
    exit: (ms = 20_000) => withTimeout(exited, ms, `lazy-handover ${args.join(' ')} to exit`),
  };
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.on('exit', (code, signal) => resolve({ code, signal }));
  });
  child.stderr!.on('data', (d: Buffer) => (h.stderr += d.toString()));
  let buf = '';
  let onReady: (() => void) | undefined;
  child.stdout!.on('data', (d: Buffer) => {
    buf += d.toString();
    let i: number;
    while ((i = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, i);
      buf = buf.slice(i + 1);
      h.stdout.push(line);
      const m = /^ready (\d+)$/.exec(line);
      if (m) h.pids.push(Number(m[1]));
      if (h.pids.length >= readyCount) onReady?.();
    }
  });
  await withTimeout(new Promise<void>((resolve, reject) => {
    onReady = resolve;
    child.on('exit', (code, signal) => reject(new Error(`lazy-handover exited early (${code ?? signal}): ${h.stderr}`)));
  }), 10_000, 'lazy-handover ready');
  return h;
}
