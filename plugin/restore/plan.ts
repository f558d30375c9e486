// Reads an image directory into a RestorePlan: everything the restorer needs
// per process, checked before any process is created (unsupported VMAs or
// fds, missing or changed files, inconsistent pagemaps), so that a bad image
// fails without leaving anything behind.
import {
  PAGE, MAP_DROPPABLE, MAP_HUGETLB, MAP_LOCKED, VMA_ANON_PRIVATE, VMA_AREA_AIORING, VMA_AREA_GUARD, VMA_AREA_REGULAR, VMA_AREA_SHSTK, VMA_AREA_SOCKET, VMA_AREA_UPROBES, VMA_AREA_VDSO, VMA_AREA_VSYSCALL, VMA_AREA_VVAR, VMA_EXT_PLUGIN, VMA_FILE_PRIVATE, VMA_FILE_SHARED,
} from '../images/memory.js';
import { ImageError, UserError } from '../errors.js';
import type {
  CoreEntry,
  FdinfoEntry,
  FileEntry,
  InventoryEntry,
  MmEntry,
  PstreeEntry,
  RegFileEntry,
  SeccompEntry,
  VmaEntry,
} from '../images/index.js';
import { ImageDir, PE_LAZY, PE_PARENT, PE_PRESENT } from '../images/index.js';
import { FdRestorer, type RestoreFdOptions } from './fds/index.js';
import { GhostFiles } from './ghost.js';
import { checkRegFile } from './filecheck.js';
import type { FileValidation } from '../images/build-id.js';
import { FileLockRestorer } from './locks.js';
import { seccompModeOfCore, threadSeccomp, type ThreadSeccomp } from './seccomp.js';
import { isShmemVma, markLazyShmem, ShmemPlanner, type ShmemObjectPlan, type ShmemVmaRef } from './shmem.js';
import { planLazyShmem } from '../lazy/shmem.js';
import type { SysvAttach } from './sysvipc.js';

const FD_REG = 1;
const FD_MEMFD = 18;

/** One contiguous run of page data to copy from a pages file. */
export interface PageRun {
  vaddr: bigint;
  bytes: bigint;
  /** The pages file holding the data (a parent image's for PE_PARENT runs); undefined for PE_LAZY-only runs. */
  file: string | undefined;
  offset: bigint | undefined;
  flags: number;
}

export interface VmaPlan {
  vma: VmaEntry;
  /** Path of the mapped file for file-backed VMAs. */
  path?: string;
  /** Private anonymous, not locked/hugetlb/vdso: may be served by userfaultfd. */
  lazyEligible: boolean;
  /** Shared memory object mapped here (memfd or shared anonymous memory, plugin/restore/shmem.ts). */
  shmem?: ShmemVmaRef;
  /** Lazy restore: its object is served by the lazy-pages daemon (plugin/lazy/shmem.ts), so it is registered with userfaultfd. */
  lazyShared?: boolean;
  /** A SysV shm attach (VMA_AREA_SYSVIPC): set by plugin/restore/sysvipc.ts's planSysvAttaches. */
  sysv?: SysvAttach;
}

export interface ThreadPlan {
  tid: number;
  core: CoreEntry;
  /** Its seccomp mode and filters (plugin/restore/seccomp.ts), when it had any. */
  seccomp?: ThreadSeccomp;
}

export interface ProcessPlan {
  entry: PstreeEntry;
  pid: number;
  ppid: number;
  state: number; // 1 alive, 2 zombie, 3 stopped
  exitCode: number;
  threads: ThreadPlan[]; // leader first
  mm: MmEntry;
  vmas: VmaPlan[];
  exePath: string;
  runs: PageRun[];
  cwd: string;
  root: string;
  umask: number | undefined;
}

export interface RestorePlan {
  dir: string;
  processes: ProcessPlan[]; // pstree order: parents first
  byPid: Map<number, ProcessPlan>;
  /** Every fd of the tree (plugin/restore/fds): created once per open file description, installed per process. */
  fds: FdRestorer;
  /** Shared memory objects, each created once for the whole tree. */
  shmem: ShmemObjectPlan[];
  /** Deleted files recreated on disk until every process has opened them (plugin/restore/ghost.ts). */
  ghosts: GhostFiles;
  /** File locks taken again in their processes after the fds (filelocks.img, --file-locks). */
  locks: FileLockRestorer;
}

function regFile(files: Map<number, FileEntry>, id: number, what: string, image: string): RegFileEntry {
  const f = files.get(id);
  if (!f) throw new ImageError(image, undefined, `${what} refers to file id ${id}, which files.img does not have`);
  if (f.type !== FD_REG || !f.reg) throw new ImageError(image, undefined, `${what} refers to file id ${id} of type ${f.type}, not a regular file`);
  return f.reg;
}

