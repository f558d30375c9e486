// Per-thread and per-process state of a frozen task, read with ptrace and
// /proc or, where /proc does not tell, by injecting single syscalls into the
// stopped task (rt_sigaction, sigaltstack, prctl, brk, getitimer,
// timer_gettime/timer_getoverrun for the POSIX timers of /proc/PID/timers). Produces
// CRIU image entries (core, mm without file ids).
import { sysError } from '../errors.js';
import { readFileSync } from 'node:fs';
import {
  March, UserX86RegsMode, type CoreEntry, type CredsEntry, type ItimerEntry, type PosixTimerEntry, type SaEntry, type ThreadCoreEntry,
  type ThreadInfoX86, type UserDescT, type UserX86FpregsEntry, type UserX86XsaveEntry,
} from '../images/index.js';
import {
  DEFAULT_TIMEOUT_MS, PR, SYS, getRegs, getRobustList, getRseqConfiguration, getSigmask, getXstate, injectSyscall, peekSiginfo, readMemory, type InjectOptions, type UserRegs,
} from '../inject/index.js';
import { BATCH_ENTRY, isSyscallError, runBatch, writeBatchBlob, type BatchArea, type BatchSyscall } from '../inject/batch.js';
import { parseLimits, readStat, readStatus, readTimers } from './proc.js';

const PROT_READ_WRITE = 3;
const PROT_EXEC = 4;
/** MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE: never merged with the process's own (accounted) anonymous VMAs. */
const MAP_SCRATCH = 0x02 | 0x20 | 0x4000;
// Scratch layout: the calls' outputs (0x0000: fixed places per call;
// 0x1000: POSIX timers, 32 bytes each), the batch table (0x2000, 127 calls)
// and the batch routine (0x4000).
const SCRATCH_SIZE = 0x5000;
const TIMERS_OUT = 0x1000;
const TIMERS_PER_RUN = 0x1000 / 32;
const BATCH_TABLE = 0x2000n;
const BATCH_BLOB = 0x4000n;

/**
 * Mapping in the frozen process (injected mmap) for the buffers of the
 * injected calls below, outside every VMA the dump copies: the process's
 * memory is left untouched, so it can be copied while they run. Executable
 * where the process may have such memory, with the batch routine in it
 * (plugin/inject/batch.ts: the calls of a thread run with one ptrace round
 * trip); read-write only otherwise (e.g. MDWE) or with LR_INJECT_BATCH=0,
 * and the calls are injected one by one. Unmapped by unmapScratch (also when
 * collecting fails).
 */
export interface DumpScratch {
  addr: bigint;
  batch?: BatchArea;
}

export function mapScratch(pid: number, opts: InjectOptions): DumpScratch {
  if (process.env.LR_INJECT_BATCH !== '0') {
    const r = injectSyscall(pid, SYS.mmap, [0, SCRATCH_SIZE, PROT_READ_WRITE | PROT_EXEC, MAP_SCRATCH, -1, 0], opts);
    if (!isSyscallError(r)) {
      const scratch: DumpScratch = { addr: r, batch: { blob: r + BATCH_BLOB, table: r + BATCH_TABLE, max: Number(BATCH_BLOB - BATCH_TABLE) / BATCH_ENTRY - 1 } };
      try {
        writeBatchBlob(pid, scratch.batch!.blob);
      } catch (e) {
        unmapScratch(pid, scratch, opts);
        throw e;
      }
      return scratch;
    }
  }
  return { addr: check(injectSyscall(pid, SYS.mmap, [0, SCRATCH_SIZE, PROT_READ_WRITE, MAP_SCRATCH, -1, 0], opts), 'mmap (scratch page)', pid) };
}

export function unmapScratch(pid: number, scratch: DumpScratch, opts: InjectOptions): void {
  check(injectSyscall(pid, SYS.munmap, [scratch.addr, SCRATCH_SIZE], opts), 'munmap (scratch page)', pid);
}

function check(r: bigint, what: string, tid: number): bigint {
  if (isSyscallError(r)) throw sysError(Number(-r), `${what} (injected)`, `tid ${tid}`);
  return r;
}

/** Runs `calls` in thread `tid` of `pid` (one batch where the scratch has the routine); every call must succeed. */
function inject(pid: number, tid: number, calls: readonly BatchSyscall[], opts: InjectOptions, scratch: DumpScratch): bigint[] {
  if (!scratch.batch) return calls.map((c) => check(injectSyscall(tid, c.nr, c.args, opts), c.what, tid));
  const { results, failed } = runBatch(pid, tid, calls, scratch.batch, opts.timeoutMs ?? DEFAULT_TIMEOUT_MS);
  if (failed !== undefined) check(results[failed]!, calls[failed]!.what, tid);
  return results;
}

