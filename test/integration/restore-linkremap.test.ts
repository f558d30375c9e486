// Files open or mapped under a deleted name while another hard link keeps
// them (issue 18 item 3, CRIU's link remap, --link-remap; zdtm
// unlink_fstat03). workload-linkremap holds such a file through an fd at an
// offset and a MAP_SHARED mapping, and another through a read-only fd whose
// directory is gone too. The dump links each into a "link_remap.<id>" name
// next to where it sat (the parent directory for the second) and writes
// LINKED remaps (crit decodes them); eager and lazy restores give the
// workload the same inodes (nlink back to 1), offsets, modes and contents,
// the fd naming the old path (deleted), and no name left behind (the
// workload checks it). Also: without --link-remap the dump is refused by
// name and the tree runs on; a --leave-running dump removes its names; a
// failed restore keeps them (it can be tried again).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readdirSync, truncateSync } from 'node:fs';
import { join } from 'node:path';
import { dump } from '../../plugin/dump/index.js';
import { ImageDir, KIND, RemapType, type RemapFilePathEntry } from '../../plugin/images/index.js';
import { runCli } from '../helpers/cli.js';
import { critCheckDir, critDecode } from '../helpers/critcheck.js';
import { isRoot, tempDir, withTimeout } from '../helpers/env.js';
import { goAndCheck, restoreAndCheck, restoreTree, withDumpedBy, type Dumped } from '../helpers/restore.js';
import { withRunningDump } from '../helpers/dump-running.js';
import { startWorkload } from '../helpers/workload.js';

const skip = !isRoot && 'needs root';

async function dumpLinked(): Promise<Dumped> {
  const wl = await startWorkload('workload-linkremap');
  const images = tempDir('lr-img-');
  try {
    await dump({ pid: wl.pid, imagesDir: images.path, shellJob: true, linkRemap: true });
    await withTimeout(wl.exited, 10000, 'workload-linkremap killed by the dump');
  } catch (e) {
    await wl.dispose();
    images.dispose();
    throw e;
  }
  return { wl, images };
}

const remapNames = (dir: string): string[] => readdirSync(dir).filter((n) => n.startsWith('link_remap.')).sort();

async function roundTrip(lazy: boolean): Promise<void> {
  await withDumpedBy(dumpLinked, async (d) => {
    const l = join(d.wl.ctrlDir, 'l');
    const dir = await ImageDir.open(d.images.path);
    const remaps = await dir.readEntries<RemapFilePathEntry>(KIND.remapFpath);
    const files = new Map((await dir.files()).map((f) => [f.id, f]));
    assert.ok(remaps.length >= 3 && remaps.every((r) => r.remap_type === RemapType.LINKED), 'fd rw, the mapping and fd ro: LINKED remaps');
    const orig = remaps.map((r) => files.get(r.orig_id)!.reg!.name);
    assert.deepEqual([...new Set(orig)].sort(), [join(l, 'a.bin'), join(l, 'sub', 'b.txt')], 'entries keep the names the files had');
    const names = remaps.map((r) => files.get(r.remap_id)!.reg!.name);
    assert.deepEqual(names.map((n) => n.replace(/\.\d+$/, '')), names.map(() => join(l, 'link_remap')), 'link remaps sit in l/ (b.txt\'s directory is gone: its parent)');
    for (const r of remaps) assert.equal(files.get(r.remap_id)!.reg!.name, join(l, `link_remap.${r.remap_id}`), 'named by the entry id, as CRIU');
    assert.deepEqual(remapNames(l), names.map((n) => n.slice(l.length + 1)).sort(), 'the names exist after the dump');
    critCheckDir(d.images.path);
    const crit = critDecode(join(d.images.path, 'remap-fpath.img')).entries as { remap_type: string }[];
    assert.ok(crit.every((e) => e.remap_type === 'LINKED'), 'crit shows LINKED remaps');

    await restoreAndCheck(d, { lazy }, () => {
      assert.deepEqual(readdirSync(l).sort(), ['a.link', 'b.link'], 'link remaps and the linked-back name are gone once the tree holds the files');
    });
  });
}

test('link remap: deleted files still linked elsewhere come back as the same inodes, offsets, modes, contents (eager)', { skip }, async () => {
  await roundTrip(false);
});

test('link remap: the same with a lazy restore', { skip }, async () => {
  await roundTrip(true);
});

test('link remap: without --link-remap the dump is refused by name, nothing is linked, the tree runs on', { skip }, async () => {
  await withRunningDump('lr-img-', 'workload-linkremap', [], async (w, images) => {
    const r = await runCli(['dump', '-t', String(w.pid), '-D', images.path]);
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, new RegExp(`^lazy-restore: cannot dump: pid ${w.pid}: .*: can't create link remap for \\S+/a\\.bin \\(deleted, still linked elsewhere: nlink 1\\): use the --link-remap option`));
    assert.equal(r.stderr.trim().split('\n').length, 1, 'one line');
    assert.deepEqual(remapNames(join(w.ctrlDir, 'l')), []);
    // Then still running and unfrozen: it completes its own checks (no link_remap name was left).
  });
});

test('link remap: a --leave-running dump removes its link-remap names (CRIU), the tree runs on', { skip }, async () => {
  await withRunningDump('lr-img-', 'workload-linkremap', [], async (w, images) => {
    const r = await runCli(['dump', '-t', String(w.pid), '-D', images.path, '--link-remap', '--leave-running']);
    assert.equal(r.code, 0, r.stderr);
    assert.ok(existsSync(join(images.path, 'remap-fpath.img')));
    assert.deepEqual(remapNames(join(w.ctrlDir, 'l')), [], 'no link_remap.* left');
  });
});

test('link remap: a failed restore keeps the link-remap names and removes the linked-back name; the next restore works', { skip }, async () => {
  const d = await dumpLinked();
  try {
    const l = join(d.wl.ctrlDir, 'l');
    const before = remapNames(l);
    assert.ok(before.length >= 3);
    // The other link of a.bin grows: the file changed since the dump.
    truncateSync(join(l, 'a.link'), 30000);
    const r = await runCli(['restore', '-D', d.images.path, '--shell-job']);
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, new RegExp(`^lazy-restore: pid ${d.wl.pid}: .*a\\.bin has size 30000, the image recorded 20000: the file changed since the dump\\n$`));
    assert.equal(existsSync(`/proc/${d.wl.pid}`), false, 'nothing restored');
    assert.deepEqual(remapNames(l), before, 'link remaps kept');
    assert.equal(existsSync(join(l, 'a.bin')), false, 'the linked-back name is gone');
    truncateSync(join(l, 'a.link'), 20000);
    const tree = await restoreTree(d.images.path, {});
    assert.deepEqual(readdirSync(l).sort(), ['a.link', 'b.link']);
    await goAndCheck(d, tree);
  } finally {
    await d.wl.dispose();
    d.images.dispose();
  }
});
