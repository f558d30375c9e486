// Streaming pagemap reader (IMAGE-FORMAT §3.10, §4): validates entries and
// computes each entry's byte offset in pages-<id>.img.
import { statSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { ImageError } from '../errors.js';
import { ChunkedReader, parseHeader } from './framing.js';
import { KIND, imageFileName } from './magic.js';
import { EntryDecodeError, decodePagemapEntry, decodePagemapHead, entryFlags, entryPages } from './pagemap-codec.js';
import { PAGE, PAGE_SIZE, PE_PARENT, PE_PRESENT } from './memory.js';
import type { PagemapEntry, PagemapHead } from './types.js';

const U64_MAX = (1n << 64n) - 1n;
/** Largest page count whose byte size is still an exact Number. */
const MAX_PAGES = BigInt(Number.MAX_SAFE_INTEGER) / PAGE;

/** One pagemap entry with everything a consumer needs resolved. */
export interface PagemapRecord {
  /** The entry as stored. */
  entry: PagemapEntry;
  vaddr: bigint;
  /** vaddr + nrPages * PAGE_SIZE (exclusive). */
  end: bigint;
  /** Page count: nr_pages (field 5) if present, else compat_nr_pages. */
  nrPages: number;
  /** Effective PE_* flags (legacy entries: in_parent → PE_PARENT, neither → PE_PRESENT). */
  flags: number;
  /** Byte offset of the data in the pages file when flags has PE_PRESENT. */
  pagesOffset: number | undefined;
  /** Offset of the entry's size prefix in the pagemap file. */
  imageOffset: number;
}

export interface PagemapReaderOptions {
  /** Directory of the pages file (default: the pagemap's directory). */
  pagesDir?: string;
  /** Check that the pages file is exactly as long as the entries say (default true). */
  checkPagesSize?: boolean;
  /**
   * Check entries (alignment, order, counts, flags, pages inside the pages
   * file); default true. Off only for plain decoding (`show`): framing and
   * protobuf errors are still reported.
   */
  validate?: boolean;
}

/**
 * Streams one pagemap image. Validates while it goes: page-aligned vaddr,
 * non-zero counts, ascending non-overlapping entries, known flags, present
 * pages inside the pages file — each failure an ImageError naming the
 * pagemap file and the entry's offset. Iterate once; the file is closed at
 * the end of iteration (or by close()).
 */
export class PagemapReader {
  private consumed = false;
  private constructor(
    readonly file: string,
    readonly head: PagemapHead,
    readonly pagesPath: string,
    /** Size of the pages file; undefined when it does not exist. */
    readonly pagesSize: number | undefined,
    private readonly reader: ChunkedReader,
    private readonly checkPagesSize: boolean,
    private readonly validate: boolean,
  ) {}

  static async open(file: string, opts: PagemapReaderOptions = {}): Promise<PagemapReader> {
    const reader = await ChunkedReader.open(file).catch((e: unknown) => {
      throw new ImageError(file, undefined, `cannot open pagemap: ${(e as NodeJS.ErrnoException).code ?? String(e)}`, { cause: e });
    });
    try {
      await reader.ensure(8);
      const { buf, pos } = reader.window();
      const header = parseHeader(buf.subarray(pos), file, KIND.pagemap);
      reader.advance(header.size);
      const lenBuf = await reader.read(4, 'pagemap_head size', true);
      if (!lenBuf) throw new ImageError(file, reader.offset, 'pagemap has no pagemap_head entry');
      const len = lenBuf.readUInt32LE(0);
      const at = reader.offset - 4;
      const body = await reader.read(len, `pagemap_head (size ${len})`);
      const head = decodePagemapHead(body!, file, at);
      const pagesPath = join(opts.pagesDir ?? dirname(file), imageFileName(KIND.pages, head.pages_id));
      let pagesSize: number | undefined;
      try {
        pagesSize = statSync(pagesPath).size;
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
      }
      const validate = opts.validate ?? true;
      return new PagemapReader(file, head, pagesPath, pagesSize, reader, validate && (opts.checkPagesSize ?? true), validate);
    } catch (e) {
      await reader.close();
      throw e;
    }
  }

  /** Entries in batches of up to `max` (cheaper than one await per entry). */
  async *batches(max = 4096): AsyncGenerator<PagemapRecord[], void, undefined> {
    if (this.consumed) throw new Error(`${this.file}: pagemap reader already consumed`);
    this.consumed = true;
    const r = this.reader;
    const file = this.file;
    let prevEnd = 0n;
    let off = 0; // running byte offset into the pages file
    const pagesName = basename(this.pagesPath);
    try {
      for (;;) {
        const batch: PagemapRecord[] = [];
        let have = await r.ensure(64 * 1024);
        if (have === 0) break;
        let { buf, pos } = r.window();
        const base = r.offset - pos; // file offset of buf[0]
        while (batch.length < max) {
          if (have < 4) break;
          const len = buf.readUInt32LE(pos);
          if (have < 4 + len) break;
          const at = base + pos;
          let e: PagemapEntry;
          try {
            e = decodePagemapEntry(buf, pos + 4, pos + 4 + len);
          } catch (err) {
            if (err instanceof EntryDecodeError) throw new ImageError(file, at, `cannot decode pagemap_entry: ${err.message}`);
            throw err;
          }
          const n = entryPages(e);
          const flags = entryFlags(e);
          if (!this.validate) {
            const present = (flags & PE_PRESENT) !== 0;
            const nrPages = Number(n);
            batch.push({ entry: e, vaddr: e.vaddr, end: e.vaddr + n * PAGE, nrPages, flags, pagesOffset: present ? off : undefined, imageOffset: at });
            if (present) off += nrPages * PAGE_SIZE;
            pos += 4 + len;
            have -= 4 + len;
            continue;
          }
          if (n === 0n) throw new ImageError(file, at, `pagemap entry at 0x${e.vaddr.toString(16)} has zero pages`);
          if (e.vaddr % PAGE !== 0n) throw new ImageError(file, at, `pagemap entry vaddr 0x${e.vaddr.toString(16)} is not page-aligned`);
          if (flags === 0 || flags & ~7 || (flags & PE_PARENT && flags & PE_PRESENT)) {
            throw new ImageError(file, at, `pagemap entry at 0x${e.vaddr.toString(16)} has invalid flags 0x${flags.toString(16)}`);
          }
          if (e.vaddr < prevEnd) {
            throw new ImageError(file, at, `pagemap entry at 0x${e.vaddr.toString(16)} overlaps or precedes the previous entry (ending at 0x${prevEnd.toString(16)}); entries must be sorted and disjoint`);
          }
          const end = e.vaddr + n * PAGE;
          if (end > U64_MAX + 1n || n > MAX_PAGES) {
            throw new ImageError(file, at, `pagemap entry at 0x${e.vaddr.toString(16)} has an impossible page count ${n}`);
          }
          const nrPages = Number(n);
          let pagesOffset: number | undefined;
          if (flags & PE_PRESENT) {
            pagesOffset = off;
            off += nrPages * PAGE_SIZE;
            if (this.pagesSize === undefined) throw new ImageError(file, at, `entry has present pages but ${pagesName} does not exist`);
            if (off > this.pagesSize) {
              throw new ImageError(file, at, `pages of entry at 0x${e.vaddr.toString(16)} run past the end of ${pagesName} (need ${off} bytes, file has ${this.pagesSize})`);
            }
          }
          batch.push({ entry: e, vaddr: e.vaddr, end, nrPages, flags, pagesOffset, imageOffset: at });
          prevEnd = end;
          pos += 4 + len;
          have -= 4 + len;
        }
        r.advance(pos - r.window().pos);
        if (batch.length) {
          yield batch;
          continue;
        }
        // Not even one whole entry buffered: fetch its full length or fail.
        have = await r.ensure(4);
        if (have === 0) break;
        if (have < 4) throw new ImageError(file, r.offset, `truncated entry size (${have} bytes left)`);
        ({ buf, pos } = r.window());
        const len = buf.readUInt32LE(pos);
        have = await r.ensure(4 + len);
        if (have < 4 + len) throw new ImageError(file, r.offset, `entry size ${len} runs past end of file (${have - 4} bytes left)`);
      }
      if (this.checkPagesSize && this.pagesSize !== undefined && this.pagesSize !== off) {
        throw new ImageError(file, r.offset, `${pagesName} has ${this.pagesSize} bytes but the pagemap accounts for ${off}`);
      }
    } finally {
      await this.close();
    }
  }

  async *entries(): AsyncGenerator<PagemapRecord, void, undefined> {
    for await (const b of this.batches()) yield* b;
  }

  [Symbol.asyncIterator](): AsyncGenerator<PagemapRecord, void, undefined> {
    return this.entries();
  }

  /** All entries as an array: only for small pagemaps (tests, tools). */
  async toArray(): Promise<PagemapRecord[]> {
    const out: PagemapRecord[] = [];
    for await (const b of this.batches()) for (const x of b) out.push(x);
    return out;
  }

  async close(): Promise<void> {
    await this.reader.close();
  }
}
