// Deleted files that are still open or mapped (CRIU's ghost files): a
// regular file whose last name was unlinked (nlink 0) lives only as long as
// an fd or a mapping holds it, so the dump carries its contents. As CRIU 4.2:
// one ghost-file-<id>.img per inode (ghost_file_entry: owner, mode, times,
// dev/ino, then the contents: raw to the end of the image for files under
// 12 KiB, else ghost_chunk_entry records, one per data segment, each followed
// by its bytes, so holes stay holes), and one remap_file_path_entry
// (REMAP_TYPE GHOST) in remap-fpath.img per files.img entry that names it.
// The files.img entry keeps the path the file had (" (deleted)" cut off).
// Mem device nodes (major 1) are ghosts too: no contents, their rdev.
// A file bigger than --ghost-limit (blocks on disk, as CRIU counts) is refused.
import { closeSync, openSync, readSync, type BigIntStats } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import {
  encodeImage, KIND, RemapType, type GhostChunkEntry, type GhostFileEntry, type ImageDir, type RemapFilePathEntry,
} from '../images/index.js';
import { addon } from '../native/addon.js';
import { isMemDevice } from './fds/common.js';

/** CRIU's default --ghost-limit: 1 MiB. */
export const DEFAULT_GHOST_LIMIT = 1n << 20n;

/** Files this small are stored in one piece (CRIU's GHOST_CHUNKS_THRESH). */
const CHUNKS_THRESHOLD = 3n * 4096n;

const DELETED = ' (deleted)';

/** The path a deleted file had: the link target without " (deleted)". */
export function deletedPath(target: string): string | undefined {
  return target.endsWith(DELETED) ? target.slice(0, -DELETED.length) : undefined;
}

/**
 * Why a deleted file cannot be dumped as a ghost (undefined: it can).
 * `where` prefixes the message ("pid P: fd N (path)"). A regular file still
 * linked elsewhere (nlink > 0) is dumped with a link remap instead when
 * `linkRemap` (--link-remap) allows it (plugin/dump/link-remap.ts; see
 * isLinkRemap).
 */
export function ghostProblem(where: string, path: string, st: BigIntStats, limit: bigint, linkRemap = false): string | undefined {
  if (st.nlink !== 0n) {
    if (!st.isFile()) return `${where}: a deleted ${kindOf(st)} still linked elsewhere is not supported`;
    if (linkRemap) return undefined;
    // CRIU: "Can't create link remap for %s. Use --link-remap option."
    return `${where}: can't create link remap for ${path} (deleted, still linked elsewhere: nlink ${st.nlink}): use the --link-remap option`;
  }
  // Regular files, and mem device nodes (/dev/null's kind, zdtm deleted_dev: recreated with mknod).
  if (st.isCharacterDevice() && isMemDevice(st)) return undefined;
  if (!st.isFile()) return `${where}: a deleted ${kindOf(st)} is not supported (only regular files and mem device nodes are dumped as ghost files)`;
  const onDisk = st.blocks * 512n;
  if (onDisk > limit) {
    // CRIU: "Can't dump ghost file %s of %lu size, increase limit".
    return `${where}: can't dump ghost file ${path} of ${onDisk} size, increase limit (--ghost-limit, now ${limit})`;
  }
  return undefined;
}

/** A deleted file that the dump keeps by a link remap (still linked elsewhere). */
export function isLinkRemap(st: BigIntStats): boolean {
  return st.nlink !== 0n && st.isFile();
}

function kindOf(st: BigIntStats): string {
  if (st.isDirectory()) return 'directory';
  if (st.isSymbolicLink()) return 'symlink';
  if (st.isCharacterDevice() || st.isBlockDevice()) return 'device node';
  if (st.isFIFO()) return 'FIFO';
  if (st.isSocket()) return 'socket';
  return 'file';
}

interface Ghost {
  id: number;
  entry: GhostFileEntry;
  /** Raw contents (small files) or chunks with their bytes. */
  raw?: Buffer;
  chunks?: { message: GhostChunkEntry; extra: Buffer }[];
}

