// An image directory: lists its files, reads and writes images by kind and
// id, streams pagemaps, and follows the `parent` symlink of incremental
// dumps to resolve PE_PARENT pages to file + offset pieces.
// Synchronous metadata calls: cheaper than a thread-pool round trip each.
import { mkdirSync, readdirSync, statSync } from 'node:fs';
import { readlink } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { ImageError, UserError } from '../errors.js';
import { computePageChecksums, verifyPageChecksums } from './checksums.js';
import { checkImageDir } from './dir-check.js';
import { readImageFile, writeImageFile, type DecodedImage } from './image.js';
import { PAGE, PAGE_SIZE } from './memory.js';
import { KIND, imageFileName, parseFileName, type ImageKind } from './magic.js';
import { PagemapIndex, PagemapReader, PagemapWriter, type PagemapReaderOptions } from './pagemap.js';
import {
  type CgroupEntry, type CoreEntry, type FdinfoEntry, type FileEntry, type FsEntry, type InventoryEntry, type MemfdInodeEntry, type MmEntry, type PageChecksumsEntry, type PstreeEntry, type SeccompEntry, type TaskKobjIdsEntry, type TimensEntry, type TtyInfoEntry, type WorkingSetHead, type WorkingSetRange,
} from './types.js';
import { PE_PARENT, PE_PRESENT } from './memory.js';

/** Deepest parent chain we follow (guards against symlink loops). */
const MAX_PARENT_DEPTH = 64;

export interface ImageFileInfo {
  name: string;
  /** Undefined for files that are not images (logs, sockets, the parent link). */
  kind: ImageKind | undefined;
  id: string | undefined;
  size: number;
}

/** A piece of page data: `nrPages` pages at `vaddr` are the bytes at `offset` in `file`. */
export interface PagePiece {
  vaddr: bigint;
  nrPages: number;
  file: string;
  offset: number;
}

function isEnoent(e: unknown): boolean {
  return (e as NodeJS.ErrnoException)?.code === 'ENOENT';
}

export class ImageDir {
  private indexes = new Map<string, Promise<PagemapIndex>>();
  private parentDir: Promise<ImageDir | undefined> | undefined;

  private constructor(readonly dir: string, private readonly depth = 0) {}

  /** Opens an existing image directory. */
  static async open(dir: string): Promise<ImageDir> {
    checkImageDir(dir);
    return new ImageDir(resolve(dir));
  }

  /** Creates (mkdir -p) and opens a directory to write images into. */
  static async create(dir: string): Promise<ImageDir> {
    try {
      mkdirSync(dir, { recursive: true });
    } catch (e) {
      throw new UserError(`${dir}: cannot create image directory: ${(e as NodeJS.ErrnoException).code ?? String(e)}`, { cause: e });
    }
    return ImageDir.open(dir);
  }

  path(name: string): string {
    return join(this.dir, name);
  }

  pathOf(kind: ImageKind, id?: number | bigint | string): string {
    return this.path(imageFileName(kind, id));
  }

  pagesPath(pagesId: number): string {
    return this.pathOf(KIND.pages, pagesId);
  }

  /** Every file in the directory, identified by name where possible. */
  async list(): Promise<ImageFileInfo[]> {
    const names = readdirSync(this.dir).sort();
    const out: ImageFileInfo[] = [];
    for (const name of names) {
      const parsed = parseFileName(name);
      let size = 0;
      try {
        size = statSync(this.path(name)).size;
      } catch {
        /* dangling link (e.g. parent) */
      }
      out.push({ name, kind: parsed?.kind, id: parsed?.id, size });
    }
    return out;
  }

  // ---- generic access ------------------------------------------------------------

  /** Decodes an image of `kind` (ENOENT → undefined, like CRIU's "no entries"). */
  async readImage(kind: ImageKind, id?: number | bigint | string): Promise<DecodedImage | undefined> {
    const file = this.pathOf(kind, id);
    try {
      statSync(file);
    } catch (e) {
      if (isEnoent(e)) return undefined;
      throw new ImageError(file, undefined, `cannot read image: ${(e as NodeJS.ErrnoException).code ?? String(e)}`);
    }
    return readImageFile(file, kind);
  }

