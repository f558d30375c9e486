// Writing a frozen tree's images: per process its core, ids, mm, fs,
// fdinfo, pagemap and pages (memory through plugin/dump/memory.ts), then the
// tree-wide images (inventory, pstree, files, shared memory, locks).
import type { CgroupCollector } from './cgroups.js';
import { mark } from '../phases.js';
import { existsSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import {
  ChecksumAlgorithm, ImageDir, KIND, PAGE_SIZE, PE_LAZY, TASK_ALIVE, TASK_STOPPED, encodeMessage, encodePagemapEntry, joinEntries,
  type CoreEntry, type DumpStatsEntry, type FdinfoEntry, type InventoryEntry, type MmEntry, type PagemapEntry, type PstreeEntry,
  type TaskKobjIdsEntry, type VmaEntry,
} from '../images/index.js';
import { findVdsoGadget, getSigmask, peekSiginfo } from '../inject/index.js';
import { collectProcess, collectThread, mapScratch, readRlimits, unmapScratch, type ProcessState, type ThreadState } from './collect.js';
import { vtid, type Container } from './container.js';
import { FileTable, writeFdImages, type DumpFdKind, type DumpFdOptions } from './fds/index.js';
import { uptimeMicros, type Incremental } from './incremental.js';
import { FileLockTable } from './locks.js';
import { copyMemory, type CopiedMemory, type MemoryStrategy } from './memory.js';
import { PendingWrites } from './pending-writes.js';
import { SeccompCollector } from './seccomp.js';
import type { ProcPlan } from './preflight.js';
import { nsId, readAuxv, readStatus } from './proc.js';
import { dumpIpcNamespace } from './ipc/sysvipc.js';
import { ShmemTable } from './shmem.js';
import { zombieCore } from './taskstate.js';

export interface DumpStats {
  processes: number;
  threads: number;
  /** Pages selected for dumping (present/swapped, COW'd, vDSO). */
  pagesScanned: number;
  /** Of those, all-zero pages skipped. */
  pagesZero: number;
  pagesWritten: number;
  pagesLazy: number;
  /** Unchanged pages left to the parent images (PE_PARENT). */
  pagesSkippedParent: number;
  /** Pages of shared memory objects (their sizes) and of those, the data pages written (pagemap-shmem). */
  shpagesScanned: number;
  shpagesWritten: number;
  /** Processes whose memory was copied (CRIU's page_pipes: one page pipe per process). */
  pagePipes: number;
  /** Runs of pages copied with their data (CRIU's page_pipe_bufs: the pipe buffers holding them). */
  pagePipeBufs: number;
  freezeMs: number;
  frozenMs: number;
  memdumpMs: number;
  totalMs: number;
}

const AUXV_MAX_WORDS = 44; // CRIU rejects more on x86-64

export function nowMs(): number {
  return Number(process.hrtime.bigint() / 1000n) / 1000;
}

/** A path as process `pid` sees it, reached from here (its mount namespace and root). */
export function inRoot(pid: number, path: string): string {
  return `/proc/${pid}/root${path}`;
}

function lsmType(): number {
  if (existsSync('/sys/kernel/security/apparmor')) return 2;
  if (existsSync('/sys/fs/selinux/enforce')) return 1;
  return 0;
}

/** The stats-dump entry (CRIU's DumpStatsEntry) of a dump's statistics. */
export function dumpStatsEntry(stats: DumpStats, us: (ms: number) => number): DumpStatsEntry {
  return {
    freezing_time: us(stats.freezeMs), frozen_time: us(stats.frozenMs), memdump_time: us(stats.memdumpMs),
    memwrite_time: 0, pages_scanned: BigInt(stats.pagesScanned), pages_skipped_parent: BigInt(stats.pagesSkippedParent),
    pages_written: BigInt(stats.pagesWritten), irmap_resolve: 0, pages_lazy: BigInt(stats.pagesLazy),
    page_pipes: BigInt(stats.pagePipes), page_pipe_bufs: BigInt(stats.pagePipeBufs),
    shpages_scanned: BigInt(stats.shpagesScanned), shpages_skipped_parent: 0n, shpages_written: BigInt(stats.shpagesWritten),
  };
}

/** 64 KiB: a lazily served chunk is verified in a few microseconds. */
const CHECKSUM_CHUNK = 64 * 1024;

// Images a dump writes (and checksums of its pages files): stale copies
// from an earlier dump into the same directory would be read as part of
// this one, so they go before anything is written. Other files (a recorded
// working set, which is only a prefetch hint, or the user's) stay.
const OWN_IMAGES = /^(inventory\.img|pstree\.img|files\.img|seccomp\.img|tty-info\.img|cgroup\.img|memfd\.img|pipes-data\.img|fifo-data\.img|sk-queues\.img|ipcns-(var|shm|sem|msg)-\d+\.img|filelocks\.img|stats-dump|(core|ids|mm|fs|pagemap|pages|fdinfo|lr-checksums|pagemap-shmem)-\d+\.img|tcp-stream-[0-9a-f]+\.img)$/;

export async function clearStaleImages(dir: ImageDir): Promise<void> {
  for (const name of readdirSync(dir.dir)) if (OWN_IMAGES.test(name)) rmSync(dir.path(name), { force: true });
}

export async function collectAndWrite(dir: ImageDir, plans: ProcPlan[], kinds: readonly DumpFdKind[], fdOpts: DumpFdOptions, timeoutMs: number, log: (l: string) => void,
  lazyRanges?: { pid: number; vaddr: bigint; nrPages: bigint; hostPid?: number }[], inc?: Incremental, ct?: Container, extNet = false, fileLocks = false,
  cgroups?: CgroupCollector): Promise<DumpStats> {
  // Memory copies run on a worker thread while the rest is collected: one
  // that is still running when something fails is waited for, so the caller
  // never releases the tree (or closes its files) while it is being read.
  const copies = new Set<Promise<unknown>>();
  try {
    return await collectAndWriteAll(copies, dir, plans, kinds, fdOpts, timeoutMs, log, lazyRanges, inc, ct, extNet, fileLocks, cgroups);
  } catch (e) {
    await Promise.allSettled(copies);
    throw e;
  }
}

async function collectAndWriteAll(copies: Set<Promise<unknown>>, dir: ImageDir, plans: ProcPlan[], kinds: readonly DumpFdKind[], fdOpts: DumpFdOptions, timeoutMs: number,
  log: (l: string) => void, lazyRanges?: { pid: number; vaddr: bigint; nrPages: bigint; hostPid?: number }[], inc?: Incremental, ct?: Container, extNet = false,
  fileLocks = false, cgroups?: CgroupCollector): Promise<DumpStats> {
  const dumpUptime = uptimeMicros();
  const stats: DumpStats = {
    processes: plans.length, threads: 0, pagesScanned: 0, pagesZero: 0, pagesWritten: 0, pagesLazy: 0, pagesSkippedParent: 0,
    shpagesScanned: 0, shpagesWritten: 0, pagePipes: 0, pagePipeBufs: 0, freezeMs: 0, frozenMs: 0, memdumpMs: 0, totalMs: 0,
  };
  const files = new FileTable(kinds, plans.flatMap((p) => p.fds), plans.map((p) => p.pid), fdOpts, log);
  const shmem = new ShmemTable((make) => files.addEntry(make));
  const locks = fileLocks ? new FileLockTable() : undefined;
  files.memfdEntry = (ref, id, flags, pos) => shmem.fdEntry(ref, id, flags, pos);
  const root = plans[0]!;
  let nextId = 1;
  const rootIds: TaskKobjIdsEntry = { vm_id: nextId++, files_id: nextId++, fs_id: nextId++, sighand_id: nextId++ };
  const nsIds = {
    pid_ns_id: nsId(root.pid, 'pid'), net_ns_id: nsId(root.pid, 'net'), ipc_ns_id: nsId(root.pid, 'ipc'),
    uts_ns_id: nsId(root.pid, 'uts'), mnt_ns_id: nsId(root.pid, 'mnt'), user_ns_id: nsId(root.pid, 'user'),
    cgroup_ns_id: nsId(root.pid, 'cgroup'), time_ns_id: nsId(root.pid, 'time'),
  };
  // CRIU's root_ids are the dumper's own: a restore creates the namespaces
  // in which the root differs. Outside a container we keep the root's (its
  // namespaces are the restorer's, as before), but for an IPC namespace of
  // its own: that one is dumped with its SysV objects (plugin/dump/ipc) and
  // created again by the restore, as CRIU does.
  const ownIpc = nsIds.ipc_ns_id !== nsId('self', 'ipc');
  Object.assign(rootIds, ct ? {
    // An external network namespace is not restored: the root keeps "ours".
    pid_ns_id: nsId('self', 'pid'), net_ns_id: extNet ? nsIds.net_ns_id : nsId('self', 'net'), ipc_ns_id: nsId('self', 'ipc'),
    uts_ns_id: nsId('self', 'uts'), mnt_ns_id: nsId('self', 'mnt'), user_ns_id: nsId('self', 'user'),
    cgroup_ns_id: nsId('self', 'cgroup'), time_ns_id: nsId('self', 'time'),
  } : { ...nsIds, ...(ownIpc ? { ipc_ns_id: nsId('self', 'ipc') } : {}) });
  // Pids as the tree sees itself (a container's own pid namespace).
  const vpid = (host: number): number => (ct ? ct.vpid(host) : host);

  const pstree: PstreeEntry[] = [];
  const writes = new PendingWrites();
  const seccomp = new SeccompCollector();
  let pagesId = 0;
  for (const p of plans) {
    const pid = p.pid;
    if (p.zombie) {
      // TASK_DEAD: the pstree entry and a core with the exit status, as CRIU.
      const vz = vpid(pid);
      const vs = ct ? ct.vsid(pid) : { sid: p.stat.sid, pgid: p.stat.pgid };
      pstree.push({ pid: vz, ppid: vpid(p.stat.ppid), pgid: vs.pgid, sid: vs.sid, threads: [vz] });
      writes.push(dir.writeCore(vz, zombieCore(p.stat)));
      log(`pid ${pid}: zombie, exit status 0x${p.stat.exitCode.toString(16)}`);
      continue;
    }
    const opts = { gadget: findVdsoGadget(pid), timeoutMs };
    // Memory, streamed straight into pages-<id>.img. A full copy runs on a
    // worker thread while this one collects the process's state below: the
    // injected calls only write into a page of their own (mapScratch), never
    // into memory being copied.
    pagesId++;
    const strategy: MemoryStrategy = lazyRanges ? { kind: 'lazy' } : inc ? { kind: 'incremental', inc } : { kind: 'full', checksumChunk: CHECKSUM_CHUNK };
    const tm = nowMs();
    const startCopy = (): Promise<CopiedMemory> => copyMemory(pid, dir.pagesPath(pagesId), p.vmas, strategy, opts);
    const copying = strategy.kind === 'full' ? startCopy() : undefined;
    if (copying) {
      copies.add(copying);
      copying.catch(() => undefined); // awaited below; failing meanwhile is no unhandled rejection
    }
    mark(`pid ${pid}: collect`);
    let threads: ThreadState[];
    let ps: ProcessState;
    // Registers and signal state first: the injections below restore them
    // exactly, but reading them untouched is the simplest guarantee.
    const scratch = mapScratch(pid, opts);
    let collected = false;
    try {
      threads = p.tids.map((t) => collectThread(pid, t, opts, scratch));
      mark('threads collected');
      ps = collectProcess(pid, opts, scratch);
      collected = true;
    } finally {
      // After a failure the first error is the one reported.
      try {
        unmapScratch(pid, scratch, opts);
      } catch (e) {
        if (collected) throw e;
      }
    }
    seccomp.addProcess(pid, threads.map((t) => ({ tid: t.tid, core: t.core.thread_core! })));
    // cg_set per thread (CRIU writes it in thread_core, the leader's included): plugin/dump/cgroups.ts.
    if (cgroups) for (const t of threads) t.core.thread_core!.cg_set = cgroups.threadSet(pid, t.tid);
    stats.threads += threads.length;
    mark('process collected');
    const sharedPending = peekSiginfo(pid, true).map((siginfo) => ({ siginfo }));
    const status = readStatus(pid);

    // Files: VMAs, exe, cwd, root, fds.
    const vmas: VmaEntry[] = p.vmas.map((v) => {
      if (v.shmem) return { ...v.entry, shmid: BigInt(shmem.mappingFile(v.shmem)) };
      if (!v.file) return v.entry;
      if (v.file.linked) return { ...v.entry, shmid: BigInt(files.linkedPathFile(v.file.linked.where, v.file.path, v.file.fdflags, v.file.linked.st, v.file.linked.source)) };
      if (v.file.ghost) return { ...v.entry, shmid: BigInt(files.ghostPathFile(v.file.path, v.file.fdflags, v.file.ghost.st, v.file.ghost.source)) };
      const st = statSync(inRoot(pid, v.file.path), { bigint: true });
      return { ...v.entry, shmid: BigInt(files.pathFile(v.file.path, v.file.fdflags, st, inRoot(pid, v.file.path))) };
    });
    const exeId = files.pathFile(p.exe, 0, statSync(inRoot(pid, p.exe), { bigint: true }), inRoot(pid, p.exe));
    const cwdId = files.pathFile(p.cwd, 0, statSync(inRoot(pid, p.cwd), { bigint: true }));
    const rootId = files.pathFile(p.root, 0, statSync(inRoot(pid, p.root), { bigint: true }));
    const fdinfo: FdinfoEntry[] = files.addFds(pid, p.fds, Number((status.get('Uid') ?? '0').split(/\s+/)[0]));
    locks?.add(vpid(pid), p.fds.map((f, i) => ({ fd: f.fd, id: fdinfo[i]!.id, fdinfo: f.fdinfo })));

    const ids: TaskKobjIdsEntry = { vm_id: nextId++, files_id: nextId++, fs_id: nextId++, sighand_id: nextId++, ...nsIds };
    let auxv = readAuxv(pid);
    if (auxv.length > AUXV_MAX_WORDS) auxv = auxv.slice(0, AUXV_MAX_WORDS); // drops AT_NULL first; the kernel re-adds it
    const s = p.stat;
    const mm: MmEntry = {
      mm_start_code: s.startCode, mm_end_code: s.endCode, mm_start_data: s.startData, mm_end_data: s.endData,
      mm_start_stack: s.startStack, mm_start_brk: s.startBrk, mm_brk: ps.brk, mm_arg_start: s.argStart,
      mm_arg_end: s.argEnd, mm_env_start: s.envStart, mm_env_end: s.envEnd, exe_file_id: exeId,
      mm_saved_auxv: auxv, vmas, dumpable: ps.dumpable, aios: [], thp_disabled: ps.thpDisabled,
    };

    const leader = threads[0]!;
    const rl = readRlimits(pid);
    const personality = parseInt(readFileSync(`/proc/${pid}/personality`, 'utf8').trim(), 16);
    const leaderCore: CoreEntry = {
      ...leader.core,
      tc: {
        task_state: p.stopSignal !== undefined ? TASK_STOPPED : TASK_ALIVE, exit_code: 0, personality, flags: s.flags, blk_sigset: getSigmask(pid), comm: s.comm,
        timers: { ...ps.itimers, posix: ps.posixTimers }, rlimits: { rlimits: rl }, signals_s: { signals: sharedPending },
        loginuid: Number(readFileSync(`/proc/${pid}/loginuid`, 'utf8').trim()),
        oom_score_adj: Number(readFileSync(`/proc/${pid}/oom_score_adj`, 'utf8').trim()),
        sigactions: ps.sigactions, child_subreaper: ps.childSubreaper,
        ...(p.stopSignal !== undefined ? { stop_signo: p.stopSignal } : {}),
      },
    };

    // The images that do not depend on the memory, written while it is copied.
    const vs = ct ? ct.vsid(pid) : { sid: s.sid, pgid: s.pgid };
    const vtids = ct ? p.tids.map((t) => vtid(pid, t)) : p.tids;
    const vp = vpid(pid);
    pstree.push({ pid: vp, ppid: pid === root.pid ? 0 : vpid(s.ppid), pgid: vs.pgid, sid: vs.sid, threads: vtids });
    writes.push(
      dir.writeCore(vp, leaderCore),
      ...threads.slice(1).map((t, i) => dir.writeCore(vtids[i + 1]!, t.core)),
      dir.writeIds(vp, ids),
      dir.writeMm(vp, mm),
      dir.writeFs(vp, { cwd_id: cwdId, root_id: rootId, umask: parseInt(status.get('Umask') ?? '22', 8) }),
    );
    if (fdinfo.length) writes.push(dir.writeFdinfo(ids.files_id, fdinfo));
    mark('files, mm, core planned');
    const copied = await (copying ?? startCopy());
    if (copying) copies.delete(copying);
    const runs = copied.runs;
    if (lazyRanges) {
      const imagePid = ct ? ct.vpid(pid) : pid;
      for (const x of runs) if (x.lazyOnly) lazyRanges.push({ pid: imagePid, vaddr: x.vaddr, nrPages: BigInt(x.nPages), ...(imagePid !== pid ? { hostPid: pid } : {}) });
    }
    stats.pagesScanned += copied.scanned;
    stats.pagesZero += copied.zero;
    stats.pagesWritten += copied.bytes / PAGE_SIZE;
    stats.memdumpMs += nowMs() - tm;
    mark('memory copied');
    stats.pagePipes += 1;
    stats.pagePipeBufs += runs.filter((r) => !r.lazyOnly).length;
    const entries: PagemapEntry[] = runs.map((r) => {
      const flags = r.lazyOnly ? PE_LAZY : copied.regions[r.region]!.peFlags;
      if (flags & PE_LAZY) stats.pagesLazy += r.nPages;
      return { vaddr: r.vaddr, compat_nr_pages: r.nPages, flags, nr_pages: BigInt(r.nPages) };
    });
    const sums = copied.checksums;
    const parentEntries = copied.parent;
    // lr-checksums-<id>.img: CRC32C per 64 KiB chunk, checked at restore (plugin/integrity);
    // computed while copying when one call wrote the whole file, else read back.
    writes.push(sums
      ? dir.writeChecksums({ pages_id: pagesId, chunk_size: CHECKSUM_CHUNK, algorithm: ChecksumAlgorithm.CRC32C, file_size: BigInt(sums.bytes), checksums: Array.from(sums.checksums) })
      : dir.checksumPages(pagesId, CHECKSUM_CHUNK));
    if (parentEntries.length) {
      entries.push(...parentEntries);
      entries.sort((a, b) => (a.vaddr < b.vaddr ? -1 : a.vaddr > b.vaddr ? 1 : 0));
    }
    const pagemap = joinEntries(KIND.pagemap, [
      { payload: encodeMessage('pagemap_head', { pages_id: pagesId }) },
      ...entries.map((e) => ({ payload: encodePagemapEntry(e) })),
    ]);

    writes.push(Promise.resolve().then(() => writeFileSync(dir.pathOf(KIND.pagemap, vp), pagemap)));
    log(`pid ${pid}: ${threads.length} threads, ${vmas.length} VMAs, ${fdinfo.length} fds, ${entries.length} pagemap entries`);
  }
  // Shared memory objects: contents once per object, after every process is known.
  const sh = await shmem.write(dir, () => ++pagesId);
  for (const id of sh.pagesIds) writes.push(dir.checksumPages(id, CHECKSUM_CHUNK));
  stats.shpagesScanned = sh.stats.scanned;
  stats.shpagesWritten = sh.stats.written;
  if (shmem.size) log(`${shmem.size} shared memory objects, ${sh.stats.written} pages written`);
  if (ownIpc) {
    const ipc = await dumpIpcNamespace(dir, root.pid, nsIds.ipc_ns_id, () => ++pagesId);
    for (const id of ipc.pagesIds) writes.push(dir.checksumPages(id, CHECKSUM_CHUNK));
    stats.shpagesWritten += ipc.shmPages;
    log(`IPC namespace ipc:[${nsIds.ipc_ns_id}]: ${ipc.shm} SysV shm segments (${ipc.shmPages} pages), ${ipc.sem} semaphore sets, ${ipc.msg} message queues`);
  }
  const inventory: InventoryEntry = {
    img_version: 2, fdinfo_per_id: true, root_ids: rootIds, ns_per_id: true, lsmtype: lsmType(),
    network_lock_method: 0, plugins_entry: { plugins: [] }, dump_uptime: dumpUptime,
    ...(cgroups ? { root_cg_set: cgroups.dumperSet } : {}),
  };
  writes.push(dir.writeInventory(inventory), dir.writePstree(pstree), dir.writeFiles(files.files), writeFdImages(kinds, dir), files.ghosts.write(dir), seccomp.write(dir));
  if (seccomp.filtered) log(`${seccomp.filtered} threads in seccomp mode, ${seccomp.entry().seccomp_filters.length} filters in seccomp.img`);
  if (ct) writes.push(ct.write(dir, { mnt: nsIds.mnt_ns_id, uts: nsIds.uts_ns_id, net: nsIds.net_ns_id }));
  if (cgroups) writes.push(cgroups.write(dir));
  if (files.ttyInfos.length) writes.push(dir.writeImage(KIND.ttyInfo, undefined, files.ttyInfos));
  if (locks) {
    writes.push(locks.write(dir));
    if (locks.entries.length) log(`${locks.entries.length} file locks`);
  }
  mark('image writes issued');
  await writes.all();
  mark('image writes done');
  if (inc) stats.pagesSkippedParent = inc.pagesSkippedParent;
  return stats;
}
