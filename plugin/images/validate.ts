// Whole-checkpoint consistency check: the rules an image set must satisfy
// for CRIU 4.2 (and our restore) to accept it — IMAGE-FORMAT §3.15 and §7.1.
// Every problem names the file it is about; nothing here stops at the first.
import { ImageError } from '../errors.js';
import { ImageDir } from './imagedir.js';
import { KIND, imageFileName } from './magic.js';
import { PAGE } from './memory.js';
import {
  FdType, TASK_ALIVE, TASK_DEAD, TASK_STOPPED, type CoreEntry, type FileEntry, type MmEntry, type PstreeEntry, type VmaEntry,
} from './types.js';
import {
  PE_PRESENT, VMA_AREA_AIORING, VMA_AREA_GUARD, VMA_AREA_MEMFD, VMA_AREA_REGULAR, VMA_AREA_SHSTK, VMA_ANON_PRIVATE,
  VMA_FILE_PRIVATE, VMA_FILE_SHARED,
} from './memory.js';

export interface ImageProblem {
  /** File name inside the image directory. */
  file: string;
  message: string;
}

/** x86-64 TASK_SIZE: private VMAs for page data lie below it. */
const TASK_SIZE = 0x7ffffffff000n;

/** Sub-message field of file_entry for each fd type. */
const SUBFIELD: Record<number, keyof FileEntry> = {
  [FdType.REG]: 'reg', [FdType.INETSK]: 'isk', [FdType.NS]: 'nsf', [FdType.PACKETSK]: 'psk', [FdType.NETLINKSK]: 'nlsk',
  [FdType.EVENTFD]: 'efd', [FdType.EVENTPOLL]: 'epfd', [FdType.SIGNALFD]: 'sgfd', [FdType.TUNF]: 'tunf', [FdType.TIMERFD]: 'tfd',
  [FdType.INOTIFY]: 'ify', [FdType.FANOTIFY]: 'ffy', [FdType.EXT]: 'ext', [FdType.UNIXSK]: 'usk', [FdType.FIFO]: 'fifo',
  [FdType.PIPE]: 'pipe', [FdType.TTY]: 'tty', [FdType.MEMFD]: 'memfd', [FdType.BPFMAP]: 'bpf', [FdType.PIDFD]: 'pidfd',
};

/** XSAVE component arrays and the counts a present component must have (§3.4). */
const XSAVE_COUNTS: [string, number][] = [
  ['ymmh_space', 64], ['bndreg_state', 8], ['bndcsr_state', 8], ['opmask_reg', 8], ['zmm_upper', 64], ['hi16_zmm', 128], ['pkru', 2],
];

function isPrivateVma(v: VmaEntry): boolean {
  if (v.status & (VMA_AREA_SHSTK | VMA_AREA_AIORING)) return true;
  return (v.status & VMA_AREA_REGULAR) !== 0 && (v.status & (VMA_ANON_PRIVATE | VMA_FILE_PRIVATE)) !== 0 && v.end <= TASK_SIZE;
}

class Checker {
  readonly problems: ImageProblem[] = [];
  constructor(readonly img: ImageDir) {}

  add(file: string, message: string): void {
    this.problems.push({ file, message });
  }

  /** Runs `fn`; an ImageError becomes a problem on `file` (its message already names the file). */
  async guard<T>(file: string, fn: () => Promise<T>): Promise<T | undefined> {
    try {
      return await fn();
    } catch (e) {
      if (!(e instanceof ImageError)) throw e;
      // The problem already names the file: keep the rest ("at offset N: …").
      this.add(file, e.message.startsWith(e.file) ? e.message.slice(e.file.length).replace(/^:? /, '') : e.message);
      return undefined;
    }
  }
}

