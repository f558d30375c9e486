// Page checksums (lr-checksums-<pages_id>.img): CRC32C of each fixed-size
// chunk of a pages file, computed after a dump and checked before page data
// is trusted. CRC32C (Castagnoli, as in iSCSI/ext4) in slicing-by-8 form.
import { open, stat } from 'node:fs/promises';
import { basename } from 'node:path';
import { ImageError } from '../errors.js';
import { PAGE_SIZE } from './memory.js';
import { ChecksumAlgorithm, type PageChecksumsEntry } from './types.js';

const TABLES: Uint32Array[] = (() => {
  const t: Uint32Array[] = Array.from({ length: 8 }, () => new Uint32Array(256));
  for (let i = 0; i < 256; i++) {
    let c = i;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0x82f63b78 : c >>> 1;
    t[0]![i] = c >>> 0;
  }
  for (let i = 0; i < 256; i++) {
    for (let s = 1; s < 8; s++) t[s]![i] = (t[s - 1]![i]! >>> 8) ^ t[0]![t[s - 1]![i]! & 0xff]!;
  }
  return t;
})();

/** CRC32C of `data`, continuing from `crc` (the value returned for the bytes before). */
export function crc32c(data: Uint8Array, crc = 0): number {
  const [t0, t1, t2, t3, t4, t5, t6, t7] = TABLES as [Uint32Array, Uint32Array, Uint32Array, Uint32Array, Uint32Array, Uint32Array, Uint32Array, Uint32Array];
  let c = ~crc >>> 0;
  let i = 0;
  const n8 = data.length - (data.length % 8);
  for (; i < n8; i += 8) {
    const lo = (c ^ (data[i]! | (data[i + 1]! << 8) | (data[i + 2]! << 16) | (data[i + 3]! << 24))) >>> 0;
    c = t7[lo & 0xff]! ^ t6[(lo >>> 8) & 0xff]! ^ t5[(lo >>> 16) & 0xff]! ^ t4[lo >>> 24]!
      ^ t3[data[i + 4]!]! ^ t2[data[i + 5]!]! ^ t1[data[i + 6]!]! ^ t0[data[i + 7]!]!;
  }
  for (; i < data.length; i++) c = t0[(c ^ data[i]!) & 0xff]! ^ (c >>> 8);
  return ~c >>> 0;
}

/** Default chunk: 64 pages, small enough to verify a lazily served range cheaply. */
export const DEFAULT_CHECKSUM_CHUNK = 64 * PAGE_SIZE;

let nativeFn: ((path: string, chunk: number) => Uint32Array) | null | undefined;
async function nativeChecksumFile(): Promise<((path: string, chunk: number) => Uint32Array) | null> {
  if (nativeFn === undefined) {
    try {
      const { addon } = await import('../native/addon.js');
      nativeFn = typeof addon.checksumFile === 'function' ? addon.checksumFile.bind(addon) : null;
    } catch {
      nativeFn = null;
    }
  }
  return nativeFn;
}

