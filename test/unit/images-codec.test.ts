// Schema, codec and image round trips: every message type, every modelled
// image kind, header bytes and file names as the spec's magic table gives them.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { ImageDir } from '../../plugin/images/imagedir.js';
import { decodeMessage, encodeMessage, messagePlan, messageTypeNames } from '../../plugin/images/codec.js';
import { decodeImage, encodeImage } from '../../plugin/images/image.js';
import { decodePagemapEntry, encodePagemapEntry } from '../../plugin/images/pagemap.js';
import {
  IMAGE_KINDS, KIND, LR_CHECKSUMS_MAGIC, LR_WORKINGSET_MAGIC, headerBytes, imageFileName, kindByMagic, parseFileName, requireKind,
} from '../../plugin/images/index.js';
import type { PagemapEntry } from '../../plugin/images/types.js';
import { tempDir } from '../helpers/env.js';
import * as S from '../helpers/image-samples.js';

const where = { file: 'test', offset: 0 };

test('every message type in proto/ is covered by the samples list', () => {
  const declared = messageTypeNames();
  assert.deepEqual([...declared].sort(), [...S.allMessageTypes()].sort());
});

test('round trip of random fully-populated messages, every type', () => {
  const r = S.rng(1);
  for (const type of S.allMessageTypes()) {
    for (let i = 0; i < 20; i++) {
      const m = S.randomMessage(type, r);
      const bytes = encodeMessage(type, m);
      const back = decodeMessage(type, bytes, where);
      assert.deepEqual(back, m, `${type} #${i}`);
      assert.deepEqual(encodeMessage(type, back), bytes, `${type} #${i} re-encodes identically`);
    }
  }
});

test('64-bit extremes keep their exact value and sign', () => {
  const vma = { start: (1n << 64n) - 4096n, end: (1n << 64n) - 1n, pgoff: 0n, shmid: 0n, prot: 0, flags: 0, status: 0, fd: -(1n << 63n) };
  const back = decodeMessage<typeof vma>('vma_entry', encodeMessage('vma_entry', vma), where);
  assert.equal(back.start, 0xfffffffffffff000n);
  assert.equal(back.end, 0xffffffffffffffffn);
  assert.equal(back.fd, -(1n << 63n));
  assert.equal(typeof back.prot, 'number');
});

test('encode rejects missing required fields and wrong types, naming the field', () => {
  assert.throws(() => encodeMessage('pstree_entry', { pid: 1, ppid: 0, pgid: 1 }), /pstree_entry\.sid: missing required field/);
  assert.throws(() => encodeMessage('pstree_entry', { pid: -1, ppid: 0, pgid: 1, sid: 1 }), /pstree_entry\.pid: expected a uint32/);
  assert.throws(() => encodeMessage('mm_entry', { ...S.mm(), mm_brk: 1n << 64n }), /mm_entry\.mm_brk: .* out of range/);
  assert.throws(() => encodeMessage('core_entry', { mtype: 1, tc: { task_state: 1 } }), /core_entry\.tc\.exit_code: missing required/);
});

test('decoding reports a missing required field', () => {
  const bytes = encodeMessage('pstree_entry', { pid: 1, ppid: 0, pgid: 1, sid: 1 }).subarray(0, 4);
  assert.throws(() => decodeMessage('pstree_entry', bytes, { file: 'x.img', offset: 8 }), (e: Error) => {
    assert.equal(e.name, 'ImageError');
    assert.match(e.message, /^x\.img at offset 8: cannot decode pstree_entry: missing required/);
    return true;
  });
});

test('defaults: user_desc_t and reg_file_entry.mnt_id stay absent unless set', () => {
  const plan = messagePlan('reg_file_entry');
  assert.equal(plan.fields.find((f) => f.name === 'mnt_id')?.kind, 's32');
  const back = decodeMessage<Record<string, unknown>>('reg_file_entry', encodeMessage('reg_file_entry', S.files()[0]!.reg!), where);
  assert.equal('mnt_id' in back, false);
});

test('repeated scalars are written unpacked and packed input is accepted', () => {
  const bytes = encodeMessage('pstree_entry', { pid: 1, ppid: 0, pgid: 1, sid: 1, threads: [1, 2] });
  assert.equal(bytes.toString('hex'), '0801100018012001280128' + '02');
  // threads packed: field 5, wire type 2, length 2, values 1, 2
  const packed = Buffer.from('08011000180120012a020102', 'hex');
  assert.deepEqual(decodeMessage('pstree_entry', packed, where), { pid: 1, ppid: 0, pgid: 1, sid: 1, threads: [1, 2] });
});

