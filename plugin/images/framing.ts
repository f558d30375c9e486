// Image framing: the one- or two-magic header, u32 little-endian size
// prefixes, and the raw EXTRA payloads some images carry after an entry
// (IMAGE-FORMAT §1). Knows nothing about message contents beyond the few
// fields that size an EXTRA, which it reads schema-free.
import { closeSync, fstatSync, openSync, readSync } from 'node:fs';
import { ImageError } from '../errors.js';
import { IMG_COMMON, IMG_SERVICE, kindByMagic, type ImageKind } from './magic.js';

/** One size-prefixed entry: where its length prefix starts, its message bytes, its EXTRA bytes. */
export interface RawEntry {
  offset: number;
  payload: Buffer;
  extra?: Buffer;
}

export interface ImageHeader {
  kind: ImageKind;
  /** Bytes taken by the magic(s): 4 for inventory, 8 otherwise. */
  size: number;
}

const hex = (n: number): string => `0x${(n >>> 0).toString(16).padStart(8, '0')}`;

/** Header bytes for an image of `kind`. */
export function headerBytes(kind: ImageKind): Buffer {
  if (kind.header === 'raw') throw new TypeError(`${kind.name} is a raw image without header`);
  if (kind.header === 'inventory') {
    const b = Buffer.alloc(4);
    b.writeUInt32LE(kind.magic);
    return b;
  }
  const b = Buffer.alloc(8);
  b.writeUInt32LE(kind.header === 'service' ? IMG_SERVICE : IMG_COMMON, 0);
  b.writeUInt32LE(kind.magic, 4);
  return b;
}

/**
 * Parses the header at the start of `buf`. With `expected`, the image must be
 * of that kind (same magic); kinds sharing a magic (pagemap / shmem pagemap)
 * are told apart by the caller through the file name.
 */
export function parseHeader(buf: Buffer, file: string, expected?: ImageKind): ImageHeader {
  if (buf.length < 4) throw new ImageError(file, 0, `too short for an image header (${buf.length} bytes)`);
  const first = buf.readUInt32LE(0);
  let kind: ImageKind | undefined;
  let size: number;
  if (first === IMG_COMMON || first === IMG_SERVICE) {
    if (buf.length < 8) throw new ImageError(file, 4, 'truncated header: image magic missing');
    const second = buf.readUInt32LE(4);
    kind = kindByMagic(second);
    if (!kind || kind.header === 'inventory') throw new ImageError(file, 4, `unknown image magic ${hex(second)}`);
    const wantFirst = kind.header === 'service' ? IMG_SERVICE : IMG_COMMON;
    if (first !== wantFirst) {
      throw new ImageError(file, 0, `head magic ${hex(first)} does not match ${kind.name} (expected ${hex(wantFirst)})`);
    }
    size = 8;
  } else {
    kind = kindByMagic(first);
    if (!kind || kind.header !== 'inventory') {
      throw new ImageError(file, 0, `unknown image magic ${hex(first)} (not a CRIU image; raw images such as pages-*.img have no header)`);
    }
    size = 4;
  }
  if (expected && expected.magic !== kind.magic) {
    throw new ImageError(file, size - 4, `magic ${hex(kind.magic)} (${kind.name}) does not match the expected ${expected.name} ${hex(expected.magic)}`);
  }
  return { kind: expected ?? kind, size };
}

// ---- schema-free field access (for EXTRA sizes) ------------------------------

