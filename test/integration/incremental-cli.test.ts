// The CLI of incremental dumps: pre-dump (the command exits while its
// tracker keeps the write tracking alive), dump --prev-images-dir relative to
// -D, and one-line errors for a bad parent directory.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, readlinkSync } from 'node:fs';
import { join } from 'node:path';
import { readTrackerRecord } from '../../plugin/dump/tracker.js';
import { restore } from '../../plugin/restore/index.js';
import { isRoot, tempDir, withTimeout } from '../helpers/env.js';
import { runCli } from '../helpers/cli.js';
import { startWorkload, waitForFile } from '../helpers/workload.js';

test('CLI: pre-dump, a round of writes, dump --prev-images-dir, restore', { skip: !isRoot && 'needs root' }, async () => {
  const t = tempDir('lr-incr-cli-');
  const w = await startWorkload('workload-incr', ['4']);
  try {
    const pre = await runCli(['pre-dump', '-t', String(w.pid), '-D', join(t.path, 'd1'), '--track-timeout', '60']);
    assert.equal(pre.code, 0, pre.stderr);
    assert.match(pre.stdout, /pre-dumped 1 process\(es\) .* writes tracked/);
    const rec = readTrackerRecord(join(t.path, 'd1'));
    assert.ok(rec, 'tracker recorded');
    assert.doesNotThrow(() => process.kill(rec.tracker, 0), 'the tracker outlives the pre-dump command');
    process.kill(w.pid, 'SIGUSR2');
    await waitForFile(join(w.ctrlDir, 'round-1'), 10000);
    const bad = await runCli(['dump', '-t', String(w.pid), '-D', join(t.path, 'dx'), '--prev-images-dir', '../nope']);
    assert.notEqual(bad.code, 0);
    assert.match(bad.stderr.trim(), /^[^\n]*--prev-images-dir \.\.\/nope: no such directory \(ENOENT\)$/);
    const d = await runCli(['dump', '-t', String(w.pid), '-D', join(t.path, 'd2'), '--prev-images-dir', '../d1']);
    assert.equal(d.code, 0, d.stderr);
    assert.match(d.stdout, /\d+ unchanged pages left to the parent/);
    assert.equal(d.stderr, '', 'no warning: a real incremental dump');
    assert.equal(readlinkSync(join(t.path, 'd2', 'parent')), '../d1');
    await withTimeout(w.exited, 10000, 'dumped workload killed');
    const r = await restore({ imagesDir: join(t.path, 'd2'), detached: true });
    try {
      process.kill(r.pid, 'SIGUSR1');
      await withTimeout(r.wait(), 20000, 'restored exit');
      assert.equal(readFileSync(join(w.ctrlDir, 'result'), 'utf8').trim(), 'ok');
    } finally {
      await r.close();
    }
  } finally {
    await w.dispose();
    t.dispose();
  }
});
