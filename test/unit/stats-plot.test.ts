import { test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { plotTimeline, summarize, type StatsFile } from '../../plugin/stats/index.js';
import { runCli } from '../helpers/cli.js';
import { tempDir } from '../helpers/env.js';

function sample(): StatsFile {
  return {
    tool: 'lazy-restore', version: 1, startedAt: new Date(0).toISOString(), durationMs: 120,
    processes: [{
      pid: 4242, faults: 3, zeroPages: 1, copiedPages: 2, pushedPages: 256, bytes: 258 * 4096, timeToCompleteMs: 118,
      latency: { p50Us: 14, p99Us: 80, maxUs: 95, histogram: [{ leUs: 16, count: 2 }, { leUs: 128, count: 1 }] },
      timeline: [[0.5, '0x7f0000001000', 1, 'f'], [1.0, '0x7f0000002000', 1, 'z'], [2, '0x555500000000', 1, 'f'], [10, '0x7f0000000000', 256, 'p']],
    }],
  };
}

test('the plot has one mark per timeline event, faults and pushes in different colours, and both address bands', () => {
  const svg = plotTimeline(sample());
  assert.match(svg, /^<svg /);
  assert.equal((svg.match(/class="mark-f"[^>]*fill="#d62728"/g) ?? []).length, 2, 'two faults');
  assert.equal((svg.match(/class="mark-p"[^>]*fill="#1f77b4"/g) ?? []).length, 1, 'one push');
  assert.equal((svg.match(/class="mark-z"/g) ?? []).length, 1, 'one zero page');
  // Every mark lies inside the plot area.
  for (const m of svg.matchAll(/class="mark-\w" x="[\d.]+" y="(-?[\d.]+)" width="2" height="([\d.]+)"/g)) {
    assert.ok(Number(m[1]) >= 40 && Number(m[1]) + Number(m[2]) <= 551, `mark at y=${m[1]} h=${m[2]}`);
  }
  assert.match(svg, /0x555500000000/);
  assert.match(svg, /0x7f0000000000/);
});

test('summary lists each process', () => {
  assert.match(summarize(sample()), /\n\s+4242\s+3\s+1\s+256/);
});

test('stats CLI writes the SVG and rejects a file that is not a stats file', async () => {
  const d = tempDir();
  try {
    const f = join(d.path, 's.json');
    writeFileSync(f, JSON.stringify(sample()));
    const out = join(d.path, 't.svg');
    const r = await runCli(['stats', f, '--plot', out]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /timeline written/);
    const bad = join(d.path, 'bad.json');
    writeFileSync(bad, '{"hello":1}');
    const r2 = await runCli(['stats', bad]);
    assert.equal(r2.code, 1);
    assert.match(r2.stderr, /bad\.json: not a lazy-restore stats file/);
  } finally {
    d.dispose();
  }
});