function checkCore(c: Checker, file: string, core: CoreEntry, isLeader: boolean, p: PstreeEntry, leaderHasCreds: boolean | undefined): void {
  if (core.mtype !== 1) c.add(file, `mtype ${core.mtype} is not X86_64 (1)`);
  if (isLeader) {
    if (!core.tc) {
      c.add(file, 'leader core has no tc (task_core_entry)');
      return;
    }
    const st = core.tc.task_state;
    if (st !== TASK_ALIVE && st !== TASK_DEAD && st !== TASK_STOPPED) c.add(file, `task_state ${st} is not 1 (alive), 2 (zombie) or 3 (stopped)`);
    if (st === TASK_DEAD) {
      if (p.threads.length !== 1) c.add(file, `zombie has ${p.threads.length} threads (must be 1)`);
      return;
    }
    const n = core.tc.sigactions.length;
    if (n !== 0 && n !== 62) c.add(file, `${n} sigactions (must be 62 or none)`);
  } else {
    if (core.tc) c.add(file, 'non-leader thread has tc ("Thread has optional fields present")');
    if (core.ids) c.add(file, 'non-leader thread has ids');
  }
  if (!core.thread_info) c.add(file, 'live thread has no thread_info (registers)');
  if (!core.thread_core) {
    c.add(file, 'live thread has no thread_core');
  } else if (leaderHasCreds && !core.thread_core.creds) {
    c.add(file, 'thread has no creds although the leader has');
  }
  const fp = core.thread_info?.fpregs;
  if (fp) {
    if (fp.st_space.length !== 32) c.add(file, `fpregs.st_space has ${fp.st_space.length} words (must be 32)`);
    if (fp.xmm_space.length !== 64) c.add(file, `fpregs.xmm_space has ${fp.xmm_space.length} words (must be 64)`);
    const xs = fp.xsave as unknown as Record<string, unknown[]> | undefined;
    if (xs) {
      for (const [name, count] of XSAVE_COUNTS) {
        const len = xs[name]?.length ?? 0;
        if (len && len < count) c.add(file, `xsave.${name} has ${len} elements (a present component needs ${count})`);
      }
    }
  }
  for (const q of [core.tc?.signals_s, core.thread_core?.signals_p]) {
    for (const s of q?.signals ?? []) if (s.siginfo.length !== 128) c.add(file, `queued siginfo of ${s.siginfo.length} bytes (must be 128)`);
  }
}

function checkMm(c: Checker, file: string, mm: MmEntry, files: Map<number, FileEntry>): void {
  if (mm.mm_saved_auxv.length > 44) c.add(file, `mm_saved_auxv has ${mm.mm_saved_auxv.length} words (at most 44)`);
  if (mm.mm_saved_auxv.length % 2) c.add(file, 'mm_saved_auxv has an odd number of words');
  const exe = files.get(mm.exe_file_id);
  if (!exe) c.add(file, `exe_file_id ${mm.exe_file_id} has no entry in files.img`);
  else if (exe.type !== FdType.REG) c.add(file, `exe_file_id ${mm.exe_file_id} is not a REG file`);
  let prevEnd = 0n;
  let sawGuard = false;
  for (const v of mm.vmas) {
    const at = `vma 0x${v.start.toString(16)}-0x${v.end.toString(16)}`;
    if (v.start % PAGE || v.end % PAGE || v.end <= v.start) c.add(file, `${at}: not a page-aligned non-empty range`);
    if (v.status === VMA_AREA_GUARD) {
      sawGuard = true;
      continue;
    }
    if (sawGuard) c.add(file, `${at}: real VMA after a guard pseudo-VMA (guards come last)`);
    if (v.start < prevEnd) c.add(file, `${at}: overlaps or precedes the previous VMA`);
    prevEnd = v.end;
    if (v.status & (VMA_FILE_PRIVATE | VMA_FILE_SHARED) && !(v.status & VMA_AREA_MEMFD) && !files.has(Number(v.shmid))) {
      c.add(file, `${at}: file id ${v.shmid} has no entry in files.img`);
    }
  }
}

/**
 * Checks an image directory. Returns the problems found (empty = consistent).
 * Only I/O failures other than bad images throw.
 */
