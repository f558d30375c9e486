// The statistics files of a dump (stats-dump) and a restore (stats-restore)
// carry every field CRIU 4.2 writes (stats.proto), decode with Debian's crit
// and hold counts that match the images: pages_written is what the pages
// files hold (zdtm's check_pages_counts), page_pipes one per process. A
// stats-dump written by CRIU 4.2 itself (test/fixtures/criu-4.2) has the
// same set of fields.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { dump } from '../../plugin/dump/index.js';
import { decodeImage } from '../../plugin/images/image.js';
import { projectRoot } from '../helpers/cli.js';
import { crit, requireCrit } from '../helpers/crit.js';
import { isRoot, tempDir, withTimeout } from '../helpers/env.js';
import { goAndCheck, restoreTree, type Dumped } from '../helpers/restore.js';
import { startWorkload } from '../helpers/workload.js';

const DUMP_FIELDS = ['freezing_time', 'frozen_time', 'memdump_time', 'memwrite_time', 'pages_scanned', 'pages_skipped_parent', 'pages_written',
  'irmap_resolve', 'pages_lazy', 'page_pipes', 'page_pipe_bufs', 'shpages_scanned', 'shpages_skipped_parent', 'shpages_written'];
const RESTORE_FIELDS = ['pages_compared', 'pages_skipped_cow', 'forking_time', 'restore_time', 'pages_restored'];

const skip = !isRoot && 'needs root';

test('CRIU 4.2\'s own stats-dump has exactly the fields ours writes', () => {
  const f = join(projectRoot, 'test', 'fixtures', 'criu-4.2', 'tree', 'images', 'stats-dump');
  const e = decodeImage(readFileSync(f), f).entries[0]!.message as { dump?: Record<string, unknown> };
  assert.deepEqual(Object.keys(e.dump!).filter((k) => e.dump![k] !== undefined).sort(), [...DUMP_FIELDS].sort());
});

test('stats-dump and stats-restore: every CRIU field, decoded by crit, counts matching the images', { skip }, async () => {
  await requireCrit(); // installed by scripts/setup.sh: fail, never skip
  const wl = await startWorkload('workload-tree');
  const images = tempDir('lr-stats-');
  const d: Dumped = { wl, images };
  try {
    const r = await dump({ pid: wl.pid, imagesDir: images.path, shellJob: true });
    await withTimeout(wl.exited, 10000, 'workload killed by the dump');
    const st = JSON.parse(await crit(['decode', '-i', join(images.path, 'stats-dump')])) as { entries: { dump: Record<string, number | string> }[] };
    const ds = st.entries[0]!.dump;
    assert.deepEqual(Object.keys(ds).sort(), [...DUMP_FIELDS].sort());
    const pagesBytes = readdirSync(images.path).filter((f) => /^pages-\d+\.img$/.test(f)).reduce((a, f) => a + statSync(join(images.path, f)).size, 0);
    assert.equal(Number(ds.pages_written) + Number(ds.shpages_written), pagesBytes / 4096, 'zdtm\'s check_pages_counts');
    assert.equal(Number(ds.page_pipes), 3, 'one per process of the tree');
    assert.ok(Number(ds.page_pipe_bufs) >= 3, `page_pipe_bufs ${ds.page_pipe_bufs}`);
    assert.equal(Number(ds.pages_written), r.stats.pagesWritten);
    assert.ok(Number(ds.frozen_time) > 0 && Number(ds.memdump_time) > 0);

    const tree = await restoreTree(images.path);
    const rs = (JSON.parse(await crit(['decode', '-i', join(images.path, 'stats-restore')])) as { entries: { restore: Record<string, number | string> }[] }).entries[0]!.restore;
    assert.deepEqual(Object.keys(rs).sort(), [...RESTORE_FIELDS].sort());
    assert.equal(BigInt(rs.pages_restored!) * 4096n, tree.timings.eagerBytes, 'pages written before the tree ran');
    assert.ok(Number(rs.forking_time) > 0 && Number(rs.restore_time) >= Number(rs.forking_time));
    assert.ok(Math.abs(Number(rs.restore_time) / 1000 - tree.timings.resumeMs) < 1);
    await goAndCheck(d, tree);
  } finally {
    await wl.dispose();
    images.dispose();
  }
});