function u32s(buf: Buffer, off: number, n: number): number[] {
  const out: number[] = [];
  for (let i = 0; i < n; i++) out.push(buf.readUInt32LE(off + 4 * i));
  return out;
}
function u64s(buf: Buffer, off: number, n: number): bigint[] {
  const out: bigint[] = [];
  for (let i = 0; i < n; i++) out.push(buf.readBigUInt64LE(off + 8 * i));
  return out;
}

export function gpregs(r: UserRegs): ThreadInfoX86['gpregs'] {
  return {
    r15: r.r15, r14: r.r14, r13: r.r13, r12: r.r12, bp: r.rbp, bx: r.rbx, r11: r.r11, r10: r.r10, r9: r.r9, r8: r.r8,
    ax: r.rax, cx: r.rcx, dx: r.rdx, si: r.rsi, di: r.rdi, orig_ax: r.orig_rax, ip: r.rip, cs: r.cs, flags: r.eflags,
    sp: r.rsp, ss: r.ss, fs_base: r.fs_base, gs_base: r.gs_base, ds: r.ds, es: r.es, fs: r.fs, gs: r.gs,
    mode: UserX86RegsMode.NATIVE,
  };
}

// Offsets of XSAVE components in the standard (non-compacted) format.
const XSAVE_COMPONENTS: { bit: number; off: number; field: keyof UserX86XsaveEntry; words: number; wide: boolean }[] = [
  { bit: 2, off: 576, field: 'ymmh_space', words: 64, wide: false },
  { bit: 3, off: 960, field: 'bndreg_state', words: 8, wide: true },
  { bit: 4, off: 1024, field: 'bndcsr_state', words: 8, wide: true },
  { bit: 5, off: 1088, field: 'opmask_reg', words: 8, wide: true },
  { bit: 6, off: 1152, field: 'zmm_upper', words: 64, wide: true },
  { bit: 7, off: 1664, field: 'hi16_zmm', words: 128, wide: true },
  { bit: 9, off: 2688, field: 'pkru', words: 2, wide: false },
];

/** The FXSAVE + XSAVE area from PTRACE_GETREGSET(NT_X86_XSTATE) → user_x86_fpregs_entry. */
export function fpregsFromXstate(xs: Buffer): UserX86FpregsEntry {
  const fp: UserX86FpregsEntry = {
    cwd: xs.readUInt16LE(0), swd: xs.readUInt16LE(2), twd: xs.readUInt16LE(4), fop: xs.readUInt16LE(6),
    rip: xs.readBigUInt64LE(8), rdp: xs.readBigUInt64LE(16), mxcsr: xs.readUInt32LE(24), mxcsr_mask: xs.readUInt32LE(28),
    st_space: u32s(xs, 32, 32), xmm_space: u32s(xs, 160, 64), padding: [],
  };
  if (xs.length >= 576) {
    const xcr0 = xs.readBigUInt64LE(464); // the kernel stores XCR0 in the FXSAVE sw-reserved bytes
    const xsave: UserX86XsaveEntry = {
      xstate_bv: xs.readBigUInt64LE(512), ymmh_space: [], bndreg_state: [], bndcsr_state: [], opmask_reg: [],
      zmm_upper: [], hi16_zmm: [], pkru: [],
    };
    for (const c of XSAVE_COMPONENTS) {
      const len = c.words * (c.wide ? 8 : 4);
      if (!(xcr0 & (1n << BigInt(c.bit))) || xs.length < c.off + len) continue;
      if (c.wide) (xsave[c.field] as bigint[]) = u64s(xs, c.off, c.words);
      else (xsave[c.field] as number[]) = u32s(xs, c.off, c.words);
    }
    fp.xsave = xsave;
  }
  return fp;
}

/** GDT TLS slots 12-14, unused by 64-bit programs: written as "not present". */
function emptyTls(): UserDescT[] {
  return [12, 13, 14].map((n) => ({
    entry_number: n, base_addr: 0, limit: 0, seg_32bit: false, contents_h: false, contents_l: false,
    read_exec_only: true, limit_in_pages: false, seg_not_present: true, usable: false,
  }));
}

function capWords(hex: string | undefined): number[] {
  const v = BigInt(`0x${hex ?? '0'}`);
  return [Number(v & 0xffffffffn), Number(v >> 32n)];
}

function ids4(s: string | undefined, what: string): number[] {
  const v = (s ?? '').split(/\s+/).map(Number);
  if (v.length < 4) throw new Error(`malformed ${what} line in /proc status`);
  return v;
}

