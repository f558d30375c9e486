// Which shared memory objects a lazy restore leaves to the lazy-pages
// daemon, and where each process maps them. A pure function of the image
// directory: the restorer (which creates these objects empty and registers
// their VMAs with userfaultfd) and the daemon (which serves them) evaluate
// it separately and must agree.
//
// An object (MAP_SHARED anonymous memory, or a memfd) is served lazily when
// every page the kernel could place in it without a fault is ruled out:
//  - no private mapping of it (a private mapping of a hole would read
//    zeros with no fault; UFFDIO_COPY through it makes an anonymous page),
//  - no process holds it as an fd (read/write through an fd bypass
//    userfaultfd),
//  - no locked or hugetlb mapping (mlock populates at mmap time),
//  - seals 0 or F_SEAL_SEAL only (nothing restore must add afterwards),
//  - not a hugetlb memfd, not SysV shm,
//  - all its image pages present in the images (pagemap-shmem-<shmid>.img).
// Facts behind this: test/integration/uffd-shmem-facts.test.ts.
import { FdType, KIND, type FileEntry, type ImageDir, type MmEntry, type TaskKobjIdsEntry, type VmaEntry } from '../images/index.js';
import { MAP_HUGETLB, MAP_LOCKED, MAP_PRIVATE, MAP_SHARED, PAGE, PE_PRESENT, VMA_ANON_SHARED, VMA_AREA_MEMFD, VMA_AREA_SYSVIPC } from '../images/memory.js';

const F_SEAL_SEAL = 1;

/** One image run of an object: object bytes [offset, offset + bytes) are at `pagesOffset` of `file`. */
export interface LazyShmemRun {
  offset: bigint;
  bytes: bigint;
  file: string;
  pagesOffset: bigint;
}

export interface LazyShmemObject {
  /** "memfd:<inode_id>" or "anon:<shmid>" (the restore plan's keys, plugin/restore/shmem.ts). */
  key: string;
  /** For messages: "memfd NAME" or "shared anonymous memory (shmid N)". */
  name: string;
  /** Bytes, rounded up to pages. */
  size: bigint;
  runs: LazyShmemRun[];
}

/** A VMA of a lazily served object in one process. */
export interface LazyShmemVma {
  start: bigint;
  end: bigint;
  key: string;
  /** Object offset of `start`. */
  offset: bigint;
}

export interface LazyShmemTable {
  objects: Map<string, LazyShmemObject>;
  /** pid -> its VMAs of lazily served objects (whole VMAs, clipped to the object's size). */
  vmas: Map<number, LazyShmemVma[]>;
}

export const EMPTY_LAZY_SHMEM: LazyShmemTable = { objects: new Map(), vmas: new Map() };

interface Candidate {
  key: string;
  name: string;
  size: bigint;
  shmid: bigint;
  ok: boolean;
}

/** True for a VMA of a shared memory object (memfd or shared anonymous, not SysV). */
function objectVma(v: VmaEntry): boolean {
  return (v.status & VMA_AREA_MEMFD) !== 0 || ((v.status & VMA_ANON_SHARED) !== 0 && (v.status & VMA_AREA_SYSVIPC) === 0);
}

/**
 * The lazily served objects of an image directory. Anything unexpected in
 * the images makes the object eager (restore then reports what is wrong).
 */
