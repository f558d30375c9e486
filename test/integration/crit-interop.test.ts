// Interop with Debian's crit 3.17 both ways: images we write decode with
// crit to exactly our JSON and re-encode byte-identically; images crit
// encodes from JSON fixtures read back with our reader to the same values.
// Fields crit 3.17 does not know (CRIU 4.1/4.2 additions, crit-check.md §5)
// are handled explicitly.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { messagePlan } from '../../plugin/images/codec.js';
import {
  imageToCrit, imageToCritJson, messageToCrit, parseJson, stringifyJson, type JsonValue,
} from '../../plugin/images/critjson.js';
import { encodeImage, readImageFile, type EntryToWrite } from '../../plugin/images/image.js';
import { ImageDir } from '../../plugin/images/imagedir.js';
import { KIND, requireKind, type ImageKind } from '../../plugin/images/magic.js';
import { PE_LAZY, PE_PRESENT } from '../../plugin/images/memory.js';
import { crit, critBatch, requireCrit } from '../helpers/crit.js';
import { tempDir } from '../helpers/env.js';
import * as S from '../helpers/image-samples.js';

// crit is installed by scripts/setup.sh: without it this file fails, never skips.
await requireCrit();
const opts = {};
let tmp: { path: string; dispose: () => void };
before(() => { tmp = tempDir('lr-crit-'); });
after(() => tmp.dispose());

interface Fixture { name: string; kind: ImageKind; entries: EntryToWrite[] }

const m = (xs: readonly object[]): EntryToWrite[] => xs.map((message) => ({ message }));

/** One image per modelled kind, using only fields crit 3.17 knows. */
function fixtures317(): Fixture[] {
  return [
    { name: 'inventory.img', kind: KIND.inventory, entries: m([S.inventory(false)]) },
    { name: 'pstree.img', kind: KIND.pstree, entries: m(S.pstree) },
    { name: 'core-4242.img', kind: KIND.core, entries: m([S.coreLeader(false)]) },
    { name: 'core-4243.img', kind: KIND.core, entries: m([S.coreThread()]) },
    { name: 'core-4250.img', kind: KIND.core, entries: m([S.coreZombie]) },
    { name: 'ids-4242.img', kind: KIND.ids, entries: m([S.ids]) },
    { name: 'mm-4242.img', kind: KIND.mm, entries: m([S.mm()]) },
    { name: 'files.img', kind: KIND.files, entries: m(S.files(false)) },
    { name: 'fdinfo-2.img', kind: KIND.fdinfo, entries: m(S.fdinfo) },
    { name: 'fs-4242.img', kind: KIND.fs, entries: m([S.fs]) },
    { name: 'seccomp.img', kind: KIND.seccomp, entries: m([S.seccomp]) },
    { name: 'timens-0.img', kind: KIND.timens, entries: m([S.timens]) },
    { name: 'tty-info.img', kind: KIND.ttyInfo, entries: m(S.ttyInfo) },
    { name: 'tty-data.img', kind: requireKind('TTY_DATA'), entries: m([{ tty_id: 7, data: Buffer.from('typed ahead\n') }]) },
    { name: 'stats-dump', kind: KIND.stats, entries: m([{ dump: {
      freezing_time: 10, frozen_time: 20, memdump_time: 30, memwrite_time: 40, pages_scanned: 1000n, pages_skipped_parent: 0n,
      pages_written: 69n, pages_lazy: 27n, irmap_resolve: 0, page_pipes: 1n, page_pipe_bufs: 2n } }]) },
    { name: 'pipes-data.img', kind: requireKind('PIPES_DATA'), entries: [
      { message: { pipe_id: 123456, bytes: 5, size: 65536 }, extra: Buffer.from('hello') },
      { message: { pipe_id: 7, bytes: 100 }, extra: Buffer.alloc(100, 0xab) }] },
    { name: 'ghost-file-1a.img', kind: requireKind('GHOST_FILE'), entries: [
      { message: { uid: 0, gid: 0, mode: 0o100644, dev: 2049, ino: 131n, atim: { tv_sec: 1n, tv_usec: 2n }, mtim: { tv_sec: 3n, tv_usec: 4n }, size: 3n },
        extra: Buffer.from('abc') }] },
    { name: 'ghost-file-1b.img', kind: requireKind('GHOST_FILE'), entries: [
      { message: { uid: 1000, gid: 1000, mode: 0o100600, chunks: true, size: 12288n } },
      { message: { len: 4n, off: 0n }, extra: Buffer.from('head') },
      { message: { len: 3n, off: 8192n }, extra: Buffer.from('end') }] },
    { name: 'remap-fpath.img', kind: requireKind('REMAP_FPATH'), entries: m([{ orig_id: 3, remap_id: 26, remap_type: 1 }]) },
    { name: 'sigacts-4242.img', kind: requireKind('SIGACT'), entries: m(S.coreLeader(false).tc!.sigactions) },
    { name: 'creds-4242.img', kind: requireKind('CREDS'), entries: m([S.coreLeader(false).thread_core!.creds!]) },
    { name: 'rlimit-4242.img', kind: requireKind('RLIMIT'), entries: m(S.coreLeader(false).tc!.rlimits!.rlimits) },
    { name: 'itimers-4242.img', kind: requireKind('ITIMERS'), entries: m([S.coreLeader(false).tc!.timers!.real]) },
    { name: 'posix-timers-4242.img', kind: requireKind('POSIX_TIMERS'), entries: m(S.coreLeader(false).tc!.timers!.posix) },
    { name: 'vmas-4242.img', kind: requireKind('VMAS'), entries: m(S.mm().vmas) },
    { name: 'reg-files.img', kind: requireKind('REG_FILES'), entries: m([S.files()[0]!.reg!]) },
    { name: 'ext-files.img', kind: requireKind('EXT_FILES'), entries: m([{ id: 8, fown: { uid: 1, euid: 2, signum: 3, pid_type: 4, pid: 5 } }]) },
    { name: 'tty.img', kind: requireKind('TTY_FILES'), entries: m([S.files()[4]!.tty!]) },
    { name: 'pipes.img', kind: requireKind('PIPES'), entries: m([S.files()[3]!.pipe!]) },
  ];
}

