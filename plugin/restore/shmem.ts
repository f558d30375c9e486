// Shared memory objects on restore (MAP_SHARED anonymous memory and memfds,
// see plugin/dump/shmem.ts for the images). Each object is created once, as
// a memfd held by the restorer, filled from pagemap-shmem-<shmid>.img, and
// every VMA of every process that maps it maps that one memfd (the process
// opens /proc/<restorer>/fd/<n>, as CRIU's processes reopen their fdstore
// memfds), so the tree — and any child forked after the restore — shares
// one copy. Seals are added after all mappings exist (F_SEAL_WRITE and
// F_SEAL_FUTURE_WRITE would refuse the writable ones), like CRIU.
//
// Lazy restore: the objects plugin/lazy/shmem.ts picks (no private
// mapping, no fd, no seals to add...) are created and sized but not filled;
// every VMA of them is registered with userfaultfd in each process and the
// lazy-pages daemon serves them (native/engine/shared.cc). The others are
// filled here, as CRIU restores all shared memory.
import { closeSync, fchmodSync, fchownSync, ftruncateSync, openSync } from 'node:fs';
import { ImageError, UserError } from '../errors.js';
import {
  FdType, ImageDir, PAGE, PE_PRESENT, type FileEntry, type MemfdInodeEntry, type VmaEntry,
} from '../images/index.js';
import type { PageVerifier } from '../integrity/checksums.js';
import { addon } from '../native/addon.js';
import type { LazyShmemTable } from '../lazy/shmem.js';

const F_SEAL_SEAL = 1;
const MFD_ALLOW_SEALING = 2;
const CHUNK = 1 << 20;
// vma_entry.status bits (image ABI)
const VMA_ANON_SHARED = 0x100;
const VMA_AREA_SYSVIPC = 0x400;
const VMA_AREA_MEMFD = 0x4000;

/** One run of object data: `bytes` at object offset `offset`, from `file` at `pagesOffset`. */
export interface ShmemRun {
  offset: bigint;
  bytes: bigint;
  file: string;
  pagesOffset: bigint;
}

export interface ShmemObjectPlan {
  /** "memfd:<inode_id>" or "anon:<shmid>". */
  key: string;
  name: string;
  /** File size (memfd) or the extent the VMAs use (shared anonymous). */
  size: bigint;
  seals: number;
  uid: number;
  gid: number;
  mode: number | undefined;
  /** pagemap-shmem-<shmid>.img */
  shmid: bigint;
  runs: ShmemRun[];
  /** First process mapping it (named in errors). */
  pid: number;
  /** Left empty here: the lazy-pages daemon serves its pages. */
  lazy?: boolean;
}

/** A VMA's use of an object. */
export interface ShmemVmaRef {
  key: string;
}

/** Marks the objects (and their VMAs) that `table` serves lazily. */
export function markLazyShmem(processes: readonly { pid: number; vmas: { vma: VmaEntry; shmem?: ShmemVmaRef; lazyShared?: boolean }[] }[], objects: ShmemObjectPlan[], table: LazyShmemTable): void {
  for (const o of objects) if (table.objects.has(o.key)) o.lazy = true;
  for (const p of processes) {
    for (const v of p.vmas) if (v.shmem && table.objects.has(v.shmem.key)) v.lazyShared = true;
  }
}

/** Undoes markLazyShmem: every object filled by the restorer (a daemon that does not serve shared memory). */
export function keepShmemEager(processes: readonly { vmas: { lazyShared?: boolean }[] }[], objects: ShmemObjectPlan[]): number {
  let n = 0;
  for (const o of objects) if (o.lazy) { o.lazy = false; n++; }
  for (const p of processes) for (const v of p.vmas) v.lazyShared = false;
  return n;
}

export function isShmemVma(v: VmaEntry): boolean {
  return (v.status & VMA_AREA_MEMFD) !== 0 || ((v.status & VMA_ANON_SHARED) !== 0 && (v.status & VMA_AREA_SYSVIPC) === 0);
}

