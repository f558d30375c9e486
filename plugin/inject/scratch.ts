// Injected syscalls that need a buffer in the target (rt_sigaction's old
// action, sigaltstack's stack_t, prctl(PR_GET_TID_ADDRESS)'s pointer): the
// buffer lives on the thread's own stack below the red zone, and the bytes
// it covered are put back afterwards so memory is left exactly as found.
import { getRegs, injectSyscall, type InjectOptions } from './ptrace.js';
import { readMemory, writeMemory } from './memory.js';

/** Start of a `size`-byte scratch area below rsp's 128-byte red zone (64-byte aligned). */
export function stackScratch(tid: number, size: number): bigint {
  const rsp = getRegs(tid).rsp;
  return (rsp - 512n - BigInt(size)) & ~63n;
}

/**
 * Runs syscall `nr` in `tid` (a thread of `pid`) with a scratch buffer of
 * `size` bytes holding `input` (zeros if absent); `args(addr)` builds the
 * arguments from the buffer's address. Returns the raw result and the
 * buffer's contents after the call.
 */
export function injectWithScratch(
  pid: number, tid: number, nr: number, size: number,
  args: (addr: bigint) => readonly (bigint | number)[], opts: InjectOptions, input?: Buffer,
): { result: bigint; data: Buffer } {
  const addr = stackScratch(tid, size);
  const saved = readMemory(pid, addr, size);
  const inBuf = Buffer.alloc(size);
  if (input) input.copy(inBuf);
  writeMemory(pid, addr, inBuf);
  try {
    const result = injectSyscall(tid, nr, args(addr), opts);
    return { result, data: readMemory(pid, addr, size) };
  } finally {
    writeMemory(pid, addr, saved);
  }
}