test('our images decode with crit to exactly our JSON and re-encode byte-identically', opts, async () => {
  const dir = join(tmp.path, 'ours');
  await ImageDir.create(dir);
  const fx = fixtures317();
  for (const f of fx) await writeFile(join(dir, f.name), encodeImage(f.kind, f.entries));
  const decoded = await critBatch(tmp.path, fx.map((f) => ({ op: 'decode' as const, in: join(dir, f.name) })));
  const reenc = [];
  for (const [i, f] of fx.entries()) {
    const r = decoded[i]!;
    assert.ok(r.ok, `crit decode ${f.name}: ${r.error}`);
    const ours = imageToCritJson(await readImageFile(join(dir, f.name)));
    assert.equal(ours, r.json, `${f.name}: crit JSON differs`);
    await writeFile(join(dir, `${f.name}.json`), r.json!);
    reenc.push({ op: 'encode' as const, in: join(dir, `${f.name}.json`), out: join(dir, `${f.name}.re`) });
  }
  const encoded = await critBatch(tmp.path, reenc);
  for (const [i, f] of fx.entries()) {
    assert.ok(encoded[i]!.ok, `crit encode ${f.name}: ${encoded[i]!.error}`);
    assert.deepEqual(await readFile(join(dir, `${f.name}.re`)), await readFile(join(dir, f.name)), `${f.name}: crit re-encode differs`);
  }
});

/** Fields crit 3.17 does not know: it drops them (crit-check.md §5). */
function drop317(v: JsonValue, path: string[]): void {
  const known: Record<string, string[]> = {
    '': ['plugins_entry', 'dump_criu_run_id', 'allow_uprobes'],
    tc: ['stop_signo', 'membarrier_registration_mask'],
    thread_core: ['cg_set'],
    creds: ['no_new_privs', 'cap_amb'],
    xsave: ['cet'],
  };
  if (!v || typeof v !== 'object' || Array.isArray(v)) return;
  const here = path.length === 1 && path[0] === 'inventory' ? '' : path[path.length - 1] ?? '';
  for (const k of known[here] ?? []) delete (v as Record<string, JsonValue>)[k];
  for (const [k, x] of Object.entries(v)) drop317(x, [...path, k]);
}

test('CRIU 4.2-only fields: crit 3.17 shows everything else unchanged', opts, async () => {
  const dir = join(tmp.path, 'new');
  await ImageDir.create(dir);
  const d = await ImageDir.open(dir);
  await d.writeInventory(S.inventory(true));
  await d.writeCore(1, S.coreLeader(true));
  const w = await d.pagemapWriter(1, 1);
  await w.add(0x400000n, 2, PE_PRESENT, Buffer.alloc(8192, 1));
  await w.add(0x7f0000000000n, 3, PE_LAZY);
  await w.close();
  const res = await critBatch(tmp.path, ['inventory.img', 'core-1.img', 'pagemap-1.img'].map((n) => ({ op: 'decode' as const, in: join(dir, n) })));
  for (const [i, n] of ['inventory.img', 'core-1.img'].entries()) {
    assert.ok(res[i]!.ok, res[i]!.error);
    const ours = imageToCrit(await readImageFile(join(dir, n)));
    const entries = ours['entries'] as JsonValue[];
    for (const e of entries) drop317(e, [n === 'inventory.img' ? 'inventory' : 'core']);
    assert.equal(stringifyJson(ours), res[i]!.json, n);
  }
  // Pagemap: crit 3.17 calls field 2 "nr_pages" and cannot see field 5; with
  // both fields written it still shows the right counts.
  assert.ok(res[2]!.ok, res[2]!.error);
  assert.equal(res[2]!.json, '{"magic": "PAGEMAP", "entries": [{"pages_id": 1}, '
    + '{"vaddr": 4194304, "nr_pages": 2, "flags": 4}, {"vaddr": 139637976727552, "nr_pages": 3, "flags": 2}]}');
});

