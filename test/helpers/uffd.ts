// Test helper around build/bin/uffd-harness: writes a random pattern file,
// starts the harness as our child, receives its uffd over a unix socket
// (SCM_RIGHTS) and exposes its regions, stdout lines and exit status.
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, readFileSync, unlinkSync, writeFileSync, writeSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { helperPath } from '../../plugin/native/addon.js';
import { acceptRecvFds, unixListen } from '../../plugin/uffd/abi.js';
import { withTimeout } from './env.js';

export interface HarnessRegion {
  addr: bigint;
  len: bigint;
  fileoff: bigint;
}

export interface HarnessExit {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

export class Harness {
  readonly lines: string[] = [];
  stdout = '';
  stderr = '';
  readonly exited: Promise<HarnessExit>;
  private waiters: { pred: (l: string) => boolean; resolve: (l: string) => void }[] = [];
  private connClosed = false;

  constructor(
    readonly child: ChildProcess,
    readonly uffd: number,
    readonly conn: number,
    readonly regions: HarnessRegion[],
  ) {
    this.exited = new Promise((resolve) => {
      child.on('close', (code, signal) => {
        this.closeConn();
        resolve({ code, signal, stdout: this.stdout, stderr: this.stderr });
      });
    });
  }

  get pid(): number {
    return this.child.pid!;
  }

  /** Sends the one byte the harness waits for (start, or continue after `wait`). */
  go(): void {
    writeSync(this.conn, Buffer.from('g'));
  }

  onLine(line: string): void {
    this.lines.push(line);
    this.waiters = this.waiters.filter((w) => {
      if (!w.pred(line)) return true;
      w.resolve(line);
      return false;
    });
  }

  /** Resolves with the first stdout line (seen or future) matching pred. */
  waitLine(pred: (l: string) => boolean, ms = 10000): Promise<string> {
    const seen = this.lines.find(pred);
    if (seen !== undefined) return Promise.resolve(seen);
    return withTimeout(new Promise<string>((resolve) => this.waiters.push({ pred, resolve })), ms, `harness line (${this.stdout.slice(-300)})`);
  }

  /** Waits for exit (bounded) and returns the status. */
  finish(ms = 20000): Promise<HarnessExit> {
    return withTimeout(this.exited, ms, `harness exit; stdout so far:\n${this.stdout.slice(-2000)}`);
  }

  closeConn(): void {
    if (this.connClosed) return;
    this.connClosed = true;
    closeSync(this.conn);
  }

  kill(): void {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill('SIGKILL');
  }
}

/** Random pattern file of `pages` pages; returns its bytes too. */
export function writePattern(path: string, pages: number): Buffer {
  const b = randomBytes(pages * 4096);
  writeFileSync(path, b);
  return b;
}

let seq = 0;

export async function startHarness(opts: {
  dir: string;
  pattern: string;
  regions: number[];
  actions: string[];
  noEvents?: boolean;
  /** Exact UFFDIO_API features the harness asks for. */
  features?: bigint;
  /** Run the harness on this CPU only (taskset). */
  cpu?: number;
}): Promise<Harness> {
  const bin = helperPath('uffd-harness');
  const sock = join(opts.dir, `h${process.pid}-${seq++}.sock`);
  const lfd = unixListen(sock);
  const args = ['--sock', sock, '--pattern', opts.pattern, '--regions', opts.regions.join(',')];
  if (opts.noEvents) args.push('--no-events');
  if (opts.features !== undefined) args.push('--features', opts.features.toString(16));
  const argv = [bin, ...args, '--', ...opts.actions];
  if (opts.cpu !== undefined) argv.unshift('taskset', '-c', String(opts.cpu));
  const child = spawn(argv[0]!, argv.slice(1), { stdio: ['ignore', 'pipe', 'pipe'] });
  let early = '';
  child.stderr.on('data', (d: Buffer) => (early += d.toString()));
  let msg: { conn: number; data: Buffer; fds: number[] };
  try {
    msg = await acceptRecvFds(lfd, 10000);
  } catch (e) {
    child.kill('SIGKILL');
    throw new Error(`harness did not send its uffd: ${(e as Error).message} ${early}`);
  } finally {
    closeSync(lfd);
    unlinkSync(sock);
  }
  const text = msg.data.toString();
  const lines = text.trim().split('\n');
  const regions = lines.slice(1).map((l) => {
    const [, addr, len, off] = l.split(' ');
    return { addr: BigInt(`0x${addr}`), len: BigInt(len!), fileoff: BigInt(off!) };
  });
  if (msg.fds.length !== 1) throw new Error(`expected one fd from the harness, got ${msg.fds.length}`);
  const h = new Harness(child, msg.fds[0]!, msg.conn, regions);
  let partial = '';
  child.stdout!.on('data', (d: Buffer) => {
    h.stdout += d.toString();
    partial += d.toString();
    let i: number;
    while ((i = partial.indexOf('\n')) >= 0) {
      h.onLine(partial.slice(0, i));
      partial = partial.slice(i + 1);
    }
  });
  child.stderr!.removeAllListeners('data');
  h.stderr = early;
  child.stderr!.on('data', (d: Buffer) => (h.stderr += d.toString()));
  return h;
}

/** Number of threads of this process. */
export function threadCount(): number {
  return Number(/Threads:\s+(\d+)/.exec(readStatus())![1]);
}

function readStatus(): string {
  return readFileSync('/proc/self/status', 'utf8');
}
