// A stopped, traced task being restored: syscall injection at a `syscall`
// gadget (found in the task's vDSO, so it survives unmapping the stub and
// moves with the vDSO), a scratch page for syscall arguments, and typed
// wrappers for the handful of calls the restorer makes.
import { readFileSync } from 'node:fs';
import { errnoName } from '../errors.js';
import { BATCH_ENTRY, runBatch, writeBatchBlob, type BatchSyscall } from '../inject/batch.js';
import { SYS } from '../inject/constants.js';
import { injectSyscall, injectSyscallFork } from '../inject/ptrace.js';
import { addon } from '../native/addon.js';

/** Syscall numbers: the one table of plugin/inject. */
export const NR = SYS;

// Only a safety bound (a restore never injects a blocking call): generous,
// as a loaded machine can take a while to copy a big address space on clone.
const INJECT_TIMEOUT_MS = 30000;

export const PROT = { READ: 1, WRITE: 2, EXEC: 4 } as const;
const MAP_PRIVATE = 0x02;
const MAP_ANONYMOUS = 0x20;
const MAP_FIXED_NOREPLACE = 0x100000;
const AT_FDCWD = -100;

/** A failed injected syscall: names the pid, the call and the errno code. */
export class InjectedSyscallError extends Error {
  readonly errno: number;
  readonly code: string;
  constructor(
    readonly pid: number,
    readonly call: string,
    errno: number,
  ) {
    const code = errnoName(errno);
    super(`pid ${pid}: ${call} failed in the restored process: ${code}`);
    this.errno = errno;
    this.code = code;
  }
}

/** One syscall of a batch (RemoteTask.batch); `what` as in call(), a failure of a `mayFail` call is returned, not thrown. */
export interface BatchCall extends BatchSyscall {
  /** Runs once the call ran (with its result): right after it when calls go one by one, after the batch otherwise. */
  after?: (result: bigint) => void;
}

/** Scratch addresses holding the batch routine (executable), across a tree: children inherit the parent's scratch. */
const batchScratch = new Set<bigint>();
// Scratch layout of the batch: the table (64-byte entries) and the routine.
const BATCH_TABLE = 0x4000n;
const BATCH_BLOB = 0x5000n;
const BATCH_MAX = 0x1000 / BATCH_ENTRY - 1;
const PROT_EXEC = 4;

export interface MapsLine {
  start: bigint;
  end: bigint;
  perms: string;
  name: string;
}

export function readMaps(pid: number): MapsLine[] {
  const out: MapsLine[] = [];
  for (const line of readFileSync(`/proc/${pid}/maps`, 'utf8').split('\n')) {
    if (!line) continue;
    const m = /^([0-9a-f]+)-([0-9a-f]+) (\S+) \S+ \S+ \S+\s*(.*)$/.exec(line);
    if (!m) continue;
    out.push({ start: BigInt(`0x${m[1]}`), end: BigInt(`0x${m[2]}`), perms: m[3]!, name: m[4] ?? '' });
  }
  return out;
}

export class RemoteTask {
  /** Address of a `syscall` instruction (0f 05) in this task's vDSO. */
  gadget = 0n;
  /** Offset of the gadget inside the vDSO; the gadget moves with the vDSO. */
  private gadgetOff = 0n;
  scratch = 0n;
  readonly scratchSize = 0x6000n;

  constructor(
    readonly pid: number,
    readonly tid: number = pid,
  ) {}

  /** A task sharing this task's address space (another thread): same gadget and scratch. */
  thread(tid: number): RemoteTask {
    const t = new RemoteTask(this.pid, tid);
    t.gadget = this.gadget;
    t.gadgetOff = this.gadgetOff;
    t.scratch = this.scratch;
    return t;
  }

  /** Finds the gadget in the task's current vDSO. */
  findGadget(): void {
    const vdso = readMaps(this.pid).find((m) => m.name === '[vdso]');
    if (!vdso) throw new Error(`pid ${this.pid}: no [vdso] mapping to inject system calls through`);
    const code = addon.restoreReadMem(this.pid, vdso.start, vdso.end - vdso.start);
    const off = code.indexOf(Buffer.from([0x0f, 0x05]));
    if (off < 0) throw new Error(`pid ${this.pid}: no syscall instruction in the vDSO`);
    this.gadgetOff = BigInt(off);
    this.gadget = vdso.start + this.gadgetOff;
  }