test('crit-encoded fixtures read back with our reader to the same values', opts, async () => {
  const dir = join(tmp.path, 'theirs');
  await ImageDir.create(dir);
  const fx = fixtures317();
  // JSON fixtures in crit's shape, generated from the samples.
  for (const f of fx) {
    const doc = { magic: f.kind.name, entries: f.entries.map((e, i) => {
      const type = i === 0 && f.kind.headMessage ? f.kind.headMessage : f.kind.message!;
      const o = messageToCrit(messagePlan(type), e.message as never);
      if (e.extra) o['extra'] = e.extra.toString('base64');
      return o;
    }) };
    await writeFile(join(dir, `${f.name}.json`), stringifyJson(doc));
  }
  // Hand-written crit-3.17-style pagemap (count in "nr_pages" = field 2) and a
  // JSON with hex strings and enum names, as `crit decode --pretty` prints.
  await writeFile(join(dir, 'pagemap-9.img.json'), '{"magic": "PAGEMAP", "entries": [{"pages_id": 3}, '
    + '{"vaddr": "0x7f0000000000", "nr_pages": 2, "flags": "PE_LAZY | PE_PRESENT"}, {"vaddr": 139637976735744, "nr_pages": 1, "in_parent": true}]}');
  const res = await critBatch(tmp.path, [
    ...fx.map((f) => ({ op: 'encode' as const, in: join(dir, `${f.name}.json`), out: join(dir, f.name) })),
    { op: 'encode' as const, in: join(dir, 'pagemap-9.img.json'), out: join(dir, 'pagemap-9.img') },
  ]);
  res.forEach((r, i) => assert.ok(r.ok, `crit encode #${i}: ${r.error}`));
  for (const f of fx) {
    const img = await readImageFile(join(dir, f.name), f.kind);
    assert.deepEqual(img.entries.map((e) => e.message), f.entries.map((e) => e.message), f.name);
    assert.deepEqual(img.entries.map((e) => e.extra), f.entries.map((e) => e.extra), `${f.name} extra`);
  }
  await writeFile(join(dir, 'pages-3.img'), Buffer.alloc(2 * 4096));
  const runs = await (await (await ImageDir.open(dir)).pagemap(9)).toArray();
  assert.deepEqual(runs.map((r) => [r.vaddr, r.nrPages, r.flags, r.pagesOffset]), [[0x7f0000000000n, 2, 6, 0], [0x7f0000002000n, 1, 1, undefined]]);
  assert.deepEqual(runs[0]!.entry, { vaddr: 0x7f0000000000n, compat_nr_pages: 2, flags: 6 });
});

test('crit --pretty output of our images encodes back to the same values', opts, async () => {
  const dir = join(tmp.path, 'pretty');
  const d = await ImageDir.create(dir);
  await d.writeCore(1, S.coreLeader(false));
  await d.writeMm(1, S.mm());
  await d.writeFiles(S.files(false));
  const names = ['core-1.img', 'mm-1.img', 'files.img'];
  const dec = await critBatch(tmp.path, names.map((n) => ({ op: 'decode' as const, in: join(dir, n), pretty: true })));
  for (const [i, n] of names.entries()) {
    assert.ok(dec[i]!.ok, dec[i]!.error);
    await writeFile(join(dir, `${n}.json`), dec[i]!.json!);
  }
  const enc = await critBatch(tmp.path, names.map((n) => ({ op: 'encode' as const, in: join(dir, `${n}.json`), out: join(dir, `${n}.re`) })));
  for (const [i, n] of names.entries()) {
    assert.ok(enc[i]!.ok, enc[i]!.error);
    assert.deepEqual(await readFile(join(dir, `${n}.re`)), await readFile(join(dir, n)), n);
  }
});

test('the crit CLI itself: decode matches `lazy-restore show --json` semantics, x ps reads our tree', opts, async () => {
  const dir = join(tmp.path, 'cli');
  const d = await ImageDir.create(dir);
  await d.writePstree(S.pstree);
  await d.writeCore(4242, S.coreLeader(false));
  await d.writeCore(4243, S.coreThread());
  await d.writeCore(4250, S.coreZombie);
  await d.writeIds(4242, S.ids);
  await d.writeIds(4250, S.ids);
  const out = await crit(['decode', '-i', join(dir, 'core-4242.img')]);
  assert.equal(out, imageToCritJson(await readImageFile(join(dir, 'core-4242.img'))) + '\n');
  const ps = await crit(['x', dir, 'ps']);
  assert.match(ps, /4242\s+4242\s+4242\s+sample-prog/);
  assert.match(ps, /4250\s+4242\s+4242\s+zombie/);
  // Our JSON parser keeps crit's 64-bit integers exact.
  const parsed = parseJson(out) as { entries: { thread_info: { gpregs: { ax: bigint } } }[] };
  assert.equal(parsed.entries[0]!.thread_info.gpregs.ax, 0xfffffffffffffffcn);
});
