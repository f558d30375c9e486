// Streaming, synchronous writer for a task or shmem pagemap image as the
// push-mode page server needs it: entries arrive one command at a time and
// their page data arrives in socket-sized slices that go straight to the
// pages file (plugin/images' PagemapWriter wants each entry's data whole).
// The bytes are plugin/images' encoding, so the files equal a local dump's.
import { closeSync, openSync, writeSync } from 'node:fs';
import { KIND, encodePagemapEntry, encodePagemapHead, headerBytes } from '../images/index.js';

export interface PagemapEntryRec {
  vaddr: bigint;
  nrPages: bigint;
  flags: number;
}

/** Streams entries into a pagemap image; small writes are batched. */
export class PagemapFileWriter {
  private fd: number;
  private buf: Buffer[] = [];
  private bufBytes = 0;
  readonly path: string;

  constructor(path: string, pagesId: number) {
    this.path = path;
    this.fd = openSync(path, 'wx', 0o600);
    this.push(headerBytes(KIND.pagemap));
    this.pushEntry(encodePagemapHead({ pages_id: pagesId }));
  }

  add(e: PagemapEntryRec): void {
    this.pushEntry(Buffer.from(encodePagemapEntry({
      vaddr: e.vaddr,
      compat_nr_pages: e.nrPages <= 0xffffffffn ? Number(e.nrPages) : 0,
      flags: e.flags,
      nr_pages: e.nrPages,
    })));
    if (this.bufBytes >= 64 << 10) this.flush();
  }

  close(): void {
    if (this.fd < 0) return;
    try {
      this.flush();
    } finally {
      closeSync(this.fd);
      this.fd = -1;
    }
  }

  private pushEntry(body: Buffer): void {
    const len = Buffer.alloc(4);
    len.writeUInt32LE(body.length, 0);
    this.push(len);
    this.push(body);
  }

  private push(b: Buffer): void {
    this.buf.push(b);
    this.bufBytes += b.length;
  }

  private flush(): void {
    if (this.bufBytes === 0) return;
    const all = Buffer.concat(this.buf, this.bufBytes);
    this.buf = [];
    this.bufBytes = 0;
    let off = 0;
    while (off < all.length) off += writeSync(this.fd, all, off, all.length - off);
  }
}