export async function checkImageSet(dir: string | ImageDir): Promise<ImageProblem[]> {
  const img = typeof dir === 'string' ? await ImageDir.open(dir) : dir;
  const c = new Checker(img);
  const inv = await c.guard('inventory.img', () => img.inventory());
  if (inv) {
    if (inv.img_version !== 2) c.add('inventory.img', `img_version ${inv.img_version} (must be 2)`);
    if (inv.fdinfo_per_id !== true) c.add('inventory.img', 'fdinfo_per_id is not true ("Too old image")');
    if (!inv.root_ids) c.add('inventory.img', 'root_ids missing ("No kIDs provided")');
  }
  const tree = (await c.guard('pstree.img', () => img.pstree())) ?? [];
  if (!tree.length) c.add('pstree.img', 'no processes');
  const files = (await c.guard('files.img', () => img.files())) ?? [];
  const byId = new Map<number, FileEntry>();
  for (const f of files) {
    if (byId.has(f.id)) c.add('files.img', `file id ${f.id} appears twice`);
    byId.set(f.id, f);
    const sub = SUBFIELD[f.type];
    const inner = sub ? (f[sub] as { id?: number } | undefined) : undefined;
    if (!inner) c.add('files.img', `file id ${f.id}: type ${f.type} without its ${sub ?? 'sub'}-message`);
    else if (inner.id !== f.id) c.add('files.img', `file id ${f.id}: inner id ${inner.id} differs ("ID mismatch")`);
    if (f.reg && !f.reg.name.startsWith('/') && !f.reg.ext) c.add('files.img', `file id ${f.id}: name ${JSON.stringify(f.reg.name)} is not absolute`);
  }
  const seen = new Set<number>();
  const fdinfoChecked = new Set<number>();
  let roots = 0;
  for (const p of tree) {
    const pf = imageFileName(KIND.pstree);
    if (seen.has(p.pid)) c.add(pf, `pid ${p.pid} appears twice`);
    if (p.ppid === 0) roots++;
    else if (!seen.has(p.ppid)) c.add(pf, `pid ${p.pid}: parent ${p.ppid} does not appear before it`);
    seen.add(p.pid);
    if (p.threads[0] !== p.pid) c.add(pf, `pid ${p.pid}: first thread is ${p.threads[0] ?? 'missing'} (must be the pid)`);

    const leaderFile = imageFileName(KIND.core, p.pid);
    const leader = await c.guard(leaderFile, () => img.core(p.pid));
    if (leader) checkCore(c, leaderFile, leader, true, p, undefined);
    const state = leader?.tc?.task_state;
    if (state === TASK_DEAD) continue;
    const leaderHasCreds = leader?.thread_core?.creds !== undefined;
    for (const tid of p.threads.slice(1)) {
      const f = imageFileName(KIND.core, tid);
      const core = await c.guard(f, () => img.core(tid));
      if (core) checkCore(c, f, core, false, p, leaderHasCreds);
    }
    const idsFile = imageFileName(KIND.ids, p.pid);
    const ids = await c.guard(idsFile, () => img.ids(p.pid));
    if (ids && p.ppid === 0 && inv?.root_ids && ids.files_id === inv.root_ids.files_id) {
      c.add(idsFile, `root task's files_id ${ids.files_id} equals inventory root_ids.files_id`);
    }
    if (ids && !fdinfoChecked.has(ids.files_id)) {
      fdinfoChecked.add(ids.files_id);
      const ff = imageFileName(KIND.fdinfo, ids.files_id);
      for (const fd of (await c.guard(ff, () => img.fdinfo(ids.files_id))) ?? []) {
        const f = byId.get(fd.id);
        if (!f) c.add(ff, `fd ${fd.fd}: file id ${fd.id} has no entry in files.img`);
        else if (f.type !== fd.type) c.add(ff, `fd ${fd.fd}: type ${fd.type} differs from files.img type ${f.type}`);
      }
    }
    const fsFile = imageFileName(KIND.fs, p.pid);
    const fsE = await c.guard(fsFile, () => img.fs(p.pid));
    if (fsE) {
      for (const [what, id] of [['cwd_id', fsE.cwd_id], ['root_id', fsE.root_id]] as const) {
        const f = byId.get(id);
        if (!f) c.add(fsFile, `${what} ${id} has no entry in files.img`);
        else if (f.type !== FdType.REG) c.add(fsFile, `${what} ${id} is not a REG file`);
      }
    }
    const mmFile = imageFileName(KIND.mm, p.pid);
    const mm = await c.guard(mmFile, () => img.mm(p.pid));
    if (mm) checkMm(c, mmFile, mm, byId);
    const pmFile = imageFileName(KIND.pagemap, p.pid);
    if (!(await img.hasPagemap(p.pid))) {
      c.add(pmFile, 'missing (CRIU refuses to restore a live task without a pagemap)');
      continue;
    }
    const vmas = (mm?.vmas ?? []).filter(isPrivateVma).sort((a, b) => (a.start < b.start ? -1 : a.start > b.start ? 1 : 0));
    await c.guard(pmFile, async () => {
      const reader = await img.pagemap(p.pid);
      let vi = 0;
      for await (const batch of reader.batches()) {
        for (const r of batch) {
          if (!mm || !(r.flags & PE_PRESENT)) continue;
          // Each page must lie in a private VMA; entries may span adjacent ones.
          let cur = r.vaddr;
          while (vi < vmas.length && vmas[vi]!.end <= cur) vi++;
          for (let j = vi; cur < r.end; j++) {
            const v = vmas[j];
            if (!v || v.start > cur) {
              c.add(pmFile, `present page at 0x${cur.toString(16)} (entry at offset ${r.imageOffset}) is outside every private VMA`);
              break;
            }
            cur = v.end < r.end ? v.end : r.end;
          }
        }
      }
    });
  }
  if (tree.length && roots !== 1) c.add('pstree.img', `${roots} root processes (ppid 0); must be exactly 1`);
  return c.problems;
}