/** Checksums of every chunk of a pages file. */
export async function computePageChecksums(pagesPath: string, pagesId: number, chunkSize = DEFAULT_CHECKSUM_CHUNK): Promise<PageChecksumsEntry> {
  if (chunkSize <= 0 || chunkSize % PAGE_SIZE) throw new RangeError(`checksum chunk size ${chunkSize} is not a multiple of ${PAGE_SIZE}`);
  // The native addon (hardware CRC32C, ~10x the table code below) when built.
  const native = await nativeChecksumFile();
  if (native) {
    let sums: Uint32Array;
    try {
      sums = native(pagesPath, chunkSize);
    } catch (e) {
      const x = e as { code?: string; message?: string };
      throw new ImageError(pagesPath, undefined, `cannot checksum: ${x.code ?? ''} ${x.message ?? String(e)}`.trim());
    }
    const size = (await stat(pagesPath)).size;
    if (Math.ceil(size / chunkSize) !== sums.length) throw new ImageError(pagesPath, undefined, 'file changed size while being checksummed');
    return { pages_id: pagesId, chunk_size: chunkSize, algorithm: ChecksumAlgorithm.CRC32C, file_size: BigInt(size), checksums: Array.from(sums) };
  }
  const fh = await open(pagesPath, 'r');
  try {
    const size = (await fh.stat()).size;
    const per = Math.max(1, Math.floor((4 << 20) / chunkSize)) * chunkSize; // read ~4 MiB at a time
    const buf = Buffer.allocUnsafe(per);
    const checksums: number[] = [];
    for (let off = 0; off < size; off += per) {
      const want = Math.min(per, size - off);
      let got = 0;
      while (got < want) {
        const { bytesRead } = await fh.read(buf, got, want - got, off + got);
        if (bytesRead === 0) throw new ImageError(pagesPath, off + got, 'file shrank while being checksummed');
        got += bytesRead;
      }
      for (let p = 0; p < want; p += chunkSize) checksums.push(crc32c(buf.subarray(p, Math.min(p + chunkSize, want))));
    }
    return { pages_id: pagesId, chunk_size: chunkSize, algorithm: ChecksumAlgorithm.CRC32C, file_size: BigInt(size), checksums };
  } finally {
    await fh.close();
  }
}

/** Consistency of a checksums entry itself (algorithm, sizes, count). */
export function checkChecksumsEntry(e: PageChecksumsEntry, file: string): void {
  if (e.algorithm !== ChecksumAlgorithm.CRC32C) throw new ImageError(file, undefined, `unknown checksum algorithm ${e.algorithm}`);
  if (e.chunk_size <= 0 || e.chunk_size % PAGE_SIZE) throw new ImageError(file, undefined, `bad checksum chunk size ${e.chunk_size}`);
  const want = Math.ceil(Number(e.file_size) / e.chunk_size);
  if (e.checksums.length !== want) throw new ImageError(file, undefined, `${e.checksums.length} checksums for ${e.file_size} bytes in chunks of ${e.chunk_size} (expected ${want})`);
}

/**
 * Verifies a pages file against its checksums; the first mismatch is an
 * ImageError naming the pages file and the chunk's offset.
 */
export async function verifyPageChecksums(pagesPath: string, e: PageChecksumsEntry, checksumsFile = `lr-checksums-${e.pages_id}.img`): Promise<void> {
  checkChecksumsEntry(e, checksumsFile);
  const now = await computePageChecksums(pagesPath, e.pages_id, e.chunk_size);
  if (now.file_size !== e.file_size) {
    throw new ImageError(pagesPath, undefined, `has ${now.file_size} bytes, ${basename(checksumsFile)} expects ${e.file_size}`);
  }
  for (let i = 0; i < e.checksums.length; i++) {
    if (now.checksums[i] !== e.checksums[i]) {
      throw new ImageError(pagesPath, i * e.chunk_size, `CRC32C mismatch in chunk ${i} (stored 0x${e.checksums[i]!.toString(16)}, computed 0x${now.checksums[i]!.toString(16)})`);
    }
  }
}

/**
 * Checks `data` read from the pages file at `offset`, which must cover whole
 * chunks (except the file's last, short one). Returns the index of the first
 * bad chunk, or -1.
 */
export function firstBadChunk(e: PageChecksumsEntry, offset: number, data: Uint8Array): number {
  if (offset % e.chunk_size) throw new RangeError(`offset ${offset} is not at a chunk boundary (${e.chunk_size})`);
  for (let p = 0; p < data.length; p += e.chunk_size) {
    const idx = (offset + p) / e.chunk_size;
    if (crc32c(data.subarray(p, Math.min(p + e.chunk_size, data.length))) !== e.checksums[idx]) return idx;
  }
  return -1;
}
