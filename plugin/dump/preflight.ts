// Dump preflight: the option checks and the look → freeze → look-again
// decisions, before anything is collected. Looking is from /proc only; every
// problem found names pid, fd or VMA, and the tree is refused (released
// untouched) when there is one.
import { mark } from '../phases.js';
import { existsSync, readlinkSync } from 'node:fs';
import { UserError, isSystemError, systemUserError } from '../errors.js';
import { KCMP, kcmpSame } from '../inject/index.js';
import { containerProblems, type ContainerOptions } from './container.js';
import type { DumpOptions } from './dump.js';
import { checkTreeFds, planFds, type DumpFdKind, type DumpFdOptions, type PlannedFd } from './fds/index.js';
import { FrozenTree } from './freeze.js';
import type { CgroupFreezer } from './cgroup-freezer.js';
import { fileLockProblems } from './locks.js';
import { listChildren, listTasks, nsId, readMaps, readSmaps, readStat, readStatus, type ProcStat } from './proc.js';
import { isZombieState, zombieProblem } from './taskstate.js';
import { planVma, type PlannedVma } from './vmas.js';

const NAMESPACES = ['pid', 'net', 'ipc', 'uts', 'mnt', 'user', 'cgroup', 'time'] as const;

export interface ProcPlan {
  pid: number;
  stat: ProcStat;
  /** A zombie (TASK_DEAD): only its pstree entry and core are written. */
  zombie?: boolean;
  /** A stopped process (TASK_STOPPED): the signal that stopped it. */
  stopSignal?: number;
  tids: number[];
  vmas: PlannedVma[];
  fds: PlannedFd[];
  exe: string;
  cwd: string;
  root: string;
}

/** Walks the tree from /proc without touching it. */
function discover(root: number): number[] {
  const out: number[] = [];
  const walk = (p: number): void => {
    out.push(p);
    for (const c of listChildren(p)) walk(c);
  };
  walk(root);
  return out;
}

function readLink(path: string): string | undefined {
  try {
    return readlinkSync(path);
  } catch {
    return undefined;
  }
}

/**
 * A process group led by a live process outside the tree (and not the
 * root's own with --shell-job). A group whose leader is gone is not: restore
 * recreates it with a helper, as CRIU does (plugin/restore/pgrp.ts).
 */
function foreignGroup(pgid: number, inTree: ReadonlySet<number>, shellJob: boolean | undefined, root: number): boolean {
  if (inTree.has(pgid)) return false;
  if (shellJob && pgid === readStat(root).pgid) return false;
  return existsSync(`/proc/${pgid}`);
}

/** PF_EXITING in /proc/PID/stat's flags: the task is on its way out (its memory may already be gone). */
const PF_EXITING = 0x4;

/** Gone, a zombie, or exiting, now. */
function vanished(pid: number): boolean {
  try {
    const st = readStat(pid);
    return isZombieState(st.state) || (st.flags & PF_EXITING) !== 0;
  } catch {
    return true;
  }
}

/** Per-process plans and the problems found (each names pid, fd or VMA). */
export interface TreePlan {
  plans: ProcPlan[];
  problems: string[];
}

/**
 * Everything we can check from /proc. Returns per-process plans and the
 * problems found (each names pid, fd or VMA). `pids` parents first.
 */
