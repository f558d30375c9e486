// Checkpoint summary (what `lazy-restore inspect` prints, in the spirit of
// checkpointctl): process tree, per-process VMAs with their files, memory
// split into dumped / lazy / zero / parent bytes, open files, cwd and root,
// and our own working-set and checksum images.
import { ImageError } from '../errors.js';
import { ImageDir } from './imagedir.js';
import { KIND } from './magic.js';
import { checkImageSet, type ImageProblem } from './validate.js';
import {
  FdType, TASK_ALIVE, TASK_DEAD, TASK_STOPPED, type FileEntry, type VmaEntry,
} from './types.js';
import {
  PAGE_SIZE, MAP_ANONYMOUS, MAP_GROWSDOWN, MAP_HUGETLB, MAP_LOCKED, MAP_PRIVATE, MAP_SHARED, PE_LAZY, PE_PARENT, PE_PRESENT,
  VMA_AREA_AIORING, VMA_AREA_GUARD, VMA_AREA_HEAP, VMA_AREA_MEMFD, VMA_AREA_REGULAR, VMA_AREA_SHSTK, VMA_AREA_SOCKET,
  VMA_AREA_SYSVIPC, VMA_AREA_UPROBES, VMA_AREA_VDSO, VMA_AREA_VSYSCALL, VMA_AREA_VVAR, VMA_ANON_PRIVATE,
  VMA_ANON_SHARED, VMA_FILE_PRIVATE, VMA_FILE_SHARED,
} from './memory.js';

/** Byte counts of one VMA or process. */
export interface MemoryCounts {
  /** Bytes mapped (VMA sizes). */
  mapped: number;
  /** Bytes stored in the pages file (PE_PRESENT). */
  dumped: number;
  /** Bytes a lazy restore leaves to userfaultfd (PE_LAZY, stored or not). */
  lazy: number;
  /** PE_LAZY bytes not stored locally (dump --lazy-pages: need a page server). */
  remote: number;
  /** Bytes of lazy-eligible VMAs that no pagemap entry covers: zero-filled on fault. */
  zero: number;
  /** Bytes whose data is in the parent image (PE_PARENT). */
  parent: number;
}

export interface VmaSummary {
  start: bigint;
  end: bigint;
  /** "rwxp"-style protection, p/s for private/shared. */
  prot: string;
  flags: number;
  status: number;
  statusNames: string[];
  /** File path, or a pseudo name ([heap], [stack], [vdso], [anon], …). */
  name: string;
  lazyEligible: boolean;
  memory: MemoryCounts;
}

export interface FdSummary {
  fd: number;
  type: string;
  /** Path or description (pipe:[ino], …). */
  target: string;
  cloexec: boolean;
}

export interface ProcessSummary {
  pid: number;
  ppid: number;
  pgid: number;
  sid: number;
  threads: number[];
  comm: string;
  state: string;
  /** Depth in the process tree (root = 0). */
  depth: number;
  exe?: string;
  cwd?: string;
  root?: string;
  vmas: VmaSummary[];
  memory: MemoryCounts;
  /** Pagemap bytes outside every VMA (should be 0). */
  outsideVmas: number;
  files: FdSummary[];
  workingSet?: { ranges: number; pages: number };
  /** Problems met while summarising this process (also among CheckpointSummary.problems). */
  problems: string[];
}

export interface CheckpointSummary {
  dir: string;
  imgVersion?: number;
  parent?: string;
  processes: ProcessSummary[];
  /** Consistency problems (IMAGE-FORMAT §7.1), each naming its file; empty when none. */
  problems: ImageProblem[];
  /** Pages files with a lr-checksums image: pages_id → chunk count. */
  checksums: { pagesId: number; chunks: number; chunkSize: number }[];
  memory: MemoryCounts;
}

const zeroCounts = (): MemoryCounts => ({ mapped: 0, dumped: 0, lazy: 0, remote: 0, zero: 0, parent: 0 });

function addCounts(a: MemoryCounts, b: MemoryCounts): void {
  a.mapped += b.mapped; a.dumped += b.dumped; a.lazy += b.lazy; a.remote += b.remote; a.zero += b.zero; a.parent += b.parent;
}

const STATUS_NAMES: [number, string][] = [
  [VMA_AREA_REGULAR, 'REGULAR'], [0x2, 'STACK'], [VMA_AREA_VSYSCALL, 'VSYSCALL'], [VMA_AREA_VDSO, 'VDSO'],
  [VMA_AREA_HEAP, 'HEAP'], [VMA_FILE_PRIVATE, 'FILE_PRIVATE'], [VMA_FILE_SHARED, 'FILE_SHARED'],
  [VMA_ANON_SHARED, 'ANON_SHARED'], [VMA_ANON_PRIVATE, 'ANON_PRIVATE'], [VMA_AREA_SYSVIPC, 'SYSVIPC'],
  [VMA_AREA_SOCKET, 'SOCKET'], [VMA_AREA_VVAR, 'VVAR'], [VMA_AREA_AIORING, 'AIORING'], [VMA_AREA_MEMFD, 'MEMFD'],
  [VMA_AREA_SHSTK, 'SHSTK'], [VMA_AREA_GUARD, 'GUARD'], [VMA_AREA_UPROBES, 'UPROBES'],
];