export async function planLazyShmem(dir: ImageDir): Promise<LazyShmemTable> {
  const pstree = await dir.pstree();
  const files = new Map<number, FileEntry>();
  let inodes: Map<bigint, { name: string; size: bigint; shmid: number; seals: number; hugetlb: boolean }> | undefined;
  const memfdInode = async (fileId: number) => {
    if (files.size === 0) for (const f of await dir.files()) files.set(f.id, f);
    const f = files.get(fileId);
    if (!f || f.type !== FdType.MEMFD || !f.memfd) return undefined;
    if (!inodes) {
      inodes = new Map();
      for (const i of await dir.memfdInodes()) {
        inodes.set(BigInt(i.inode_id), { name: i.name, size: BigInt(i.size), shmid: i.shmid, seals: i.seals, hugetlb: !!i.hugetlb_flag });
      }
    }
    const ino = inodes.get(BigInt(f.memfd.inode_id));
    return ino ? { inodeId: BigInt(f.memfd.inode_id), ...ino } : undefined;
  };

  const candidates = new Map<string, Candidate>();
  const uses: { pid: number; v: VmaEntry; key: string }[] = [];
  const fdTables = new Set<number>();
  for (const e of pstree) {
    // A zombie has no mm image (nor does a minimal image set without shared memory).
    const mm = (await dir.readEntries<MmEntry>(KIND.mm, e.pid))[0];
    if (!mm) continue;
    for (const v of mm.vmas) {
      if (!objectVma(v)) continue;
      let c: Candidate | undefined;
      if (v.status & VMA_AREA_MEMFD) {
        const ino = await memfdInode(Number(v.shmid));
        if (!ino) continue; // restore reports it
        const key = `memfd:${ino.inodeId}`;
        c = candidates.get(key);
        if (!c) {
          const sealsOk = ino.seals === 0 || ino.seals === F_SEAL_SEAL;
          // Shared anonymous memory is a memfd named /dev/zero in CRIU 4.2's images.
          const name = ino.name === '/dev/zero' ? `shared anonymous memory (shmid ${ino.shmid})` : `memfd ${ino.name}`;
          c = { key, name, size: ino.size, shmid: BigInt(ino.shmid), ok: sealsOk && !ino.hugetlb };
          candidates.set(key, c);
        }
      } else {
        const key = `anon:${v.shmid}`;
        const extent = v.pgoff + (v.end - v.start);
        c = candidates.get(key);
        if (!c) {
          c = { key, name: `shared anonymous memory (shmid ${v.shmid})`, size: extent, shmid: v.shmid, ok: true };
          candidates.set(key, c);
        } else if (c.size < extent) {
          c.size = extent;
        }
      }
      if ((v.flags & MAP_SHARED) === 0 || (v.flags & MAP_PRIVATE) !== 0 || (v.flags & (MAP_LOCKED | MAP_HUGETLB)) !== 0) c.ok = false;
      uses.push({ pid: e.pid, v, key: c.key });
    }
  }
  if (candidates.size === 0) return { objects: new Map(), vmas: new Map() };
  // A memfd any process holds as an fd stays eager (zombies hold none).
  for (const e of pstree) {
    const ids = (await dir.readEntries<TaskKobjIdsEntry>(KIND.ids, e.pid))[0];
    if (ids) fdTables.add(ids.files_id);
  }
  for (const filesId of fdTables) {
    for (const fi of await dir.fdinfo(filesId)) {
      const ino = await memfdInode(fi.id);
      if (ino) {
        const c = candidates.get(`memfd:${ino.inodeId}`);
        if (c) c.ok = false;
      }
    }
  }
  const objects = new Map<string, LazyShmemObject>();
  for (const c of candidates.values()) {
    if (!c.ok) continue;
    const size = ((c.size + PAGE - 1n) / PAGE) * PAGE;
    if (size === 0n) continue;
    const runs: LazyShmemRun[] = [];
    let ok = true;
    if (await dir.hasShmemPagemap(c.shmid)) {
      const pm = await dir.pagemapShmem(c.shmid);
      for await (const batch of pm.batches()) {
        for (const r of batch) {
          if (!(r.flags & PE_PRESENT) || r.pagesOffset === undefined || r.end > size) ok = false;
          else runs.push({ offset: r.vaddr, bytes: r.end - r.vaddr, file: pm.pagesPath, pagesOffset: BigInt(r.pagesOffset) });
        }
      }
    }
    if (ok) objects.set(c.key, { key: c.key, name: c.name, size, runs });
  }
  const vmas = new Map<number, LazyShmemVma[]>();
  for (const u of uses) {
    const o = objects.get(u.key);
    if (!o) continue;
    let end = u.v.end;
    if (u.v.pgoff >= o.size) continue;
    if (u.v.pgoff + (end - u.v.start) > o.size) end = u.v.start + (o.size - u.v.pgoff);
    let list = vmas.get(u.pid);
    if (!list) vmas.set(u.pid, (list = []));
    list.push({ start: u.v.start, end, key: u.key, offset: u.v.pgoff });
  }
  return { objects, vmas };
}

/** The engine calls an object registration needs (plugin/uffd FaultEngine). */
export interface SharedObjectEngine {
  addSharedObject(name: string, size: bigint, data: readonly { offset: bigint; len: bigint; source: number; fileOffset: bigint }[]): number;
}

/** Registers `o` with the engine: its pages files as sources (checksums and all, through addSource), its runs as data. */
export function addSharedObjectTo(engine: SharedObjectEngine, o: LazyShmemObject, addSource: (path: string) => number): number {
  const sources = new Map<string, number>();
  const data: { offset: bigint; len: bigint; source: number; fileOffset: bigint }[] = [];
  for (const r of o.runs) {
    let source = sources.get(r.file);
    if (source === undefined) sources.set(r.file, (source = addSource(r.file)));
    const last = data[data.length - 1];
    if (last && last.source === source && last.offset + last.len === r.offset && last.fileOffset + last.len === r.pagesOffset) last.len += r.bytes;
    else data.push({ offset: r.offset, len: r.bytes, source, fileOffset: r.pagesOffset });
  }
  return engine.addSharedObject(o.name, o.size, data);
}
