// Seccomp filters back into the restored threads (seccomp.img, CRIU 4.2's
// layout: see plugin/dump/seccomp.ts). Each thread's chain is found from
// its thread_core.seccomp_filter (its oldest filter) following `prev`, and
// installed oldest first with seccomp(SECCOMP_SET_MODE_FILTER, flags) as
// the last thing injected into the process (after creds, no_new_privs and
// timers), so nothing the restorer still does meets the filters; the
// threads are traced with PTRACE_O_SUSPEND_SECCOMP meanwhile, as CRIU's
// final stage is. Non-leader threads first, the leader last: a leader chain
// with SECCOMP_FILTER_FLAG_TSYNC (all threads had the same filters) is
// synchronised to the others when it is installed.
import { ImageError, UserError } from '../errors.js';
import { PTRACE_O } from '../inject/constants.js';
import type { CoreEntry, SeccompEntry, SeccompFilter } from '../images/types.js';
import { addon } from '../native/addon.js';
import { InjectedSyscallError, NR, PROT, type RemoteTask } from './task.js';

const MODE_STRICT = 1;
const MODE_FILTER = 2;
const SECCOMP_SET_MODE_STRICT = 0;
const SECCOMP_SET_MODE_FILTER = 1;
const BPF_MAXINSNS = 4096;
/** The restore tracer's options (native/inject/restore_ptrace.cc). */
const RESTORE_PTRACE_OPTIONS = PTRACE_O.EXITKILL | PTRACE_O.TRACECLONE | PTRACE_O.TRACEFORK | PTRACE_O.TRACESYSGOOD;

/** A thread's seccomp state to restore. */
export interface ThreadSeccomp {
  mode: number;
  /** Filters to install, oldest first, with their flags. */
  filters: { insns: Buffer; flags: number }[];
}

/** The seccomp mode a core records (thread_core; the leader's old task_core fields of old images). */
export function seccompModeOfCore(core: CoreEntry, leader: boolean): { mode: number; filter: number | undefined } {
  const tc = core.thread_core;
  if (tc?.seccomp_mode !== undefined && tc.seccomp_mode !== 0) return { mode: tc.seccomp_mode, filter: tc.seccomp_filter };
  if (leader && core.tc?.old_seccomp_mode) return { mode: core.tc.old_seccomp_mode, filter: core.tc.old_seccomp_filter };
  return { mode: 0, filter: undefined };
}

/**
 * Each thread's chain from seccomp.img (read by the caller when a thread
 * has a mode): an index out of range, a loop, a length that is not whole
 * BPF instructions or a mode we do not know is an image error.
 */
export function threadSeccomp(imagesDir: string, core: CoreEntry, tid: number, leader: boolean, img: SeccompEntry | undefined): ThreadSeccomp | undefined {
  const { mode, filter } = seccompModeOfCore(core, leader);
  if (mode === 0) return undefined;
  const where = `${imagesDir}/core-${tid}.img`;
  if (mode === MODE_STRICT) return { mode, filters: [] };
  if (mode !== MODE_FILTER) throw new ImageError(where, undefined, `tid ${tid}: unknown seccomp mode ${mode}`);
  if (!img) throw new ImageError(`${imagesDir}/seccomp.img`, undefined, `tid ${tid} is in seccomp filter mode but there is no seccomp.img`);
  const all = img.seccomp_filters;
  const filters: ThreadSeccomp['filters'] = [];
  if (filter === undefined) throw new ImageError(where, undefined, `tid ${tid}: seccomp filter mode without a seccomp_filter index`);
  let i: number = filter;
  for (;;) {
    if (i >= all.length) throw new ImageError(`${imagesDir}/seccomp.img`, undefined, `tid ${tid}: filter index ${i} is past the ${all.length} filters`);
    if (filters.length >= all.length) throw new ImageError(`${imagesDir}/seccomp.img`, undefined, `tid ${tid}: the filter chain loops`);
    const f: SeccompFilter = all[i]!;
    const len = f.filter.length;
    if (len === 0 || len % 8 !== 0 || len / 8 > BPF_MAXINSNS) throw new ImageError(`${imagesDir}/seccomp.img`, undefined, `tid ${tid}: filter ${i} is ${len} bytes, not 1 to ${BPF_MAXINSNS} BPF instructions`);
    filters.push({ insns: Buffer.from(f.filter), flags: f.flags ?? 0 });
    if (f.prev === undefined || f.prev === null) break;
    i = f.prev;
  }
  return { mode, filters };
}

/**
 * Installs the threads' filters (leader first in `threads`, each with its
 * plan). The process's memory gets one temporary mapping for the BPF
 * programs, unmapped again.
 */
export function installSeccomp(pid: number, threads: { task: RemoteTask; sc: ThreadSeccomp | undefined }[], log: (l: string) => void): void {
  const todo = threads.filter((t) => t.sc !== undefined);
  if (todo.length === 0) return;
  // Whatever the restorer injects after this must not meet the filters.
  for (const t of threads) {
    try {
      addon.ptraceSetOptions(t.task.tid, RESTORE_PTRACE_OPTIONS | PTRACE_O.SUSPEND_SECCOMP);
    } catch (e) {
      throw new UserError(`pid ${pid} tid ${t.task.tid}: cannot suspend seccomp while restoring its filters (PTRACE_O_SUSPEND_SECCOMP): ${(e as NodeJS.ErrnoException).code ?? String(e)}`, { cause: e });
    }
  }
  const leader = threads[0]!.task;
  const size = todo.reduce((m, t) => Math.max(m, ...t.sc!.filters.map((f) => f.insns.length)), 0) + 16;
  const mapLen = BigInt(Math.ceil(size / 4096) * 4096);
  const area = leader.call('mmap(seccomp filters)', NR.mmap, 0, mapLen, PROT.READ | PROT.WRITE, 0x22 /* MAP_PRIVATE|MAP_ANONYMOUS */, -1, 0);
  try {
    // Non-leaders first: a leader filter with TSYNC then reaches them too.
    for (const t of [...todo.slice(todo[0]!.task === leader ? 1 : 0), ...(todo[0]!.task === leader ? [todo[0]!] : [])]) {
      const sc = t.sc!;
      if (sc.mode === MODE_STRICT) {
        t.task.call('seccomp(SECCOMP_SET_MODE_STRICT)', NR.seccomp, SECCOMP_SET_MODE_STRICT, 0, 0);
        continue;
      }
      for (const [n, f] of sc.filters.entries()) {
        const prog = Buffer.alloc(16);
        prog.writeUInt16LE(f.insns.length / 8, 0);
        prog.writeBigUInt64LE(area + 16n, 8);
        leader.write(area, Buffer.concat([prog, f.insns]));
        const r = t.task.raw(NR.seccomp, SECCOMP_SET_MODE_FILTER, f.flags, area);
        if (r < 0n) throw new InjectedSyscallError(pid, `tid ${t.task.tid}: seccomp filter ${n + 1} of ${sc.filters.length} (flags 0x${f.flags.toString(16)}): seccomp(SECCOMP_SET_MODE_FILTER)`, Number(-r));
        // TSYNC reports a thread it could not synchronise as a positive tid.
        if (r > 0n) throw new UserError(`pid ${pid}: seccomp filter with TSYNC could not be synchronised to thread ${r}`);
      }
      log(`pid ${pid} tid ${t.task.tid}: ${sc.filters.length} seccomp filters restored`);
    }
  } finally {
    leader.raw(NR.munmap, area, mapLen);
  }
}