export function isLazyEligible(v: VmaEntry): boolean {
  if ((v.status & VMA_AREA_REGULAR) === 0) return false;
  if ((v.status & VMA_ANON_PRIVATE) === 0) return false;
  if (v.status & (VMA_AREA_VDSO | VMA_AREA_VVAR | VMA_AREA_VSYSCALL | VMA_FILE_PRIVATE | VMA_FILE_SHARED)) return false;
  if (v.flags & (MAP_LOCKED | MAP_HUGETLB | MAP_DROPPABLE /* the kernel may drop its pages */)) return false;
  return true;
}

const UNSUPPORTED_STATUS: [number, string][] = [
  [VMA_AREA_SOCKET, 'a packet socket ring'],
  [VMA_AREA_AIORING, 'an AIO ring'],
  [VMA_AREA_SHSTK, 'a shadow stack'],
  [VMA_EXT_PLUGIN, 'a plugin-handled device mapping'],
  [VMA_AREA_UPROBES, 'uprobes'],
];

export async function loadPlan(imagesDir: string, opts: { lazy: boolean; remotePages?: boolean; checkFiles?: boolean; fileValidation?: FileValidation; fds?: Partial<RestoreFdOptions>; fileLocks?: boolean; log?: (line: string) => void; warn?: (line: string) => void }): Promise<RestorePlan> {
  // A container's files are checked by the in-task opens once its mounts exist.
  const checkFile = opts.checkFiles === false ? (): void => {} : (reg: RegFileEntry, what: string, pid: number): void => checkRegFile(reg, what, pid, opts.fileValidation);
  const dir = await ImageDir.open(imagesDir);
  const inv = await dir.inventory();
  if (!inv) throw new ImageError(`${imagesDir}/inventory.img`, undefined, 'missing inventory');
  const pstree = await dir.pstree();
  if (pstree.length === 0) throw new ImageError(`${imagesDir}/pstree.img`, undefined, 'no processes in the image');
  const files = new Map<number, FileEntry>();
  for (const f of await dir.files()) files.set(f.id, f);
  // Ghost files exist from here (their entries renamed); removed again if planning fails.
  const ghosts = await GhostFiles.create(dir, files);
  try {
    return await planTree(imagesDir, opts, dir, inv, pstree, files, ghosts, checkFile);
  } catch (e) {
    ghosts.remove();
    throw e;
  }
}