/** Collects the objects the VMAs of a tree use while plan.ts reads the images. */
export class ShmemPlanner {
  private readonly objects = new Map<string, ShmemObjectPlan>();
  private inodes: Map<bigint, MemfdInodeEntry> | undefined;

  constructor(private readonly dir: ImageDir, private readonly files: Map<number, FileEntry>) {}

  private async memfdInode(id: number): Promise<MemfdInodeEntry | undefined> {
    if (!this.inodes) {
      this.inodes = new Map();
      for (const i of await this.dir.memfdInodes()) this.inodes.set(BigInt(i.inode_id), i);
    }
    return this.inodes.get(BigInt(id));
  }

  /** The object a VMA maps (VMA_AREA_MEMFD or VMA_ANON_SHARED). */
  async vma(pid: number, v: VmaEntry, mmImage: string): Promise<ShmemVmaRef> {
    const at = `VMA 0x${v.start.toString(16)}-0x${v.end.toString(16)}`;
    if (v.status & VMA_AREA_MEMFD) {
      const f = this.files.get(Number(v.shmid));
      if (!f) throw new ImageError(mmImage, undefined, `${at} refers to file id ${v.shmid}, which files.img does not have`);
      if (f.type !== FdType.MEMFD || !f.memfd) throw new ImageError(mmImage, undefined, `${at} is a memfd mapping of file id ${v.shmid}, which is of type ${f.type}`);
      return this.memfdObject(pid, f, at);
    }
    // Shared anonymous memory as CRIU writes it without map_files access:
    // the object is as large as the furthest VMA reaches into it.
    const key = `anon:${v.shmid}`;
    const extent = v.pgoff + (v.end - v.start);
    const o = this.objects.get(key);
    if (!o) {
      this.objects.set(key, { key, name: '/dev/zero', size: extent, seals: F_SEAL_SEAL, uid: 0, gid: 0, mode: undefined, shmid: v.shmid, runs: [], pid });
    } else if (o.size < extent) {
      o.size = extent;
    }
    return { key };
  }

  /** The object of an open memfd (files.img type MEMFD). */
  async fd(pid: number, fd: number, f: FileEntry): Promise<ShmemVmaRef> {
    return this.memfdObject(pid, f, `fd ${fd}`);
  }

  private async memfdObject(pid: number, f: FileEntry, at: string): Promise<ShmemVmaRef> {
    const ino = await this.memfdInode(f.memfd!.inode_id);
    if (!ino) throw new ImageError(this.dir.path('memfd.img'), undefined, `no memfd inode ${f.memfd!.inode_id} (file id ${f.id}, pid ${pid})`);
    if (ino.hugetlb_flag) throw new UserError(`pid ${pid}: ${at} is a hugetlb memfd, which restore does not support`);
    const key = `memfd:${ino.inode_id}`;
    if (!this.objects.has(key)) {
      this.objects.set(key, {
        key, name: ino.name, size: BigInt(ino.size), seals: ino.seals, uid: ino.uid, gid: ino.gid, mode: ino.mode ?? undefined,
        shmid: BigInt(ino.shmid), runs: [], pid,
      });
    }
    return { key };
  }

  /** Reads the objects' pagemaps; every run must lie inside its object. */
  async finish(): Promise<ShmemObjectPlan[]> {
    for (const o of this.objects.values()) {
      if (!(await this.dir.hasShmemPagemap(o.shmid))) continue; // never written to: all zero
      const pm = await this.dir.pagemapShmem(o.shmid);
      const limit = ((o.size + PAGE - 1n) / PAGE) * PAGE;
      for await (const batch of pm.batches()) {
        for (const e of batch) {
          if (e.end > limit) throw new ImageError(pm.file, e.imageOffset, `pages at 0x${e.vaddr.toString(16)}-0x${e.end.toString(16)} lie past the end of the object (${o.size} bytes)`);
          if (!(e.flags & PE_PRESENT) || e.pagesOffset === undefined) throw new ImageError(pm.file, e.imageOffset, `shared memory pages at 0x${e.vaddr.toString(16)} are not in the images (flags 0x${e.flags.toString(16)})`);
          o.runs.push({ offset: e.vaddr, bytes: e.end - e.vaddr, file: pm.pagesPath, pagesOffset: BigInt(e.pagesOffset) });
        }
      }
    }
    return [...this.objects.values()];
  }
}

