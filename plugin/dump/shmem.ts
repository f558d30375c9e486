// Shared memory objects of a tree: MAP_SHARED anonymous memory and memfds
// (mapped or not). Both are files of the kernel's internal shmem mount; like
// CRIU 4.2 (running as root) we dump both as memfds: a MEMFD file entry per
// open file / mapping in files.img, one memfd_inode_entry per object in
// memfd.img (shared anonymous memory is the memfd "/dev/zero" with the seal
// F_SEAL_SEAL), the VMA as VMA_AREA_MEMFD | VMA_FILE_SHARED (or _PRIVATE)
// with shmid = the file id, and the object's contents once, however many
// processes map it, in pagemap-shmem-<inode>.img + pages-<id>.img (offsets
// in the object as vaddr, only its data segments: never-touched pages are
// holes and stay out).
import { closeSync, fstatSync, lstatSync, openSync, readSync, statSync } from 'node:fs';
import {
  FdType, PAGE, PAGE_SIZE, MAP_GROWSDOWN, MAP_LOCKED, MAP_NORESERVE, MAP_PRIVATE, MAP_SHARED, PE_PRESENT, VMA_AREA_MEMFD,
  VMA_AREA_REGULAR, VMA_FILE_PRIVATE, VMA_FILE_SHARED, type FileEntry, type FownEntry, type MemfdInodeEntry, type VmaEntry,
} from '../images/index.js';
import type { ImageDir } from '../images/index.js';
import { addon } from '../native/addon.js';
import { CollectMode } from '../inject/index.js';
import type { SmapsVma } from './proc.js';

const O_RDONLY = 0;
const O_WRONLY = 1;
const O_RDWR = 2;
const F_SEAL_SEAL = 1;
const ZERO_FOWN: FownEntry = { uid: 0, euid: 0, signum: 0, pid_type: 0, pid: 0 };
/** How much of an object is read and written at a time. */
const CHUNK = 1 << 20;

/** A shared memory object as one VMA (or fd) sees it. */
export interface ShmemRef {
  /** Where the dumper opens the object (a map_files or fd link of the frozen tree). */
  link: string;
  dev: bigint;
  ino: bigint;
  /** memfd name as CRIU records it ("/dev/zero" for shared anonymous memory). */
  name: string;
}

/** What vmas.ts needs to describe a shmem VMA. */
export interface PlannedShmemVma {
  entry: VmaEntry;
  mode?: CollectMode;
  peFlags: number;
  shmem: ShmemRef;
}

/** True for VMAs backed by an object of the internal shmem mount (not SysV). */
export function isShmemVma(v: SmapsVma): boolean {
  // (a MAP_PRIVATE mapping of /dev/zero itself is plain anonymous memory,
  // with no name; a private mapping of a shmem file still shows it)
  return isShmemPath(v.path);
}

/** Names the kernel gives shmem files: shared anonymous memory and memfds. */
export function isShmemPath(path: string): boolean {
  return path === '/dev/zero (deleted)' || path.startsWith('/memfd:');
}

/** "/memfd:NAME (deleted)" -> "NAME"; "/dev/zero (deleted)" -> "/dev/zero" (CRIU's names). */
export function shmemName(path: string): string {
  let n = path.endsWith(' (deleted)') ? path.slice(0, -' (deleted)'.length) : path;
  if (n.startsWith('/memfd:')) n = n.slice('/memfd:'.length);
  return n;
}

function isAnonDev(dev: bigint): boolean {
  // The internal shmem mount has an anonymous device (major 0).
  return (dev >> 8n & 0xfffn) === 0n;
}

/** Plans a shmem VMA, or returns why it cannot be dumped. */
export function planShmemVma(pid: number, v: SmapsVma, name: string, prot: number, madv: bigint): PlannedShmemVma | string {
  const shared = v.perms[3] === 's';
  const link = `/proc/${pid}/map_files/${v.start.toString(16)}-${v.end.toString(16)}`;
  let st;
  let fdflags = O_RDONLY;
  try {
    st = statSync(link, { bigint: true });
    const m = Number(lstatSync(link).mode) & 0o600;
    fdflags = m === 0o600 ? O_RDWR : m === 0o200 ? O_WRONLY : O_RDONLY;
  } catch (e) {
    return `${name}: cannot stat the shared memory object (${(e as NodeJS.ErrnoException).code ?? String(e)})`;
  }
  if (!st.isFile() || !isAnonDev(st.dev)) return `${name}: unsupported shared memory mapping`;
  let flags = shared ? MAP_SHARED : MAP_PRIVATE;
  if (v.vmFlags.has('gd')) flags |= MAP_GROWSDOWN;
  if (v.vmFlags.has('lo')) flags |= MAP_LOCKED;
  if (v.vmFlags.has('nr')) flags |= MAP_NORESERVE;
  const entry: VmaEntry = {
    start: v.start, end: v.end, pgoff: v.pgoff, shmid: 0n, prot, flags, fd: -1n, fdflags,
    status: VMA_AREA_REGULAR | VMA_AREA_MEMFD | (shared ? VMA_FILE_SHARED : VMA_FILE_PRIVATE),
  };
  if (madv !== 0n) entry.madv = madv;
  const shmem: ShmemRef = { link, dev: st.dev, ino: st.ino, name: shmemName(v.path) };
  // A private mapping of a memfd: only the pages copied on write differ from the object.
  return shared ? { entry, peFlags: 0, shmem } : { entry, mode: CollectMode.privateFile, peFlags: PE_PRESENT, shmem };
}