test('long runs of an unpacked repeated fixed32 decode exactly, split by other fields or not; a cut run is refused', () => {
  const r = S.rng(7);
  const sums = Array.from({ length: 5000 }, () => Math.floor(r() * 2 ** 32) >>> 0);
  const entry = { pages_id: 1, chunk_size: 65536, algorithm: 1, file_size: 5000n * 65536n, checksums: sums };
  const bytes = encodeMessage('page_checksums_entry', entry);
  assert.deepEqual(decodeMessage('page_checksums_entry', bytes, where), entry);
  // The same field in two runs with another field between them: one list, in order.
  const head = encodeMessage('page_checksums_entry', { ...entry, checksums: sums.slice(0, 7) });
  const tail = encodeMessage('page_checksums_entry', { pages_id: 1, chunk_size: 65536, algorithm: 1, file_size: 1n, checksums: sums.slice(7) });
  const both = Buffer.concat([head, tail]);
  assert.deepEqual(decodeMessage<{ checksums: number[] }>('page_checksums_entry', both, where).checksums, sums);
  assert.throws(() => decodeMessage('page_checksums_entry', bytes.subarray(0, bytes.length - 2), where), /cannot decode page_checksums_entry/);
});

test('hand-coded pagemap_entry codec matches the protobuf codec', () => {
  const r = S.rng(7);
  for (let i = 0; i < 2000; i++) {
    const e = S.randomMessage('pagemap_entry', r) as unknown as PagemapEntry;
    const ours = encodePagemapEntry(e);
    assert.deepEqual(ours, encodeMessage('pagemap_entry', e));
    assert.deepEqual(decodePagemapEntry(ours, 0, ours.length), decodeMessage('pagemap_entry', ours, where));
  }
});

test('header bytes match the magic table (IMAGE-FORMAT §1.6)', () => {
  assert.equal(headerBytes(KIND.inventory).toString('hex'), '16313158');
  assert.equal(headerBytes(KIND.core).toString('hex'), '1943565447380555');
  assert.equal(headerBytes(KIND.pagemap).toString('hex'), '1943565425400856');
  assert.equal(headerBytes(KIND.stats).toString('hex'), '4059105506330957');
  assert.equal(headerBytes(requireKind('IRMAP_CACHE')).toString('hex'), '4059105559400057');
  // the single empty entry of seccomp.img
  assert.equal(encodeImage(KIND.seccomp, [{ message: S.seccompEmpty }]).toString('hex'), '194356544930416400000000');
  assert.throws(() => headerBytes(KIND.pages), /raw image/);
});

test('our magics do not collide with CRIU magics', () => {
  const criu = IMAGE_KINDS.filter((k) => !k.name.startsWith('LR_')).map((k) => k.magic);
  assert.ok(!criu.includes(LR_WORKINGSET_MAGIC) && !criu.includes(LR_CHECKSUMS_MAGIC));
  assert.equal(kindByMagic(LR_WORKINGSET_MAGIC)?.name, 'LR_WORKINGSET');
  assert.equal(kindByMagic(0x56084025)?.pattern, 'pagemap-%.img');
});

test('file names: parse and format', () => {
  const cases: [string, string, string | undefined][] = [
    ['inventory.img', 'INVENTORY', undefined],
    ['core-4242.img', 'CORE', '4242'],
    ['pagemap-4242.img', 'PAGEMAP', '4242'],
    ['pagemap-shmem-123.img', 'PAGEMAP', '123'],
    ['pages-65537.img', 'PAGES', '65537'],
    ['fdinfo-2.img', 'FDINFO', '2'],
    ['ghost-file-1a.img', 'GHOST_FILE', '1a'],
    ['stats-dump', 'STATS', 'dump'],
    ['tmpfs-dev-42.tar.gz.img', 'TMPFS_DEV', '42'],
    ['lr-workingset-7.img', 'LR_WORKINGSET', '7'],
    ['lr-checksums-1.img', 'LR_CHECKSUMS', '1'],
  ];
  for (const [name, kind, id] of cases) {
    const p = parseFileName(name);
    assert.equal(p?.kind.name, kind, name);
    assert.equal(p?.id, id, name);
    assert.equal(imageFileName(p!.kind, id), name);
  }
  assert.equal(parseFileName('parent'), undefined);
  assert.equal(parseFileName('pagemap-x.img'), undefined);
  assert.equal(imageFileName(requireKind('GHOST_FILE'), 26), 'ghost-file-1a.img');
});

