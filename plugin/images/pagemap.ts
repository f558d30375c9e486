// Pagemaps and pages files (IMAGE-FORMAT §3.10, §4): a streaming reader that
// validates entries and computes each entry's byte offset in
// pages-<id>.img, a streaming writer for pagemap + pages file, and a compact
// index for random lookups. pagemap_entry is hand-coded (no protobufjs per
// entry): pagemaps hold millions of entries.
import { open, rm, stat, type FileHandle } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { ImageError } from '../errors.js';
import { ChunkedReader, headerBytes, parseHeader } from './framing.js';
import { KIND, imageFileName } from './magic.js';
import { PAGE, PAGE_SIZE, PE_LAZY, PE_PARENT, PE_PRESENT } from './memory.js';
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

/** Effective flags of a stored entry. */
export function entryFlags(e: PagemapEntry): number {
  if (e.flags !== undefined) return e.flags;
  return e.in_parent ? PE_PARENT : PE_PRESENT;
}

/** Effective page count of a stored entry (bigint: it is a uint64 on disk). */
export function entryPages(e: PagemapEntry): bigint {
  return e.nr_pages ?? BigInt(e.compat_nr_pages);
}

/** Human-readable PE_* flags, e.g. "PE_LAZY|PE_PRESENT". */
export function formatPeFlags(flags: number): string {
  const names: string[] = [];
  if (flags & PE_PARENT) names.push('PE_PARENT');
  if (flags & PE_LAZY) names.push('PE_LAZY');
  if (flags & PE_PRESENT) names.push('PE_PRESENT');
  const rest = flags & ~7;
  if (rest) names.push(`0x${rest.toString(16)}`);
  return names.join('|') || '0';
}

// ---- hand-rolled pagemap_entry codec ------------------------------------------

class EntryDecodeError extends Error {}

// Parse position shared by the varint helpers (module state avoids a closure
// allocation per entry in the hot loop).
let P = 0;

/** Varint at P: a Number when it fits 7 bytes (49 bits: every user address), else a bigint. */
function readVarint(buf: Buffer, end: number): number | bigint {
  let n = 0;
  let mul = 1;
  for (let i = 0; i < 7; i++) {
    if (P >= end) throw new EntryDecodeError('truncated varint');
    const c = buf[P++]!;
    n += (c & 0x7f) * mul;
    if (c < 0x80) return n;
    mul *= 128;
  }
  let r = BigInt(n);
  let shift = 49n;
  for (;;) {
    if (P >= end) throw new EntryDecodeError('truncated varint');
    if (shift > 63n) throw new EntryDecodeError('varint longer than 10 bytes');
    const c = buf[P++]!;
    r |= BigInt(c & 0x7f) << shift;
    shift += 7n;
    if (c < 0x80) return BigInt.asUintN(64, r);
  }
}

const asU32 = (v: bigint | number): number => (typeof v === 'number' && v <= 0xffffffff ? v : Number(BigInt.asUintN(32, BigInt(v))));

/** Decodes a pagemap_entry from buf[start, end). */
export function decodePagemapEntry(buf: Buffer, start: number, end: number): PagemapEntry {
  P = start;
  let vaddr: bigint | undefined;
  let compat: number | undefined;
  let inParent: boolean | undefined;
  let flags: number | undefined;
  let nrPages: bigint | undefined;
  while (P < end) {
    const key = readVarint(buf, end);
    if (typeof key !== 'number' || key > 0xffffffff) throw new EntryDecodeError('bad field key');
    const field = Math.floor(key / 8);
    const wt = key & 7;
    if (field >= 1 && field <= 5 && wt !== 0) throw new EntryDecodeError(`field ${field} has wire type ${wt}, expected varint`);
    switch (wt) {
      case 0: {
        const v = readVarint(buf, end);
        if (field === 1) vaddr = BigInt(v);
        else if (field === 2) compat = asU32(v);
        else if (field === 3) inParent = v !== 0 && v !== 0n;
        else if (field === 4) flags = asU32(v);
        else if (field === 5) nrPages = BigInt(v);
        break;
      }
      case 1: P += 8; break;
      case 2: {
        const l = readVarint(buf, end);
        if (typeof l !== 'number') throw new EntryDecodeError('bad length');
        P += l;
        break;
      }
      case 5: P += 4; break;
      default: throw new EntryDecodeError(`unsupported wire type ${wt}`);
    }
    if (P > end) throw new EntryDecodeError('field runs past the end of the entry');
  }
  if (vaddr === undefined) throw new EntryDecodeError("missing required field 'vaddr'");
  if (compat === undefined) throw new EntryDecodeError("missing required field 'compat_nr_pages'");
  const e: PagemapEntry = { vaddr, compat_nr_pages: compat };
  if (inParent !== undefined) e.in_parent = inParent;
  if (flags !== undefined) e.flags = flags;
  if (nrPages !== undefined) e.nr_pages = nrPages;
  return e;
}