  /** All entries of an image; a missing image has none. */
  async readEntries<T>(kind: ImageKind, id?: number | bigint | string): Promise<T[]> {
    const img = await this.readImage(kind, id);
    return img ? img.entries.map((e) => e.message as T) : [];
  }

  /** The single entry of an image that must exist and hold exactly one. */
  async readSingle<T>(kind: ImageKind, id?: number | bigint | string): Promise<T> {
    const img = await this.readImage(kind, id);
    const file = this.pathOf(kind, id);
    if (!img) throw new ImageError(file, undefined, 'image is missing (ENOENT)');
    if (img.entries.length !== 1) throw new ImageError(file, undefined, `expected exactly one entry, found ${img.entries.length}`);
    return img.entries[0]!.message as T;
  }

  /** Writes an image of `kind` (replacing any existing file). */
  async writeImage(kind: ImageKind, id: number | bigint | string | undefined, messages: readonly object[]): Promise<string> {
    const file = this.pathOf(kind, id);
    await writeImageFile(file, kind, messages);
    return file;
  }

  // ---- typed readers ----------------------------------------------------------------

  inventory(): Promise<InventoryEntry> { return this.readSingle(KIND.inventory); }
  pstree(): Promise<PstreeEntry[]> { return this.readEntries(KIND.pstree); }
  core(tid: number): Promise<CoreEntry> { return this.readSingle(KIND.core, tid); }
  ids(pid: number): Promise<TaskKobjIdsEntry> { return this.readSingle(KIND.ids, pid); }
  mm(pid: number): Promise<MmEntry> { return this.readSingle(KIND.mm, pid); }
  fs(pid: number): Promise<FsEntry> { return this.readSingle(KIND.fs, pid); }
  files(): Promise<FileEntry[]> { return this.readEntries(KIND.files); }
  fdinfo(filesId: number): Promise<FdinfoEntry[]> { return this.readEntries(KIND.fdinfo, filesId); }
  ttyInfo(): Promise<TtyInfoEntry[]> { return this.readEntries(KIND.ttyInfo); }
  async seccomp(): Promise<SeccompEntry | undefined> { return (await this.readEntries<SeccompEntry>(KIND.seccomp))[0]; }
  /** cgroup.img's entry (none when the file is missing or empty: every task was in the dumper's cgroups). */
  async cgroups(): Promise<CgroupEntry | undefined> { return (await this.readEntries<CgroupEntry>(KIND.cgroup))[0]; }
  timens(id: number): Promise<TimensEntry> { return this.readSingle(KIND.timens, id); }

  /** Working set recorded for `pid` (undefined when none was recorded). */
  async workingSet(pid: number): Promise<{ head: WorkingSetHead; ranges: WorkingSetRange[] } | undefined> {
    const img = await this.readImage(KIND.workingSet, pid);
    if (!img) return undefined;
    const [head, ...ranges] = img.entries;
    if (!head) throw new ImageError(img.file, undefined, 'working-set image has no head entry');
    return { head: head.message as unknown as WorkingSetHead, ranges: ranges.map((r) => r.message as unknown as WorkingSetRange) };
  }

  /** Page checksums of pages-<pagesId>.img (undefined when none were written). */
  async checksums(pagesId: number): Promise<PageChecksumsEntry | undefined> {
    const img = await this.readImage(KIND.checksums, pagesId);
    if (!img) return undefined;
    if (img.entries.length !== 1) throw new ImageError(img.file, undefined, `expected exactly one entry, found ${img.entries.length}`);
    return img.entries[0]!.message as unknown as PageChecksumsEntry;
  }

  /** Streaming reader of pagemap-<pid>.img (a missing pagemap is an ImageError). */
  pagemap(pid: number, opts?: PagemapReaderOptions): Promise<PagemapReader> {
    return PagemapReader.open(this.pathOf(KIND.pagemap, pid), opts);
  }

  /** memfd.img: memfd / shared-memory inodes (none when the image is absent). */
  async memfdInodes(): Promise<MemfdInodeEntry[]> {
    const img = await this.readImage(KIND.memfdInode);
    return img ? img.entries.map((e) => e.message as unknown as MemfdInodeEntry) : [];
  }