async function planTree(
  imagesDir: string, opts: Parameters<typeof loadPlan>[1],
  dir: ImageDir, inv: InventoryEntry, pstree: PstreeEntry[], files: Map<number, FileEntry>, ghosts: GhostFiles,
  checkFile: (reg: RegFileEntry, what: string, pid: number) => void,
): Promise<RestorePlan> {

  const processes: ProcessPlan[] = [];
  const byPid = new Map<number, ProcessPlan>();
  let seccompImg: { entry: SeccompEntry | undefined } | undefined;
  const fdinfoCache = new Map<number, FdinfoEntry[]>();
  const perProcessFds: { pid: number; fdinfo: FdinfoEntry[]; fdinfoImage: string }[] = [];
  const memfdRefs = new Map<number, ShmemVmaRef>();
  const shmem = new ShmemPlanner(dir, files);
  for (const [i, e] of pstree.entries()) {
    if (i === 0 && e.ppid !== 0) throw new ImageError(`${imagesDir}/pstree.img`, undefined, `the first entry (pid ${e.pid}) is not a root (ppid ${e.ppid})`);
    if (i > 0 && !byPid.has(e.ppid)) throw new ImageError(`${imagesDir}/pstree.img`, undefined, `pid ${e.pid}: parent ${e.ppid} is not earlier in the tree`);
    const threads = e.threads.length ? e.threads : [e.pid];
    if (threads[0] !== e.pid) throw new ImageError(`${imagesDir}/pstree.img`, undefined, `pid ${e.pid}: first thread is ${threads[0]}`);
    const cores: ThreadPlan[] = [];
    for (const tid of threads) cores.push({ tid, core: await dir.core(tid) });
    const leaderCore = cores[0]!.core;
    const tc = leaderCore.tc;
    if (!tc) throw new ImageError(`${imagesDir}/core-${e.pid}.img`, undefined, 'the leader core has no task_core');
    if (leaderCore.mtype !== 1) throw new ImageError(`${imagesDir}/core-${e.pid}.img`, undefined, `architecture ${leaderCore.mtype} is not x86_64`);
    const state = tc.task_state;
    if (state !== 1 && state !== 2 && state !== 3) throw new ImageError(`${imagesDir}/core-${e.pid}.img`, undefined, `task_state ${state} is not 1, 2 or 3`);
    if (state === 2) {
      const p: ProcessPlan = {
        entry: e, pid: e.pid, ppid: e.ppid, state, exitCode: tc.exit_code, threads: cores.slice(0, 1),
        mm: undefined as unknown as MmEntry, vmas: [], exePath: '', runs: [], cwd: '/', root: '/', umask: undefined,
      };
      processes.push(p);
      byPid.set(e.pid, p);
      continue;
    }
    for (const t of cores) {
      if (!t.core.thread_info) throw new ImageError(`${imagesDir}/core-${t.tid}.img`, undefined, 'no x86 thread_info');
      if (!t.core.thread_core) throw new ImageError(`${imagesDir}/core-${t.tid}.img`, undefined, 'no thread_core');
    }
    // CRIU writes seccomp.img for every dump (empty when no thread has filters).
    for (const [k, t] of cores.entries()) {
      if (seccompModeOfCore(t.core, k === 0).mode === 0) continue;
      seccompImg ??= { entry: await dir.seccomp() };
      const sc = threadSeccomp(imagesDir, t.core, t.tid, k === 0, seccompImg.entry);
      if (sc) t.seccomp = sc;
    }
    const mmImage = `${imagesDir}/mm-${e.pid}.img`;
    const mm = await dir.mm(e.pid);
    const exe = regFile(files, mm.exe_file_id, 'exe_file_id', mmImage);
    checkFile(exe, 'executable', e.pid);

    const vmas: VmaPlan[] = [];
    for (const v of mm.vmas) {
      if (v.status === VMA_AREA_GUARD) continue;
      for (const [bit, what] of UNSUPPORTED_STATUS) {
        if (v.status & bit) throw new UserError(`pid ${e.pid}: VMA 0x${v.start.toString(16)}-0x${v.end.toString(16)} is ${what}, which restore does not support`);
      }
      if (v.flags & MAP_HUGETLB) throw new UserError(`pid ${e.pid}: VMA 0x${v.start.toString(16)} is a hugetlb mapping, which restore does not support`);
      if (v.start % PAGE !== 0n || v.end % PAGE !== 0n || v.end <= v.start) throw new ImageError(mmImage, undefined, `VMA 0x${v.start.toString(16)}-0x${v.end.toString(16)} is not page aligned`);
      const plan: VmaPlan = { vma: v, lazyEligible: isLazyEligible(v) };
      if (isShmemVma(v)) {
        plan.shmem = await shmem.vma(e.pid, v, mmImage);
      } else if (v.status & (VMA_FILE_PRIVATE | VMA_FILE_SHARED)) {
        const reg = regFile(files, Number(v.shmid), `VMA 0x${v.start.toString(16)}`, mmImage);
        checkFile(reg, 'mapped file', e.pid);
        plan.path = reg.name;
      }
      vmas.push(plan);
    }
    for (let k = 1; k < vmas.length; k++) {
      if (vmas[k]!.vma.start < vmas[k - 1]!.vma.end) throw new ImageError(mmImage, undefined, `VMAs overlap at 0x${vmas[k]!.vma.start.toString(16)}`);
    }

    // Pagemap: every run must lie in a private VMA; PE_PARENT runs are
    // resolved through the parent chain to their own pages files.
    const pm = await dir.pagemap(e.pid);
    const pmImage = pm.file;
    const runs: PageRun[] = [];
    let vi = 0;
    for await (const batch of pm.batches()) {
      for (const ent of batch) {
        const flags = ent.flags;
        const start = ent.vaddr;
        const end = ent.end;
        if ((flags & PE_PRESENT) === 0 && (flags & PE_PARENT) === 0 && !(opts.lazy && opts.remotePages)) {
          throw new UserError(`pid ${e.pid}: ${pmImage}: pages at 0x${start.toString(16)} are not in the images (dumped with --lazy-pages); they can only be restored lazily from a page server`);
        }
        let a = start;
        while (a < end) {
          while (vi < vmas.length && vmas[vi]!.vma.end <= a) vi++;
          const v = vmas[vi];
          if (!v || v.vma.start > a) throw new ImageError(pmImage, ent.imageOffset, `page 0x${a.toString(16)} is outside every VMA`);
          if (!(v.vma.status & (VMA_ANON_PRIVATE | VMA_FILE_PRIVATE)) || (v.vma.status & VMA_AREA_REGULAR) === 0) {
            throw new ImageError(pmImage, ent.imageOffset, `page 0x${a.toString(16)} is in a non-private VMA`);
          }
          a = v.vma.end < end ? v.vma.end : end;
        }
        if (flags & PE_PRESENT) {
          runs.push({ vaddr: start, bytes: end - start, file: pm.pagesPath, offset: BigInt(ent.pagesOffset!), flags });
        } else if (flags & PE_PARENT) {
          // Unchanged pages of an incremental dump are plain data in a parent
          // pages file: like CRIU's writer we flag them PE_PARENT only, but
          // unlike CRIU's restore we leave those in lazy-eligible VMAs to the
          // lazy daemon too (its plan serves them from the parent files).
          for (const piece of await dir.resolvePages(e.pid, start, ent.nrPages)) {
            let a = piece.vaddr;
            const pend = a + BigInt(piece.nrPages) * PAGE;
            while (a < pend) {
              const v = vmas.find((x) => x.vma.start <= a && a < x.vma.end)!;
              const b = v.vma.end < pend ? v.vma.end : pend;
              runs.push({
                vaddr: a, bytes: b - a, file: piece.file, offset: BigInt(piece.offset) + (a - piece.vaddr),
                flags: (flags & PE_LAZY) | (v.lazyEligible ? PE_LAZY : 0),
              });
              a = b;
            }
          }
        } else {
          runs.push({ vaddr: start, bytes: end - start, file: undefined, offset: undefined, flags });
        }
      }
    }

    // Files.
    const ids = await dir.ids(e.pid);
    // CRIU writes timens-0.img for every dump: the offsets of the dumping
    // tool's time namespace. A tree in that same namespace needs nothing; one
    // in a namespace of its own would run with the wrong clocks here.
    if (ids.time_ns_id !== undefined && ids.time_ns_id !== 0 && inv.root_ids?.time_ns_id !== undefined && ids.time_ns_id !== inv.root_ids.time_ns_id) {
      throw new UserError(`pid ${e.pid}: ${imagesDir}/ids-${e.pid}.img: the process was in a time namespace of its own (time_ns_id ${ids.time_ns_id}, the dump's was ${inv.root_ids.time_ns_id}), which restore does not recreate`);
    }
    let fdinfo = fdinfoCache.get(ids.files_id);
    if (!fdinfo) {
      fdinfo = await dir.fdinfo(ids.files_id);
      fdinfoCache.set(ids.files_id, fdinfo);
    }
    perProcessFds.push({ pid: e.pid, fdinfo, fdinfoImage: `${imagesDir}/fdinfo-${ids.files_id}.img` });
    // Open memfds: their objects are planned with the mappings' (plugin/restore/shmem.ts).
    for (const fi of fdinfo) {
      const f = files.get(fi.id);
      if (f?.type === FD_MEMFD && f.memfd && !memfdRefs.has(fi.id)) memfdRefs.set(fi.id, await shmem.fd(e.pid, fi.fd, f));
    }
    const fs = await dir.fs(e.pid);
    const fsImage = `${imagesDir}/fs-${e.pid}.img`;
    const cwd = fs ? regFile(files, fs.cwd_id, 'cwd_id', fsImage).name : '/';
    const root = fs ? regFile(files, fs.root_id, 'root_id', fsImage).name : '/';

    const p: ProcessPlan = {
      entry: e, pid: e.pid, ppid: e.ppid, state, exitCode: tc.exit_code, threads: cores, mm, vmas,
      exePath: exe.name, runs, cwd, root, umask: fs?.umask,
    };
    processes.push(p);
    byPid.set(e.pid, p);
  }
  const fdOptions: RestoreFdOptions = {
    shellJob: opts.fds?.shellJob === true, detached: opts.fds?.detached === true,
    inheritFds: opts.fds?.inheritFds ?? new Map(), extUnixSk: opts.fds?.extUnixSk === true, tcpEstablished: opts.fds?.tcpEstablished === true,
    memfds: { refs: memfdRefs }, checkFiles: opts.checkFiles !== false, ...(opts.fileValidation ? { fileValidation: opts.fileValidation } : {}),
  };
  const fds = await FdRestorer.load(dir, files, perProcessFds, fdOptions, opts.log);
  const fdNumbers = new Map(perProcessFds.map((p) => [p.pid, p.fdinfo.map((f) => f.fd)]));
  const locks = await FileLockRestorer.load(dir, opts.fileLocks === true, (pid) => fdNumbers.get(pid), opts.warn);
  const shmemPlans = await shmem.finish();
  // Lazy restore: the objects plugin/lazy/shmem.ts picks are created empty
  // and served by the daemon, which evaluates the same function.
  if (opts.lazy) markLazyShmem(processes, shmemPlans, await planLazyShmem(dir));
  return { dir: imagesDir, processes, byPid, fds, shmem: shmemPlans, locks, ghosts };
}
