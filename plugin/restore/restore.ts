// restore(): recreates a dumped process tree from CRIU images, eagerly or
// lazily. Owns the ordering: validate everything first; check pids (waiting,
// bounded, for zombies still holding them); create the tree of stubs (root
// spawned here, children cloned inside their restored parents so parent/child
// links are real); rebuild each process; hand userfaultfds to the lazy-pages
// daemon; then release every thread, children before parents. Any failure
// before the release kills and reaps everything created so far.
import { existsSync, linkSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { isSystemError, UserError } from '../errors.js';
import { ImageDir, KIND, PAGE } from '../images/index.js';
import { PageVerifier } from '../integrity/checksums.js';
import { addon, helperPath } from '../native/addon.js';
import type { RestoreExitInfo } from '../native/types.js';
import { restoreKernelState, validateKernelState } from './creds.js';
import { installSeccomp } from './seccomp.js';
import { type ExternalLazyServer, type LazyHandoff, openLazyHandoff } from './handoff.js';
import { loadPlan, type ProcessPlan } from './plan.js';
import {
  createThreads,
  findHole,
  finalizeThread,
  injectClone,
  type Interval,
  makeUffd,
  type MmResult,
  restoreAddressSpace,
  restoreProcessState,
  restoreThreadState,
  restoreRseq,
} from './process.js';
import { InjectedSyscallError, NR, readMaps, RemoteTask } from './task.js';
import { restoreTimers } from './timers.js';
import { restoreOrphanGroups } from './pgrp.js';
import { drainSigchld, endZombie, stopSignalOf, waitStopped } from './taskstate.js';
import { containerPlan, setupContainer, type ContainerOptions } from './container.js';
import { CLONE_NEWIPC, finishSysvIpc, loadSysvIpc, planSysvAttaches, restoreSysvIpc, type SysvIpcPlan } from './sysvipc.js';
import { keepShmemEager, ShmemObjects } from './shmem.js';
import { CgroupRestorer, type CgroupRestoreOptions } from './cgroups.js';
import { sinceStartMs } from '../log.js';
import { mark } from '../phases.js';
import { restoreNetns } from './netns.js';

export interface RestoreOptions {
  /** The image directory (-D). */
  imagesDir: string;
  /** Where stats-restore goes: CRIU writes it in its work dir; default the images dir. */
  statsDir?: string;
  /** --lazy-pages: leave lazy-eligible memory to a lazy-pages daemon. */
  lazy?: boolean;
  /** --lazy-socket: hand userfaultfds to an external daemon on this socket (CRIU protocol) instead of an in-process one. */
  lazySocket?: string;
  /** With lazySocket: resolves once that daemon listens (one still starting); the hand-over waits for it. */
  lazySocketReady?: Promise<void>;
  /**
   * An already open in-process LazyPagesServer (plugin/lazy) to adopt the
   * uffds, e.g. to watch progress or choose its options; the caller closes it.
   */
  lazyServer?: ExternalLazyServer;
  /**
   * -d: return as soon as the tree runs. Otherwise restore() waits for the
   * root to exit (and, when lazy, for the daemon to finish) and reports its status.
   */
  detached?: boolean;
  /** --shell-job: the root may belong to the restorer's session and process group. */
  shellJob?: boolean;
  /**
   * CRIU's --inherit-fd fd[N]:KEY, as KEY → N: a file the image names KEY
   * ("pipe:[INO]", "socket:[INO]") is restored from this process's fd N.
   */
  inheritFds?: Map<string, number>;
  /** CRIU's --ext-unix-sk: unix sockets whose peer was outside the tree may be restored (unconnected). */
  extUnixSk?: boolean;
  /** --pidns: restore into a new pid namespace (the tree keeps its pids inside it). */
  pidns?: boolean;
  /** CRIU's --tcp-established: restore established TCP connections (TCP_REPAIR). */
  tcpEstablished?: boolean;
  /** CRIU's --file-locks: take the locks of filelocks.img again (without it they are left out, with a warning, as CRIU). */
  fileLocks?: boolean;
  /** CRIU's --file-validation: 'buildid' (default) compares the ELF build-ids the image recorded; 'filesize' only sizes. */
  fileValidation?: import('../images/build-id.js').FileValidation;
  /** --pidfile: write the root's pid here (CRIU's format: no newline; an existing file is an error). */
  pidfile?: string;
  /**
   * CRIU's --restore-sibling: the root is created with CLONE_PARENT, as a
   * child of this process's parent (which reaps it) instead of our own.
   * Needs `detached` (like CRIU); wait() is then unavailable.
   */
  sibling?: boolean;
  /** How long to wait for a zombie still holding a needed pid (default 5000 ms). */
  zombieWaitMs?: number;
  /**
   * Verify page data against the lr-checksums images (default true): every
   * chunk written eagerly, and (in-process lazy daemon) every chunk served.
   * false = --no-verify.
   */
  verify?: boolean;
  /** In-process lazy server options (prefetch etc.) are the daemon's defaults; this hook sees each adoption. */
  log?: (line: string) => void;
  /**
   * CRIU's action scripts (the NOTIFY round trips of its RPC mode,
   * plugin/rpc), awaited at CRIU's points. A hook that throws before the
   * release kills everything restored so far and fails the restore.
   */
  hooks?: RestoreHooks;
  /**
   * A container's images (its root was pid 1 of its own namespaces): where
   * its root file system is and the paths of its external mounts
   * (plugin/restore/container.ts).
   */
  container?: ContainerOptions;
  /**
   * cgroup membership and properties from cgroup.img (plugin/restore/cgroups.ts):
   * CRIU's --manage-cgroups (default soft) and --cgroup-root.
   */
  cgroups?: Omit<CgroupRestoreOptions, 'log'>;
}

export interface RestoreHooks {
  /** Before anything is created (pre-restore). */
  preRestore?(): Promise<void>;
  /** The root exists in its namespaces; its pid as we see it (setup-namespaces), then post-setup-namespaces. */
  setupNamespaces?(rootPid: number): Promise<void>;
  postSetupNamespaces?(): Promise<void>;
  /** Everything restored, nothing released yet (post-restore). */
  postRestore?(rootPid: number): Promise<void>;
  /** Right before the release (pre-resume) and after it (post-resume). */
  preResume?(): Promise<void>;
  postResume?(): Promise<void>;
}

export interface RestoreExit {
  /** Exit code, or -1 when killed by a signal. */
  code: number;
  signal: number;
}

export interface RestoreTimings {
  /** restore() start until the last thread was released. */
  resumeMs: number;
  /** Bytes written eagerly into the restored processes. */
  eagerBytes: bigint;
}

export interface RestoredTree {
  /** Pid of the restored root as this process sees it (with --pidns: the namespace's init). */
  readonly pid: number;
  /** Pids from the images (as the restored processes see themselves). */
  readonly pids: number[];
  readonly timings: RestoreTimings;
  /** Set when restore() was not detached: the root's exit status. */
  exit?: RestoreExit;
  /** Resolves with the root's exit status (reaps it). */
  wait(): Promise<RestoreExit>;
  /** Lazy: resolves once every lazy page is served (or its process is gone). Eager: resolved. */
  lazyDone(): Promise<void>;
  /** Stops waiting and the in-process daemon (kill the tree first if it still runs). */
  close(): Promise<void>;
}

const ZOMBIE_POLL_MS = 20;

function procState(pid: number): { state: string; comm: string } | undefined {
  try {
    const s = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const close = s.lastIndexOf(')');
    return { comm: s.slice(s.indexOf('(') + 1, close), state: s.slice(close + 2, close + 3) };
  } catch {
    return undefined;
  }
}

/** Every pid/tid must be free; a zombie holding one is waited for, bounded. */
async function checkPids(plan: ProcessPlan[], waitMs: number): Promise<void> {
  const deadline = Date.now() + waitMs;
  for (const p of plan) {
    for (const t of p.threads.map((x) => x.tid)) {
      for (;;) {
        const st = procState(t);
        if (!st) break;
        if (st.state !== 'Z' && st.state !== 'X') {
          throw new UserError(`pid ${t} is in use by a live process (${st.comm}, state ${st.state}): cannot restore ${t === p.pid ? 'process' : 'thread'} ${t}`);
        }
        if (Date.now() > deadline) {
          throw new UserError(`pid ${t} is still held by an unreaped zombie (${st.comm}) after ${waitMs} ms: cannot restore it`);
        }
        await new Promise((r) => setTimeout(r, ZOMBIE_POLL_MS));
      }
    }
  }
}

/** Bound on the daemon serving the pages restore waits for (its own page-server timeout is 30 s by default). */
const FAULT_IN_TIMEOUT_MS = 60_000;

/** Waits until the lazy-pages daemon has served `pages` of a restored process (host pid `host`). */
async function faultIn(host: number, pid: number, pages: bigint[]): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new UserError(`pid ${pid}: the lazy-pages daemon did not serve page 0x${pages[0]!.toString(16)} (its rseq area) within ${FAULT_IN_TIMEOUT_MS / 1000} s`)), FAULT_IN_TIMEOUT_MS);
  });
  try {
    await Promise.race([addon.restoreFaultIn(host, BigUint64Array.from(pages)), timeout]);
  } catch (e) {
    if (e instanceof UserError) throw e;
    const code = (e as { code?: string }).code ?? 'EIO';
    throw new UserError(`pid ${pid}: its rseq area page 0x${pages[0]!.toString(16)} could not be served (${code}): the lazy-pages daemon failed or killed it`);
  } finally {
    clearTimeout(timer);
  }
}

