// Minimal reader/writer for task pagemap images (pagemap-<id>.img: magics,
// then size-prefixed pagemap_head and pagemap_entry protobufs, §1 and §3.10)
// as the page server needs them: streaming entry writes in push mode and a
// whole-file read in lazy mode. Interim: the full image library lives in
// plugin/images; this file keeps the page server independent of it until
// that library offers the same streaming writer.
import { closeSync, openSync, readFileSync, writeSync } from 'node:fs';
import { ProtocolError } from './protocol.js';

export const IMG_COMMON_MAGIC = 0x54564319;
export const PAGEMAP_MAGIC = 0x56084025;

export interface PagemapEntryRec {
  vaddr: bigint;
  nrPages: bigint;
  flags: number;
}

function varint(v: bigint, out: number[]): void {
  let x = BigInt.asUintN(64, v);
  while (x >= 0x80n) {
    out.push(Number(x & 0x7fn) | 0x80);
    x >>= 7n;
  }
  out.push(Number(x));
}

/** protobuf for pagemap_head { 1: pages_id uint32 }. */
export function encodePagemapHead(pagesId: number): Buffer {
  const out: number[] = [0x08];
  varint(BigInt(pagesId), out);
  return Buffer.from(out);
}

/** protobuf for pagemap_entry; writes both count fields (§7.1.1). */
export function encodePagemapEntry(e: PagemapEntryRec): Buffer {
  const out: number[] = [0x08];
  varint(e.vaddr, out);
  out.push(0x10);
  varint(e.nrPages <= 0xffffffffn ? e.nrPages : 0n, out);
  out.push(0x20);
  varint(BigInt(e.flags), out);
  out.push(0x28);
  varint(e.nrPages, out);
  return Buffer.from(out);
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
    const magic = Buffer.alloc(8);
    magic.writeUInt32LE(IMG_COMMON_MAGIC, 0);
    magic.writeUInt32LE(PAGEMAP_MAGIC, 4);
    this.push(magic);
    this.pushEntry(encodePagemapHead(pagesId));
  }

  add(e: PagemapEntryRec): void {
    this.pushEntry(encodePagemapEntry(e));
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

export interface PagemapFile {
  pagesId: number;
  entries: PagemapEntryRec[];
}

/** Reads a whole task pagemap image. Errors name the file and offset. */
export function readPagemapFile(path: string): PagemapFile {
  const b = readFileSync(path);
  const fail = (off: number, what: string): never => {
    throw new ProtocolError(`${path} at offset ${off}: ${what}`);
  };
  if (b.length < 8) fail(0, 'truncated magic');
  if (b.readUInt32LE(0) !== IMG_COMMON_MAGIC || b.readUInt32LE(4) !== PAGEMAP_MAGIC) fail(0, 'not a pagemap image (bad magic)');
  let off = 8;
  let pagesId: number | undefined;
  const entries: PagemapEntryRec[] = [];
  while (off < b.length) {
    if (b.length - off < 4) fail(off, 'truncated entry size');
    const len = b.readUInt32LE(off);
    if (b.length - off - 4 < len) fail(off, `entry of ${len} bytes runs past the end`);
    const fields = decodeFields(b.subarray(off + 4, off + 4 + len), () => fail(off, 'malformed protobuf entry'));
    if (pagesId === undefined) {
      const id = fields.get(1);
      if (id === undefined) fail(off, 'pagemap_head without pages_id');
      pagesId = Number(id);
    } else {
      const vaddr = fields.get(1);
      const compat = fields.get(2);
      if (vaddr === undefined || compat === undefined) fail(off, 'pagemap_entry lacks a required field');
      const inParent = fields.get(3) === 1n;
      const flagsF = fields.get(4);
      const flags = flagsF !== undefined ? Number(flagsF) : inParent ? 1 : 4;
      entries.push({ vaddr: vaddr!, nrPages: fields.get(5) ?? compat!, flags });
    }
    off += 4 + len;
  }
  if (pagesId === undefined) fail(off, 'no pagemap_head');
  return { pagesId: pagesId!, entries };
}

/** Varint fields of a flat message (last value wins); other wire types skipped. */
function decodeFields(b: Buffer, bad: () => never): Map<number, bigint> {
  const m = new Map<number, bigint>();
  let p = 0;
  const rv = (): bigint => {
    let v = 0n;
    let shift = 0n;
    for (;;) {
      if (p >= b.length || shift > 63n) bad();
      const byte = b[p++]!;
      v |= BigInt(byte & 0x7f) << shift;
      if ((byte & 0x80) === 0) return BigInt.asUintN(64, v);
      shift += 7n;
    }
  };
  while (p < b.length) {
    const key = Number(rv());
    const field = key >>> 3;
    switch (key & 7) {
      case 0: m.set(field, rv()); break;
      case 1: p += 8; break;
      case 2: p += Number(rv()); break;
      case 5: p += 4; break;
      default: bad();
    }
    if (p > b.length) bad();
  }
  return m;
}
