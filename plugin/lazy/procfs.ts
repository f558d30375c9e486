// Small /proc readers the daemon needs to act on processes it does not own:
// liveness (is the mm still there?) and finding a forked child's pid.
import { readFileSync, readdirSync } from 'node:fs';

export interface ProcIdentity {
  pid: number;
  /** starttime from /proc/PID/stat (clock ticks since boot): guards against pid reuse. */
  startTime: string;
}

/** Reads a /proc file as text (replaceable in tests to provoke read errors). */
export type ProcReader = (path: string) => string;
const readProc: ProcReader = (path) => readFileSync(path, 'latin1');

/** True for the errors that mean "this process does not exist (any more)". */
function isGoneError(e: unknown): boolean {
  const code = (e as { code?: unknown }).code;
  return code === 'ENOENT' || code === 'ESRCH';
}

/**
 * Parses state and starttime out of /proc/PID/stat; undefined if the process
 * is gone (ENOENT/ESRCH). Any other read error (EMFILE, ENFILE, EACCES, ...)
 * says nothing about the process and is thrown.
 */
export function readStat(pid: number, read: ProcReader = readProc): { state: string; ppid: number; startTime: string } | undefined {
  let s: string;
  try {
    s = read(`/proc/${pid}/stat`);
  } catch (e) {
    if (isGoneError(e)) return undefined;
    throw e;
  }
  // comm may contain spaces and parentheses: fields start after the last ')'.
  const rest = s.slice(s.lastIndexOf(')') + 2).split(' ');
  return { state: rest[0] ?? '?', ppid: Number(rest[1]), startTime: rest[19] ?? '' };
}

/** The process's identity, or undefined when it is gone or /proc cannot be read now. */
export function identify(pid: number, read: ProcReader = readProc): ProcIdentity | undefined {
  try {
    const st = readStat(pid, read);
    return st ? { pid, startTime: st.startTime } : undefined;
  } catch {
    return undefined;
  }
}

/**
 * True while the process still has its memory (not gone, not a zombie, same
 * incarnation). A /proc read that fails for another reason than ENOENT/ESRCH
 * (e.g. EMFILE) counts as alive: a living process must never lose its uffd
 * because this daemon ran out of file descriptors.
 */
export function isAlive(id: ProcIdentity, read: ProcReader = readProc): boolean {
  let st;
  try {
    st = readStat(id.pid, read);
  } catch {
    return true;
  }
  if (!st || st.startTime !== id.startTime) return false;
  return st.state !== 'Z' && st.state !== 'X' && st.state !== 'x';
}

/** Children (pids) of every thread of `pid`, ascending. */
export function childrenOf(pid: number): number[] {
  const out = new Set<number>();
  let tids: string[];
  try {
    tids = readdirSync(`/proc/${pid}/task`);
  } catch {
    return [];
  }
  for (const tid of tids) {
    try {
      for (const c of readFileSync(`/proc/${pid}/task/${tid}/children`, 'latin1').trim().split(/\s+/)) {
        if (c) out.add(Number(c));
      }
    } catch {
      /* thread gone */
    }
  }
  return [...out].sort((a, b) => a - b);
}

