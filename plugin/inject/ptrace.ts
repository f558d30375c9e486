// Typed ptrace wrappers: attach/stop/resume, bounded waits, registers,
// signal state, rseq/robust-list queries and single-syscall injection.
// Synchronous by design: a ptrace stop must be consumed (waited for) in the
// same tick it is caused, or libuv's SIGCHLD handler could reap the stop of
// a child that node spawned.
import { Errno, sysError } from '../errors.js';
import { readFileSync } from 'node:fs';
import { addon } from '../native/addon.js';
import { count, phasesOn } from '../phases.js';
import type { NativeRseqConfiguration, NativeWaitStatus, UserRegsStruct } from '../native/types.js';
import { NT, PTRACE_EVENT } from './constants.js';

export type UserRegs = UserRegsStruct;
export type WaitStatus = NativeWaitStatus;
export type RseqConfiguration = NativeRseqConfiguration;

/** Default bound for waits on a ptrace stop. */
export const DEFAULT_TIMEOUT_MS = 5000;

export function seize(tid: number, options: number = 0): void {
  addon.ptraceSeize(tid, options);
}
export function interrupt(tid: number): void {
  addon.ptraceInterrupt(tid);
}
export function cont(tid: number, sig = 0): void {
  addon.ptraceCont(tid, sig);
}
/** PTRACE_SYSCALL: resume until the next syscall entry/exit stop. */
export function syscallStep(tid: number, sig = 0): void {
  addon.ptraceSyscall(tid, sig);
}
export function singleStep(tid: number, sig = 0): void {
  addon.ptraceSingleStep(tid, sig);
}
export function detach(tid: number, sig = 0): void {
  addon.ptraceDetach(tid, sig);
}
export function setOptions(tid: number, options: number): void {
  addon.ptraceSetOptions(tid, options);
}
export function getEventMsg(tid: number): bigint {
  return addon.ptraceGetEventMsg(tid);
}

/** One waitpid(pid, __WALL | flags) report, or null after timeoutMs. */
export function waitPid(pid: number, timeoutMs: number, flags = 0): WaitStatus | null {
  return addon.waitPid(pid, timeoutMs, flags);
}

/**
 * Waits for the next ptrace stop of `tid` and returns it. Throws ESRCH if the
 * thread exited instead, ETIMEDOUT if nothing was reported in time.
 */
export function waitStop(tid: number, timeoutMs = DEFAULT_TIMEOUT_MS): WaitStatus {
  const st = addon.waitPid(tid, timeoutMs);
  if (st === null) throw sysError(Errno.ETIMEDOUT, 'waitpid', `tid ${tid}: no ptrace stop within ${timeoutMs} ms`);
  if (st.kind !== 'stopped') {
    throw sysError(Errno.ESRCH, 'waitpid', `tid ${tid} ${st.kind}${st.kind === 'exited' ? ` with ${st.exitCode}` : ` by signal ${st.signal}`}`);
  }
  return st;
}

/** True for the stop PTRACE_INTERRUPT (or a seized group stop) produces. */
export function isEventStop(st: WaitStatus): boolean {
  return st.kind === 'stopped' && st.event === PTRACE_EVENT.STOP;
}

/**
 * Seize + interrupt one thread and wait for its PTRACE_EVENT_STOP. If a
 * signal-delivery stop is reported first, that signal is taken off (resumed
 * with 0: the pending interrupt stops the thread again before it reaches
 * user space) and returned, so the caller can deliver it at detach
 * (detach(tid, sig)) or record it.
 */
export function seizeAndStop(tid: number, options = 0, timeoutMs = DEFAULT_TIMEOUT_MS): { pendingSignals: number[] } {
  seize(tid, options);
  interrupt(tid);
  const pendingSignals: number[] = [];
  for (;;) {
    const st = waitStop(tid, timeoutMs);
    if (isEventStop(st)) return { pendingSignals };
    if (st.event === 0 && st.signal !== undefined) pendingSignals.push(st.signal);
    cont(tid, 0);
  }
}

/**
 * Reaps an exited child (or a killed tracee) within timeoutMs, ignoring
 * stop reports. Returns null on timeout. Node/libuv does not reap processes
 * it did not spawn itself; do not use this for children started with
 * child_process (libuv reaps those).
 */
export function waitExit(pid: number, timeoutMs: number): WaitStatus | null {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const st = addon.waitPid(pid, Math.max(0, deadline - Date.now()));
    if (st === null) return null;
    if (st.kind === 'exited' || st.kind === 'signaled') return st;
  }
}