/** Last value of each varint field of a message (other wire types skipped). */
export function scanVarintFields(msg: Buffer, file: string, offset: number): Map<number, bigint> {
  const out = new Map<number, bigint>();
  let p = 0;
  const varint = (): bigint => {
    let r = 0n;
    let shift = 0n;
    for (;;) {
      if (p >= msg.length || shift > 63n) throw new ImageError(file, offset, 'malformed varint in entry');
      const c = msg[p++]!;
      r |= BigInt(c & 0x7f) << shift;
      shift += 7n;
      if (!(c & 0x80)) return r;
    }
  };
  while (p < msg.length) {
    const key = Number(varint());
    const field = key >>> 3;
    switch (key & 7) {
      case 0: out.set(field, varint()); break;
      case 1: p += 8; break;
      case 2: {
        const len = Number(varint()); // read before adding: varint() moves p
        p += len;
        break;
      }
      case 5: p += 4; break;
      default: throw new ImageError(file, offset, `unsupported wire type ${key & 7} in entry`);
    }
    if (p > msg.length) throw new ImageError(file, offset, 'field runs past the end of the entry');
  }
  return out;
}

const roundUp = (x: number, y: number): number => Math.ceil(x / y) * y;

/**
 * Length of the EXTRA bytes that follow the entry whose message is `payload`,
 * ending at `pos` in `buf` (the whole file). Throws when they run past EOF.
 */
function extraLength(kind: ImageKind, payload: Buffer, buf: Buffer, pos: number, file: string, entryOffset: number): number {
  const rule = kind.extra;
  if (!rule) return 0;
  const f = scanVarintFields(payload, file, entryOffset);
  const num = (n: number): number => Number(f.get(n) ?? 0n);
  let len: number;
  switch (rule.kind) {
    case 'field': len = num(rule.field); break;
    case 'tcp-stream': len = num(1) + num(3); break;
    case 'ipc-shm': len = num(3) ? 0 : roundUp(num(2), 4); break;
    case 'ipc-sem': len = roundUp(num(2) * 2, 8); break;
    case 'bpfmap': len = num(2) + num(3); break;
    case 'ipc-msg': {
      let p = pos;
      for (let i = 0, n = num(3); i < n; i++) {
        if (p + 4 > buf.length) throw new ImageError(file, p, 'truncated message-queue record');
        const l = buf.readUInt32LE(p);
        if (p + 4 + l > buf.length) throw new ImageError(file, p, `message-queue record size ${l} runs past end of file`);
        const msize = Number(scanVarintFields(buf.subarray(p + 4, p + 4 + l), file, p).get(2) ?? 0n);
        p += 4 + l + roundUp(msize, 8);
      }
      len = p - pos;
      break;
    }
    case 'ghost':
      // Only reached for a chunk entry (see splitEntries): its `len` (field 1).
      len = num(1);
      break;
  }
  if (pos + len > buf.length) {
    throw new ImageError(file, pos, `extra payload of ${len} bytes runs past end of file (${buf.length - pos} left)`);
  }
  return len;
}

/** Splits a whole image (already in memory) into its entries. */
export function splitEntries(buf: Buffer, file: string, expected?: ImageKind): { header: ImageHeader; entries: RawEntry[] } {
  const header = parseHeader(buf, file, expected);
  const entries: RawEntry[] = [];
  let off = header.size;
  while (off < buf.length) {
    if (buf.length - off < 4) throw new ImageError(file, off, `truncated entry size (${buf.length - off} bytes left)`);
    const size = buf.readUInt32LE(off);
    const start = off + 4;
    if (size > buf.length - start) {
      throw new ImageError(file, off, `entry size ${size} runs past end of file (${buf.length - start} bytes left)`);
    }
    const payload = buf.subarray(start, start + size);
    const entry: RawEntry = { offset: off, payload };
    off = start + size;
    if (header.kind.extra?.kind === 'ghost' && entries.length === 0) {
      // ghost_file_entry: without `chunks` (field 9) the file contents follow
      // to EOF; with it, ghost_chunk_entry records (each + its data) follow.
      if (!scanVarintFields(payload, file, entry.offset).get(9)) {
        entry.extra = buf.subarray(off);
        off = buf.length;
      }
    } else if (header.kind.extra) {
      const xl = extraLength(header.kind, payload, buf, off, file, entry.offset);
      entry.extra = buf.subarray(off, off + xl);
      off += xl;
    }
    entries.push(entry);
  }
  return { header, entries };
}

