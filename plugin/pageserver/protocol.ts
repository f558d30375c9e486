// CRIU page-server wire format (IMAGE-FORMAT.md §6): the 32-byte x86-64
// `page_server_iov` header, command numbers, `dst_id` packing and the
// unframed replies (OPEN2: 1 byte, PARENT/CLOSE/FORCE_CLOSE: int32).
// Pure codec: no I/O. Everything is little-endian because the format is
// host order and we only target x86-64.

import { PAGE, PAGE_SIZE, PE_LAZY, PE_PARENT, PE_PRESENT } from '../images/memory.js';

// Same bindings as plugin/images: page size and the pagemap flags.
export { PAGE_SIZE, PE_LAZY, PE_PARENT, PE_PRESENT };
export const PAGE_SHIFT = 12n;
export const HEADER_SIZE = 32;

export const PS_IOV_ADD = 1;
export const PS_IOV_HOLE = 2;
export const PS_IOV_OPEN = 3;
export const PS_IOV_OPEN2 = 4;
export const PS_IOV_PARENT = 5;
export const PS_IOV_ADD_F = 6;
export const PS_IOV_GET = 7;
export const PS_IOV_CLOSE = 0x1023;
export const PS_IOV_FORCE_CLOSE = 0x1024;

// Pagemap flags travel in bits 16–31 of `cmd` for ADD_F.
const PE_ALL = PE_PARENT | PE_LAZY | PE_PRESENT;

/** dst_id type byte for OPEN/OPEN2/PARENT/ADD/ADD_F/HOLE. */
export const DST_TASK = 1;
export const DST_SHMEM = 2;
// Type values older CRIUs sent by mistake; servers accept them (§6.4).
const LEGACY_TASK_TYPES = new Set([10, 11, 16, 17]);
const LEGACY_SHMEM_TYPES = new Set([27, 28, 29, 32, 33, 34]);

const U64_MAX = (1n << 64n) - 1n;

const COMMAND_NAMES: ReadonlyMap<number, string> = new Map([
  [PS_IOV_ADD, 'ADD'],
  [PS_IOV_HOLE, 'HOLE'],
  [PS_IOV_OPEN, 'OPEN'],
  [PS_IOV_OPEN2, 'OPEN2'],
  [PS_IOV_PARENT, 'PARENT'],
  [PS_IOV_ADD_F, 'ADD_F'],
  [PS_IOV_GET, 'GET'],
  [PS_IOV_CLOSE, 'CLOSE'],
  [PS_IOV_FORCE_CLOSE, 'FORCE_CLOSE'],
]);

export function commandName(cmd: number): string {
  return COMMAND_NAMES.get(cmd) ?? `0x${cmd.toString(16)}`;
}

/** A decoded header: `cmd` is the low 16 bits, `flags` the high 16. */
export interface PsHeader {
  cmd: number;
  flags: number;
  nrPages: bigint;
  vaddr: bigint;
  dstId: bigint;
}

/** Violation of the page-server protocol by the peer (or a corrupt stream). */
export class ProtocolError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ProtocolError';
  }
}

export function encodeHeader(h: PsHeader): Buffer {
  const b = Buffer.alloc(HEADER_SIZE);
  writeHeader(b, 0, h);
  return b;
}

/** Writes a header at `off` (padding bytes 4..7 are zeroed). */
export function writeHeader(b: Buffer, off: number, h: PsHeader): void {
  if (!Number.isInteger(h.cmd) || h.cmd < 0 || h.cmd > 0xffff) throw new RangeError(`page-server cmd ${h.cmd} out of range`);
  if (!Number.isInteger(h.flags) || h.flags < 0 || h.flags > 0xffff) throw new RangeError(`page-server flags ${h.flags} out of range`);
  for (const [k, v] of [['nr_pages', h.nrPages], ['vaddr', h.vaddr], ['dst_id', h.dstId]] as const) {
    if (v < 0n || v > U64_MAX) throw new RangeError(`page-server ${k} ${v} out of u64 range`);
  }
  b.writeUInt32LE(((h.flags << 16) | h.cmd) >>> 0, off);
  b.writeUInt32LE(0, off + 4);
  b.writeBigUInt64LE(h.nrPages, off + 8);
  b.writeBigUInt64LE(h.vaddr, off + 16);
  b.writeBigUInt64LE(h.dstId, off + 24);
}

/** Decodes 32 bytes at `off` without validating them (see validateCommand). */
export function decodeHeader(b: Buffer, off = 0): PsHeader {
  if (b.length - off < HEADER_SIZE) throw new RangeError(`page-server header needs ${HEADER_SIZE} bytes, have ${b.length - off}`);
  const raw = b.readUInt32LE(off);
  return {
    cmd: raw & 0xffff,
    flags: raw >>> 16,
    nrPages: b.readBigUInt64LE(off + 8),
    vaddr: b.readBigUInt64LE(off + 16),
    dstId: b.readBigUInt64LE(off + 24),
  };
}

/** Packs a pagemap id: (id << 8) | type. */
export function encodeDstId(id: number, type: number = DST_TASK): bigint {
  if (!Number.isInteger(id) || id < 0 || id > 0xffffffff) throw new RangeError(`dst_id id ${id} out of range`);
  if (type !== DST_TASK && type !== DST_SHMEM) throw new RangeError(`dst_id type ${type} unknown`);
  return (BigInt(id) << 8n) | BigInt(type);
}

export interface DstId {
  kind: 'task' | 'shmem';
  id: number;
}