function writeVarint(buf: Buffer, p: number, v: bigint | number): number {
  if (typeof v === 'number' && v < 0x80) {
    buf[p++] = v;
    return p;
  }
  let x = BigInt(v);
  while (x >= 0x80n) {
    buf[p++] = Number(x & 0x7fn) | 0x80;
    x >>= 7n;
  }
  buf[p++] = Number(x);
  return p;
}

/** Canonical bytes of a pagemap_entry (field order 1,2,3,4,5), as protobuf-c writes them. */
export function encodePagemapEntry(e: PagemapEntry): Buffer {
  const b = Buffer.allocUnsafe(48);
  let p = 0;
  b[p++] = 0x08;
  p = writeVarint(b, p, e.vaddr);
  b[p++] = 0x10;
  p = writeVarint(b, p, e.compat_nr_pages);
  if (e.in_parent !== undefined) {
    b[p++] = 0x18;
    b[p++] = e.in_parent ? 1 : 0;
  }
  if (e.flags !== undefined) {
    b[p++] = 0x20;
    p = writeVarint(b, p, e.flags);
  }
  if (e.nr_pages !== undefined) {
    b[p++] = 0x28;
    p = writeVarint(b, p, e.nr_pages);
  }
  return b.subarray(0, p);
}

/** Encodes the pagemap_head entry (pages_id), as CRIU writes it. */
export function encodePagemapHead(h: PagemapHead): Buffer {
  const b = Buffer.allocUnsafe(8);
  b[0] = 0x08;
  return b.subarray(0, writeVarint(b, 1, h.pages_id));
}

function decodeHead(buf: Buffer, file: string, offset: number): PagemapHead {
  // pagemap_head is one required uint32; reuse the entry scanner's rules.
  let p = 0;
  let pagesId: number | undefined;
  try {
    while (p < buf.length) {
      const key = buf[p++]!;
      if (key === 0x08) {
        let n = 0;
        let mul = 1;
        for (;;) {
          if (p >= buf.length || mul > 2 ** 63) throw new Error('truncated varint');
          const c = buf[p++]!;
          n += (c & 0x7f) * mul;
          mul *= 128;
          if (!(c & 0x80)) break;
        }
        pagesId = Number(BigInt.asUintN(32, BigInt(n)));
      } else {
        throw new Error(`unexpected field key 0x${key.toString(16)}`);
      }
    }
  } catch (e) {
    throw new ImageError(file, offset, `cannot decode pagemap_head: ${(e as Error).message}`);
  }
  if (pagesId === undefined) throw new ImageError(file, offset, "cannot decode pagemap_head: missing required 'pages_id'");
  return { pages_id: pagesId };
}

