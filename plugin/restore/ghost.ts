// Deleted files that were still open or mapped (CRIU's ghost files,
// remap-fpath.img + ghost-file-<id>.img; written by plugin/dump/ghost.ts or
// CRIU). Before anything opens them, each ghost is recreated next to the
// path it had, as "<path>.cr.<id in hex>.ghost" (CRIU's name), with its
// contents (holes kept), mode, owner and times; the files.img entries that
// name it are pointed at that path, so fds and mappings open it like any
// file (a mem device node is made with mknod). Once every process of the tree holds what it needs the ghosts are
// unlinked (remove()), leaving the restored processes an unlinked file, as
// before the dump. A failed restore removes them too.
// Files the dump kept by a link-remap name (--link-remap, REMAP_TYPE LINKED,
// plugin/dump/link-remap.ts) are linked back under their old name, opened
// by it and unlinked again; the link-remap name is unlinked once the restore
// has every file open (kept if the restore fails, as CRIU).
import { execFileSync } from 'node:child_process';
import { chmodSync, chownSync, utimesSync, closeSync, linkSync, lstatSync, ftruncateSync, fchmodSync, fchownSync, futimesSync, openSync, unlinkSync, writeSync, constants } from 'node:fs';
import { ImageError, UserError } from '../errors.js';
import { KIND, RemapType, type FileEntry, type GhostChunkEntry, type GhostFileEntry, type ImageDir, type RemapFilePathEntry } from '../images/index.js';

export class GhostFiles {
  /** Link-remap names from the dump (CRIU's --link-remap): unlinked once the restore is done, kept if it fails. */
  private readonly linkNames: string[] = [];

  private constructor(private readonly paths: string[]) {}

  static none(): GhostFiles {
    return new GhostFiles([]);
  }

  /**
   * Reads remap-fpath.img (none: no ghosts), recreates every ghost file and
   * points its files.img entries (in `files`, replaced) at it.
   */
  static async create(dir: ImageDir, files: Map<number, FileEntry>): Promise<GhostFiles> {
    const remapImage = dir.pathOf(KIND.remapFpath);
    const remaps = await dir.readEntries<RemapFilePathEntry>(KIND.remapFpath);
    const made = new GhostFiles([]);
    const byId = new Map<number, string>();
    try {
      for (const r of remaps) {
        const type = r.remap_type ?? RemapType.LINKED;
        const f = files.get(r.orig_id);
        if (!f?.reg) throw new ImageError(remapImage, undefined, `remap of files.img id ${r.orig_id}, which is not a regular file`);
        if (type === RemapType.LINKED) {
          files.set(r.orig_id, { ...f, reg: { ...f.reg, name: made.linked(remapImage, f.reg.name, r.remap_id, files) } });
          continue;
        }
        if (type !== RemapType.GHOST) {
          throw new UserError(`${remapImage}: ${f.reg.name} (files.img id ${r.orig_id}) is a remap of type ${type}, which restore does not support`);
        }
        let path = byId.get(r.remap_id);
        if (path === undefined) {
          path = `${f.reg.name}.cr.${r.remap_id.toString(16)}.ghost`;
          await made.make(dir, r.remap_id, path);
          byId.set(r.remap_id, path);
        }
        files.set(r.orig_id, { ...f, reg: { ...f.reg, name: path } });
      }
    } catch (e) {
      made.remove();
      throw e;
    }
    return made;
  }

  /** Paths of the ghosts on disk (until remove()). */
  get created(): readonly string[] {
    return this.paths;
  }

  /**
   * A file the dump kept by a link-remap name (REMAP_TYPE LINKED: files.img
   * entry `remapId` names it). As CRIU, it is linked back under the name it
   * had (`path`), so the restored fd shows that name once unlinked; where
   * that name is taken or its directory is gone it is opened through the
   * link-remap name itself. Returns the name to open.
   */
  private linked(remapImage: string, path: string, remapId: number, files: Map<number, FileEntry>): string {
    const rf = files.get(remapId);
    if (!rf?.reg) throw new ImageError(remapImage, undefined, `link remap of ${path} names files.img id ${remapId}, which is not a regular file`);
    const name = rf.reg.name;
    try {
      lstatSync(name);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code ?? String(e);
      throw new UserError(`${remapImage}: the link remap ${name} of the deleted file ${path} cannot be opened: ${code} (it exists only between a dump that kills the tree and the first successful restore)`, { cause: e });
    }
    if (!this.linkNames.includes(name)) this.linkNames.push(name);
    try {
      linkSync(name, path);
    } catch {
      // Linked back already for another entry of the same file (an fd and a mapping of it)?
      if (this.paths.includes(path) && sameFile(path, name)) return path;
      return name; // the name is taken (EEXIST) or its directory is gone (ENOENT)
    }
    this.paths.push(path);
    return path;
  }