/** Unpacks (id << 8) | type, accepting the legacy type values. */
export function decodeDstId(dst: bigint): DstId {
  const type = Number(dst & 0xffn);
  const idBig = dst >> 8n;
  if (idBig > 0xffffffffn) throw new ProtocolError(`dst_id 0x${dst.toString(16)}: id out of range`);
  const id = Number(idBig);
  if (type === DST_TASK || LEGACY_TASK_TYPES.has(type)) return { kind: 'task', id };
  if (type === DST_SHMEM || LEGACY_SHMEM_TYPES.has(type)) return { kind: 'shmem', id };
  throw new ProtocolError(`dst_id 0x${dst.toString(16)}: unknown pagemap type ${type}`);
}

/** Bytes of page data that follow this header on the wire (0 if none). */
export function payloadBytes(h: PsHeader): bigint {
  if (h.cmd === PS_IOV_ADD) return h.nrPages * PAGE;
  if (h.cmd === PS_IOV_ADD_F && (h.flags & PE_PRESENT) !== 0) return h.nrPages * PAGE;
  return 0n;
}

/**
 * Checks a header received by a server (a command sent by a client).
 * Throws ProtocolError describing the first problem found.
 */
export function validateCommand(h: PsHeader): void {
  const name = commandName(h.cmd);
  if (!COMMAND_NAMES.has(h.cmd)) throw new ProtocolError(`unknown page-server command ${name} (raw cmd 0x${(((h.flags << 16) | h.cmd) >>> 0).toString(16)})`);
  if (h.cmd !== PS_IOV_ADD_F && h.flags !== 0) {
    throw new ProtocolError(`page-server command ${name} carries flags 0x${h.flags.toString(16)} (only ADD_F may)`);
  }
  switch (h.cmd) {
    case PS_IOV_ADD_F:
      validateFlags(h.flags);
      validateRange(h, name);
      break;
    case PS_IOV_ADD:
    case PS_IOV_HOLE:
    case PS_IOV_GET:
      validateRange(h, name);
      break;
    default:
      break;
  }
}

/**
 * Checks a GET reply header received by a client: it must be
 * ADD_F|PE_PRESENT (possibly with PE_LAZY) for at least one page.
 */
export function validateGetReply(h: PsHeader): void {
  if (h.cmd !== PS_IOV_ADD_F || (h.flags & PE_PRESENT) === 0 || (h.flags & ~PE_ALL) !== 0) {
    throw new ProtocolError(`page-server reply is ${commandName(h.cmd)} flags 0x${h.flags.toString(16)}, expected ADD_F|PRESENT`);
  }
  validateRange(h, 'reply');
}

function validateFlags(flags: number): void {
  if (flags === 0 || (flags & ~PE_ALL) !== 0) throw new ProtocolError(`page-server ADD_F with invalid flags 0x${flags.toString(16)}`);
  if ((flags & PE_PARENT) !== 0 && (flags & PE_PRESENT) !== 0) {
    throw new ProtocolError(`page-server ADD_F with flags 0x${flags.toString(16)}: PARENT and PRESENT together`);
  }
}

function validateRange(h: PsHeader, name: string): void {
  if (h.nrPages === 0n) throw new ProtocolError(`page-server ${name} for 0 pages at 0x${h.vaddr.toString(16)}`);
  if ((h.vaddr & 0xfffn) !== 0n) throw new ProtocolError(`page-server ${name} vaddr 0x${h.vaddr.toString(16)} not page-aligned`);
  if (h.vaddr + (h.nrPages << PAGE_SHIFT) > U64_MAX + 1n) {
    throw new ProtocolError(`page-server ${name} range 0x${h.vaddr.toString(16)}+${h.nrPages} pages overflows the address space`);
  }
}

// ---------------------------------------------------------------------------
// Header builders for the commands we send.

export function getHeader(pid: number, vaddr: bigint, nrPages: bigint): Buffer {
  // GET (and its reply) carry the plain pid, not (pid << 8) | type (§6.4).
  return encodeHeader({ cmd: PS_IOV_GET, flags: 0, nrPages, vaddr, dstId: BigInt(pid) });
}

export function getReplyHeader(dstId: bigint, vaddr: bigint, nrPages: bigint): Buffer {
  return encodeHeader({ cmd: PS_IOV_ADD_F, flags: PE_PRESENT, nrPages, vaddr, dstId });
}

export function open2Header(id: number, type: number = DST_TASK): Buffer {
  return encodeHeader({ cmd: PS_IOV_OPEN2, flags: 0, nrPages: 0n, vaddr: 0n, dstId: encodeDstId(id, type) });
}

export function parentHeader(id: number, type: number = DST_TASK): Buffer {
  return encodeHeader({ cmd: PS_IOV_PARENT, flags: 0, nrPages: 0n, vaddr: 0n, dstId: encodeDstId(id, type) });
}

export function addFHeader(id: number, flags: number, vaddr: bigint, nrPages: bigint, type: number = DST_TASK): Buffer {
  validateFlags(flags);
  return encodeHeader({ cmd: PS_IOV_ADD_F, flags, nrPages, vaddr, dstId: encodeDstId(id, type) });
}

export function closeHeader(force = false): Buffer {
  return encodeHeader({ cmd: force ? PS_IOV_FORCE_CLOSE : PS_IOV_CLOSE, flags: 0, nrPages: 0n, vaddr: 0n, dstId: 0n });
}

// Replies that are not framed by a header.
export const OPEN2_REPLY_SIZE = 1;
export const INT32_REPLY_SIZE = 4;

export function open2Reply(hasParent: boolean): Buffer {
  return Buffer.from([hasParent ? 1 : 0]);
}

export function int32Reply(v: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeInt32LE(v, 0);
  return b;
}
