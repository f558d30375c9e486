// `lazy-restore show / inspect / encode` as a user runs them (child
// processes): crit-identical JSON, readable forms, one-line errors with
// exit code 1, and a checkpoint summary with exact memory figures.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { parseJson } from '../../plugin/images/critjson.js';
import { encodeImage } from '../../plugin/images/image.js';
import { IMG_COMMON, KIND } from '../../plugin/images/magic.js';
import { runCli } from '../helpers/cli.js';
import { crit, requireCrit } from '../helpers/crit.js';
import { tempDir } from '../helpers/env.js';
import * as S from '../helpers/image-samples.js';
import { writeSampleCheckpoint } from '../helpers/image-checkpoint.js';

const PAGE = 4096;
let tmp: { path: string; dispose: () => void };
let dir: string;

/** A checkpoint of two processes (one zombie) with a known memory layout. */
before(async () => {
  tmp = tempDir('lr-cli-');
  dir = join(tmp.path, 'ckpt');
  const d = await writeSampleCheckpoint(dir);
  await d.writeWorkingSet({ pid: 4242, started_ns: 1n }, [{ vaddr: 0x55d0c1000000n, nr_pages: 2n, at_ns: 10n }]);
  await d.writeChecksums({ pages_id: 1, chunk_size: 65536, algorithm: 1, file_size: BigInt(11 * PAGE), checksums: [1] });
});
after(() => tmp.dispose());

test('show --json prints what crit decode prints', async () => {
  await requireCrit(); // installed by scripts/setup.sh: fail, never skip
  // (Images with CRIU 4.2-only fields are compared in crit-interop.test.ts.)
  for (const name of ['mm-4242.img', 'pstree.img', 'fdinfo-2.img', 'ids-4242.img', 'core-4243.img']) {
    const r = await runCli(['show', '--json', join(dir, name)]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, await crit(['decode', '-i', join(dir, name)]), name);
  }
});

test('show: pagemap table, our own images, readable form with hex addresses', async () => {
  let r = await runCli(['show', join(dir, 'pagemap-4242.img')]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /0x55d0c1000000\s+4 PE_LAZY\|PE_PRESENT\s+0x1000/);
  assert.match(r.stdout, /0x7f0000002000\s+2 PE_LAZY\s+-/);
  r = await runCli(['show', '--json', join(dir, 'pagemap-4242.img')]);
  const pm = parseJson(r.stdout) as { magic: string; entries: Record<string, unknown>[] };
  assert.equal(pm.magic, 'PAGEMAP');
  assert.deepEqual(pm.entries[2], { vaddr: 0x55d0c1000000n, compat_nr_pages: 4n, flags: 6n, nr_pages: 4n });
  r = await runCli(['show', '--json', join(dir, 'lr-workingset-4242.img')]);
  assert.equal(r.stdout, `{"magic": "LR_WORKINGSET", "entries": [{"pid": 4242, "started_ns": 1}, {"vaddr": ${0x55d0c1000000}, "nr_pages": 2, "at_ns": 10}]}\n`);
  r = await runCli(['show', join(dir, 'lr-checksums-1.img')]);
  assert.match(r.stdout, /"algorithm": "CRC32C"/);
  r = await runCli(['show', join(dir, 'core-4242.img')]);
  assert.match(r.stdout, /"ip": "0x7f12345678ab"/);
  assert.match(r.stdout, /"comm": "sample-prog"/);
});