interface Live {
  plan: ProcessPlan;
  task: RemoteTask;
  threads: RemoteTask[];
  /** Address space, once restored (a parent's is restored before its first child is cloned). */
  mm?: MmResult;
  /** The parent whose restored memory this process was cloned from. */
  inherit?: ProcessPlan;
}

export async function restore(opts: RestoreOptions): Promise<RestoredTree> {
  mark('restore start');
  const t0 = sinceStartMs();
  const lazy = opts.lazy === true || opts.lazySocket !== undefined;
  const log = opts.log ?? (() => {});
  // An external daemon (--lazy-socket) may have a page server for PE_LAZY-only
  // pages (dump --lazy-pages); it refuses them itself when it has none.
  if (opts.sibling && !opts.detached) throw new UserError('--restore-sibling only makes sense with --restore-detached (-d): the root is not our child to wait for');
  const ct = await containerPlan(opts.imagesDir);
  // A tree whose root was pid 1 of its own pid namespace is restored into a
  // new one anyway (as that pid 1): --pidns asks for nothing more then.
  const pidns = opts.pidns === true && !ct;
  if (opts.sibling && pidns) throw new UserError('--restore-sibling cannot be combined with --pidns');
  if (opts.pidfile && existsSync(opts.pidfile)) throw new UserError(`--pidfile ${opts.pidfile}: file exists (EEXIST)`);
  const plan = await loadPlan(opts.imagesDir, {
    lazy, remotePages: opts.lazySocket !== undefined, checkFiles: ct === undefined, log, fileLocks: opts.fileLocks === true,
    ...(opts.fileValidation ? { fileValidation: opts.fileValidation } : {}),
    fds: { shellJob: opts.shellJob === true, detached: opts.detached === true, inheritFds: opts.inheritFds ?? new Map(), extUnixSk: opts.extUnixSk === true, tcpEstablished: opts.tcpEstablished === true },
  });
  mark('plan loaded');
  const root = plan.processes[0]!;
  const stub = helperPath('restore-stub');
  const hooks = opts.hooks ?? {};
  let handoff: LazyHandoff | undefined;
  let cg: CgroupRestorer | undefined;
  try {
    validateKernelState(plan);
    mark('kernel state validated');
    if (!opts.shellJob && root.entry.sid !== root.pid) {
      throw new UserError(`pid ${root.pid}: the root is not a session leader (sid ${root.entry.sid}): restore it with --shell-job`);
    }
    if (!pidns && !ct) await checkPids(plan.processes, opts.zombieWaitMs ?? 5000);
    // The cgroups first, as CRIU's prepare_cgroup: created (by mode) before any task exists.
    cg = await CgroupRestorer.open(opts.imagesDir, { ...opts.cgroups, log });
    await hooks.preRestore?.();
    if (lazy) handoff = await openLazyHandoff(opts.imagesDir, opts.lazySocket, opts.lazyServer, opts.verify !== false, opts.lazySocketReady);
    if (handoff && !handoff.servesSharedMemory) {
      const n = keepShmemEager(plan.processes, plan.shmem);
      if (n) log(`${n} shared memory objects restored eagerly: the lazy-pages daemon is not ours`);
    }
  } catch (e) {
    cg?.close();
    plan.ghosts.remove(); // deleted files recreated for the restore (plugin/restore/ghost.ts)
    throw e;
  }
  mark('pids checked');
  const verifier = opts.verify === false ? undefined : new PageVerifier();
  // An IPC namespace of the root's own, with its SysV objects (plugin/restore/sysvipc.ts).
  let ipc: SysvIpcPlan | undefined;
  try {
    ipc = await loadSysvIpc(opts.imagesDir, verifier, log);
    planSysvAttaches(plan.processes, ipc);
  } catch (e) {
    plan.ghosts.remove();
    throw e;
  }

  // Cleanup order: parents first (see restoreKillTree).
  const created: { outer: number; tids: number[] }[] = [];
  const live: Live[] = [];
  let init: RemoteTask | undefined;
  const uffds: { pid: number; host: number; fd: number }[] = [];
  let released = false;
  let shmem: ShmemObjects | undefined;
  try {
    // Shared memory objects first: created and filled once, then mapped by
    // every process that uses them (plugin/restore/shmem.ts).
    shmem = ShmemObjects.create(plan.shmem, verifier, log);
    for (const p of plan.processes) {
      for (const v of p.vmas) if (v.shmem) v.path = shmem.path(v.shmem.key);
    }
    const objects = shmem;
    if (plan.fds.options.memfds) plan.fds.options.memfds.path = (key) => objects.path(key);

    // --- 1. the tree of stubs -------------------------------------------------
    // One scratch address for the whole tree: children inherit the parent's.
    const busy: Interval[] = plan.processes.flatMap((p) => p.vmas.map((v) => ({ start: v.vma.start, end: v.vma.end })));
    const byPid = new Map<number, Live>();
    let scratchAt = 0n;
    for (const p of plan.processes) {
      let task: RemoteTask;
      let inherit: ProcessPlan | undefined;
      if (p === root) {
        let outer: number;
        if (pidns) {
          const initPid = spawn(stub, 1, true);
          created.push({ outer: initPid, tids: [initPid] });
          init = new RemoteTask(initPid);
          init.findGadget();
          scratchAt = findHole([...busy, ...readMaps(initPid)], init.scratchSize);
          init.mapScratch(scratchAt);
          outer = injectClone(init, p.pid, false);
        } else if (ct) {
          // A container's init: pid 1 of the new namespaces, the root itself.
          outer = spawn(stub, 1, true, opts.sibling === true, ct.nsFlags);
        } else {
          outer = spawn(stub, p.pid, false, opts.sibling === true);
        }
        created.push({ outer, tids: [outer] });
        mark('root stub spawned');
        task = new RemoteTask(outer);
        task.findGadget();
        if (!pidns) {
          scratchAt = findHole([...busy, ...readMaps(outer)], task.scratchSize);
          task.mapScratch(scratchAt);
        } else {
          task.scratch = scratchAt;
        }
        // Into its cgroup set before its children exist: they inherit it.
        cg?.moveProcess(outer, cgSetOf(p), cg.dumperSet, `pid ${p.pid}`);
        if (ct) setupContainer(task, ct, opts.container ?? {}, log);
        if (ct?.netId !== undefined && opts.container?.emptyNet !== true) await restoreNetns(outer, ct.dir, ct.netId, log);
        if (ipc) restoreSysvIpc(task, p.pid, ipc, ct !== undefined && (ct.nsFlags & CLONE_NEWIPC) !== 0, log);
      } else {
        const parent = byPid.get(p.ppid)!;
        // Copy-on-write sharing: a live child is cloned from its parent's
        // restored memory and keeps what it shares (plugin/restore/cow.ts).
        if (p.state !== 2 && parent.plan.state !== 2 && !parent.mm) {
          parent.mm = restoreAddressSpace(parent.task, parent.plan, lazy, verifier, parent.inherit);
        }
        const outer = injectClone(parent.task, p.pid, false);
        created.push({ outer, tids: [outer] });
        if (cg) cg.moveProcess(outer, cgSetOf(p), inheritedCgSet(p, byPid, cg.dumperSet), `pid ${p.pid}`);
        task = new RemoteTask(outer);
        task.findGadget();
        task.scratch = scratchAt;
        if (parent.mm) inherit = parent.plan;
      }
      // Session and own process group now, so children cloned later inherit them.
      if (p.entry.sid === p.pid) task.call('setsid', NR.setsid);
      else if (p.entry.pgid === p.pid) task.call('setpgid', NR.setpgid, 0, 0);
      const l: Live = { plan: p, task, threads: [], inherit };
      live.push(l);
      byPid.set(p.pid, l);
    }
    if (hooks.setupNamespaces || hooks.postSetupNamespaces) {
      await hooks.setupNamespaces?.(init ? init.pid : live[0]!.task.pid);
      await hooks.postSetupNamespaces?.();
    }
    // Groups led by another process of the tree.
    for (const l of live) {
      const { pid, pgid } = l.plan.entry;
      if (pgid !== pid && byPid.has(pgid)) l.task.call(`setpgid(0, ${pgid})`, NR.setpgid, 0, pgid);
    }
    // Groups whose leader is not in the tree: made by a short-lived helper (plugin/restore/pgrp.ts).
    restoreOrphanGroups(live.map((l) => ({ pid: l.plan.pid, pgid: l.plan.entry.pgid, task: l.task })), new Set(byPid.keys()), {
      created: (outer) => created.push({ outer, tids: [outer] }),
      gone: (outer) => { const i = created.findIndex((c) => c.outer === outer); if (i >= 0) created.splice(i, 1); },
    }, opts.shellJob ? root.entry.pgid : undefined);
    // Zombies end now, before any state of their parents is restored
    // (plugin/restore/taskstate.ts); each stays a zombie of its parent.
    const zombieParents = new Set<Live>();
    for (const l of live) {
      if (l.plan.state !== 2) continue;
      endZombie(l.task, l.plan, 10000);
      zombieParents.add(byPid.get(l.plan.ppid)!);
    }
    for (const parent of zombieParents) drainSigchld(parent.task);

    // Every open file description of the tree, each created once inside its
    // first owner while all stubs still have our credentials (plugin/restore/fds).
    mark('tree of stubs');
    plan.fds.createAll(new Map(live.filter((l) => l.plan.state !== 2).map((l) => [l.plan.pid, l.task])));

    const forkMs = sinceStartMs() - t0;
    mark('fds created');
    // --- 2. every process -----------------------------------------------------
    let eagerBytes = 0n;
    for (const l of live) {
      const p = l.plan;
      if (p.state === 2) continue;
      const mm = l.mm ?? restoreAddressSpace(l.task, p, lazy, verifier, l.inherit);
      l.mm = mm;
      mark(`pid ${p.pid}: address space`);
      eagerBytes += mm.bytesWritten;
      restoreProcessState(l.task, p, plan.fds, plan.locks, log);
      mark('process state');
      l.threads = createThreads(l.task, p);
      const group = created.find((c) => c.outer === l.task.pid)!;
      group.tids.push(...l.threads.map((t) => t.tid));
      if (cg) l.threads.forEach((t, i) => cg!.moveThread(t.tid, p.threads[i + 1]!.core.thread_core?.cg_set, cgSetOf(p), `pid ${p.pid} thread ${p.threads[i + 1]!.tid}`));
      const tc = p.threads[0]!.core.tc!;
      // rseq areas whose pages the daemon serves are registered after the hand-over (below).
      const deferRseq = mm.rseqLazyPages.length > 0;
      restoreThreadState(l.task, p.threads[0]!.core, tc.comm, { deferRseq });
      l.threads.forEach((t, i) => restoreThreadState(t, p.threads[i + 1]!.core, undefined, { deferRseq }));
      if (lazy) {
        const fd = makeUffd(l.task, mm.lazyVmas);
        uffds.push({ pid: p.pid, host: l.task.pid, fd });
      }
      mark('threads');
      // Seccomp filters while the process still has our privileges: a filter
      // needs no_new_privs or CAP_SYS_ADMIN, which the creds below may drop
      // (a podman container has neither); as CRIU's restorer, before the
      // creds. Seccomp is suspended for what is injected after it
      // (plugin/restore/seccomp.ts).
      mark('seccomp');
      installSeccomp(p.pid, [l.task, ...l.threads].map((task, i) => ({ task, sc: p.threads[i]!.seccomp })), log);
      // Pending signals, rlimits, creds (plugin/restore/creds.ts); only the timers come later.
      mark('creds');
      restoreKernelState(p, [l.task, ...l.threads].map((task, i) => ({ task, tid: p.threads[i]!.tid, core: p.threads[i]!.core })), log);
      log(`pid ${p.pid}: address space and state restored (${mm.bytesWritten} bytes eager, ${mm.lazyVmas.length} lazy VMAs)`);
    }
    // Every mapping exists: seal the memfds, and the restorer's copies can go.
    mark('kernel state');
    shmem.seal();
    shmem.close();
    if (ipc) finishSysvIpc(live[0]!.task, root.pid, ipc);
    // Every fd and mapping of a deleted file is open: unlink the recreated ghosts and link remaps.
    plan.ghosts.remove(true);
    // Timers last, so restoring the rest of the tree does not eat their time.
    for (const l of live) {
      if (l.plan.state === 2) continue;
      restoreTimers(l.task, l.plan.threads[0]!.core.tc!.timers);
      l.task.call('munmap(scratch)', NR.munmap, l.task.scratch, l.task.scratchSize);
    }

    mark('timers, scratch unmapped');
    // --- 3. lazy hand-over ----------------------------------------------------
    // The daemon owns the uffds from here. Its planning (reading the pagemap)
    // may overlap the release: a fault meanwhile just waits in the kernel
    // until the daemon reads the uffd, so the tree can run at once.
    // (An external daemon gets everything before the release: if the socket
    // fails, nothing may run unserved.)
    const adopting: Promise<void>[] = [];
    let adopted: Promise<unknown> = Promise.resolve();
    if (handoff) {
      for (const u of uffds.splice(0)) adopting.push(handoff.adopt(u.pid, u.fd, u.host));
      for (const l of live) if (l.plan.state === 2) adopting.push(handoff.zombie(l.plan.pid));
      adopted = Promise.all(adopting);
      mark('uffds sent to the lazy-pages daemon');
      log(`handed ${adopting.length} userfaultfds over at ${(sinceStartMs() - t0).toFixed(1)} ms`);
      adopted.catch(() => {}); // awaited below; the in-process daemon kills what it cannot serve
      if (!handoff.overlapsRelease) await adopted;
      mark('uffds handed over');
    }

    // rseq areas in pages the daemon serves: each page is taken through the
    // uffd first (served like any fault), then the area is registered and
    // the kernel's write lands on the served data.
    for (const l of live) {
      const pages = l.mm?.rseqLazyPages ?? [];
      if (pages.length === 0 || l.plan.state === 2) continue;
      if (!handoff) throw new UserError(`pid ${l.plan.pid}: its rseq area is in lazy memory but no lazy-pages daemon serves it`);
      await faultIn(l.task.pid, l.plan.pid, pages);
      restoreRseq(l.task, l.plan.threads[0]!.core);
      l.threads.forEach((t, i) => restoreRseq(t, l.plan.threads[i + 1]!.core));
    }
    if (live.some((l) => (l.mm?.rseqLazyPages.length ?? 0) > 0)) log(`rseq areas in lazy memory registered at ${(sinceStartMs() - t0).toFixed(1)} ms`);

    // Every task is in its cgroups: their properties now (CRIU's prepare_cgroup_properties).
    cg?.restoreProperties();
    await hooks.postRestore?.(init ? init.pid : live[0]!.task.pid);
    await hooks.preResume?.();
    cg?.restoreFreezerState();
    // --- 4. release: children before parents, the leader last in each process --
    for (const l of [...live].reverse()) {
      const p = l.plan;
      if (p.state === 2) continue; // a zombie: ended already
      const leaderMask = p.threads[0]!.core.tc!.blk_sigset;
      l.threads.forEach((t, i) => finalizeThread(t.tid, p.threads[i + 1]!.core, leaderMask));
      // A stopped process is released with its stop signal: it stops at once, as CRIU's kill(stop_signo).
      finalizeThread(l.task.pid, p.threads[0]!.core, leaderMask, p.state === 3 ? stopSignalOf(p) : 0);
    }
    if (init) {
      // The namespace's init becomes a reaper that exits with the root's status.
      const regs = addon.restoreGetRegs(init.pid);
      regs[16] = stubReaperEntry(stub);
      regs[14] = BigInt(root.pid);
      regs[15] = BigInt.asUintN(64, -1n);
      addon.restoreSetRegs(init.pid, regs);
      addon.restoreDetach(init.pid, 0);
    }
    released = true;
    mark('released');
    for (const l of live) if (l.plan.state === 3) waitStopped(l.task.pid);
    plan.fds.close();
    const resumeMs = sinceStartMs() - t0;
    log(`released at ${resumeMs.toFixed(1)} ms`);
    await hooks.postResume?.().catch((e: unknown) => log(`post-resume: ${e instanceof Error ? e.message : String(e)}`));
    if (handoff) {
      await adopted;
      await handoff.finished();
    }
    const rootHost = init ? init.pid : live[0]!.task.pid;
    if (opts.pidfile) writePidfile(opts.pidfile, rootHost);
    await writeRestoreStats(opts.statsDir ?? opts.imagesDir, { forkMs, resumeMs, eagerBytes }, log);
    mark('pidfile, stats written');
    const tree = makeTree(rootHost, plan.processes.map((p) => p.pid), { resumeMs, eagerBytes }, handoff, opts.sibling === true);
    if (!opts.detached) {
      tree.exit = await tree.wait();
      await tree.lazyDone();
      await tree.close();
    }
    return tree;
  } catch (e) {
    plan.fds.close();
    shmem?.close();
    plan.ghosts.remove();
    if (!released) {
      for (const u of uffds) addon.restoreCloseFd(u.fd);
      addon.restoreKillTree(created.map((c) => c.tids));
    }
    await handoff?.close();
    throw wrapError(e);
  } finally {
    cg?.close();
  }
}

