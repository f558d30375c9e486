// Driving examples/workloads/kv-service for the working-set tests and the
// benchmark: start it, warm it up (request 1), checkpoint it; then restore
// the checkpoint lazily as often as wanted, ask request 2 (which touches the
// hot set) and measure synchronous faults and time to the answer.
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { dump } from '../../plugin/dump/index.js';
import { restore } from '../../plugin/restore/index.js';
import { LazyPagesServer } from '../../plugin/lazy/server.js';
import type { LazyPagesServerOptions, LazyServerStats } from '../../plugin/lazy/types.js';
import { helperPath } from '../../plugin/native/addon.js';
import { withTimeout } from './env.js';
import { waitForFile } from './workload.js';

export interface KvCheckpoint {
  /** Image directory. */
  dir: string;
  ctl: string;
  pid: number;
  mib: number;
  hot: number;
  /** Checksum of the hot set answered before the checkpoint. */
  sum: string;
}

function request(ctl: string, name: string): void {
  const tmp = join(ctl, `.req-${process.pid}`);
  writeFileSync(tmp, '');
  renameSync(tmp, join(ctl, name));
}

/** Starts kv-service in `work`, answers request 1 and checkpoints it (the process is gone after). */
export async function checkpointKv(work: string, mib: number, hot: number): Promise<KvCheckpoint> {
  const ctl = join(work, 'ctl');
  const dir = join(work, 'images');
  mkdirSync(ctl, { recursive: true });
  mkdirSync(dir, { recursive: true });
  // Its own session, like a daemonised service (restore wants a session leader).
  const child = spawn(helperPath('kv-service'), [ctl, String(mib), String(hot)], { stdio: 'ignore', detached: true });
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  try {
    await waitForFile(join(ctl, 'ready'), 60_000);
    const pid = Number(readFileSync(join(ctl, 'ready'), 'utf8').trim());
    request(ctl, 'go-1');
    await waitForFile(join(ctl, 'answer-1'), 60_000);
    const sum = readFileSync(join(ctl, 'answer-1'), 'utf8').split(' ')[0]!;
    await dump({ pid, imagesDir: dir });
    await withTimeout(exited, 10_000, 'kv-service to be gone after the dump');
    return { dir, ctl, pid, mib, hot, sum };
  } catch (e) {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    await exited;
    throw e;
  }
}

export interface KvRun {
  /** Engine faults (synchronous) from the restore until the first answer. */
  faults: number;
  /** ms from the start of the restore to the first answer (the request is sent once it runs). */
  answerMs: number;
  /** Checksum the restored process answered. */
  sum: string;
  /** Exit status and verdict of the restored process. */
  code: number | null;
  result: string;
  stats: LazyServerStats;
  workingSetPages: number | undefined;
  /** ms from adoption until the replayed working set was in (undefined without one). */
  warmedMs: number | undefined;
}

/**
 * One lazy restore of the checkpoint with a server opened with `opts`;
 * `afterAnswer` runs once the first answer is in (e.g. stopRecording).
 */
export async function runKv(cp: KvCheckpoint, opts: Omit<LazyPagesServerOptions, 'imagesDir'>, afterAnswer?: (s: LazyPagesServer) => Promise<void>): Promise<KvRun> {
  for (const f of ['go-2', 'answer-2', 'go-3', 'stop', 'result']) rmSync(join(cp.ctl, f), { force: true });
  const server = await LazyPagesServer.open({ imagesDir: cp.dir, ...opts });
  try {
    const t0 = performance.now();
    const tree = await restore({ imagesDir: cp.dir, lazy: true, detached: true, lazyServer: server });
    try {
      request(cp.ctl, 'go-2');
      await waitForFile(join(cp.ctl, 'answer-2'), 60_000);
      const answerMs = performance.now() - t0;
      const stats = server.stats();
      const sum = readFileSync(join(cp.ctl, 'answer-2'), 'utf8').split(' ')[0]!;
      const workingSetPages = server.processes()[0]?.workingSetPages;
      await afterAnswer?.(server);
      const warmedMs = server.processes()[0]?.warmedMs;
      request(cp.ctl, 'stop');
      request(cp.ctl, 'go-3');
      const exit = await withTimeout(tree.wait(), 60_000, 'the restored kv-service to exit');
      await withTimeout(tree.lazyDone(), 60_000, 'the lazy-pages server to finish');
      const result = existsSync(join(cp.ctl, 'result')) ? readFileSync(join(cp.ctl, 'result'), 'utf8').trim() : '';
      return { faults: stats.faults, answerMs, sum, code: exit.code, result, stats, workingSetPages, warmedMs };
    } finally {
      await tree.close();
    }
  } finally {
    await server.close();
  }
}

/** The hot pages of kv-service as offsets in its table, first touch only, in request order (pattern() of common.h). */
export function kvHotOffsets(mib: number, hot: number): bigint[] {
  const pages = BigInt(mib * 256);
  const M = (1n << 64n) - 1n;
  const pattern = (r: bigint, i: bigint): bigint => {
    let x = (((r + 1n) * 0x9E3779B97F4A7C15n) & M) ^ ((i * 0xBF58476D1CE4E5B9n) & M);
    x ^= x >> 31n;
    x = (x * 0x94D049BB133111EBn) & M;
    return x ^ (x >> 29n);
  };
  const seen = new Set<bigint>();
  const out: bigint[] = [];
  for (let k = 0n; k < BigInt(Math.min(hot, mib * 256)); k++) {
    const off = (pattern(5n, k) % pages) * 4096n;
    if (!seen.has(off)) {
      seen.add(off);
      out.push(off);
    }
  }
  return out;
}
