// Deleted files that are still open or mapped (issue 18 item 3, CRIU's ghost
// files): workload-ghost holds two unlinked files through fds (read-write at
// an offset, read-only in a description of its own, append-only) and through
// a MAP_SHARED and a MAP_PRIVATE mapping, one of them with a hole, and an
// unlinked device node like /dev/null (zdtm deleted_dev). The dump
// writes remap-fpath.img + ghost-file-<id>.img (crit decodes both); eager
// and lazy restores give the workload unlinked files with the same contents,
// hole, offsets, flags and mode, one inode for fds and mappings, and leave no
// temporary name on disk (the workload checks all of it). Also: a ghost
// larger than --ghost-limit is refused with the tree left running, and a
// file truncated between dump and restore is refused naming pid, fd and path.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readdirSync, truncateSync } from 'node:fs';
import { join } from 'node:path';
import { ImageDir, KIND, RemapType, type GhostFileEntry, type RemapFilePathEntry } from '../../plugin/images/index.js';
import { runCli } from '../helpers/cli.js';
import { critCheckDir, critDecode } from '../helpers/critcheck.js';
import { isRoot } from '../helpers/env.js';
import { restoreAndCheck, startAndDump, withDumped } from '../helpers/restore.js';
import { withRunningDump } from '../helpers/dump-running.js';

const skip = !isRoot && 'needs root';

async function ghostRoundTrip(lazy: boolean): Promise<void> {
  await withDumped('workload-ghost', [], async (d) => {
    const dir = await ImageDir.open(d.images.path);
    const remaps = await dir.readEntries<RemapFilePathEntry>(KIND.remapFpath);
    const files = new Map((await dir.files()).map((f) => [f.id, f]));
    const g = join(d.wl.ctrlDir, 'g');
    // big.bin: rw, ro and two mappings (shared rw, private ro); small.txt: app. One ghost image per inode.
    const named = remaps.map((r) => files.get(r.orig_id)!.reg!.name);
    assert.ok(remaps.every((r) => r.remap_type === RemapType.GHOST), 'every remap is a ghost');
    assert.deepEqual([...new Set(named)].sort(), [join(g, 'big.bin'), join(g, 'null.dev'), join(g, 'small.txt')], 'entries keep the paths the files had');
    assert.equal(new Set(remaps.map((r) => r.remap_id)).size, 3, 'one ghost image per inode');
    const devId = remaps.find((r) => files.get(r.orig_id)!.reg!.name.endsWith('null.dev'))!.remap_id;
    const dev = (await dir.readImage(KIND.ghostFile, devId))!.entries[0]!.message as unknown as GhostFileEntry;
    assert.equal(dev.rdev, 0x103, 'a device node ghost keeps its rdev (1:3)');
    const bigId = remaps.find((r) => files.get(r.orig_id)!.reg!.name.endsWith('big.bin'))!.remap_id;
    const smallId = remaps.find((r) => files.get(r.orig_id)!.reg!.name.endsWith('small.txt'))!.remap_id;
    const big = await dir.readImage(KIND.ghostFile, bigId);
    const bigHead = big!.entries[0]!.message as unknown as GhostFileEntry;
    assert.equal(bigHead.chunks, true, '64 KiB: stored as chunks');
    assert.equal(bigHead.size, 65536n);
    assert.equal(bigHead.mode & 0o7777, 0o640);
    assert.equal(big!.entries.length, 3, 'head and two data chunks: the hole is not stored');
    const small = await dir.readImage(KIND.ghostFile, smallId);
    assert.equal(small!.entries.length, 1);
    assert.equal(small!.entries[0]!.extra!.length, 100, '100 bytes stored raw after the head');
    // crit decodes them as CRIU's.
    critCheckDir(d.images.path);
    const crit = critDecode(join(d.images.path, 'remap-fpath.img')).entries as { remap_type: string }[];
    assert.ok(crit.length >= 4 && crit.every((e) => e.remap_type === 'GHOST'), 'crit shows the ghost remaps');
    const critBig = critDecode(join(d.images.path, `ghost-file-${bigId.toString(16)}.img`)).entries as { chunks?: boolean; size?: number }[];
    assert.equal(critBig[0]!.chunks, true);
    assert.equal(critBig[0]!.size, 65536);

    await restoreAndCheck(d, { lazy }, () => {
      assert.deepEqual(readdirSync(g), [], 'the recreated files are unlinked once the tree holds them');
    });
  });
}

test('ghost files: unlinked files held by fds and mappings come back unlinked, same contents, offsets, flags, mode (eager)', { skip }, async () => {
  await ghostRoundTrip(false);
});

test('ghost files: the same with a lazy restore', { skip }, async () => {
  await ghostRoundTrip(true);
});

test('ghost files: a deleted file larger than --ghost-limit is refused (CRIU\'s message) and the tree keeps running', { skip }, async () => {
  await withRunningDump('lr-img-', 'workload-ghost', [], async (w, images) => {
    const r = await runCli(['dump', '-t', String(w.pid), '-D', images.path, '--ghost-limit', '16K']);
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, new RegExp(`^lazy-restore: cannot dump: pid ${w.pid}: .*big\\.bin.*: can't dump ghost file .*big\\.bin of \\d+ size, increase limit \\(--ghost-limit, now 16384\\)`));
    assert.equal(r.stderr.trim().split('\n').length, 1, 'one line');
    assert.equal(existsSync(join(images.path, 'remap-fpath.img')), false);
    // Then still running and unfrozen: it completes its own checks.
  });
});

test('a regular file truncated between dump and restore is refused naming pid, fd and path; nothing is left running', { skip }, async () => {
  const d = await startAndDump('workload-files');
  try {
    const data = join(d.wl.ctrlDir, 'data.bin');
    truncateSync(data, 10);
    const r = await runCli(['restore', '-D', d.images.path, '--shell-job']);
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, new RegExp(`^lazy-restore: pid ${d.wl.pid}: fd \\d+: ${data.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} has size 10, the image recorded 10000: the file changed since the dump\\n$`));
    assert.equal(existsSync(`/proc/${d.wl.pid}`), false, 'nothing restored');
  } finally {
    await d.wl.dispose();
    d.images.dispose();
  }
});