/** A process's cgroup set (0: none recorded, e.g. a zombie): thread_core's, else task_core's, as CRIU reads it. */
function cgSetOf(p: ProcessPlan): number {
  if (p.state === 2) return 0;
  const core = p.threads[0]!.core;
  return core.thread_core?.cg_set ?? core.tc?.cg_set ?? 0;
}

/** The set a child is in when cloned: its nearest ancestor's with one, else the dumper's (CRIU's restore_task_cgroup). */
function inheritedCgSet(p: ProcessPlan, byPid: Map<number, { plan: ProcessPlan }>, dumperSet: number): number {
  for (let q = byPid.get(p.ppid); q; q = byPid.get(q.plan.ppid)) {
    const id = cgSetOf(q.plan);
    if (id) return id;
    if (q.plan.ppid === q.plan.pid) break;
  }
  return dumperSet;
}

/**
 * stats-restore in the images dir (or the work dir given), as CRIU writes it (times in µs):
 * forking_time is the time until every process of the tree existed,
 * restore_time until the tree was released, pages_restored the pages
 * written into the processes before they ran (lazily served pages come
 * later and are not counted, as in CRIU). pages_compared and
 * pages_skipped_cow are 0: no pages are compared with a parent's at
 * restore. Informational: a read-only images dir only costs a log line.
 */
