// Syscall batches: many injected syscalls per ptrace round trip. The batch
// routine (native/inject/ptrace_util.h, addon.injectBatchBlob) is copied into
// an executable scratch area of the tracee and runs a table of calls there
// with one resume and one stop; the kernel's results come back in the table.
// Shared by restore (RemoteTask.batch) and dump (collect.ts): each caller
// names its own scratch layout and turns a failed call into its own error.
import { addon } from '../native/addon.js';
import { count, phasesOn } from '../phases.js';

/** One syscall of a batch. */
export interface BatchSyscall {
  /** What it is, for error messages (e.g. `rt_sigaction(10)`). */
  what: string;
  nr: number;
  args: readonly (bigint | number)[];
  /** A failure does not stop the batch. */
  mayFail?: boolean;
}

/** Where a tracee's batch routine and table are: both inside one executable scratch mapping. */
export interface BatchArea {
  /** Address of the routine (written by writeBatchBlob). */
  blob: bigint;
  /** Address of the table: 64 bytes per call plus one for the end mark. */
  table: bigint;
  /** Calls per run the table has room for. */
  max: number;
}

/** Table entry size: number, 6 arguments, result. */
export const BATCH_ENTRY = 64;
/** A value no syscall returns (neither a pointer nor -errno): an entry the batch never reached. */
const NOT_RUN = 0xdead_0000_0000_beefn;

let blobCode: Buffer | undefined;

/** The batch routine's code (bytes to place at BatchArea.blob). */
export function batchBlob(): Buffer {
  return (blobCode ??= addon.injectBatchBlob());
}

/** Copies the batch routine into the tracee at `addr` (an executable scratch mapping). */
export function writeBatchBlob(pid: number, addr: bigint): void {
  addon.restoreWriteMem(pid, addr, batchBlob());
}

/** True when `r` (raw rax) is -errno. */
export function isSyscallError(r: bigint): boolean {
  return r < 0n && r > -4096n;
}

/**
 * Runs `calls` in thread `tid` of `pid`, in order, through the routine of
 * `area` (in runs of at most area.max). Returns the results of the calls
 * that ran: all of them, or up to and including the first failing call that
 * may not fail (its index is `failed`; the calls after it did not run).
 */
export function runBatch(pid: number, tid: number, calls: readonly BatchSyscall[], area: BatchArea, timeoutMs: number): { results: bigint[]; failed?: number } {
  const results: bigint[] = [];
  for (let at = 0; at < calls.length; at += area.max) {
    const n = Math.min(area.max, calls.length - at);
    const table = Buffer.alloc((n + 1) * BATCH_ENTRY);
    for (let i = 0; i < n; i++) {
      const c = calls[at + i]!;
      const o = i * BATCH_ENTRY;
      table.writeBigUInt64LE(BigInt(c.nr) | (c.mayFail ? 1n << 32n : 0n), o);
      for (let k = 0; k < c.args.length; k++) table.writeBigUInt64LE(BigInt.asUintN(64, BigInt(c.args[k]!)), o + 8 + k * 8);
      // A result word that stays as written means the call did not run.
      table.writeBigUInt64LE(NOT_RUN, o + 56);
    }
    table.writeBigInt64LE(-1n, n * BATCH_ENTRY);
    addon.restoreWriteMem(pid, area.table, table);
    const t0 = phasesOn ? performance.now() : 0;
    addon.injectBatch(tid, area.blob, area.table, timeoutMs);
    if (phasesOn) count(`injected batches (${n} calls)`, performance.now() - t0);
    const back = addon.restoreReadMem(pid, area.table, n * BATCH_ENTRY);
    for (let i = 0; i < n; i++) {
      const r = back.readBigInt64LE(i * BATCH_ENTRY + 56);
      if (BigInt.asUintN(64, r) === NOT_RUN) {
        throw new Error(`pid ${pid}: ${calls[at + i]!.what}: not run by the syscall batch`);
      }
      results.push(r);
      if (isSyscallError(r) && !calls[at + i]!.mayFail) return { results, failed: at + i };
    }
  }
  return { results };
}
