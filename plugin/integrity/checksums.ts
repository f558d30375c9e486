// Page checksums at restore time: finds the lr-checksums-<id>.img that goes
// with a pages-<id>.img, checks it describes that file, and verifies the
// chunks a restore is about to write (eager restore). The lazy daemon hands
// the same checksums to the native fault engine, which verifies a chunk the
// first time it serves from it.
import { closeSync, existsSync, openSync, readFileSync, readSync, statSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { ImageError } from '../errors.js';
import { log } from '../log.js';
import { checkChecksumsEntry, crc32c } from '../images/checksums.js';
import { decodeImage } from '../images/image.js';
import { KIND, imageFileName } from '../images/magic.js';
import type { PageChecksumsEntry } from '../images/types.js';

/** lr-checksums-<id>.img next to pages-<id>.img; undefined for a file not named like a pages image. */
export function checksumsPathFor(pagesPath: string): string | undefined {
  const m = /^pages-(\d+)\.img$/.exec(basename(pagesPath));
  return m ? join(dirname(pagesPath), imageFileName(KIND.checksums, Number(m[1]))) : undefined;
}

/**
 * The checksums of `pagesPath`, or undefined when it has none (images from
 * CRIU, or dumped before checksums existed). A checksums image that does not
 * match its pages file (size, chunk count) is an ImageError.
 */
export function loadPageChecksums(pagesPath: string): { entry: PageChecksumsEntry; file: string } | undefined {
  const file = checksumsPathFor(pagesPath);
  if (file === undefined || !existsSync(file)) return undefined;
  const img = decodeImage(readFileSync(file), file, KIND.checksums);
  if (img.entries.length !== 1) throw new ImageError(file, undefined, `expected exactly one entry, found ${img.entries.length}`);
  const entry = img.entries[0]!.message as unknown as PageChecksumsEntry;
  checkChecksumsEntry(entry, file);
  const size = BigInt(statSync(pagesPath).size);
  if (size !== entry.file_size) throw new ImageError(pagesPath, undefined, `has ${size} bytes, ${basename(file)} expects ${entry.file_size}`);
  return { entry, file };
}

const toldUnverified = new Set<string>();

/**
 * Says, once per pages file for the life of the process and at info level,
 * that its pages are restored without verification: images written by CRIU
 * carry no lr-checksums image (an eager restore and the lazy daemon of the
 * same command share this one line).
 */
export function noteUnverified(pagesPath: string): void {
  if (toldUnverified.has(pagesPath)) return;
  toldUnverified.add(pagesPath);
  log.info(`${pagesPath}: no checksums image (not written by lazy-restore?): its pages are restored unverified`);
}

export interface NativeChecks { sums: Uint32Array; chunkSize: number; verified: Uint8Array }

/**
 * Verifies, once per chunk, the page data of pages files before a restore
 * writes it. Files without checksums pass unverified (`onUnverified` is told
 * once per file).
 */
export class PageVerifier {
  private readonly files = new Map<string, { entry: PageChecksumsEntry; done: Uint8Array } | null>();
  private readonly native = new Map<string, NativeChecks | null>();

  constructor(private readonly onUnverified: (pagesPath: string) => void = noteUnverified) {}

  /**
   * The checksums of `pagesPath` for the native writer (restoreWritePages
   * verifies each chunk in the same pass as it writes it), or undefined
   * when the file has none. The `verified` flags persist across calls, so a
   * chunk is checked once per restore.
   */
  nativeChecks(pagesPath: string): NativeChecks | undefined {
    let n = this.native.get(pagesPath);
    if (n === undefined) {
      const c = loadPageChecksums(pagesPath);
      n = c ? { sums: Uint32Array.from(c.entry.checksums), chunkSize: c.entry.chunk_size, verified: new Uint8Array(c.entry.checksums.length) } : null;
      this.native.set(pagesPath, n);
      if (!c) this.onUnverified(pagesPath);
    }
    return n ?? undefined;
  }

  /** The ImageError for a native EBADMSG mismatch (chunk/stored/computed set by the addon), else undefined. */
  static mismatchError(pid: number, pagesPath: string, checks: NativeChecks, e: unknown): ImageError | undefined {
    const x = e as { code?: string; syscall?: string; chunk?: number; stored?: number; computed?: number };
    if (x?.code !== 'EBADMSG' || x.syscall !== 'crc32c' || typeof x.chunk !== 'number') return undefined;
    const at = x.chunk * checks.chunkSize;
    return new ImageError(pagesPath, at, `pid ${pid}: CRC32C mismatch in chunk ${x.chunk} (stored 0x${(x.stored ?? 0).toString(16)}, computed 0x${(x.computed ?? 0).toString(16)}): refusing to restore corrupted memory`);
  }

  /** Throws an ImageError naming the file, the chunk's offset and `pid` on a mismatch. */
  verify(pid: number, pagesPath: string, ranges: readonly { offset: bigint; len: bigint }[]): void {
    let f = this.files.get(pagesPath);
    if (f === undefined) {
      const c = loadPageChecksums(pagesPath);
      f = c ? { entry: c.entry, done: new Uint8Array(c.entry.checksums.length) } : null;
      this.files.set(pagesPath, f);
      if (!c) this.onUnverified(pagesPath);
    }
    if (f === null) return;
    const { entry, done } = f;
    const chunk = BigInt(entry.chunk_size);
    const todo: number[] = [];
    for (const r of ranges) {
      if (r.len <= 0n) continue;
      for (let i = Number(r.offset / chunk); i <= Number((r.offset + r.len - 1n) / chunk) && i < done.length; i++) {
        if (!done[i]) {
          done[i] = 1;
          todo.push(i);
        }
      }
    }
    if (todo.length === 0) return;
    todo.sort((a, b) => a - b);
    const fd = openSync(pagesPath, 'r');
    try {
      const buf = Buffer.allocUnsafe(entry.chunk_size);
      for (const i of todo) {
        const at = i * entry.chunk_size;
        const n = Math.min(entry.chunk_size, Number(entry.file_size) - at);
        let got = 0;
        while (got < n) {
          const k = readSync(fd, buf, got, n - got, at + got);
          if (k === 0) throw new ImageError(pagesPath, at + got, `pid ${pid}: file shrank while being verified`);
          got += k;
        }
        const crc = crc32c(buf.subarray(0, n));
        if (crc !== entry.checksums[i]) {
          done[i] = 0;
          throw new ImageError(pagesPath, at, `pid ${pid}: CRC32C mismatch in chunk ${i} (stored 0x${entry.checksums[i]!.toString(16)}, computed 0x${crc.toString(16)}): refusing to restore corrupted memory`);
        }
      }
    } finally {
      closeSync(fd);
    }
  }
}