export function plan(pids: readonly number[], kinds: readonly DumpFdKind[], fdOpts: DumpFdOptions, frozen = false): TreePlan {
  const shellJob = fdOpts.shellJob;
  const problems: string[] = [];
  const plans: ProcPlan[] = [];
  const root = pids[0]!;
  const inTree = new Set(pids);
  const rootNs = new Map(NAMESPACES.map((n) => [n, nsId(root, n)]));
  // One process; `return` moves on to the next.
  const planOne = (pid: number): void => {
    let stat: ProcStat;
    let status: Map<string, string>;
    try {
      stat = readStat(pid);
      status = readStatus(pid);
    } catch {
      problems.push(`pid ${pid}: no such process (ESRCH)`);
      return;
    }
    if (pid !== root) {
      if (!inTree.has(stat.sid) && !(shellJob && stat.sid === readStat(root).sid)) problems.push(`pid ${pid}: session ${stat.sid} is outside the tree`);
    }
    if (isZombieState(stat.state)) {
      // A zombie (plugin/dump/taskstate.ts): only its exit status is kept.
      const z = zombieProblem(pid, stat, pid === root);
      if (z) problems.push(z);
      else if (foreignGroup(stat.pgid, inTree, shellJob, root)) problems.push(`pid ${pid}: process group ${stat.pgid} is outside the tree; use --shell-job`);
      else plans.push({ pid, stat, zombie: true, tids: [pid], vmas: [], fds: [], exe: '', cwd: '', root: '' });
      return;
    }
    const tracer = Number(status.get('TracerPid') ?? '0');
    if (tracer !== 0 && !(frozen && tracer === process.pid)) { problems.push(`pid ${pid}: already traced by pid ${tracer} (EPERM)`); return; }
    if (stat.state === 't' && !frozen) problems.push(`pid ${pid}: in a tracing stop (not supported)`);
    const tids = listTasks(pid);
    for (const t of tids) {
      try {
        const s = readStat(pid, t).state;
        if (s === 'Z' || s === 'X') problems.push(`pid ${pid}: thread ${t} is a zombie (not supported)`);
      } catch { /* exited meanwhile */ }
    }
    for (const n of NAMESPACES) {
      if (nsId(pid, n) !== rootNs.get(n)) problems.push(`pid ${pid}: ${n} namespace differs from the root's (not supported)`);
    }
    if (pid === root && !shellJob && stat.sid !== pid) {
      problems.push(`pid ${pid}: not a session leader (session ${stat.sid}); use --shell-job`);
    }
    if (foreignGroup(stat.pgid, inTree, shellJob, root)) problems.push(`pid ${pid}: process group ${stat.pgid} is outside the tree; use --shell-job`);
    const vmas: PlannedVma[] = [];
    // Before the freeze only problems count (the frozen look plans): /proc/PID/maps
    // is enough there. VmFlags (smaps) cost a page-table walk of the whole
    // memory, so only the frozen look reads them; what they alone refuse
    // (hugetlb, shadow stack, I/O mappings) is refused there, as CRIU does
    // (it reads smaps of the frozen tree only).
    for (const v of frozen ? readSmaps(pid) : readMaps(pid)) {
      const p = planVma(pid, v, fdOpts.ghostLimit, fdOpts.linkRemaps !== undefined);
      if (typeof p === 'string') problems.push(p);
      else vmas.push(p);
    }
    const f = planFds(kinds, pid, fdOpts, { sid: stat.sid, pgid: stat.pgid });
    problems.push(...f.problems);
    const exe = readLink(`/proc/${pid}/exe`) ?? '';
    const cwd = readLink(`/proc/${pid}/cwd`) ?? '';
    const rootDir = readLink(`/proc/${pid}/root`) ?? '';
    if (!exe.startsWith('/') || exe.endsWith(' (deleted)')) problems.push(`pid ${pid}: executable ${exe || '?'} is not reachable (deleted?)`);
    if (!cwd.startsWith('/') || cwd.endsWith(' (deleted)')) problems.push(`pid ${pid}: working directory ${cwd || '?'} is not reachable (deleted?)`);
    if (rootDir !== '/') problems.push(`pid ${pid}: chroot (${rootDir}) is not supported`);
    plans.push({ pid, stat, tids, vmas, fds: f.fds, exe, cwd, root: rootDir });
  };
  for (const pid of pids) {
    // Before the freeze, a child that exits while we look (a shell loop's
    // short-lived command) is no problem of the tree: forget what we saw
    // of it; the look at the frozen tree decides.
    const nProblems = problems.length;
    const nPlans = plans.length;
    try {
      planOne(pid);
    } catch (e) {
      if (frozen || pid === root || !vanished(pid)) throw e;
    }
    if (!frozen && pid !== root && problems.length > nProblems && vanished(pid)) {
      problems.length = nProblems;
      plans.length = nPlans;
    }
  }
  problems.push(...checkTreeFds(kinds, plans.flatMap((p) => p.fds), plans.map((p) => p.pid), fdOpts));
  // Resources shared between processes (not threads) we cannot recreate.
  for (let i = 0; i < plans.length; i++) {
    if (plans[i]!.zombie) continue;
    for (let j = i + 1; j < plans.length; j++) {
      if (plans[j]!.zombie) continue;
      const a = plans[i]!.pid;
      const b = plans[j]!.pid;
      try {
        if (kcmpSame(a, b, KCMP.VM)) problems.push(`pids ${a} and ${b} share their memory (CLONE_VM): not supported`);
        if (kcmpSame(a, b, KCMP.FILES)) problems.push(`pids ${a} and ${b} share their fd table (CLONE_FILES): not supported`);
        if (kcmpSame(a, b, KCMP.SIGHAND)) problems.push(`pids ${a} and ${b} share signal handlers (CLONE_SIGHAND): not supported`);
        if (kcmpSame(a, b, KCMP.FS)) problems.push(`pids ${a} and ${b} share cwd/root (CLONE_FS): not supported`);
      } catch { /* one of them is gone: the frozen pass reports it */ }
    }
  }
  return { plans, problems };
}

/** A short, growing pause before looking at a changing tree again. */
function pause(attempt: number): Promise<void> {
  return new Promise((r) => setTimeout(r, 10 * attempt));
}

function refuse(problems: string[]): UserError {
  const shown = problems.slice(0, 5).join('; ');
  return new UserError(`cannot dump: ${shown}${problems.length > 5 ? `; and ${problems.length - 5} more` : ''}`);
}