// ---- reader ----------------------------------------------------------------------

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
      const head = decodeHead(body!, file, at);
      const pagesPath = join(opts.pagesDir ?? dirname(file), imageFileName(KIND.pages, head.pages_id));
      let pagesSize: number | undefined;
      try {
        pagesSize = (await stat(pagesPath)).size;
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

// ---- writers ----------------------------------------------------------------------

/** Appends to a file through a staging buffer; big writes go straight through. */
class BufferedFile {
  private stage = Buffer.allocUnsafe(4 << 20);
  private used = 0;
  private position = 0;
  private constructor(readonly path: string, private fh: FileHandle | undefined) {}

  static async create(path: string): Promise<BufferedFile> {
    return new BufferedFile(path, await open(path, 'w'));
  }

  /** Bytes written so far (including staged ones). */
  get size(): number {
    return this.position + this.used;
  }

  hasRoom(n: number): boolean {
    return n <= this.stage.length - this.used;
  }

  /** Stages `data` without I/O when it fits; false when a flush is needed first. */
  tryStage(data: Uint8Array): boolean {
    if (data.length > this.stage.length - this.used) return false;
    this.stage.set(data, this.used);
    this.used += data.length;
    return true;
  }

  async append(data: Uint8Array): Promise<void> {
    if (data.length <= this.stage.length - this.used) {
      this.stage.set(data, this.used);
      this.used += data.length;
      return;
    }
    await this.flush();
    if (data.length <= this.stage.length) {
      this.stage.set(data, 0);
      this.used = data.length;
      return;
    }
    await this.writeAll(data);
  }

  private async writeAll(data: Uint8Array): Promise<void> {
    if (!this.fh) throw new Error(`${this.path}: already closed`);
    let done = 0;
    while (done < data.length) {
      const { bytesWritten } = await this.fh.write(data, done, data.length - done, this.position);
      done += bytesWritten;
      this.position += bytesWritten;
    }
  }

  async flush(): Promise<void> {
    if (!this.used) return;
    const n = this.used;
    this.used = 0;
    await this.writeAll(this.stage.subarray(0, n));
  }

  async close(): Promise<void> {
    try {
      await this.flush();
    } finally {
      const fh = this.fh;
      this.fh = undefined;
      await fh?.close();
    }
  }
}

/** Writes raw page data to pages-<id>.img (no header, page-sized blocks). */
export class PagesFileWriter {
  private constructor(private readonly out: BufferedFile) {}

  static async create(path: string): Promise<PagesFileWriter> {
    return new PagesFileWriter(await BufferedFile.create(path));
  }

  get path(): string {
    return this.out.path;
  }

  /** Current size = byte offset the next appended page lands at. */
  get size(): number {
    return this.out.size;
  }

  async append(data: Uint8Array): Promise<void> {
    if (data.length % PAGE_SIZE) throw new RangeError(`${this.out.path}: page data of ${data.length} bytes is not a whole number of pages`);
    if (!this.out.tryStage(data)) await this.out.append(data);
  }

  async close(): Promise<void> {
    await this.out.close();
  }
}

export interface PagemapWriterOptions {
  /** pagemap-<pid>.img (task pagemap). */
  pid?: number;
  /** pagemap-shmem-<shmid>.img (shared memory object) instead of a task pagemap. */
  shmid?: number | bigint;
  /** Names pages-<pagesId>.img. */
  pagesId: number;
}

/**
 * Streams pagemap-<pid>.img and its pages-<id>.img. Entries must come in
 * ascending, non-overlapping order; present entries bring their data. Each
 * entry is written with flags, nr_pages (field 5) and the same count in
 * compat_nr_pages (field 2), so CRIU 4.2 and crit 3.17 both see it.
 */
export class PagemapWriter {
  private prevEnd = 0n;
  private entries = 0;
  private busy = false;
  private closed = false;
  private readonly frame = Buffer.allocUnsafe(4);

  private constructor(readonly path: string, private readonly out: BufferedFile, readonly pages: PagesFileWriter) {}

  static async create(dir: string, opts: PagemapWriterOptions): Promise<PagemapWriter> {
    const name = opts.shmid !== undefined
      ? imageFileName(KIND.pagemapShmem, opts.shmid)
      : imageFileName(KIND.pagemap, opts.pid ?? (() => { throw new TypeError('PagemapWriter needs pid or shmid'); })());
    const out = await BufferedFile.create(join(dir, name));
    let pages: PagesFileWriter;
    try {
      pages = await PagesFileWriter.create(join(dir, imageFileName(KIND.pages, opts.pagesId)));
    } catch (e) {
      await out.close();
      throw e;
    }
    const w = new PagemapWriter(out.path, out, pages);
    await out.append(headerBytes(KIND.pagemap));
    await w.frameAndAppend(encodePagemapHead({ pages_id: opts.pagesId }));
    return w;
  }

  private async frameAndAppend(payload: Buffer): Promise<void> {
    // No await on the common path: pagemaps have millions of tiny entries.
    if (!this.out.hasRoom(4 + payload.length)) await this.out.flush();
    this.frame.writeUInt32LE(payload.length);
    if (!this.out.tryStage(this.frame) || !this.out.tryStage(payload)) throw new Error(`${this.path}: entry larger than the write buffer`);
  }

  /** Number of entries written so far. */
  get count(): number {
    return this.entries;
  }

  /**
   * Adds a run of `nrPages` pages at `vaddr` with PE_* `flags`. `data`
   * (exactly nrPages pages) is required with PE_PRESENT and forbidden without.
   * Returns the byte offset of the data in the pages file (or undefined).
   */
  async add(vaddr: bigint, nrPages: number, flags: number, data?: Uint8Array): Promise<number | undefined> {
    // Entry order and data offsets are decided at call time: overlapping
    // calls would interleave them.
    if (this.busy) throw new Error(`${this.path}: add() called before the previous add() finished (await each call)`);
    if (this.closed) throw new Error(`${this.path}: writer is closed`);
    this.busy = true;
    try {
      return await this.addEntry(vaddr, nrPages, flags, data);
    } finally {
      this.busy = false;
    }
  }

  private async addEntry(vaddr: bigint, nrPages: number, flags: number, data?: Uint8Array): Promise<number | undefined> {
    const where = `${this.path}: entry at 0x${vaddr.toString(16)}`;
    if (!Number.isSafeInteger(nrPages) || nrPages <= 0) throw new RangeError(`${where}: bad page count ${nrPages}`);
    if (vaddr < 0n || vaddr % PAGE !== 0n) throw new RangeError(`${where}: vaddr is not page-aligned`);
    if (vaddr < this.prevEnd) throw new RangeError(`${where}: overlaps or precedes the previous entry (ends 0x${this.prevEnd.toString(16)})`);
    if (flags === 0 || flags & ~7 || (flags & PE_PARENT && flags & PE_PRESENT)) throw new RangeError(`${where}: invalid flags 0x${flags.toString(16)}`);
    const present = (flags & PE_PRESENT) !== 0;
    if (present !== (data !== undefined)) throw new RangeError(`${where}: page data must be given exactly for PE_PRESENT entries`);
    if (data && data.length !== nrPages * PAGE_SIZE) throw new RangeError(`${where}: ${data.length} bytes of data for ${nrPages} pages`);
    const n = BigInt(nrPages);
    await this.frameAndAppend(encodePagemapEntry({
      vaddr,
      compat_nr_pages: nrPages <= 0xffffffff ? nrPages : 0,
      flags,
      nr_pages: n,
    }));
    this.prevEnd = vaddr + n * PAGE;
    this.entries++;
    if (!data) return undefined;
    const at = this.pages.size;
    await this.pages.append(data);
    return at;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    try {
      await this.out.close();
    } finally {
      await this.pages.close();
    }
  }

  /** Closes and removes both files (a failed dump must not leave a half pagemap behind). */
  async abort(): Promise<void> {
    this.closed = true;
    await Promise.allSettled([this.out.close(), this.pages.close()]);
    await Promise.allSettled([rm(this.path, { force: true }), rm(this.pages.path, { force: true })]);
  }
}

// ---- index for random lookups ---------------------------------------------------------

/** Compact sorted table of a pagemap's entries (typed arrays, ~25 bytes per entry). */
export class PagemapIndex {
  private constructor(
    readonly file: string,
    readonly pagesPath: string,
    readonly length: number,
    private readonly starts: BigUint64Array,
    private readonly counts: Float64Array,
    private readonly offsets: Float64Array,
    private readonly flagsArr: Uint8Array,
  ) {}

  static async build(reader: PagemapReader): Promise<PagemapIndex> {
    let cap = 1024;
    let starts = new BigUint64Array(cap);
    let counts = new Float64Array(cap);
    let offsets = new Float64Array(cap);
    let flags = new Uint8Array(cap);
    let n = 0;
    for await (const batch of reader.batches()) {
      if (n + batch.length > cap) {
        while (n + batch.length > cap) cap *= 2;
        const s = new BigUint64Array(cap); s.set(starts); starts = s;
        const c = new Float64Array(cap); c.set(counts); counts = c;
        const o = new Float64Array(cap); o.set(offsets); offsets = o;
        const f = new Uint8Array(cap); f.set(flags); flags = f;
      }
      for (const r of batch) {
        starts[n] = r.vaddr;
        counts[n] = r.nrPages;
        offsets[n] = r.pagesOffset ?? -1;
        flags[n] = r.flags;
        n++;
      }
    }
    return new PagemapIndex(reader.file, reader.pagesPath, n, starts, counts, offsets, flags);
  }

  /** Index of the entry containing `addr`, or -1. */
  find(addr: bigint): number {
    let lo = 0;
    let hi = this.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1;
      if (this.starts[mid]! <= addr) lo = mid + 1;
      else hi = mid - 1;
    }
    if (hi < 0) return -1;
    return addr < this.starts[hi]! + BigInt(this.counts[hi]!) * PAGE ? hi : -1;
  }

  entry(i: number): { vaddr: bigint; nrPages: number; flags: number; pagesOffset: number | undefined } {
    const o = this.offsets[i]!;
    return { vaddr: this.starts[i]!, nrPages: this.counts[i]!, flags: this.flagsArr[i]!, pagesOffset: o < 0 ? undefined : o };
  }
}