/** The restorer's memfds, one per object, until the tree is restored. */
export class ShmemObjects {
  private readonly fds = new Map<string, number>();

  private constructor(private readonly plans: ShmemObjectPlan[]) {}

  /** Creates and fills every object (verified against the page checksums). */
  static create(plans: ShmemObjectPlan[], verifier: PageVerifier | undefined, log: (l: string) => void): ShmemObjects {
    const s = new ShmemObjects(plans);
    try {
      for (const o of plans) s.fds.set(o.key, s.createOne(o, verifier));
    } catch (e) {
      s.close();
      throw e;
    }
    const lazy = plans.filter((o) => o.lazy).length;
    if (plans.length) log(`${plans.length} shared memory objects created${lazy ? ` (${lazy} left to the lazy-pages daemon)` : ''}`);
    return s;
  }

  private createOne(o: ShmemObjectPlan, verifier: PageVerifier | undefined): number {
    const fd = addon.memfdCreate(o.name, o.seals === F_SEAL_SEAL ? 0 : MFD_ALLOW_SEALING);
    try {
      ftruncateSync(fd, Number(o.size));
      if (o.runs.length && !o.lazy) {
        const byFile = new Map<string, ShmemRun[]>();
        for (const r of o.runs) {
          let a = byFile.get(r.file);
          if (!a) byFile.set(r.file, (a = []));
          a.push(r);
        }
        const buf = Buffer.allocUnsafe(CHUNK);
        for (const [file, runs] of byFile) {
          verifier?.verify(o.pid, file, runs.map((r) => ({ offset: r.pagesOffset, len: r.bytes })));
          const src = openSync(file, 'r');
          try {
            for (const r of runs) {
              for (let done = 0n; done < r.bytes;) {
                const len = r.bytes - done < BigInt(CHUNK) ? Number(r.bytes - done) : CHUNK;
                const got = addon.preadAt(src, buf, r.pagesOffset + done, len);
                if (got !== len) throw new ImageError(file, Number(r.pagesOffset + done), `short pages file: ${got} of ${len} bytes (shared memory object ${o.name}, pid ${o.pid})`);
                // The last page may reach past the end of the file: never grow it.
                const at = r.offset + done;
                const inFile = at + BigInt(len) <= o.size ? len : Number(o.size > at ? o.size - at : 0n);
                if (inFile > 0) addon.pwriteAt(fd, buf, at, inFile);
                done += BigInt(len);
              }
            }
          } finally {
            closeSync(src);
          }
        }
      }
      if (o.mode !== undefined) fchmodSync(fd, o.mode & 0o7777);
      if (o.uid !== 0 || o.gid !== 0) fchownSync(fd, o.uid, o.gid);
      return fd;
    } catch (e) {
      closeSync(fd);
      throw e;
    }
  }

  /** Path a restored process opens to map object `key`. */
  path(key: string): string {
    const fd = this.fds.get(key);
    if (fd === undefined) throw new Error(`shared memory object ${key} was not created`);
    return `/proc/${process.pid}/fd/${fd}`;
  }

  /** Adds the dumped seals (after every mapping exists). */
  seal(): void {
    for (const o of this.plans) {
      const fd = this.fds.get(o.key);
      if (fd === undefined || o.seals === F_SEAL_SEAL || o.seals === 0) continue;
      try {
        addon.memfdAddSeals(fd, o.seals);
      } catch (e) {
        throw new UserError(`pid ${o.pid}: cannot seal memfd ${o.name} (seals 0x${o.seals.toString(16)}): ${(e as NodeJS.ErrnoException).code ?? String(e)}`, { cause: e });
      }
    }
  }

  close(): void {
    for (const fd of this.fds.values()) closeSync(fd);
    this.fds.clear();
  }
}