test('ImageDir writes and reads back every modelled image kind', async () => {
  const tmp = tempDir();
  try {
    const d = await ImageDir.create(tmp.path);
    await d.writeInventory(S.inventory());
    await d.writePstree(S.pstree);
    await d.writeCore(4242, S.coreLeader());
    await d.writeCore(4243, S.coreThread());
    await d.writeCore(4250, S.coreZombie);
    await d.writeIds(4242, S.ids);
    await d.writeMm(4242, S.mm());
    await d.writeFs(4242, S.fs);
    await d.writeFiles(S.files());
    await d.writeFdinfo(2, S.fdinfo);
    await d.writeSeccomp(S.seccomp);
    await d.writeTimens(0, S.timens);
    await d.writeImage(KIND.ttyInfo, undefined, S.ttyInfo);
    await d.writeWorkingSet({ pid: 4242, started_ns: 1700000000000000000n, page_size: 4096 },
      [{ vaddr: 0x7f0000003000n, nr_pages: 2n, at_ns: 5n }, { vaddr: 0x7f0000000000n, nr_pages: 1n, at_ns: 900n }]);
    await d.writeChecksums({ pages_id: 1, chunk_size: 65536, algorithm: 1, file_size: 131072n, checksums: [0xdeadbeef, 0] });

    assert.deepEqual(await d.inventory(), S.inventory());
    assert.deepEqual(await d.pstree(), S.pstree);
    assert.deepEqual(await d.core(4242), S.coreLeader());
    assert.deepEqual(await d.core(4243), S.coreThread());
    assert.deepEqual(await d.core(4250), S.coreZombie);
    assert.deepEqual(await d.ids(4242), S.ids);
    assert.deepEqual(await d.mm(4242), S.mm());
    assert.deepEqual(await d.fs(4242), S.fs);
    assert.deepEqual(await d.files(), S.files());
    assert.deepEqual(await d.fdinfo(2), S.fdinfo);
    assert.deepEqual(await d.seccomp(), S.seccomp);
    assert.deepEqual(await d.timens(0), S.timens);
    assert.deepEqual(await d.ttyInfo(), S.ttyInfo);
    const ws = await d.workingSet(4242);
    assert.equal(ws?.head.pid, 4242);
    assert.deepEqual(ws?.ranges.map((x) => x.vaddr), [0x7f0000003000n, 0x7f0000000000n]);
    assert.deepEqual((await d.checksums(1))?.checksums, [0xdeadbeef, 0]);

    // Missing images: lists are empty, single entries are an ImageError naming the file.
    assert.deepEqual(await d.fdinfo(99), []);
    await assert.rejects(d.core(1), /core-1\.img: image is missing \(ENOENT\)/);
    assert.equal(await d.workingSet(1), undefined);

    const names = (await d.list()).map((f) => `${f.name}:${f.kind?.name ?? '-'}`);
    assert.ok(names.includes('core-4243.img:CORE') && names.includes('lr-workingset-4242.img:LR_WORKINGSET'));

    // Bytes on disk decode through the generic path too, entry offsets included.
    const img = decodeImage(await readFile(d.pathOf(KIND.pstree)), 'pstree.img');
    assert.deepEqual(img.entries.map((e) => e.offset), [8, 8 + 4 + encodeMessage('pstree_entry', S.pstree[0]!).length]);
  } finally {
    tmp.dispose();
  }
});

test('EXTRA payloads: pipes-data and ghost files keep their raw bytes', () => {
  const pipes = requireKind('PIPES_DATA');
  const data = Buffer.from('hello pipe');
  const bytes = encodeImage(pipes, [
    { message: { pipe_id: 1, bytes: data.length }, extra: data },
    { message: { pipe_id: 2, bytes: 0 }, extra: Buffer.alloc(0) },
  ]);
  const img = decodeImage(bytes, 'pipes-data.img');
  assert.equal(img.entries.length, 2);
  assert.deepEqual(img.entries[0]!.extra, data);
  assert.deepEqual(img.entries[1]!.message, { pipe_id: 2, bytes: 0 });

  const ghost = requireKind('GHOST_FILE');
  const flat = decodeImage(encodeImage(ghost, [{
    message: { uid: 0, gid: 0, mode: 0o100644, atim: { tv_sec: 1n, tv_usec: 2n }, size: 5n }, extra: Buffer.from('abcde'),
  }]), 'g.img');
  assert.deepEqual(flat.entries[0]!.extra, Buffer.from('abcde'));
  const chunked = decodeImage(encodeImage(ghost, [
    { message: { uid: 0, gid: 0, mode: 0o100644, chunks: true, size: 8192n } },
    { message: { len: 3n, off: 0n }, extra: Buffer.from('xyz') },
    { message: { len: 2n, off: 4096n }, extra: Buffer.from('uv') },
  ]), 'g.img');
  assert.deepEqual(chunked.entries.map((e) => e.type), ['ghost_file_entry', 'ghost_chunk_entry', 'ghost_chunk_entry']);
  assert.deepEqual(chunked.entries[2]!.extra, Buffer.from('uv'));
});
