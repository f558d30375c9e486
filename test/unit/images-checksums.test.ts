// CRC32C and the lr-checksums image: known vectors, chunking, verification
// naming the pages file and the bad chunk's offset.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFile, open } from 'node:fs/promises';
import { ImageError } from '../../plugin/errors.js';
import { crc32c, firstBadChunk } from '../../plugin/images/checksums.js';
import { ImageDir } from '../../plugin/images/imagedir.js';
import { tempDir } from '../helpers/env.js';

test('crc32c: standard check values, incremental use', () => {
  assert.equal(crc32c(Buffer.from('123456789')), 0xe3069283);
  assert.equal(crc32c(Buffer.alloc(32, 0)), 0x8a9136aa);
  assert.equal(crc32c(Buffer.alloc(32, 0xff)), 0x62a8ab43);
  assert.equal(crc32c(Buffer.from(Array.from({ length: 32 }, (_, i) => i))), 0x46dd794e);
  assert.equal(crc32c(Buffer.alloc(0)), 0);
  const data = Buffer.from(Array.from({ length: 1000 }, (_, i) => (i * 37) & 0xff));
  assert.equal(crc32c(data.subarray(300), crc32c(data.subarray(0, 300))), crc32c(data));
});

test('checksum a pages file, verify it, detect a flipped byte in the right chunk', async () => {
  const tmp = tempDir();
  try {
    const d = await ImageDir.create(tmp.path);
    const size = 5 * 65536 + 3 * 4096; // last chunk short
    await writeFile(d.pagesPath(1), Buffer.from(Array.from({ length: size }, (_, i) => (i * 7 + (i >> 12)) & 0xff)));
    const e = await d.checksumPages(1, 65536);
    assert.equal(e.checksums.length, 6);
    assert.equal(e.file_size, BigInt(size));
    assert.deepEqual(await d.checksums(1), e);
    assert.equal(await d.verifyPages(1), true);
    assert.equal(await d.verifyPages(2), false);

    const fh = await open(d.pagesPath(1), 'r+');
    await fh.write(Buffer.from([0x5a]), 0, 1, 3 * 65536 + 100);
    await fh.close();
    await assert.rejects(d.verifyPages(1), (err: unknown) => err instanceof ImageError
      && err.file === d.pagesPath(1) && err.offset === 3 * 65536 && /CRC32C mismatch in chunk 3/.test(err.message));
    const chunk = Buffer.alloc(2 * 65536);
    const fh2 = await open(d.pagesPath(1), 'r');
    await fh2.read(chunk, 0, chunk.length, 2 * 65536);
    await fh2.close();
    assert.equal(firstBadChunk(e, 2 * 65536, chunk), 3);
    await assert.rejects(d.checksumPages(1, 1000), /not a multiple of 4096/);
  } finally {
    tmp.dispose();
  }
});