/** A shmem file open as an fd (memfd, or shared anonymous memory reopened through map_files). */
export function planShmemFd(pid: number, fd: number, target: string): ShmemRef | string {
  const link = `/proc/${pid}/fd/${fd}`;
  let st;
  try {
    st = statSync(link, { bigint: true });
  } catch (e) {
    return `pid ${pid}: fd ${fd} (${target}): cannot stat (${(e as NodeJS.ErrnoException).code ?? String(e)})`;
  }
  if (!st.isFile() || !isAnonDev(st.dev)) return `pid ${pid}: fd ${fd} (${target}): deleted files are not supported`;
  return { link, dev: st.dev, ino: st.ino, name: shmemName(target) };
}

interface ShmemObject {
  ref: ShmemRef;
  inodeId: number;
  /** files.img id shared by the object's mappings. */
  mappingFile?: number;
}

export interface ShmemDumpStats {
  /** Pages of the objects looked at (their sizes). */
  scanned: number;
  written: number;
}

/**
 * The shmem objects of one dump: file ids for the VMAs (and fds) that use
 * them, memfd.img, and their contents.
 */
export class ShmemTable {
  private readonly objects = new Map<string, ShmemObject>();

  constructor(private readonly addFile: (make: (id: number) => FileEntry) => number) {}

  get size(): number {
    return this.objects.size;
  }

  private object(ref: ShmemRef): ShmemObject {
    const key = `${ref.dev}:${ref.ino}`;
    let o = this.objects.get(key);
    if (!o) {
      o = { ref, inodeId: this.objects.size + 1 };
      this.objects.set(key, o);
    }
    return o;
  }

  /**
   * The files.img id for the mappings of `ref`: one per object, flags 0, as
   * CRIU 4.2 writes them (the access mode is the VMA's fdflags).
   */
  mappingFile(ref: ShmemRef): number {
    const o = this.object(ref);
    o.mappingFile ??= this.addFile((fid) => ({ type: FdType.MEMFD, id: fid, memfd: { id: fid, flags: 0, pos: 0n, fown: ZERO_FOWN, inode_id: o.inodeId } }));
    return o.mappingFile;
  }

  /** The files.img entry of an open memfd (one per open file description). */
  fdEntry(ref: ShmemRef, id: number, flags: number, pos: bigint): FileEntry {
    const o = this.object(ref);
    return { type: FdType.MEMFD, id, memfd: { id, flags, pos, fown: ZERO_FOWN, inode_id: o.inodeId } };
  }

  /**
   * Writes memfd.img and each object's contents (tree frozen). `nextPagesId`
   * hands out pages-<id>.img numbers; the written pages files are returned
   * so their checksums can be written like the processes' ones.
   */
  async write(dir: ImageDir, nextPagesId: () => number): Promise<{ stats: ShmemDumpStats; pagesIds: number[] }> {
    const stats: ShmemDumpStats = { scanned: 0, written: 0 };
    const inodes: MemfdInodeEntry[] = [];
    const pagesIds: number[] = [];
    for (const o of this.objects.values()) {
      const fd = openSync(o.ref.link, 'r');
      try {
        const st = fstatSync(fd, { bigint: true });
        let seals = F_SEAL_SEAL;
        try {
          seals = addon.memfdGetSeals(fd);
        } catch { /* not a memfd-capable file: sealed, as anonymous shmem is */ }
        inodes.push({
          name: o.ref.name, uid: Number(st.uid), gid: Number(st.gid), size: st.size, shmid: Number(BigInt.asUintN(32, o.ref.ino)),
          seals, inode_id: BigInt(o.inodeId), mode: Number(st.mode),
        });
        const size = ((st.size + PAGE - 1n) / PAGE) * PAGE;
        stats.scanned += Number(size / PAGE);
        if (size === 0n) continue;
        const pagesId = nextPagesId();
        pagesIds.push(pagesId);
        const w = await dir.shmemPagemapWriter(BigInt.asUintN(32, o.ref.ino), pagesId);
        try {
          const runs = addon.shmemDataRuns(fd, size);
          const buf = Buffer.allocUnsafe(CHUNK);
          for (let i = 0; i < runs.length; i += 2) {
            let off = runs[i]!;
            const end = off + runs[i + 1]!;
            while (off < end) {
              const len = Number(end - off < BigInt(CHUNK) ? end - off : BigInt(CHUNK));
              const got = readFull(fd, buf, len, off);
              // Past the end of the file (its last page) the page reads as zeros; a short
              // read anywhere else is an error, never zeros.
              if (got !== len && off + BigInt(got) < st.size) throw new Error(`${o.ref.link}: short read at ${off} (${got} of ${len} bytes)`);
              buf.fill(0, got, len);
              await w.add(off, len / PAGE_SIZE, PE_PRESENT, buf.subarray(0, len));
              stats.written += len / PAGE_SIZE;
              off += BigInt(len);
            }
          }
        } finally {
          await w.close();
        }
      } finally {
        closeSync(fd);
      }
    }
    if (inodes.length) await dir.writeMemfdInodes(inodes);
    return { stats, pagesIds };
  }
}

function readFull(fd: number, buf: Buffer, len: number, pos: bigint): number {
  let done = 0;
  while (done < len) {
    const n = readSync(fd, buf, done, len - done, pos + BigInt(done));
    if (n === 0) break;
    done += n;
  }
  return done;
}