/** Serializes header + size-prefixed entries (+ EXTRA bytes) into one buffer. */
export function joinEntries(kind: ImageKind, entries: readonly { payload: Buffer; extra?: Buffer }[]): Buffer {
  const parts: Buffer[] = [headerBytes(kind)];
  for (const e of entries) {
    const len = Buffer.alloc(4);
    len.writeUInt32LE(e.payload.length);
    parts.push(len, e.payload);
    if (e.extra) parts.push(e.extra);
  }
  return Buffer.concat(parts);
}

/**
 * Sequential reader over a file in large chunks, for images too big to load
 * at once (pagemaps, working sets). Returned buffers are views valid until
 * the next call. Its I/O is synchronous (1 MiB reads of a local file): an
 * asynchronous call is a round trip through libuv's thread pool, which on
 * a loaded machine costs more than the read.
 */
export class ChunkedReader {
  private buf: Buffer = Buffer.alloc(0);
  private pos = 0; // read position inside buf
  private fileOffset = 0; // file offset of buf[0]
  private eof = false;

  private constructor(
    readonly file: string,
    private fd: number | undefined,
    /** File size at open; reads never ask for more (a garbage size prefix must not allocate gigabytes). */
    readonly size: number,
    private readonly chunkSize: number,
  ) {}

  static async open(file: string, chunkSize = 1 << 20): Promise<ChunkedReader> {
    const fd = openSync(file, 'r');
    try {
      return new ChunkedReader(file, fd, fstatSync(fd).size, chunkSize);
    } catch (e) {
      closeSync(fd);
      throw e;
    }
  }

  /** File offset of the next byte to be read. */
  get offset(): number {
    return this.fileOffset + this.pos;
  }

  /** Fills the buffer so that at least `n` bytes are available (fewer only at EOF). */
  private fill(n: number): void {
    n = Math.min(n, this.size - this.offset);
    while (this.buf.length - this.pos < n && !this.eof) {
      if (this.fd === undefined) throw new Error(`${this.file}: reader is closed`);
      const keep = this.buf.subarray(this.pos);
      const next = Buffer.allocUnsafe(Math.max(this.chunkSize, n) + keep.length);
      keep.copy(next, 0);
      const bytesRead = readSync(this.fd, next, keep.length, next.length - keep.length, this.offset + keep.length);
      if (bytesRead === 0) this.eof = true;
      this.fileOffset += this.pos;
      this.pos = 0;
      this.buf = next.subarray(0, keep.length + bytesRead);
    }
  }

  /** Bytes available without I/O. */
  get buffered(): number {
    return this.buf.length - this.pos;
  }

  /** The buffered bytes and the offset of their first byte (for tight parse loops). */
  window(): { buf: Buffer; pos: number } {
    return { buf: this.buf, pos: this.pos };
  }

  /** Marks `n` buffered bytes consumed. */
  advance(n: number): void {
    this.pos += n;
  }

  /** Ensures `n` bytes are buffered; returns how many are (fewer only at EOF). */
  async ensure(n: number): Promise<number> {
    if (this.buf.length - this.pos < n) this.fill(n);
    return this.buf.length - this.pos;
  }

  /**
   * Exactly `n` bytes; at a clean EOF (no bytes left) undefined when `allowEof`,
   * otherwise — and for any partial read — an ImageError.
   */
  async read(n: number, what: string, allowEof = false): Promise<Buffer | undefined> {
    const have = await this.ensure(n);
    if (have === 0 && n > 0 && allowEof) return undefined;
    if (have < n) throw new ImageError(this.file, this.offset, `truncated ${what} (${have} of ${n} bytes)`);
    const out = this.buf.subarray(this.pos, this.pos + n);
    this.pos += n;
    return out;
  }

  async close(): Promise<void> {
    const fd = this.fd;
    this.fd = undefined;
    if (fd !== undefined) closeSync(fd);
  }
}