export function getRegs(tid: number): UserRegs {
  return addon.ptraceGetRegs(tid);
}
export function setRegs(tid: number, regs: UserRegs): void {
  addon.ptraceSetRegs(tid, regs);
}
/** PTRACE_GETREGSET; the Buffer has the size the kernel reported. */
export function getRegset(tid: number, nt: number): Buffer {
  return addon.ptraceGetRegset(tid, nt);
}
export function setRegset(tid: number, nt: number, data: Buffer): void {
  addon.ptraceSetRegset(tid, nt, data);
}
/** The full XSAVE area (standard format; 832 bytes on XCR0=7 machines). */
export function getXstate(tid: number): Buffer {
  return getRegset(tid, NT.X86_XSTATE);
}
export function setXstate(tid: number, data: Buffer): void {
  setRegset(tid, NT.X86_XSTATE, data);
}
/** The 512-byte FXSAVE area. */
export function getFpregs(tid: number): Buffer {
  return getRegset(tid, NT.PRFPREG);
}
export function setFpregs(tid: number, data: Buffer): void {
  setRegset(tid, NT.PRFPREG, data);
}
/** Blocked mask; bit n-1 = signal n. */
export function getSigmask(tid: number): bigint {
  return addon.ptraceGetSigmask(tid);
}
export function setSigmask(tid: number, mask: bigint): void {
  addon.ptraceSetSigmask(tid, mask);
}
export function getRseqConfiguration(tid: number): RseqConfiguration {
  return addon.ptraceGetRseqConfiguration(tid);
}
/** Raw 128-byte siginfo_t of pending signals, queue order (shared = process queue). */
export function peekSiginfo(tid: number, shared: boolean): Buffer[] {
  return addon.ptracePeekSiginfo(tid, shared);
}
export function getRobustList(tid: number): { head: bigint; len: number } {
  return addon.getRobustList(tid);
}

export interface InjectOptions {
  /** Address of a `syscall` (0f 05) in the tracee; see findVdsoGadget(). */
  gadget: bigint;
  /** The gadget is followed by int3 (cc): PTRACE_CONT to the trap instead of single-stepping. */
  trap?: boolean;
  timeoutMs?: number;
}

/**
 * Runs one syscall inside ptrace-stopped thread `tid` and returns raw rax
 * (signed: -4095..-1 is -errno). All registers and the blocked mask are put
 * back afterwards; orig_rax is -1 during the call so the kernel does not
 * apply syscall-restart fix-ups to our rip (a thread stopped inside
 * nanosleep/futex resumes its own syscall correctly later).
 */
export function injectSyscall(tid: number, nr: number, args: readonly (bigint | number)[], opts: InjectOptions): bigint {
  if (!phasesOn) return addon.injectSyscall(tid, nr, [...args], opts.gadget, opts.trap === true, opts.timeoutMs ?? DEFAULT_TIMEOUT_MS);
  const t = performance.now();
  const r = addon.injectSyscall(tid, nr, [...args], opts.gadget, opts.trap === true, opts.timeoutMs ?? DEFAULT_TIMEOUT_MS);
  count('injected syscalls', performance.now() - t);
  count(`injected syscall ${nr}`, performance.now() - t);
  return r;
}

/**
 * injectSyscall for a fork/clone/clone3 in a tracee traced with
 * PTRACE_O_TRACEFORK/TRACECLONE. `child` is the new task's pid as this
 * process sees it (0 if the call created none, e.g. it failed); the new task
 * is auto-attached and left in its initial stop: wait for it (waitStop).
 * It starts with the injection's registers and blocked mask (all but SIGTRAP).
 */
export function injectSyscallFork(tid: number, nr: number, args: readonly (bigint | number)[], opts: InjectOptions): { result: bigint; child: number } {
  return addon.injectSyscallFork(tid, nr, [...args], opts.gadget, opts.trap === true, opts.timeoutMs ?? DEFAULT_TIMEOUT_MS);
}

/** injectSyscall that throws a system error (code/errno/syscall) on -errno. */
export function injectSyscallChecked(tid: number, nr: number, args: readonly (bigint | number)[], opts: InjectOptions, name = `syscall ${nr}`): bigint {
  const r = injectSyscall(tid, nr, args, opts);
  if (r < 0n && r >= -4095n) throw sysError(Number(-r), `${name} (injected)`, `tid ${tid}`);
  return r;
}

/** One line of /proc/PID/maps. */
export interface MapsLine {
  start: bigint;
  end: bigint;
  perms: string;
  offset: bigint;
  dev: string;
  inode: number;
  path: string;
}

export function parseMaps(text: string): MapsLine[] {
  const out: MapsLine[] = [];
  for (const line of text.split('\n')) {
    if (!line) continue;
    const m = /^([0-9a-f]+)-([0-9a-f]+) (\S{4}) ([0-9a-f]+) (\S+) (\d+)\s*(.*)$/.exec(line);
    if (!m) continue;
    out.push({
      start: BigInt(`0x${m[1]}`), end: BigInt(`0x${m[2]}`), perms: m[3]!, offset: BigInt(`0x${m[4]}`),
      dev: m[5]!, inode: Number(m[6]), path: m[7] ?? '',
    });
  }
  return out;
}

export function readMaps(pid: number): MapsLine[] {
  return parseMaps(readFileSync(`/proc/${pid}/maps`, 'utf8'));
}

/**
 * Address of a `syscall` instruction (0f 05) inside the target's [vdso],
 * found by reading its memory; usable with injectSyscall (single-step mode).
 */
export function findVdsoGadget(pid: number, maps: MapsLine[] = readMaps(pid)): bigint {
  const vdso = maps.find((m) => m.path === '[vdso]');
  if (!vdso) throw sysError(Errno.ENOENT, 'findVdsoGadget', `pid ${pid} has no [vdso]`);
  const len = Number(vdso.end - vdso.start);
  const buf = Buffer.alloc(len);
  const got = addon.processVmReadv(pid, buf, new BigUint64Array([vdso.start, BigInt(len)]));
  for (let i = 0; i + 1 < got; i++) if (buf[i] === 0x0f && buf[i + 1] === 0x05) return vdso.start + BigInt(i);
  throw sysError(Errno.ENOENT, 'findVdsoGadget', `pid ${pid}: no syscall instruction in [vdso]`);
}