export function credsFromStatus(st: Map<string, string>, secbits: number): CredsEntry {
  const [uid, euid, suid, fsuid] = ids4(st.get('Uid'), 'Uid');
  const [gid, egid, sgid, fsgid] = ids4(st.get('Gid'), 'Gid');
  const groups = (st.get('Groups') ?? '').split(/\s+/).filter(Boolean).map(Number);
  return {
    uid: uid!, gid: gid!, euid: euid!, egid: egid!, suid: suid!, sgid: sgid!, fsuid: fsuid!, fsgid: fsgid!,
    cap_inh: capWords(st.get('CapInh')), cap_prm: capWords(st.get('CapPrm')), cap_eff: capWords(st.get('CapEff')),
    cap_bnd: capWords(st.get('CapBnd')), secbits, groups, no_new_privs: Number(st.get('NoNewPrivs') ?? '0'),
    cap_amb: capWords(st.get('CapAmb')),
  };
}

export interface ThreadState {
  tid: number;
  regs: UserRegs;
  core: CoreEntry;
}

/** Everything per thread (`scratch`: mapScratch's page). */
export function collectThread(pid: number, tid: number, opts: InjectOptions, scratch: DumpScratch): ThreadState {
  const regs = getRegs(tid);
  const xs = getXstate(tid);
  const blk = getSigmask(tid);
  const rseq = getRseqConfiguration(tid);
  const robust = getRobustList(tid);
  const status = readStatus(pid, tid);
  const stat = readStat(pid, tid);

  const a = scratch.addr;
  // The policy as CRIU reads it (sched_getscheduler): /proc/PID/stat leaves
  // out SCHED_RESET_ON_FORK, which restore must set again.
  const [, , , secbitsR, policyR] = inject(pid, tid, [
    { what: 'prctl(PR_GET_TID_ADDRESS)', nr: SYS.prctl, args: [PR.GET_TID_ADDRESS, a, 0, 0, 0] },
    { what: 'sigaltstack', nr: SYS.sigaltstack, args: [0, a + 16n] },
    { what: 'prctl(PR_GET_PDEATHSIG)', nr: SYS.prctl, args: [PR.GET_PDEATHSIG, a + 48n, 0, 0, 0] },
    { what: 'prctl(PR_GET_SECUREBITS)', nr: SYS.prctl, args: [PR.GET_SECUREBITS, 0, 0, 0, 0] },
    { what: 'sched_getscheduler', nr: SYS.sched_getscheduler, args: [0] },
  ], opts, scratch);
  const b = readMemory(pid, a, 64);
  // stack_t: ss_sp (8), ss_flags (int + pad), ss_size (8)
  const tidAddr = b.readBigUInt64LE(0);
  const sas = { ss_sp: b.readBigUInt64LE(16), ss_flags: b.readInt32LE(24), ss_size: b.readBigUInt64LE(32) };
  const pdeath = b.readInt32LE(48);
  const secbits = Number(secbitsR!);
  const policy = Number(policyR!);

  const pending = peekSiginfo(tid, false).map((siginfo) => ({ siginfo }));
  const tc: ThreadCoreEntry = {
    futex_rla: robust.head, futex_rla_len: robust.len,
    sched_nice: stat.nice, sched_policy: policy, sched_prio: stat.rtPriority,
    blk_sigset: blk,
    sas: { ss_sp: sas.ss_sp, ss_size: sas.ss_size, ss_flags: sas.ss_flags },
    signals_p: { signals: pending },
    creds: credsFromStatus(status, secbits),
    seccomp_mode: 0, // set by plugin/dump/seccomp.ts
    comm: readFileSync(`/proc/${pid}/task/${tid}/comm`, 'utf8').replace(/\n$/, ''),
  };
  if (pdeath !== 0) tc.pdeath_sig = pdeath;
  if (rseq.rseqAbiPointer !== 0n) {
    tc.rseq_entry = { rseq_abi_pointer: rseq.rseqAbiPointer, rseq_abi_size: rseq.rseqAbiSize, signature: rseq.signature };
  }
  const core: CoreEntry = {
    mtype: March.X86_64,
    thread_info: { clear_tid_addr: tidAddr, gpregs: gpregs(regs), fpregs: fpregsFromXstate(xs), tls: emptyTls() },
    thread_core: tc,
  };
  return { tid, regs, core };
}

const SIGNALS = Array.from({ length: 64 }, (_, i) => i + 1).filter((s) => s !== 9 && s !== 19);

export interface ProcessState {
  sigactions: SaEntry[];
  brk: bigint;
  itimers: { real: ItimerEntry; virt: ItimerEntry; prof: ItimerEntry };
  posixTimers: PosixTimerEntry[];
  dumpable: number;
  thpDisabled: boolean;
  childSubreaper: boolean;
}

