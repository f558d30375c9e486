// `npm run bench -- --quick` as a smoke test: every suite in bench/suites
// runs at small sizes and reports figures with a same-run baseline. Nothing
// here looks at timings (this machine is noisy); it only proves each
// benchmark still runs end to end and writes both report files.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { projectRoot } from '../helpers/cli.js';
import { isRoot, leakedFds, openFds, tempDir } from '../helpers/env.js';

interface Row { suite: string; fig: { name: string; value: number; baselineValue?: number; notes?: string } }

test('bench --quick: every suite runs and reports its figures', { skip: !isRoot && 'needs root' }, async () => {
  const fds = openFds();
  const out = tempDir('lr-bench-quick-');
  try {
    const run = await new Promise<{ code: number; stderr: string }>((resolve, reject) => {
      execFile(process.execPath, [join(projectRoot, 'dist', 'bench', 'run.js'), '--quick', '--out', out.path],
        { timeout: 240_000, maxBuffer: 16 << 20 }, (err, _stdout, stderr) => {
          if (err && typeof err.code !== 'number') reject(new Error(`bench --quick: ${err.message}\n${stderr}`));
          else resolve({ code: err ? (err.code as number) : 0, stderr });
        });
    });
    assert.equal(run.code, 0, `bench --quick exit status\n${run.stderr.slice(-4000)}`);
    const report = JSON.parse(readFileSync(join(out.path, 'results.json'), 'utf8')) as { quick: boolean; rows: Row[] };
    assert.equal(report.quick, true);
    const suites = readdirSync(join(projectRoot, 'dist', 'bench', 'suites')).filter((f) => f.endsWith('.js')).map((f) => f.replace(/\.js$/, ''));
    const reported = new Set(report.rows.map((r) => r.suite));
    for (const s of suites) assert.ok(reported.has(s), `suite ${s} reported figures`);
    for (const r of report.rows) {
      assert.notEqual(r.fig.name, 'suite failed', `${r.suite}: ${r.fig.notes ?? ''}`);
      assert.ok(Number.isFinite(r.fig.value), `${r.suite} / ${r.fig.name}: value ${r.fig.value}`);
    }
    assert.match(readFileSync(join(out.path, 'results.md'), 'utf8'), /^# lazy-restore benchmark results \(--quick/);
  } finally {
    out.dispose();
  }
  assert.deepEqual(leakedFds(fds), []);
});