/** The ghost files of one dump and the remaps naming them. */
export class GhostFiles {
  private readonly byInode = new Map<string, Ghost>();
  private readonly remaps: RemapFilePathEntry[] = [];
  private nextId = 1;

  constructor(readonly limit: bigint = DEFAULT_GHOST_LIMIT) {}

  /**
   * Files.img entry `origId` names a deleted file, readable through `source`
   * (/proc/PID/fd/N or /proc/PID/map_files/...): its contents are taken now,
   * once per inode (the tree is frozen).
   */
  add(origId: number, source: string, st: BigIntStats): void {
    const key = `${st.dev}:${st.ino}`;
    let g = this.byInode.get(key);
    if (!g) {
      g = this.read(source, st);
      this.byInode.set(key, g);
    }
    this.remaps.push({ orig_id: origId, remap_id: g.id, remap_type: RemapType.GHOST });
  }

  /** Files.img entry `origId` is reopened through entry `remapId`, a link-remap name (plugin/dump/link-remap.ts). */
  addLinked(origId: number, remapId: number): void {
    this.remaps.push({ orig_id: origId, remap_id: remapId, remap_type: RemapType.LINKED });
  }

  get count(): number {
    return this.byInode.size;
  }

  private read(source: string, st: BigIntStats): Ghost {
    const ms = (ns: bigint): { tv_sec: bigint; tv_usec: bigint } => ({ tv_sec: ns / 1_000_000_000n, tv_usec: (ns % 1_000_000_000n) / 1000n });
    const entry: GhostFileEntry = {
      uid: Number(st.uid), gid: Number(st.gid), mode: Number(st.mode), dev: Number(st.dev & 0xffffffffn), ino: st.ino,
      atim: ms(st.atimeNs), mtim: ms(st.mtimeNs),
    };
    const g: Ghost = { id: this.nextId++, entry };
    if (!st.isFile()) {
      // A device node: no contents, its device number (CRIU: rdev for S_ISCHR/S_ISBLK).
      entry.rdev = Number(st.rdev & 0xffffffffn);
      g.raw = Buffer.alloc(0);
      return g;
    }
    // Opened by the dumper through /proc: works whatever the file's permissions.
    const fd = openSync(source, 'r');
    try {
      const size = st.size;
      if (size >= CHUNKS_THRESHOLD) {
        entry.chunks = true;
        entry.size = size;
        g.chunks = [];
        const runs = addon.shmemDataRuns(fd, size);
        for (let i = 0; i + 1 < runs.length; i += 2) {
          const off = runs[i]!;
          let len = runs[i + 1]!;
          if (off >= size) break;
          if (off + len > size) len = size - off;
          g.chunks.push({ message: { len, off }, extra: readAt(fd, off, len, source) });
        }
      } else {
        g.raw = readAt(fd, 0n, size, source);
      }
    } finally {
      closeSync(fd);
    }
    return g;
  }

  async write(dir: ImageDir): Promise<void> {
    if (this.remaps.length === 0) return;
    await dir.writeImage(KIND.remapFpath, undefined, this.remaps);
    for (const g of this.byInode.values()) {
      const entries = g.chunks ? [{ message: g.entry }, ...g.chunks] : [{ message: g.entry, extra: g.raw! }];
      await writeFile(dir.pathOf(KIND.ghostFile, g.id), encodeImage(KIND.ghostFile, entries));
    }
  }
}

function readAt(fd: number, off: bigint, len: bigint, source: string): Buffer {
  const b = Buffer.alloc(Number(len));
  let got = 0;
  while (got < b.length) {
    const n = readSync(fd, b, got, b.length - got, Number(off) + got);
    if (n === 0) throw new Error(`${source}: the deleted file ended at ${Number(off) + got} while reading ${len} bytes at ${off}`);
    got += n;
  }
  return b;
}