export function vmaStatusNames(status: number): string[] {
  const out = STATUS_NAMES.filter(([bit]) => status & bit).map(([, n]) => n);
  const rest = (status & ~STATUS_NAMES.reduce((m, [bit]) => m | bit, 0)) >>> 0;
  if (rest) out.push(`0x${rest.toString(16)}`);
  return out;
}

/** Would a lazy restore register this VMA with userfaultfd (IMAGE-FORMAT §4.3)? */
export function isLazyEligible(v: VmaEntry): boolean {
  const special = VMA_AREA_VDSO | VMA_AREA_VVAR | VMA_AREA_VSYSCALL | VMA_AREA_AIORING | VMA_AREA_SYSVIPC | VMA_AREA_SOCKET
    | VMA_AREA_GUARD | VMA_AREA_SHSTK | VMA_AREA_UPROBES;
  return (v.status & VMA_AREA_REGULAR) !== 0 && (v.status & VMA_ANON_PRIVATE) !== 0 && (v.status & special) === 0
    && (v.flags & MAP_ANONYMOUS) !== 0 && (v.flags & MAP_PRIVATE) !== 0 && (v.flags & MAP_SHARED) === 0
    && (v.flags & (MAP_LOCKED | MAP_HUGETLB)) === 0;
}

function protString(v: VmaEntry): string {
  return (v.prot & 1 ? 'r' : '-') + (v.prot & 2 ? 'w' : '-') + (v.prot & 4 ? 'x' : '-') + (v.flags & MAP_SHARED ? 's' : 'p');
}

const TYPE_NAMES = new Map<number, string>(Object.entries(FdType).map(([k, v]) => [v, k]));

function describeFile(f: FileEntry | undefined, byId: Map<number, FileEntry>, id: number): string {
  if (!f) return `<file id ${id} missing from files.img>`;
  if (f.reg) return f.reg.name;
  if (f.pipe) return `pipe:[${f.pipe.pipe_id}]`;
  if (f.tty) {
    const reg = f.tty.regf_id !== undefined ? byId.get(f.tty.regf_id)?.reg : undefined;
    return reg ? reg.name : `tty (info ${f.tty.tty_info_id})`;
  }
  if (f.ext) return `external file ${f.ext.id}`;
  return `${TYPE_NAMES.get(f.type)?.toLowerCase() ?? `type ${f.type}`} (id ${f.id})`;
}

function vmaName(v: VmaEntry, byId: Map<number, FileEntry>): string {
  if (v.status & VMA_AREA_VDSO) return '[vdso]';
  if (v.status & VMA_AREA_VVAR) return '[vvar]';
  if (v.status & VMA_AREA_VSYSCALL) return '[vsyscall]';
  if (v.status & VMA_AREA_GUARD) return '[guard]';
  if (v.status & VMA_AREA_AIORING) return '[aio]';
  if (v.status & (VMA_FILE_PRIVATE | VMA_FILE_SHARED | VMA_AREA_MEMFD)) return describeFile(byId.get(Number(v.shmid)), byId, Number(v.shmid));
  if (v.status & VMA_AREA_SYSVIPC) return `[sysv shm ${v.shmid}]`;
  if (v.status & VMA_ANON_SHARED) return `[shared anon ${v.shmid}]`;
  if (v.status & VMA_AREA_HEAP) return '[heap]';
  if (v.flags & MAP_GROWSDOWN) return '[stack]';
  return '[anon]';
}

function stateName(s: number): string {
  if (s === TASK_ALIVE) return 'alive';
  if (s === TASK_DEAD) return 'zombie';
  if (s === TASK_STOPPED) return 'stopped';
  return `state ${s}`;
}

const why = (e: unknown): string => (e instanceof Error ? e.message : String(e));