async function writeRestoreStats(imagesDir: string, t: { forkMs: number; resumeMs: number; eagerBytes: bigint }, log: (line: string) => void): Promise<void> {
  const us = (ms: number): number => Math.min(0xffffffff, Math.round(ms * 1000));
  try {
    const dir = await ImageDir.open(imagesDir);
    await dir.writeImage(KIND.stats, 'restore', [{
      restore: { pages_compared: 0n, pages_skipped_cow: 0n, forking_time: us(t.forkMs), restore_time: us(t.resumeMs), pages_restored: t.eagerBytes / PAGE },
    }]);
  } catch (e) {
    log(`stats-restore not written: ${e instanceof Error ? e.message : String(e)}`);
  }
}

/**
 * CRIU's pid file: the decimal pid, no newline, mode 0600, and an existing
 * file is an error. Written under a temporary name and hard-linked into
 * place, so a reader polling for the file never sees it empty and an
 * existing file is never replaced.
 */
function writePidfile(path: string, pid: number): void {
  const tmp = `${path}.${process.pid}.tmp`;
  try {
    writeFileSync(tmp, String(pid), { mode: 0o600 });
    linkSync(tmp, path);
  } catch (e) {
    throw new UserError(`--pidfile ${path}: ${isSystemError(e) ? e.code : String(e)}`, { cause: e });
  } finally {
    rmSync(tmp, { force: true });
  }
}