test('show: bad input is one line naming file and offset, exit 1, no stack', async () => {
  const bad = join(tmp.path, 'core-1.img');
  const full = encodeImage(KIND.core, [{ message: S.coreLeader() }]);
  await writeFile(bad, full.subarray(0, full.length - 5));
  let r = await runCli(['show', bad]);
  assert.equal(r.code, 1);
  assert.equal(r.stdout, '');
  assert.match(r.stderr, new RegExp(`^lazy-restore: ${bad} at offset 8: entry size \\d+ runs past end of file \\(\\d+ bytes left\\)\\n$`));
  const wrong = Buffer.alloc(8);
  wrong.writeUInt32LE(IMG_COMMON, 0);
  wrong.writeUInt32LE(0x11111111, 4);
  await writeFile(bad, wrong);
  r = await runCli(['show', '--json', bad]);
  assert.equal(r.code, 1);
  assert.equal(r.stderr, `lazy-restore: ${bad} at offset 4: unknown image magic 0x11111111\n`);
  r = await runCli(['show', join(dir, 'pages-1.img')]);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /pages-1\.img: PAGES is a raw image \(no header, no entries\); nothing to decode\n$/);
  r = await runCli(['show', join(tmp.path, 'missing.img')]);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /missing\.img: cannot read image: ENOENT\n$/);
  r = await runCli(['inspect', join(tmp.path, 'nodir')]);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /nodir: cannot open image directory: ENOENT\n$/);
});

test('inspect: tree, VMAs, files, cwd/root and memory split', async () => {
  const r = await runCli(['inspect', dir]);
  assert.equal(r.code, 0, r.stderr);
  const out = r.stdout;
  assert.match(out, /^ {2}4242 sample-prog \(alive, 2 threads: 4242 4243\)$/m);
  assert.match(out, /^ {4}└─ 4250 zombie \(zombie\)$/m);
  assert.match(out, /exe: {2}\/usr\/bin\/sample-prog/);
  assert.match(out, /cwd: {2}\/\n/);
  assert.match(out, /^ +0 REG +\/dev\/null$/m);
  assert.match(out, /^ +3 PIPE +pipe:\[123456\] +\(cloexec\)$/m);
  assert.match(out, /^ +4 TTY +\/dev\/pts\/3$/m);
  assert.match(out, /55d0c1000000-55d0c1021000 rw-p +132 KiB {2}\[heap\] {2}\[dumped 16 KiB, lazy 16 KiB, zero 116 KiB\]/);
  assert.match(out, /7ffd00100000-7ffd00102000 r-xp +8\.0 KiB {2}\[vdso\] {2}\[dumped 8\.0 KiB\]/);
  assert.match(out, /working set: 2 pages in 1 ranges/);
  assert.match(out, /pages-1\.img: 1 chunks of 64 KiB/);
  assert.match(out, /Consistency: OK/);

  const j = await runCli(['inspect', '--json', dir]);
  assert.equal(j.code, 0, j.stderr);
  const s = parseJson(j.stdout) as { processes: { pid: bigint; memory: Record<string, bigint>; problems: string[]; files: unknown[] }[] };
  const p = s.processes[0]!;
  assert.deepEqual(p.problems, []);
  assert.equal(p.memory['dumped'], BigInt(9 * PAGE));
  assert.equal(p.memory['lazy'], BigInt(8 * PAGE));
  assert.equal(p.memory['remote'], BigInt(2 * PAGE));
  // zero: lazy-eligible VMAs minus covered pages: heap 33-4, anon 16-2, stack 2-2.
  assert.equal(p.memory['zero'], BigInt(43 * PAGE));
  assert.equal(p.memory['parent'], 0n);
  assert.equal(p.files.length, 5);
  assert.equal(s.processes[1]!.pid, 4250n);
});

test('encode: crit-shaped JSON back to the identical image', async () => {
  for (const name of ['core-4242.img', 'pagemap-4242.img', 'lr-workingset-4242.img']) {
    const json = join(tmp.path, `${name}.json`);
    const r = await runCli(['show', '--json', join(dir, name)]);
    await writeFile(json, r.stdout);
    const out = join(tmp.path, `${name}.re`);
    const e = await runCli(['encode', json, out]);
    assert.equal(e.code, 0, e.stderr);
    assert.deepEqual(await readFile(out), await readFile(join(dir, name)), name);
  }
  const badJson = join(tmp.path, 'bad.json');
  await writeFile(badJson, '{"magic": "PSTREE", "entries": [{"pid": 1, "ppid": 0, "pgid": 1}]}');
  const e = await runCli(['encode', badJson, join(tmp.path, 'x.img')]);
  assert.equal(e.code, 1);
  assert.match(e.stderr, /bad\.json: entries\[0\]: pstree_entry\.sid: missing required field\n$/);
});
