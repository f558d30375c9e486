// examples/forking-server.ts: a server restored lazily forks a worker per
// request; every worker's memory is served through its own userfaultfd and
// its answers equal the ones given before the checkpoint.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { projectRoot } from '../helpers/cli.js';
import { isRoot } from '../helpers/env.js';

test('forking server: workers forked after a lazy restore answer exactly as before', { skip: !isRoot && 'needs root' }, async () => {
  const out = await new Promise<{ code: number; stdout: string; stderr: string }>((resolve) => {
    execFile(process.execPath, [join(projectRoot, 'dist', 'examples', 'forking-server.js'), '--mib', '16', '--requests', '6'], { timeout: 60_000 },
      (err, stdout, stderr) => resolve({ code: err ? (typeof err.code === 'number' ? err.code : -1) : 0, stdout, stderr }));
  });
  assert.equal(out.code, 0, `${out.stdout}\n${out.stderr}`);
  assert.match(out.stdout, /workers forked after the restore: ([6-9]|\d\d+); answers identical: true; server exit 0; server says: ok served 12 requests/);
});
