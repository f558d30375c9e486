// Bad images: every failure is an ImageError naming the file and offset,
// never a crash or a hang — including a bounded random-mutation fuzz run.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ImageError } from '../../plugin/errors.js';
import { encodeMessage } from '../../plugin/images/codec.js';
import { critJsonToImage, imageToCritJson } from '../../plugin/images/critjson.js';
import { decodeImage, encodeImage, type EntryToWrite } from '../../plugin/images/image.js';
import { ImageDir } from '../../plugin/images/imagedir.js';
import { IMG_COMMON, IMG_SERVICE, KIND, requireKind, type ImageKind } from '../../plugin/images/magic.js';
import { PagemapReader } from '../../plugin/images/pagemap.js';
import { leakedFds, openFds, tempDir } from '../helpers/env.js';
import * as S from '../helpers/image-samples.js';

function u32(...xs: number[]): Buffer {
  const b = Buffer.alloc(4 * xs.length);
  xs.forEach((x, i) => b.writeUInt32LE(x >>> 0, i * 4));
  return b;
}

function expectImageError(fn: () => unknown, file: string, offset: number | undefined, re: RegExp): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof ImageError, `not an ImageError: ${String(e)}`);
    assert.equal(e.file, file);
    assert.equal(e.offset, offset);
    assert.match(e.message, re);
    assert.ok(e.message.startsWith(`${file}${offset === undefined ? '' : ` at offset ${offset}`}: `), e.message);
    assert.ok(!e.message.includes('\n'), 'one line');
    return true;
  });
}

const coreBytes = (): Buffer => encodeImage(KIND.core, [{ message: S.coreLeader() }]);

