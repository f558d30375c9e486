// Streaming writers for pagemap-<pid>.img / pagemap-shmem-<id>.img and their
// pages-<id>.img (IMAGE-FORMAT §3.10, §4).
import { open, rm, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { headerBytes } from './framing.js';
import { KIND, imageFileName } from './magic.js';
import { encodePagemapEntry, encodePagemapHead } from './pagemap-codec.js';
import { PAGE, PAGE_SIZE, PE_PARENT, PE_PRESENT } from './memory.js';


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