  vdsoMoved(newVdsoStart: bigint): void {
    this.gadget = newVdsoStart + this.gadgetOff;
  }

  /** Raw injected syscall; returns the kernel's return value (negative errno on failure). */
  raw(nr: number, ...args: (bigint | number)[]): bigint {
    return injectSyscall(this.tid, nr, args, { gadget: this.gadget, timeoutMs: INJECT_TIMEOUT_MS });
  }

  /** Injected fork/clone: the result and the new task's pid here (0 if none), still in its initial stop. */
  rawFork(nr: number, ...args: (bigint | number)[]): { result: bigint; child: number } {
    return injectSyscallFork(this.tid, nr, args, { gadget: this.gadget, timeoutMs: INJECT_TIMEOUT_MS });
  }

  /** Injected syscall that must succeed. */
  call(what: string, nr: number, ...args: (bigint | number)[]): bigint {
    const r = this.raw(nr, ...args);
    if (r < 0n && r > -4096n) throw new InjectedSyscallError(this.pid, what, Number(-r));
    return r;
  }

  write(addr: bigint, data: Buffer): void {
    addon.restoreWriteMem(this.pid, addr, data);
  }

  read(addr: bigint, len: number): Buffer {
    return addon.restoreReadMem(this.pid, addr, len);
  }

  /**
   * Maps a fresh anonymous page range at `addr` for syscall arguments, and
   * the batch routine (batch()): read-write-execute, or read-write only
   * where executable anonymous memory is refused (batches then run call by
   * call).
   */
  mapScratch(addr: bigint): void {
    const flags = MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE;
    let r = this.raw(NR.mmap, addr, this.scratchSize, PROT.READ | PROT.WRITE | PROT_EXEC, flags, -1, 0);
    let exec = r === addr;
    if (r < 0n && r > -4096n) r = this.call('mmap(scratch)', NR.mmap, addr, this.scratchSize, PROT.READ | PROT.WRITE, flags, -1, 0);
    if (r !== addr) throw new Error(`pid ${this.pid}: scratch mapped at 0x${r.toString(16)} instead of 0x${addr.toString(16)}`);
    this.scratch = addr;
    if (exec && process.env.LR_INJECT_BATCH !== '0') {
      writeBatchBlob(this.pid, addr + BATCH_BLOB);
    } else {
      exec = false;
    }
    if (exec) batchScratch.add(addr);
    else batchScratch.delete(addr);
  }

  /**
   * Runs `calls` in order inside the task, many per ptrace round trip (the
   * batch routine in the scratch area), one by one where there is none.
   * Stops at the first failing call that may not fail and throws its
   * InjectedSyscallError (the calls before it took effect, the ones after
   * it did not run); returns every result otherwise.
   */
  batch(calls: readonly BatchCall[]): bigint[] {
    const out: bigint[] = [];
    if (!batchScratch.has(this.scratch)) {
      for (const c of calls) {
        const r = c.mayFail ? this.raw(c.nr, ...c.args) : this.call(c.what, c.nr, ...c.args);
        c.after?.(r);
        out.push(r);
      }
      return out;
    }
    const { results, failed } = runBatch(this.pid, this.tid, calls, { blob: this.scratch + BATCH_BLOB, table: this.scratch + BATCH_TABLE, max: BATCH_MAX }, INJECT_TIMEOUT_MS);
    for (let i = 0; i < results.length; i++) {
      const c = calls[i]!;
      if (i === failed) throw new InjectedSyscallError(this.pid, c.what, Number(-results[i]!));
      c.after?.(results[i]!);
      out.push(results[i]!);
    }
    return out;
  }

  /** Writes a NUL-terminated string to scratch at `off`; returns its address. */
  putString(s: string, off = 0n): bigint {
    const b = Buffer.from(`${s}\0`, 'utf8');
    if (BigInt(b.length) + off > this.scratchSize) throw new Error(`path too long: ${s}`);
    this.write(this.scratch + off, b);
    return this.scratch + off;
  }

  openat(path: string, flags: number, mode = 0): number {
    const a = this.putString(path);
    return Number(this.call(`open(${path})`, NR.openat, AT_FDCWD, a, flags, mode));
  }

  close(fd: number): void {
    this.call(`close(${fd})`, NR.close, fd);
  }
}
