// The GNU build-id of an ELF file, as CRIU 4.2 records it in
// reg_file_entry.build_id (its default --file-validation buildid) and
// compares at restore: the NT_GNU_BUILD_ID note of the first PT_NOTE
// segment that has one, looked for in the first 1 MiB of the file only,
// 32- and 64-bit ELF of either class; a description of 1..512 bytes. The
// image holds it as uint32 words (the bytes in memory order, zero-padded to
// a multiple of 4). A file that is not ELF, or has no such note, has none.
import { closeSync, fstatSync, openSync, readSync } from 'node:fs';

/** CRIU's --file-validation: 'buildid' (its default) records and checks build-ids, 'filesize' only sizes. */
export type FileValidation = 'filesize' | 'buildid';

/** CRIU's BUILD_ID_MAP_SIZE: only this much of the file is looked at. */
const SEARCH_BYTES = 1 << 20;
const PT_NOTE = 4;
const NT_GNU_BUILD_ID = 3;
const MAX_DESC = 512;

const align4 = (n: number): number => (n + 3) & ~3;

/**
 * The build-id bytes of the file at `path` (opened read-only), or undefined.
 * With `expect`, a file that is not that inode has none either. Throws only
 * if it cannot be opened.
 */
export function readBuildId(path: string, expect?: { dev: bigint; ino: bigint }): Buffer | undefined {
  const fd = openSync(path, 'r');
  try {
    if (expect) {
      const st = fstatSync(fd, { bigint: true });
      if (st.dev !== expect.dev || st.ino !== expect.ino) return undefined;
    }
    return buildIdOfFd(fd);
  } finally {
    closeSync(fd);
  }
}

function buildIdOfFd(fd: number): Buffer | undefined {
  const size = Math.min(fstatSync(fd).size, SEARCH_BYTES);
  const read = (off: number, len: number): Buffer | undefined => {
    if (off < 0 || len < 0 || off + len > size) return undefined;
    const b = Buffer.alloc(len);
    let got = 0;
    while (got < len) {
      const n = readSync(fd, b, got, len - got, off + got);
      if (n === 0) return undefined;
      got += n;
    }
    return b;
  };
  const ident = read(0, 16);
  if (!ident || ident.readUInt32BE(0) !== 0x7f454c46) return undefined; // "\x7fELF"
  const is64 = ident[4] === 2;
  if (!is64 && ident[4] !== 1) return undefined;
  const le = ident[5] !== 2;
  const eh = read(0, is64 ? 64 : 52);
  if (!eh) return undefined;
  const u16 = (b: Buffer, o: number): number => (le ? b.readUInt16LE(o) : b.readUInt16BE(o));
  const u32 = (b: Buffer, o: number): number => (le ? b.readUInt32LE(o) : b.readUInt32BE(o));
  const u64 = (b: Buffer, o: number): number => Number(le ? b.readBigUInt64LE(o) : b.readBigUInt64BE(o));
  const phoff = is64 ? u64(eh, 32) : u32(eh, 28);
  const phnum = u16(eh, is64 ? 56 : 44);
  const phsize = is64 ? 56 : 32; // CRIU steps by sizeof(Elf*_Phdr), whatever e_phentsize says
  if (phnum === 0 || phoff === 0) return undefined;
  for (let i = 0; i < phnum; i++) {
    const ph = read(phoff + i * phsize, phsize);
    if (!ph) break;
    if (u32(ph, 0) !== PT_NOTE) continue;
    const off = is64 ? u64(ph, 8) : u32(ph, 4);
    const filesz = is64 ? u64(ph, 32) : u32(ph, 16);
    if (off === 0) continue;
    // Notes: 12-byte header (namesz, descsz, type), name and desc each padded to 4.
    const end = Math.min(off + filesz, size - 12);
    let at = off;
    while (at <= end) {
      const nh = read(at, 12);
      if (!nh) break;
      const namesz = u32(nh, 0);
      const descsz = u32(nh, 4);
      if (u32(nh, 8) === NT_GNU_BUILD_ID) {
        if (descsz === 0 || descsz > MAX_DESC) return undefined;
        return read(at + 12 + align4(namesz), descsz);
      }
      at += 12 + align4(namesz) + align4(descsz);
    }
  }
  return undefined;
}

/** The build-id as reg_file_entry.build_id words (memory order, zero-padded). */
export function buildIdWords(id: Buffer): number[] {
  const padded = Buffer.alloc(align4(id.length));
  id.copy(padded);
  const words: number[] = [];
  for (let i = 0; i < padded.length; i += 4) words.push(padded.readUInt32LE(i));
  return words;
}

/** reg_file_entry.build_id words back to bytes (with the padding). */
export function buildIdBytes(words: readonly number[]): Buffer {
  const b = Buffer.alloc(words.length * 4);
  words.forEach((w, i) => b.writeUInt32LE(w >>> 0, i * 4));
  return b;
}