function spawn(stub: string, pid: number, newPidns: boolean, sibling = false, nsFlags = 0): number {
  try {
    return addon.restoreSpawnStub(pid, stub, newPidns, sibling, nsFlags);
  } catch (e) {
    if (isSystemError(e) && e.code === 'EEXIST') throw new UserError(`pid ${pid} is already in use: cannot recreate process ${pid} (clone3 set_tid: EEXIST)`, { cause: e });
    throw e;
  }
}

/** The stub's second entry point (lr_reaper trampoline), 16 bytes after _start. */
function stubReaperEntry(stub: string): bigint {
  const elf = readFileSync(stub);
  const entry = elf.readBigUInt64LE(24);
  return entry + 16n;
}

function wrapError(e: unknown): unknown {
  if (e instanceof UserError) return e;
  // (names its pid, call and errno itself; it has no syscall field)
  if (e instanceof InjectedSyscallError) return new UserError(`restore failed: ${e.message}`, { cause: e });
  if (isSystemError(e)) return new UserError(`restore failed: ${e.syscall}: ${e.code} (${e.message})`, { cause: e });
  if (e instanceof Error && e.name === 'Error' && /^pid \d+:/.test(e.message)) return new UserError(e.message, { cause: e });
  return e;
}

function makeTree(pid: number, pids: number[], timings: RestoreTimings, handoff: LazyHandoff | undefined, sibling: boolean): RestoredTree {
  let exitP: Promise<RestoreExit> | undefined;
  let waiter: { close(): void } | undefined;
  return {
    pid,
    pids,
    timings,
    wait() {
      if (sibling) return Promise.reject(new UserError(`pid ${pid} was restored as a sibling (--restore-sibling): our parent reaps it, not us`));
      exitP ??= new Promise<RestoreExit>((resolve, reject) => {
        waiter = new addon.RestoreChildWaiter(pid, (info: RestoreExitInfo) => {
          waiter?.close();
          if (info.error) reject(info.error);
          else resolve({ code: info.code, signal: info.signal });
        });
      });
      return exitP;
    },
    async lazyDone() {
      if (handoff) await handoff.done();
    },
    async close() {
      waiter?.close();
      await handoff?.close();
    },
  };
}
