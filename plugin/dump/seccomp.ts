// Seccomp state of the tree's threads (seccomp.img + thread_core's
// seccomp_mode/seccomp_filter), laid out as CRIU 4.2 does:
//  - each thread's filters are read with PTRACE_SECCOMP_GET_FILTER (index
//    0 is the oldest) and the flags they were installed with with
//    PTRACE_SECCOMP_GET_METADATA;
//  - seccomp.img lists each thread's chain newest first, every older filter
//    pointing with `prev` at the entry before it, and the thread's
//    seccomp_filter names its oldest entry (restore installs from there
//    following `prev`, oldest first);
//  - when every thread of a process has the same chain, only the leader
//    keeps it, with SECCOMP_FILTER_FLAG_TSYNC on each filter (restored once
//    and synchronised to all threads), the others are written as disabled.
// Dumping a thread in seccomp mode needs PTRACE_O_SUSPEND_SECCOMP while it
// is seized (the injected system calls must not meet its filters): see
// freeze.ts.
import { addon } from '../native/addon.js';
import type { ImageDir } from '../images/index.js';
import type { SeccompEntry, SeccompFilter, ThreadCoreEntry } from '../images/types.js';
import { readStatus } from './proc.js';

export const SECCOMP_MODE = { disabled: 0, strict: 1, filter: 2 } as const;
export const SECCOMP_FILTER_FLAG_TSYNC = 1;

/** The seccomp mode of a thread (/proc status "Seccomp"); 0 once it is gone. */
export function seccompModeOf(pid: number, tid: number): number {
  try {
    return Number(readStatus(pid, tid).get('Seccomp') ?? '0');
  } catch {
    return 0;
  }
}

interface ThreadChain { tid: number; core: ThreadCoreEntry; mode: number; chain: SeccompFilter[] /* oldest first */ }

/** Reads a stopped, seized thread's filters, oldest first. */
function readChain(tid: number): SeccompFilter[] {
  const out: SeccompFilter[] = [];
  let metadata = true;
  for (let i = 0; ; i++) {
    const f = addon.ptraceSeccompGetFilter(tid, i);
    if (f === null) break;
    let flags = 0;
    if (metadata) {
      const fl = addon.ptraceSeccompGetFlags(tid, i);
      if (fl < 0) metadata = false;
      else flags = fl;
    }
    out.push({ filter: f, flags });
  }
  return out;
}

function sameChain(a: SeccompFilter[], b: SeccompFilter[]): boolean {
  return a.length === b.length && a.every((f, i) => f.filter.equals(b[i]!.filter));
}

/** Collects the seccomp state of the tree, process by process, and writes seccomp.img. */
export class SeccompCollector {
  private readonly filters: SeccompFilter[] = [];
  private nFiltered = 0;

  /**
   * One process's threads (leader first; the thread_cores written for
   * them): sets seccomp_mode and seccomp_filter on each and adds its
   * filters to seccomp.img's list.
   */
  addProcess(pid: number, threads: { tid: number; core: ThreadCoreEntry }[]): void {
    const chains: ThreadChain[] = threads.map((t) => {
      const mode = seccompModeOf(pid, t.tid);
      return { tid: t.tid, core: t.core, mode, chain: mode === SECCOMP_MODE.filter ? readChain(t.tid) : [] };
    });
    const leader = chains[0]!;
    if (leader.mode === SECCOMP_MODE.filter && chains.length > 1 && chains.every((c) => c.mode === leader.mode && sameChain(c.chain, leader.chain))) {
      for (const f of leader.chain) f.flags = (f.flags ?? 0) | SECCOMP_FILTER_FLAG_TSYNC;
      for (const c of chains.slice(1)) {
        c.mode = SECCOMP_MODE.disabled;
        c.chain = [];
      }
    }
    for (const c of chains) {
      c.core.seccomp_mode = c.mode;
      if (c.mode !== SECCOMP_MODE.disabled) this.nFiltered++;
      if (c.mode !== SECCOMP_MODE.filter || c.chain.length === 0) continue;
      [...c.chain].reverse().forEach((f, i) => {
        this.filters.push(i === 0 ? { filter: f.filter, flags: f.flags ?? 0 } : { filter: f.filter, prev: this.filters.length - 1, flags: f.flags ?? 0 });
      });
      c.core.seccomp_filter = this.filters.length - 1;
    }
  }

  /** Threads in a seccomp mode (after the TSYNC merge). */
  get filtered(): number {
    return this.nFiltered;
  }

  entry(): SeccompEntry {
    return { seccomp_filters: this.filters };
  }

  /** seccomp.img, written for every dump as CRIU does (empty without filters). */
  async write(dir: ImageDir): Promise<void> {
    await dir.writeSeccomp(this.entry());
  }
}
