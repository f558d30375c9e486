// pagemap_entry and pagemap_head codec (IMAGE-FORMAT §3.10), hand-coded (no
// protobufjs per entry: pagemaps hold millions of entries), and the effective
// flags / page count of a stored entry.
import { ImageError } from '../errors.js';
import { PE_LAZY, PE_PARENT, PE_PRESENT } from './memory.js';
import type { PagemapEntry, PagemapHead } from './types.js';

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

/** A malformed pagemap entry; the reader turns it into an ImageError naming file and offset. */
export class EntryDecodeError extends Error {}

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

export function decodePagemapHead(buf: Buffer, file: string, offset: number): PagemapHead {
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