/** Option checks before the tree is touched (bad pid, conflicting modes, a page-server address refused by policy). */
export async function checkDumpOptions(opts: DumpOptions): Promise<void> {
  const root = opts.pid;
  if (!Number.isSafeInteger(root) || root <= 0) throw new UserError(`invalid pid ${String(root)}`);
  if (root === process.pid) throw new UserError(`pid ${root}: cannot dump the dumping process itself`);
  if (!existsSync(`/proc/${root}`)) throw new UserError(`pid ${root}: no such process (ESRCH)`);
  // A zombie root, or a root whose thread-group leader exited while other
  // threads run (its /proc/PID/ns links are gone): refused by name up front.
  let st: ProcStat | undefined;
  try {
    st = readStat(root);
  } catch { /* gone meanwhile: the freeze says ESRCH */ }
  if (st && isZombieState(st.state)) throw new UserError(zombieProblem(root, st, false) ?? zombieProblem(root, st, true)!);
  const incremental = opts.preDump === true || opts.prevImagesDir !== undefined;
  if (incremental && opts.lazyPages) throw new UserError('--lazy-pages cannot be combined with pre-dump or --prev-images-dir');
  if (opts.lazyPages) {
    // Refuse a bad page-server address before the tree is touched.
    const { checkAddressPolicy, resolveAddress } = await import('../pageserver/transport.js');
    const l = opts.lazyPages;
    checkAddressPolicy(await resolveAddress(l.address), l.address, { tls: l.tls !== undefined, insecure: l.insecure === true });
  }
  if (opts.pageServer) {
    if (opts.lazyPages || opts.preDump) throw new UserError('--page-server cannot be combined with --lazy-pages or pre-dump');
    const { checkPushAddress } = await import('../pageserver/push.js');
    await checkPushAddress(opts.pageServer);
  }
}

export interface FreezeOptions {
  timeoutMs: number;
  /** The root is a container (its own pid and mount namespaces). */
  container: boolean;
  containerOpts?: ContainerOptions;
  /** --file-locks: held locks are dumped rather than refused. */
  fileLocks: boolean;
  /** The freezer cgroup holding the tree (runc's freeze_cgroup): frozen while its threads are seized. */
  freezer?: CgroupFreezer;
}

/**
 * Looks at the tree without touching it, freezes it, and looks again at the
 * frozen tree. A child that exits meanwhile (a shell loop's short-lived
 * commands) is a zombie or gone for a moment: start over, a few times,
 * before refusing. Returns the frozen tree and its plans; on refusal the
 * tree is released untouched.
 */
export async function freezeChecked(root: number, kinds: readonly DumpFdKind[], fdOpts: DumpFdOptions, how: FreezeOptions): Promise<{ tree: FrozenTree; post: TreePlan }> {
  // A child that exits meanwhile (a shell loop's short-lived commands) is
  // a zombie or gone for a moment (its exe and cwd links unreadable while it
  // exits): start over, a few times, before refusing.
  const transient = (problems: string[]): boolean => problems.length > 0
    && problems.every((p) => !p.startsWith(`pid ${root}:`) && /no such process|zombie|(executable|working directory) \? is not reachable/.test(p));
  let tree: FrozenTree;
  let post: TreePlan;
  for (let attempt = 1; ; attempt++) {
    const again = attempt < 8;
    let pids: number[];
    try {
      pids = discover(root);
    } catch {
      if (again && existsSync(`/proc/${root}`)) { await pause(attempt); continue; }
      throw new UserError(`pid ${root}: no such process (ESRCH)`);
    }
    mark('discovered');
    const pre = plan(pids, kinds, fdOpts);
    mark('planned');
    if (how.container) pre.problems.push(...containerProblems(root, how.containerOpts ?? {}));
    if (pre.problems.length) {
      if (again && transient(pre.problems)) { await pause(attempt); continue; }
      throw refuse(pre.problems);
    }
    tree = new FrozenTree(root, how.timeoutMs, how.freezer);
    try {
      tree.freeze();
      mark('frozen');
    } catch (e) {
      if (isSystemError(e) && e.code === 'ESRCH') {
        if (again && existsSync(`/proc/${root}`)) { await pause(attempt); continue; }
        throw new UserError(`pid ${root}: no such process (ESRCH)`, { cause: e });
      }
      throw systemUserError(`pid ${root}`, e);
    }
    try {
      post = plan(tree.processes.map((p) => p.pid), kinds, fdOpts, true);
      for (const p of tree.processes) post.problems.push(...fileLockProblems(p.pid, how.fileLocks));
    } catch (e) {
      tree.release();
      if (e instanceof UserError) throw e;
      throw systemUserError(`pid ${root}: looking at the frozen tree`, e);
    }
    if (how.container) post.problems.push(...containerProblems(root, how.containerOpts ?? {}));
    if (post.problems.length) {
      tree.release();
      if (again && transient(post.problems)) { await pause(attempt); continue; }
      throw refuse(post.problems);
    }
    break;
  }
  return { tree, post };
}