  /** True when pagemap-shmem-<shmid>.img exists. */
  async hasShmemPagemap(shmid: number | bigint): Promise<boolean> {
    try {
      statSync(this.pathOf(KIND.pagemapShmem, shmid));
      return true;
    } catch (e) {
      if (isEnoent(e)) return false;
      throw e;
    }
  }

  /** Streaming reader of pagemap-shmem-<shmid>.img. */
  pagemapShmem(shmid: number | bigint, opts?: PagemapReaderOptions): Promise<PagemapReader> {
    return PagemapReader.open(this.pathOf(KIND.pagemapShmem, shmid), opts);
  }

  /** True when pagemap-<pid>.img exists. */
  async hasPagemap(pid: number): Promise<boolean> {
    try {
      statSync(this.pathOf(KIND.pagemap, pid));
      return true;
    } catch (e) {
      if (isEnoent(e)) return false;
      throw e;
    }
  }

  // ---- typed writers ------------------------------------------------------------------

  async writeInventory(e: InventoryEntry): Promise<void> { await this.writeImage(KIND.inventory, undefined, [e]); }
  async writePstree(entries: readonly PstreeEntry[]): Promise<void> { await this.writeImage(KIND.pstree, undefined, entries); }
  async writeCore(tid: number, e: CoreEntry): Promise<void> { await this.writeImage(KIND.core, tid, [e]); }
  async writeIds(pid: number, e: TaskKobjIdsEntry): Promise<void> { await this.writeImage(KIND.ids, pid, [e]); }
  async writeMm(pid: number, e: MmEntry): Promise<void> { await this.writeImage(KIND.mm, pid, [e]); }
  async writeFs(pid: number, e: FsEntry): Promise<void> { await this.writeImage(KIND.fs, pid, [e]); }
  async writeFiles(entries: readonly FileEntry[]): Promise<void> { await this.writeImage(KIND.files, undefined, entries); }
  async writeFdinfo(filesId: number, entries: readonly FdinfoEntry[]): Promise<void> { await this.writeImage(KIND.fdinfo, filesId, entries); }
  async writeSeccomp(e: SeccompEntry): Promise<void> { await this.writeImage(KIND.seccomp, undefined, [e]); }
  async writeCgroups(entries: readonly CgroupEntry[]): Promise<void> { await this.writeImage(KIND.cgroup, undefined, entries); }
  async writeTimens(id: number, e: TimensEntry): Promise<void> { await this.writeImage(KIND.timens, id, [e]); }
  async writeMemfdInodes(entries: readonly MemfdInodeEntry[]): Promise<void> { await this.writeImage(KIND.memfdInode, undefined, entries); }

  /** lr-workingset-<pid>.img: the head, then the ranges in fault order. */
  async writeWorkingSet(head: WorkingSetHead, ranges: readonly WorkingSetRange[]): Promise<void> {
    await this.writeImage(KIND.workingSet, head.pid, [head, ...ranges]);
  }

  async writeChecksums(e: PageChecksumsEntry): Promise<void> {
    await this.writeImage(KIND.checksums, e.pages_id, [e]);
  }

  /** Computes and writes lr-checksums-<pagesId>.img for pages-<pagesId>.img. */
  async checksumPages(pagesId: number, chunkSize?: number): Promise<PageChecksumsEntry> {
    const e = await computePageChecksums(this.pagesPath(pagesId), pagesId, chunkSize);
    await this.writeChecksums(e);
    return e;
  }

  /**
   * Verifies pages-<pagesId>.img against its checksums image. Returns false
   * when there is no checksums image; a mismatch is an ImageError.
   */
  async verifyPages(pagesId: number): Promise<boolean> {
    const e = await this.checksums(pagesId);
    if (!e) return false;
    await verifyPageChecksums(this.pagesPath(pagesId), e, this.pathOf(KIND.checksums, pagesId));
    return true;
  }

  /** Streaming writer of pagemap-<pid>.img + pages-<pagesId>.img. */
  pagemapWriter(pid: number, pagesId: number): Promise<PagemapWriter> {
    return PagemapWriter.create(this.dir, { pid, pagesId });
  }