/** Per-process state that needs injection, done in the leader (`scratch`: mapScratch's page). */
export function collectProcess(pid: number, opts: InjectOptions, scratch: DumpScratch): ProcessState {
  const a = scratch.addr;
  // Each call's output at its own place in the scratch, read back at once:
  // 62 kernel sigactions (32 bytes each), 3 itimervals, the subreaper flag.
  const ITIMERS = 2048;
  const SUBREAPER = 2176;
  const calls: BatchSyscall[] = SIGNALS.map((sig, i) => ({ what: `rt_sigaction(${sig})`, nr: SYS.rt_sigaction, args: [sig, 0, a + BigInt(32 * i), 8] }));
  calls.push({ what: 'brk', nr: SYS.brk, args: [0] });
  for (const which of [0, 1, 2]) calls.push({ what: 'getitimer', nr: SYS.getitimer, args: [which, a + BigInt(ITIMERS + 32 * which)] });
  calls.push({ what: 'prctl(PR_GET_DUMPABLE)', nr: SYS.prctl, args: [PR.GET_DUMPABLE, 0, 0, 0, 0] });
  calls.push({ what: 'prctl(PR_GET_THP_DISABLE)', nr: SYS.prctl, args: [PR.GET_THP_DISABLE, 0, 0, 0, 0] });
  calls.push({ what: 'prctl(PR_GET_CHILD_SUBREAPER)', nr: SYS.prctl, args: [PR.GET_CHILD_SUBREAPER, a + BigInt(SUBREAPER), 0, 0, 0] });
  const got = inject(pid, pid, calls, opts, scratch);
  const brk = got[SIGNALS.length]!;
  const dumpable = Number(got[SIGNALS.length + 4]!);
  const thp = Number(got[SIGNALS.length + 5]!);
  const out = readMemory(pid, a, SUBREAPER + 4);
  const sigactions: SaEntry[] = SIGNALS.map((_, i) => ({
    sigaction: out.readBigUInt64LE(32 * i), flags: out.readBigUInt64LE(32 * i + 8), restorer: out.readBigUInt64LE(32 * i + 16),
    mask: out.readBigUInt64LE(32 * i + 24), compat_sigaction: false,
  }));
  const timers: ItimerEntry[] = [0, 1, 2].map((which) => {
    const [isec, iusec, vsec, vusec] = u64s(out, ITIMERS + 32 * which, 4);
    return { isec: isec!, iusec: iusec!, vsec: vsec!, vusec: vusec! };
  });
  const subreaper = out.readInt32LE(SUBREAPER) !== 0;
  // POSIX timers: identity from /proc, remaining time and overrun from the
  // timer itself. The process is frozen, so the list cannot change meanwhile.
  const posixTimers: PosixTimerEntry[] = [];
  const all = readTimers(pid);
  for (let at = 0; at < all.length; at += TIMERS_PER_RUN) {
    const part = all.slice(at, at + TIMERS_PER_RUN);
    const res = inject(pid, pid, part.flatMap((pt, i) => [
      { what: `timer_gettime(${pt.id})`, nr: SYS.timer_gettime, args: [pt.id, a + BigInt(TIMERS_OUT + 32 * i)] },
      { what: `timer_getoverrun(${pt.id})`, nr: SYS.timer_getoverrun, args: [pt.id] },
    ]), opts, scratch);
    const vals = readMemory(pid, a + BigInt(TIMERS_OUT), 32 * part.length);
    part.forEach((pt, i) => {
      const [isec, insec, vsec, vnsec] = u64s(vals, 32 * i, 4);
      const e: PosixTimerEntry = {
        it_id: pt.id, clock_id: pt.clockId >>> 0, si_signo: pt.signo, it_sigev_notify: pt.notify, sival_ptr: pt.sival,
        overrun: Number(res[2 * i + 1]!), isec: isec!, insec: insec!, vsec: vsec!, vnsec: vnsec!,
      };
      if (pt.notify & SIGEV_THREAD_ID) e.notify_thread_id = pt.notifyPid;
      posixTimers.push(e);
    });
  }
  return {
    sigactions, brk, itimers: { real: timers[0]!, virt: timers[1]!, prof: timers[2]! }, posixTimers,
    dumpable, thpDisabled: thp !== 0, childSubreaper: subreaper,
  };
}

const SIGEV_THREAD_ID = 4;

export function readRlimits(pid: number): { cur: bigint; max: bigint }[] {
  return parseLimits(readFileSync(`/proc/${pid}/limits`, 'utf8')).slice(0, 16);
}
