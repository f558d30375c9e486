// ELF build-ids as CRIU 4.2 records them (plugin/images/build-id.ts): the
// NT_GNU_BUILD_ID note of a PT_NOTE segment, 64- and 32-bit, found after
// another note; none for a non-ELF file, a file without the note, or a
// description over 512 bytes; the image's uint32 words (zero-padded) and back.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { buildIdBytes, buildIdWords, readBuildId } from '../../plugin/images/build-id.js';
import { tempDir } from '../helpers/env.js';

const ID = Buffer.from('0123456789abcdef0123456789abcdef01234567', 'hex');

/** Notes: an ABI tag (type 1), then the build-id (type 3) with `desc`. */
function notes(desc: Buffer, type = 3): Buffer {
  const abi = Buffer.alloc(12 + 4 + 16);
  abi.writeUInt32LE(4, 0);
  abi.writeUInt32LE(16, 4);
  abi.writeUInt32LE(1, 8);
  abi.write('GNU\0', 12, 'latin1');
  const pad = (desc.length + 3) & ~3;
  const id = Buffer.alloc(12 + 4 + pad);
  id.writeUInt32LE(4, 0);
  id.writeUInt32LE(desc.length, 4);
  id.writeUInt32LE(type, 8);
  id.write('GNU\0', 12, 'latin1');
  desc.copy(id, 16);
  return Buffer.concat([abi, id]);
}

function elf64(desc: Buffer, type = 3): Buffer {
  const n = notes(desc, type);
  const h = Buffer.alloc(64 + 56);
  Buffer.from([0x7f, 0x45, 0x4c, 0x46, 2, 1, 1]).copy(h);
  h.writeBigUInt64LE(64n, 32); // e_phoff
  h.writeUInt16LE(56, 54); // e_phentsize
  h.writeUInt16LE(1, 56); // e_phnum
  h.writeUInt32LE(4, 64); // PT_NOTE
  h.writeBigUInt64LE(BigInt(h.length), 64 + 8); // p_offset
  h.writeBigUInt64LE(BigInt(n.length), 64 + 32); // p_filesz
  return Buffer.concat([h, n]);
}

function elf32(desc: Buffer): Buffer {
  const n = notes(desc);
  const h = Buffer.alloc(52 + 32);
  Buffer.from([0x7f, 0x45, 0x4c, 0x46, 1, 1, 1]).copy(h);
  h.writeUInt32LE(52, 28); // e_phoff
  h.writeUInt16LE(32, 42); // e_phentsize
  h.writeUInt16LE(1, 44); // e_phnum
  h.writeUInt32LE(4, 52); // PT_NOTE
  h.writeUInt32LE(h.length, 52 + 4); // p_offset
  h.writeUInt32LE(n.length, 52 + 16); // p_filesz
  return Buffer.concat([h, n]);
}

test('build-id: 64- and 32-bit ELF, after another note; none otherwise', () => {
  const t = tempDir('lr-buildid-');
  try {
    const file = (name: string, b: Buffer): string => {
      const p = join(t.path, name);
      writeFileSync(p, b);
      return p;
    };
    assert.deepEqual(readBuildId(file('a64', elf64(ID))), ID);
    assert.deepEqual(readBuildId(file('a32', elf32(ID))), ID);
    const odd = Buffer.from('0102030405', 'hex');
    assert.deepEqual(readBuildId(file('odd', elf64(odd))), odd, 'a 5-byte id');
    assert.equal(readBuildId(file('none', elf64(ID, 2))), undefined, 'no NT_GNU_BUILD_ID note');
    assert.equal(readBuildId(file('big', elf64(Buffer.alloc(600, 1)))), undefined, 'description over 512 bytes');
    assert.equal(readBuildId(file('text', Buffer.from('#!/bin/sh\necho hi\n'))), undefined, 'not ELF');
    assert.equal(readBuildId(file('tiny', Buffer.from([0x7f]))), undefined);
    assert.equal(readBuildId(file('cut', elf64(ID).subarray(0, 130))), undefined, 'a note cut short');
  } finally {
    t.dispose();
  }
});

test('build-id: image words are the bytes in memory order, zero-padded', () => {
  const w = buildIdWords(Buffer.from('0102030405', 'hex'));
  assert.deepEqual(w, [0x04030201, 0x05]);
  assert.deepEqual(buildIdBytes(w), Buffer.from('0102030405000000', 'hex'));
  assert.deepEqual(buildIdBytes(buildIdWords(ID)), ID);
});
