// A file replaced on disk since the dump is found at restore (issue 18 item
// 3, CRIU's validate_file): workload-mem runs from a copy of its binary with
// a copy of libm preloaded (an executable and a library the test may
// change). The dump records the size and the ELF build-id of each
// (reg_file_entry.build_id, as CRIU's default --file-validation buildid;
// checked against readelf's). A library copy whose build-id changed (same
// size) fails the restore with one line naming pid, file and both ids; an
// executable copy that grew fails on its size; nothing is left running.
// With --file-validation filesize the changed build-id is not looked at and
// the same images restore and verify themselves.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { appendFileSync, copyFileSync, existsSync, readFileSync, truncateSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { dump } from '../../plugin/dump/index.js';
import { buildIdBytes } from '../../plugin/images/build-id.js';
import { ImageDir } from '../../plugin/images/index.js';
import { helperPath } from '../../plugin/native/addon.js';
import { runCli } from '../helpers/cli.js';
import { critCheckDir } from '../helpers/critcheck.js';
import { isRoot, leakedFds, openFds, tempDir, withTimeout } from '../helpers/env.js';
import { goAndCheck, restoreTree } from '../helpers/restore.js';
import { startWorkload } from '../helpers/workload.js';

const skip = !isRoot && 'needs root';
const LIBM = '/lib/x86_64-linux-gnu/libm.so.6';

/** The build-id as readelf shows it (hex). */
function readelfBuildId(path: string): string {
  const out = execFileSync('readelf', ['-n', path], { encoding: 'utf8', timeout: 10000 });
  const m = /Build ID: ([0-9a-f]+)/.exec(out);
  assert.ok(m, `${path} has a build-id`);
  return m[1]!;
}

const esc = (s: string): string => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

test('a library whose build-id changed since the dump, and an executable that grew, fail the restore by name; --file-validation filesize restores', { skip: skip || (!existsSync(LIBM) && 'no libm.so.6 here') }, async () => {
  const fds = openFds();
  const bins = tempDir('lr-filecheck-');
  const images = tempDir('lr-img-');
  const exe = join(bins.path, 'wl-mem');
  const lib = join(bins.path, 'libm.so.6');
  copyFileSync(helperPath('workload-mem'), exe);
  copyFileSync(LIBM, lib);
  execFileSync('chmod', ['755', exe]);
  const wl = await startWorkload('workload-mem', ['1'], { binary: exe, env: { ...process.env, LD_PRELOAD: lib } });
  try {
    assert.match(readFileSync(`/proc/${wl.pid}/maps`, 'utf8'), new RegExp(esc(lib)), 'the library copy is mapped');
    await dump({ pid: wl.pid, imagesDir: images.path });
    await withTimeout(wl.exited, 10000, 'workload killed by the dump');

    // files.img: both recorded with their size and readelf's build-id.
    const files = await (await ImageDir.open(images.path)).files();
    for (const path of [exe, lib]) {
      const e = files.find((f) => f.reg?.name === path);
      assert.ok(e?.reg, `files.img has ${path}`);
      const id = readelfBuildId(path);
      assert.equal(buildIdBytes(e.reg.build_id).subarray(0, id.length / 2).toString('hex'), id, `${path}: build-id recorded`);
      assert.equal(e.reg.build_id.length, Math.ceil(id.length / 8));
      assert.equal(e.reg.size, BigInt(readFileSync(path).length));
    }
    critCheckDir(images.path);

    // The library copy gets another build-id, same size.
    const oldId = readelfBuildId(lib);
    const bytes = readFileSync(lib);
    const at = bytes.indexOf(Buffer.from(oldId, 'hex'));
    assert.ok(at > 0);
    bytes[at] ^= 0xff;
    writeFileSync(lib, bytes);
    const newId = readelfBuildId(lib);
    assert.notEqual(newId, oldId);
    let r = await runCli(['restore', '-D', images.path]);
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, new RegExp(`^lazy-restore: pid ${wl.pid}: mapped file ${esc(lib)} has build-id ${newId}, the image recorded ${oldId}: the file changed since the dump\\n$`));
    assert.equal(existsSync(`/proc/${wl.pid}`), false, 'nothing restored');

    // The executable copy grows by a byte: its size.
    const size = readFileSync(exe).length;
    appendFileSync(exe, 'x');
    r = await runCli(['restore', '-D', images.path]);
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, new RegExp(`^lazy-restore: pid ${wl.pid}: executable ${esc(exe)} has size ${size + 1}, the image recorded ${size}: the file changed since the dump\\n$`));
    assert.equal(existsSync(`/proc/${wl.pid}`), false, 'nothing restored');
    truncateSync(exe, size);

    // Sizes only: the changed build-id is not looked at.
    const tree = await restoreTree(images.path, { fileValidation: 'filesize', shellJob: false });
    await goAndCheck({ wl, images }, tree);
  } finally {
    await wl.dispose();
    images.dispose();
    bins.dispose();
  }
  assert.deepEqual(leakedFds(fds), []);
});