async function summariseProcess(
  img: ImageDir, p: { pid: number; ppid: number; pgid: number; sid: number; threads: number[] }, depth: number,
  byId: Map<number, FileEntry>,
): Promise<ProcessSummary> {
  const s: ProcessSummary = {
    pid: p.pid, ppid: p.ppid, pgid: p.pgid, sid: p.sid, threads: p.threads, comm: '', state: '?', depth,
    vmas: [], memory: zeroCounts(), outsideVmas: 0, files: [], problems: [],
  };
  // Image errors in one process are reported, not fatal: inspect is a diagnosis tool.
  try {
    const core = await img.core(p.pid);
    s.comm = core.tc?.comm ?? '';
    s.state = core.tc ? stateName(core.tc.task_state) : '?';
  } catch (e) { s.problems.push(why(e)); }
  if (s.state === 'zombie') return s;
  try {
    const fsE = await img.fs(p.pid);
    s.cwd = describeFile(byId.get(fsE.cwd_id), byId, fsE.cwd_id);
    s.root = describeFile(byId.get(fsE.root_id), byId, fsE.root_id);
  } catch (e) { s.problems.push(why(e)); }
  try {
    const ids = await img.ids(p.pid);
    for (const fd of await img.fdinfo(ids.files_id)) {
      s.files.push({
        fd: fd.fd, type: TYPE_NAMES.get(fd.type) ?? String(fd.type),
        target: describeFile(byId.get(fd.id), byId, fd.id), cloexec: (fd.flags & 1) !== 0,
      });
    }
    s.files.sort((a, b) => a.fd - b.fd);
  } catch (e) { s.problems.push(why(e)); }
  let vmas: VmaEntry[] = [];
  try {
    const mm = await img.mm(p.pid);
    s.exe = describeFile(byId.get(mm.exe_file_id), byId, mm.exe_file_id);
    vmas = mm.vmas;
  } catch (e) { s.problems.push(why(e)); }
  s.vmas = vmas.map((v) => {
    const memory = zeroCounts();
    memory.mapped = Number(v.end - v.start);
    return {
      start: v.start, end: v.end, prot: protString(v), flags: v.flags, status: v.status, statusNames: vmaStatusNames(v.status),
      name: vmaName(v, byId), lazyEligible: isLazyEligible(v), memory,
    };
  });
  // Sweep pagemap runs against the VMAs (both ascending; guard pseudo-VMAs,
  // which CRIU appends last, hold no pages and are left out).
  const sorted = s.vmas.filter((v) => !(v.status & VMA_AREA_GUARD)).sort((a, b) => (a.start < b.start ? -1 : a.start > b.start ? 1 : 0));
  const covered = new Map<VmaSummary, number>();
  if (await img.hasPagemap(p.pid)) {
    try {
      const reader = await img.pagemap(p.pid);
      let vi = 0;
      for await (const batch of reader.batches()) {
        for (const r of batch) {
          while (vi < sorted.length && sorted[vi]!.end <= r.vaddr) vi++;
          let inside = 0;
          for (let j = vi; j < sorted.length && sorted[j]!.start < r.end; j++) {
            const v = sorted[j]!;
            const lo = v.start > r.vaddr ? v.start : r.vaddr;
            const hi = v.end < r.end ? v.end : r.end;
            if (hi <= lo) continue;
            const bytes = Number(hi - lo);
            inside += bytes;
            covered.set(v, (covered.get(v) ?? 0) + bytes);
            if (r.flags & PE_PRESENT) v.memory.dumped += bytes;
            if (r.flags & PE_LAZY) v.memory.lazy += bytes;
            if (r.flags & PE_LAZY && !(r.flags & PE_PRESENT)) v.memory.remote += bytes;
            if (r.flags & PE_PARENT) v.memory.parent += bytes;
          }
          s.outsideVmas += r.nrPages * PAGE_SIZE - inside;
        }
      }
    } catch (e) { s.problems.push(why(e)); }
  } else if (s.state === 'alive' || s.state === 'stopped') {
    s.problems.push(`${img.pathOf(KIND.pagemap, p.pid)}: missing (a live process needs a pagemap)`);
  }
  for (const v of s.vmas) {
    if (v.lazyEligible) v.memory.zero = v.memory.mapped - (covered.get(v) ?? 0);
    addCounts(s.memory, v.memory);
  }
  try {
    const ws = await img.workingSet(p.pid);
    if (ws) s.workingSet = { ranges: ws.ranges.length, pages: ws.ranges.reduce((n, r) => n + Number(r.nr_pages), 0) };
  } catch (e) { s.problems.push(why(e)); }
  return s;
}

