// The README's main job: npm run demo (here with a small data set).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { projectRoot } from '../helpers/cli.js';
import { isRoot } from '../helpers/env.js';

test('demo: dump, lazy restore and the workload verifies all its memory', { skip: !isRoot && 'needs root' }, async () => {
  const out = await new Promise<{ code: number; stdout: string; stderr: string }>((resolve) => {
    execFile(process.execPath, [join(projectRoot, 'dist', 'examples', 'demo.js'), '--mib', '16'], { timeout: 60_000 }, (err, stdout, stderr) =>
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : -1) : 0, stdout, stderr }));
  });
  assert.equal(out.code, 0, `${out.stdout}\n${out.stderr}`);
  assert.match(out.stdout, /is running again after [\d.]+ ms/);
  assert.match(out.stdout, /workload verdict:\s+ok 16 MiB and 20000 records verified/);
  assert.match(out.stdout, /100%/);
  assert.match(out.stdout, /^OK: the restored workload verified all of its memory\.$/m);
});