  private async make(dir: ImageDir, id: number, path: string): Promise<void> {
    const img = await dir.readImage(KIND.ghostFile, id);
    const file = dir.pathOf(KIND.ghostFile, id);
    if (!img || img.entries.length === 0) throw new ImageError(file, undefined, 'ghost image is missing (ENOENT)');
    const [head, ...chunks] = img.entries;
    const g = head!.message as unknown as GhostFileEntry;
    const fmt = g.mode & constants.S_IFMT;
    if (fmt === constants.S_IFCHR) {
      this.makeDevice(file, path, g);
      return;
    }
    if (fmt !== constants.S_IFREG) {
      throw new UserError(`${file}: ghost of ${path} is not a regular file or a character device (mode 0${g.mode.toString(8)}), which restore does not support`);
    }
    if (g.chunks && g.size === undefined) throw new ImageError(file, head!.offset, 'chunked ghost without a size');
    let fd: number;
    try {
      fd = openSync(path, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL, 0o600);
    } catch (e) {
      throw new UserError(`cannot recreate the deleted file ${path}: ${(e as NodeJS.ErrnoException).code ?? String(e)}`, { cause: e });
    }
    this.paths.push(path);
    try {
      if (g.chunks) {
        ftruncateSync(fd, Number(g.size!));
        for (const c of chunks) {
          const m = c.message as unknown as GhostChunkEntry;
          const data = c.extra ?? Buffer.alloc(0);
          if (BigInt(data.length) !== m.len) throw new ImageError(file, c.offset, `chunk at ${m.off}: ${m.len} bytes announced, ${data.length} present`);
          if (m.off + m.len > g.size!) throw new ImageError(file, c.offset, `chunk at ${m.off} (${m.len} bytes) runs past the file size ${g.size}`);
          writeAll(fd, data, m.off);
        }
      } else {
        writeAll(fd, head!.extra ?? Buffer.alloc(0), 0n);
      }
      fchownSync(fd, g.uid, g.gid);
      fchmodSync(fd, g.mode & 0o7777);
      if (g.atim && g.mtim) {
        const t = (v: { tv_sec: bigint; tv_usec: bigint }): number => Number(v.tv_sec) + Number(v.tv_usec) / 1e6;
        futimesSync(fd, t(g.atim), t(g.mtim));
      }
    } finally {
      closeSync(fd);
    }
  }

  /** A character device node (mknod(1): Node has no mknod), with owner, mode and times. */
  private makeDevice(file: string, path: string, g: GhostFileEntry): void {
    if (g.rdev === undefined) throw new ImageError(file, undefined, `ghost device ${path} without rdev`);
    const major = ((g.rdev >>> 8) & 0xfff) >>> 0;
    const minor = ((g.rdev & 0xff) | ((g.rdev >>> 12) & 0xfff00)) >>> 0;
    try {
      execFileSync('mknod', ['-m', '600', path, 'c', String(major), String(minor)], { stdio: ['ignore', 'ignore', 'pipe'], timeout: 10000 });
    } catch (e) {
      const err = ((e as { stderr?: Buffer }).stderr?.toString() ?? String(e)).trim();
      throw new UserError(`cannot recreate the deleted device node ${path} (${major}:${minor}): ${err}`, { cause: e });
    }
    this.paths.push(path);
    chownSync(path, g.uid, g.gid);
    chmodSync(path, g.mode & 0o7777);
    if (g.atim && g.mtim) {
      const t = (v: { tv_sec: bigint; tv_usec: bigint }): number => Number(v.tv_sec) + Number(v.tv_usec) / 1e6;
      utimesSync(path, t(g.atim), t(g.mtim));
    }
  }

  /**
   * Unlinks every ghost and every name linked back for a link remap
   * (idempotent; never throws). `done`: the restore has every file open, so
   * the dump's link-remap names go too (a failed restore keeps them, so it
   * can be tried again, as CRIU).
   */
  remove(done = false): void {
    const names = done ? [...this.paths.splice(0), ...this.linkNames.splice(0)] : this.paths.splice(0);
    for (const p of names) {
      try {
        unlinkSync(p);
      } catch { /* already gone */ }
    }
  }
}

function sameFile(a: string, b: string): boolean {
  try {
    const x = lstatSync(a);
    const y = lstatSync(b);
    return x.ino === y.ino && x.dev === y.dev;
  } catch {
    return false;
  }
}

function writeAll(fd: number, data: Buffer, at: bigint): void {
  let done = 0;
  while (done < data.length) done += writeSync(fd, data, done, data.length - done, Number(at) + done);
}