test('wrong magic', () => {
  expectImageError(() => decodeImage(u32(0x12345678, 0), 'x.img'), 'x.img', 0, /unknown image magic 0x12345678 \(not a CRIU image/);
  expectImageError(() => decodeImage(u32(IMG_COMMON, 0xdeadbeef), 'x.img'), 'x.img', 4, /unknown image magic 0xdeadbeef/);
  expectImageError(() => decodeImage(u32(IMG_SERVICE, KIND.core.magic), 'x.img'), 'x.img', 0, /head magic 0x55105940 does not match CORE/);
  expectImageError(() => decodeImage(coreBytes(), 'pstree.img', KIND.pstree), 'pstree.img', 4, /\(CORE\) does not match the expected PSTREE/);
  expectImageError(() => decodeImage(Buffer.alloc(0), 'e.img'), 'e.img', 0, /too short for an image header \(0 bytes\)/);
  expectImageError(() => decodeImage(u32(IMG_COMMON), 'e.img'), 'e.img', 4, /truncated header/);
  // A pages file is raw data, not an image.
  expectImageError(() => decodeImage(Buffer.alloc(4096, 0xcc), 'pages-1.img'), 'pages-1.img', 0, /raw images such as pages-\*\.img have no header/);
});

test('truncated entry and size prefix past EOF', () => {
  const full = coreBytes();
  expectImageError(() => decodeImage(full.subarray(0, 10), 'core-1.img'), 'core-1.img', 8, /truncated entry size \(2 bytes left\)/);
  expectImageError(() => decodeImage(full.subarray(0, full.length - 1), 'core-1.img'), 'core-1.img', 8,
    new RegExp(`entry size ${full.length - 12} runs past end of file \\(${full.length - 13} bytes left\\)`));
  const huge = Buffer.concat([u32(IMG_COMMON, KIND.core.magic, 0xfffffff0), Buffer.alloc(10)]);
  expectImageError(() => decodeImage(huge, 'core-1.img'), 'core-1.img', 8, /entry size 4294967280 runs past end of file \(10 bytes left\)/);
  // A second entry cut short names its own offset.
  const two = encodeImage(KIND.pstree, S.pstree.map((message) => ({ message })));
  const second = 8 + 4 + encodeMessage('pstree_entry', S.pstree[0]!).length;
  expectImageError(() => decodeImage(two.subarray(0, two.length - 2), 'pstree.img'), 'pstree.img', second, /runs past end of file/);
});

test('garbage payload', () => {
  const garbage = Buffer.concat([u32(IMG_COMMON, KIND.core.magic, 6), Buffer.from([0xff, 0xff, 0xff, 0xff, 0xff, 0xff])]);
  expectImageError(() => decodeImage(garbage, 'core-1.img'), 'core-1.img', 8, /cannot decode core_entry: /);
  const wrongType = Buffer.concat([u32(IMG_COMMON, KIND.pstree.magic, 2), Buffer.from([0x0f, 0x00])]); // wire type 7
  expectImageError(() => decodeImage(wrongType, 'pstree.img'), 'pstree.img', 8, /cannot decode pstree_entry: .*wire type/);
  const missing = Buffer.concat([u32(IMG_COMMON, KIND.pstree.magic, 2), Buffer.from([0x08, 0x01])]); // only pid
  expectImageError(() => decodeImage(missing, 'pstree.img'), 'pstree.img', 8, /missing required/);
  const pm = Buffer.concat([u32(IMG_COMMON, KIND.pagemap.magic, 2), Buffer.from([0x08, 0x01]), u32(3), Buffer.from([0x08, 0x80, 0x80])]);
  expectImageError(() => decodeImage(pm, 'pagemap-1.img'), 'pagemap-1.img', 14, /cannot decode pagemap_entry: truncated varint/);
});

test('unknown or unsupported image types', () => {
  expectImageError(() => decodeImage(u32(IMG_COMMON, requireKind('UNIXSK').magic, 0), 'unixsk.img'), 'unixsk.img', 8, /UNIXSK images are not supported/);
  // sk-queues.img: each entry's EXTRA payload is its `length` field.
  const skq = requireKind('SK_QUEUES');
  const rawEntry = Buffer.from([0x08, 0x01, 0x10, 0x03]); // id_for=1, length=3
  const buf = Buffer.concat([u32(IMG_COMMON, skq.magic, rawEntry.length), rawEntry, Buffer.from('abc')]);
  const q = decodeImage(buf, 'sk-queues.img');
  assert.equal(q.entries[0]!.extra!.toString(), 'abc');
  const short = Buffer.concat([u32(IMG_COMMON, skq.magic, rawEntry.length), rawEntry, Buffer.from('ab')]);
  expectImageError(() => decodeImage(short, 'sk-queues.img'), 'sk-queues.img', 16, /extra payload of 3 bytes runs past end of file \(2 left\)/);
  // EXTRA that runs past EOF.
  const pipes = encodeImage(requireKind('PIPES_DATA'), [{ message: { pipe_id: 1, bytes: 100 }, extra: Buffer.alloc(10) }]);
  expectImageError(() => decodeImage(pipes, 'pipes-data.img'), 'pipes-data.img', 16, /extra payload of 100 bytes runs past end of file \(10 left\)/);
});

test('ImageDir: wrong kind in a file, missing directory, pagemap errors name the file', async () => {
  const tmp = tempDir();
  const fds = openFds();
  try {
    const d = await ImageDir.create(tmp.path);
    await writeFile(d.pathOf(KIND.core, 1), encodeImage(KIND.pstree, S.pstree.map((message) => ({ message }))));
    await assert.rejects(d.core(1), (e: unknown) => e instanceof ImageError && /core-1\.img at offset 4: .*PSTREE.* does not match the expected CORE/.test(e.message));
    await assert.rejects(ImageDir.open(join(tmp.path, 'nope')), /nope: cannot open image directory: ENOENT/);
    await writeFile(d.pathOf(KIND.pagemap, 1), coreBytes());
    await assert.rejects(d.pagemap(1), /pagemap-1\.img at offset 4: .*does not match the expected PAGEMAP/);
    await writeFile(d.pathOf(KIND.pagemap, 2), u32(IMG_COMMON, KIND.pagemap.magic));
    await assert.rejects(d.pagemap(2), /pagemap-2\.img at offset 8: pagemap has no pagemap_head entry/);
    assert.deepEqual(leakedFds(fds), []);
  } finally {
    tmp.dispose();
  }
});

// ---- fuzz ---------------------------------------------------------------------------

function corpus(): { name: string; kind: ImageKind; bytes: Buffer }[] {
  const img = (name: string, kind: ImageKind, entries: EntryToWrite[]): { name: string; kind: ImageKind; bytes: Buffer } =>
    ({ name, kind, bytes: encodeImage(kind, entries) });
  const m = (xs: readonly object[]): EntryToWrite[] => xs.map((message) => ({ message }));
  return [
    img('inventory.img', KIND.inventory, m([S.inventory()])),
    img('pstree.img', KIND.pstree, m(S.pstree)),
    img('core-1.img', KIND.core, m([S.coreLeader()])),
    img('core-2.img', KIND.core, m([S.coreZombie])),
    img('ids-1.img', KIND.ids, m([S.ids])),
    img('mm-1.img', KIND.mm, m([S.mm()])),
    img('files.img', KIND.files, m(S.files())),
    img('fdinfo-2.img', KIND.fdinfo, m(S.fdinfo)),
    img('fs-1.img', KIND.fs, m([S.fs])),
    img('seccomp.img', KIND.seccomp, m([S.seccomp])),
    img('timens-0.img', KIND.timens, m([S.timens])),
    img('tty-info.img', KIND.ttyInfo, m(S.ttyInfo)),
    img('pagemap-1.img', KIND.pagemap, m([{ pages_id: 1 }, { vaddr: 0x1000n, compat_nr_pages: 2, flags: 4, nr_pages: 2n },
      { vaddr: 0x7fff00000000n, compat_nr_pages: 1, flags: 2, nr_pages: 1n }])),
    img('pipes-data.img', requireKind('PIPES_DATA'), [{ message: { pipe_id: 3, bytes: 5 }, extra: Buffer.from('12345') }]),
    img('ghost-file-1.img', requireKind('GHOST_FILE'), [{ message: { uid: 0, gid: 0, mode: 0o644, chunks: true } },
      { message: { len: 2n, off: 0n }, extra: Buffer.from('ab') }]),
    img('lr-workingset-1.img', KIND.workingSet, m([{ pid: 1 }, { vaddr: 0x1000n, nr_pages: 3n, at_ns: 7n }])),
    img('lr-checksums-1.img', KIND.checksums, m([{ pages_id: 1, chunk_size: 4096, algorithm: 1, file_size: 8192n, checksums: [1, 2] }])),
  ];
}

function mutate(src: Buffer, r: () => number): Buffer {
  const b = Buffer.from(src);
  const pos = (): number => Math.floor(r() * b.length);
  switch (Math.floor(r() * 6)) {
    case 0: { // flip a few bytes
      for (let i = 0, n = 1 + Math.floor(r() * 4); i < n; i++) b[pos()] ^= 1 << Math.floor(r() * 8);
      return b;
    }
    case 1: return b.subarray(0, pos()); // truncate
    case 2: { // random bytes inserted
      const at = pos();
      return Buffer.concat([b.subarray(0, at), Buffer.from(Array.from({ length: 1 + Math.floor(r() * 8) }, () => Math.floor(r() * 256))), b.subarray(at)]);
    }
    case 3: { // overwrite a u32 with an extreme value
      const at = Math.min(pos(), Math.max(0, b.length - 4));
      if (b.length >= 4) b.writeUInt32LE([0, 1, 0x7f, 0xffffffff, 0x80000000, Math.floor(r() * 2 ** 32)][Math.floor(r() * 6)]!, at);
      return b;
    }
    case 4: { // random byte values
      for (let i = 0, n = 1 + Math.floor(r() * 8); i < n; i++) b[pos()] = Math.floor(r() * 256);
      return b;
    }
    default: { // duplicate a slice
      const at = pos();
      return Buffer.concat([b, b.subarray(at, at + 1 + Math.floor(r() * 32))]);
    }
  }
}

test('random mutations: only clean ImageErrors or valid decodes (4000 images)', async () => {
  const r = S.rng(20260101);
  const items = corpus();
  let decoded = 0;
  let rejected = 0;
  for (let i = 0; i < 4000; i++) {
    const src = items[i % items.length]!;
    const buf = mutate(src.bytes, r);
    let img;
    try {
      img = decodeImage(buf, src.name);
    } catch (e) {
      if (!(e instanceof ImageError)) assert.fail(`#${i} ${src.name}: non-ImageError ${String((e as Error)?.stack ?? e)}`);
      assert.equal(e.file, src.name);
      assert.ok(!e.message.includes('\n'));
      rejected++;
      continue;
    }
    decoded++;
    // A successful decode must also print as JSON and encode again.
    imageToCritJson(img);
    encodeImage(img.kind, img.entries.map((e) => (e.extra ? { message: e.message, extra: e.extra } : { message: e.message })));
  }
  assert.ok(decoded > 100 && rejected > 100, `decoded ${decoded}, rejected ${rejected}`);
});

test('random mutations of a pagemap file through the streaming reader (400 files)', async () => {
  const tmp = tempDir();
  const fds = openFds();
  try {
    const r = S.rng(99);
    const src = corpus().find((c) => c.name === 'pagemap-1.img')!.bytes;
    const file = join(tmp.path, 'pagemap-1.img');
    await writeFile(join(tmp.path, 'pages-1.img'), Buffer.alloc(2 * 4096));
    let ok = 0;
    for (let i = 0; i < 400; i++) {
      await writeFile(file, mutate(src, r));
      try {
        await (await PagemapReader.open(file)).toArray();
        ok++;
      } catch (e) {
        if (!(e instanceof ImageError)) assert.fail(`#${i}: non-ImageError ${String((e as Error)?.stack ?? e)}`);
        assert.equal(e.file, file);
      }
    }
    assert.ok(ok > 0);
    assert.deepEqual(leakedFds(fds), []);
  } finally {
    tmp.dispose();
  }
});

test('random mutations of crit JSON: encode gives an image or a clean ImageError (2000 documents)', () => {
  const r = S.rng(4242);
  const docs = corpus().map((c) => imageToCritJson(decodeImage(c.bytes, c.name)));
  const alphabet = '{}[]":,0123456789-x abcdefXYZ\\';
  let ok = 0;
  for (let i = 0; i < 2000; i++) {
    let s = docs[i % docs.length]!;
    for (let k = 0, n = 1 + Math.floor(r() * 3); k < n; k++) {
      const at = Math.floor(r() * s.length);
      const op = Math.floor(r() * 3);
      const ch = alphabet[Math.floor(r() * alphabet.length)]!;
      s = op === 0 ? s.slice(0, at) + s.slice(at + 1) : op === 1 ? s.slice(0, at) + ch + s.slice(at) : s.slice(0, at) + ch + s.slice(at + 1);
    }
    try {
      critJsonToImage(s, 'fuzz.json');
      ok++;
    } catch (e) {
      if (!(e instanceof ImageError)) assert.fail(`#${i}: non-ImageError ${String((e as Error)?.stack ?? e)}\n${s}`);
      assert.equal(e.file, 'fuzz.json');
    }
  }
  assert.ok(ok > 0);
});