/** Thread group id of a thread id (for a tid reported by the kernel in a fault). */
export function tgidOf(tid: number): number | undefined {
  try {
    const m = /^Tgid:\s+(\d+)/m.exec(readFileSync(`/proc/${tid}/status`, 'latin1'));
    return m ? Number(m[1]) : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Host pid of the process that calls itself `vpid` (a pid sent on the
 * lazy-pages socket is the virtual pid). A tree restored into its own pid
 * namespace shares that number with the frozen source of a migration on the
 * same host, so a process inside a nested namespace (NSpid with several
 * entries, innermost = vpid) is preferred; undefined when ambiguous.
 * (Added for post-copy migration: killing `vpid` itself would kill the source.)
 */
export function hostPidOfVirtual(vpid: number): number | undefined {
  const nested: number[] = [];
  let flat: number | undefined;
  let names: string[];
  try {
    names = readdirSync('/proc');
  } catch {
    return undefined;
  }
  for (const n of names) {
    if (!/^\d+$/.test(n)) continue;
    let ns: number[];
    try {
      const m = /^NSpid:\s+(.*)$/m.exec(readFileSync(`/proc/${n}/status`, 'utf8'));
      if (!m) continue;
      ns = m[1]!.trim().split(/\s+/).map(Number);
    } catch {
      continue;
    }
    if (ns[ns.length - 1] !== vpid) continue;
    if (ns.length > 1) nested.push(ns[0]!);
    else flat = ns[0];
  }
  if (nested.length === 1) return nested[0];
  if (nested.length === 0) return flat;
  return undefined;
}

/** Innermost NSpid entry (the pid the process sees itself as) and the host pid. */
function nsPids(pid: number): number[] | undefined {
  try {
    const m = /^NSpid:\s+(.*)$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? m[1]!.trim().split(/\s+/).map(Number) : undefined;
  } catch {
    return undefined;
  }
}

/** `root` and every descendant of it (breadth first, bounded). */
export function treeOf(root: number, max = 1 << 16): number[] {
  const out = [root];
  for (let i = 0; i < out.length && out.length < max; i++) out.push(...childrenOf(out[i]!));
  return out;
}

/**
 * Host pid of the process calling itself `vpid` inside the process tree of
 * `root` (a lazy-pages socket peer: the restorer announces the processes it
 * restores, which are its descendants, or itself). Undefined when none (or
 * more than one) matches: a peer cannot name a process outside its own tree,
 * so a bad or hostile announcement can never make the daemon serve or kill
 * an unrelated process. A tree restored into its own pid namespace matches
 * on its innermost pid.
 */
export function hostPidInTree(vpid: number, root: number, also: Iterable<number> = []): number | undefined {
  if (!(Number.isInteger(vpid) && vpid > 0 && Number.isInteger(root) && root > 0)) return undefined;
  // A restorer's own processes are its descendants; restored as a sibling
  // (CRIU's --restore-sibling, as runc asks) they are in the tree of one it
  // handed over before (`also`), or it ptraces them, or (released before we
  // looked) they are siblings it started. The wider sets are only searched
  // when the narrow one has no match.
  const pick = (candidates: Iterable<number>): number | undefined => {
    const nested: number[] = [];
    const flat: number[] = [];
    for (const pid of candidates) {
      const ns = nsPids(pid);
      if (!ns || ns[ns.length - 1] !== vpid) continue;
      (ns.length > 1 ? nested : flat).push(ns[0]!);
    }
    if (nested.length === 1) return nested[0];
    if (nested.length === 0 && flat.length === 1) return flat[0];
    return undefined;
  };
  const own = new Set(treeOf(root));
  for (const t of also) for (const p of treeOf(t)) own.add(p);
  const found = pick(own);
  if (found !== undefined) return found;
  const wider = new Set(own);
  for (const t of tracedBy(root)) for (const p of treeOf(t)) wider.add(p);
  for (const t of youngerSiblings(root)) for (const p of treeOf(t)) wider.add(p);
  return wider.size > own.size ? pick(wider) : undefined;
}

/** Processes (thread-group leaders) whose tracer is `tracer`. */
export function tracedBy(tracer: number): number[] {
  const out: number[] = [];
  let names: string[];
  try {
    names = readdirSync('/proc');
  } catch {
    return out;
  }
  for (const n of names) {
    if (!/^\d+$/.test(n)) continue;
    try {
      const m = /^TracerPid:\s+(\d+)$/m.exec(readFileSync(`/proc/${n}/status`, 'utf8'));
      if (m && Number(m[1]) === tracer) out.push(Number(n));
    } catch { /* gone */ }
  }
  return out;
}

/**
 * Siblings of `pid` started after it: where a restorer's root lands with
 * CLONE_PARENT (--restore-sibling), still there once it was released
 * (untraced) before the daemon looked at the hand-over.
 */
export function youngerSiblings(pid: number): number[] {
  const me = readStat(pid);
  if (!me || me.ppid <= 1) return [];
  const out: number[] = [];
  for (const c of childrenOf(me.ppid)) {
    if (c === pid) continue;
    const st = readStat(c);
    if (st && BigInt(st.startTime) >= BigInt(me.startTime)) out.push(c);
  }
  return out;
}