  /** Streaming writer of pagemap-shmem-<shmid>.img + pages-<pagesId>.img. */
  shmemPagemapWriter(shmid: number | bigint, pagesId: number): Promise<PagemapWriter> {
    return PagemapWriter.create(this.dir, { shmid, pagesId });
  }

  // ---- parent chain --------------------------------------------------------------------

  /** The image directory the `parent` symlink points to (undefined without one). */
  parent(): Promise<ImageDir | undefined> {
    this.parentDir ??= (async () => {
      const link = this.path('parent');
      let target: string;
      try {
        target = await readlink(link);
      } catch (e) {
        const code = (e as NodeJS.ErrnoException).code;
        if (code === 'ENOENT') return undefined;
        if (code === 'EINVAL') throw new ImageError(link, undefined, 'parent is not a symbolic link (EINVAL)');
        throw new ImageError(link, undefined, `cannot read parent link: ${code ?? String(e)}`);
      }
      if (this.depth + 1 > MAX_PARENT_DEPTH) throw new ImageError(link, undefined, `parent chain deeper than ${MAX_PARENT_DEPTH} (symlink loop?)`);
      const dir = resolve(this.dir, target);
      try {
        if (!statSync(dir).isDirectory()) throw new ImageError(link, undefined, `parent ${target} is not a directory (ENOTDIR)`);
      } catch (e) {
        if (e instanceof ImageError) throw e;
        throw new ImageError(link, undefined, `parent ${target} cannot be opened: ${(e as NodeJS.ErrnoException).code ?? String(e)}`);
      }
      return new ImageDir(dir, this.depth + 1);
    })();
    return this.parentDir;
  }

  /** Sorted table of pagemap-<pid>.img for random lookups (built once, cached). */
  pagemapIndex(pid: number): Promise<PagemapIndex> {
    let p = this.indexes.get(String(pid));
    if (!p) {
      p = this.pagemap(pid).then((r) => PagemapIndex.build(r));
      p.catch(() => this.indexes.delete(String(pid)));
      this.indexes.set(String(pid), p);
    }
    return p;
  }

  /**
   * Where the data of `nPages` pages at `vaddr` of process `pid` lives:
   * pieces in this directory's pages file, and for PE_PARENT ranges in the
   * parent chain's (same pid key, each level's own pages_id). Adjacent pieces
   * of one file are merged. A page without stored data (not in any pagemap,
   * or PE_LAZY without PE_PRESENT) is an ImageError: callers must never
   * substitute zeros for it.
   */
  async resolvePages(pid: number, vaddr: bigint, nPages: number): Promise<PagePiece[]> {
    const idx = await this.pagemapIndex(pid);
    const pieces: PagePiece[] = [];
    const push = (p: PagePiece): void => {
      const last = pieces[pieces.length - 1];
      if (last && last.file === p.file && last.offset + last.nrPages * PAGE_SIZE === p.offset
        && last.vaddr + BigInt(last.nrPages) * PAGE === p.vaddr) {
        last.nrPages += p.nrPages;
      } else {
        pieces.push(p);
      }
    };
    let cur = vaddr;
    const end = vaddr + BigInt(nPages) * PAGE;
    while (cur < end) {
      const i = idx.find(cur);
      if (i < 0) throw new ImageError(idx.file, undefined, `no pagemap entry covers 0x${cur.toString(16)} (pid ${pid})`);
      const e = idx.entry(i);
      const entryEnd = e.vaddr + BigInt(e.nrPages) * PAGE;
      const stop = entryEnd < end ? entryEnd : end;
      const take = Number((stop - cur) / PAGE);
      if (e.flags & PE_PRESENT) {
        push({ vaddr: cur, nrPages: take, file: idx.pagesPath, offset: e.pagesOffset! + Number(cur - e.vaddr) });
      } else if (e.flags & PE_PARENT) {
        const parent = await this.parent();
        if (!parent) throw new ImageError(idx.file, undefined, `PE_PARENT pages at 0x${cur.toString(16)} but ${this.dir} has no parent link`);
        for (const p of await parent.resolvePages(pid, cur, take)) push(p);
      } else {
        throw new ImageError(idx.file, undefined, `pages at 0x${cur.toString(16)} are lazy and not stored in this image (dumped with --lazy-pages; they need a page server)`);
      }
      cur = stop;
    }
    return pieces;
  }
}