/** Summarises the checkpoint in `dir`. Only a missing/unreadable pstree is fatal. */
export async function inspectCheckpoint(dir: string): Promise<CheckpointSummary> {
  const img = await ImageDir.open(dir);
  const out: CheckpointSummary = { dir: img.dir, processes: [], problems: [], checksums: [], memory: zeroCounts() };
  try {
    out.imgVersion = (await img.inventory()).img_version;
  } catch (e) {
    if (!(e instanceof ImageError)) throw e;
  }
  const parent = await img.parent().catch(() => undefined);
  if (parent) out.parent = parent.dir;
  const tree = await img.pstree();
  if (!tree.length) throw new ImageError(img.pathOf(KIND.pstree), undefined, 'no processes (pstree.img missing or empty)');
  const files = await img.files().catch((e: unknown) => {
    if (e instanceof ImageError) return [] as FileEntry[];
    throw e;
  });
  const byId = new Map(files.map((f) => [f.id, f]));
  const depth = new Map<number, number>();
  for (const p of tree) {
    const d = p.ppid === 0 ? 0 : (depth.get(p.ppid) ?? 0) + 1;
    depth.set(p.pid, d);
    const s = await summariseProcess(img, p, d, byId);
    out.processes.push(s);
    addCounts(out.memory, s.memory);
  }
  out.problems = await checkImageSet(img);
  for (const f of await img.list()) {
    if (f.kind !== KIND.checksums || f.id === undefined) continue;
    try {
      const c = await img.checksums(Number(f.id));
      if (c) out.checksums.push({ pagesId: c.pages_id, chunks: c.checksums.length, chunkSize: c.chunk_size });
    } catch {
      /* reported by `show` on that file */
    }
  }
  return out;
}

/** 1536 → "1.5 KiB". */
export function formatBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  let v = n;
  while (Math.abs(v) >= 1024 && i < units.length - 1) { v /= 1024; i++; }
  return i === 0 ? `${n} B` : `${v.toFixed(v < 10 ? 1 : 0)} ${units[i]}`;
}

function memLine(m: MemoryCounts): string {
  const parts = [`dumped ${formatBytes(m.dumped)}`, `lazy ${formatBytes(m.lazy)}`, `zero ${formatBytes(m.zero)}`, `parent ${formatBytes(m.parent)}`];
  if (m.remote) parts.push(`remote ${formatBytes(m.remote)}`);
  return `${formatBytes(m.mapped)} mapped: ${parts.join(', ')}`;
}

/** Human-readable report. */
export function formatCheckpointSummary(s: CheckpointSummary): string {
  const L: string[] = [];
  L.push(`Checkpoint ${s.dir}${s.imgVersion !== undefined ? ` (image version ${s.imgVersion})` : ''}`);
  if (s.parent) L.push(`Parent: ${s.parent}`);
  L.push(`Memory: ${memLine(s.memory)}`);
  L.push('', 'Process tree:');
  for (const p of s.processes) {
    const thr = p.threads.length > 1 ? `, ${p.threads.length} threads: ${p.threads.join(' ')}` : '';
    L.push(`${'  '.repeat(p.depth + 1)}${p.depth ? '└─ ' : ''}${p.pid} ${p.comm || '?'} (${p.state}${thr})`);
  }
  for (const p of s.processes) {
    L.push('', `Process ${p.pid} (${p.comm || '?'}), ppid ${p.ppid}, pgid ${p.pgid}, sid ${p.sid}, ${p.state}`);
    if (p.exe !== undefined) L.push(`  exe:  ${p.exe}`);
    if (p.cwd !== undefined) L.push(`  cwd:  ${p.cwd}`);
    if (p.root !== undefined) L.push(`  root: ${p.root}`);
    if (p.vmas.length) L.push(`  memory: ${memLine(p.memory)}`);
    if (p.outsideVmas) L.push(`  WARNING: ${formatBytes(p.outsideVmas)} of pagemap entries lie outside every VMA`);
    if (p.workingSet) L.push(`  working set: ${p.workingSet.pages} pages in ${p.workingSet.ranges} ranges`);
    if (p.vmas.length) {
      L.push('  VMAs:');
      for (const v of p.vmas) {
        const m = v.memory;
        const mem = [m.dumped && `dumped ${formatBytes(m.dumped)}`, m.lazy && `lazy ${formatBytes(m.lazy)}`,
          m.zero && `zero ${formatBytes(m.zero)}`, m.parent && `parent ${formatBytes(m.parent)}`].filter(Boolean).join(', ');
        L.push(`    ${v.start.toString(16).padStart(12, '0')}-${v.end.toString(16).padStart(12, '0')} ${v.prot} ${formatBytes(m.mapped).padStart(9)}  ${v.name}${mem ? `  [${mem}]` : ''}`);
      }
    }
    if (p.files.length) {
      L.push('  files:');
      for (const f of p.files) L.push(`    ${String(f.fd).padStart(4)} ${f.type.padEnd(9)} ${f.target}${f.cloexec ? '  (cloexec)' : ''}`);
    }
  }
  L.push('', s.problems.length ? `Consistency: ${s.problems.length} problem(s)` : 'Consistency: OK (IMAGE-FORMAT §7.1 rules)');
  for (const p of s.problems) L.push(`  ${p.file}: ${p.message}`);
  if (s.checksums.length) {
    L.push('', 'Page checksums:');
    for (const c of s.checksums) L.push(`  pages-${c.pagesId}.img: ${c.chunks} chunks of ${formatBytes(c.chunkSize)}`);
  }
  return L.join('\n');
}
