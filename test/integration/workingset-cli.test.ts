// The CLI side of working sets and statistics: `restore --lazy-pages
// --record-working-set` ended by SIGUSR2, replay by default and off with
// --no-working-set (fault counts from the daemon's own --stats-file), the
// stats file's per-process timeline, and `lazy-restore stats --plot` on it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { closeSync, existsSync, openSync, readFileSync, readSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { loadWorkingSet } from '../../plugin/lazy/workingset.js';
import { isStatsFile, type StatsFile } from '../../plugin/stats/format.js';
import { cliPath, runCli } from '../helpers/cli.js';
import { isRoot, tempDir, withTimeout } from '../helpers/env.js';
import { checkpointKv, type KvCheckpoint } from '../helpers/kv-service.js';
import { waitForFile } from '../helpers/workload.js';

const skip = !isRoot && 'needs root (userfaultfd, ptrace)';

/** Pages of [start, end) not present in `pid` (/proc/PID/pagemap bit 63). */
function absentPages(pid: number, start: bigint, end: bigint): number {
  const n = Number((end - start) / 4096n);
  const fd = openSync(`/proc/${pid}/pagemap`, 'r');
  try {
    const b = Buffer.alloc(8 * n);
    readSync(fd, b, 0, b.length, Number(start / 4096n) * 8);
    let absent = 0;
    for (let i = 0; i < n; i++) if ((b.readBigUInt64LE(i * 8) >> 63n) === 0n) absent++;
    return absent;
  } finally {
    closeSync(fd);
  }
}

function request(ctl: string, name: string): void {
  writeFileSync(join(ctl, '.req'), '');
  renameSync(join(ctl, '.req'), join(ctl, name));
}

/** `lazy-restore restore --lazy-pages ARGS`, one request answered; `mid` runs after the answer. */
async function cliRun(cp: KvCheckpoint, work: string, args: string[], mid?: (pid: number, stderr: () => string) => Promise<void>): Promise<{ code: number | null; stderr: string; stats: StatsFile; sum: string }> {
  for (const f of ['go-2', 'answer-2', 'go-3', 'stop', 'result']) rmSync(join(cp.ctl, f), { force: true });
  const pidfile = join(work, 'restored.pid');
  const statsFile = join(work, 'stats.json');
  rmSync(pidfile, { force: true });
  rmSync(statsFile, { force: true });
  const cli = spawn(process.execPath, [cliPath, 'restore', '-D', cp.dir, '--lazy-pages', '--pidfile', pidfile, '--stats-file', statsFile, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  cli.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  cli.stdout.resume();
  const exited = new Promise<number | null>((r) => cli.once('exit', (code) => r(code)));
  try {
    await waitForFile(pidfile, 30_000);
    request(cp.ctl, 'go-2');
    await waitForFile(join(cp.ctl, 'answer-2'), 30_000);
    const sum = readFileSync(join(cp.ctl, 'answer-2'), 'utf8').split(' ')[0]!;
    await mid?.(cli.pid!, () => stderr);
    request(cp.ctl, 'stop');
    request(cp.ctl, 'go-3');
    const code = await withTimeout(exited, 60_000, 'lazy-restore restore to exit');
    const stats: unknown = JSON.parse(readFileSync(statsFile, 'utf8'));
    assert.ok(isStatsFile(stats), 'the daemon writes the stats format');
    return { code, stderr, stats, sum };
  } finally {
    if (cli.exitCode === null) cli.kill('SIGKILL');
  }
}

test('CLI: record with SIGUSR2, replay by default, --no-working-set, stats timeline and plot', { skip, timeout: 120_000 }, async () => {
  const work = tempDir('lr-wscli-');
  try {
    const cp = await checkpointKv(work.path, 8, 512);
    const img = join(cp.dir, `lr-workingset-${cp.pid}.img`);
    const bad = await runCli(['restore', '-D', cp.dir, '--record-working-set']);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /--record-working-set and --stats-file need the in-process daemon/);
    assert.ok(!existsSync(img));

    const rec = await cliRun(cp, work.path, ['--record-working-set=60'], async (pid, stderr) => {
      process.kill(pid, 'SIGUSR2');
      await withTimeout((async () => {
        while (!/working set of pid \d+: \d+ pages/.test(stderr())) await new Promise((r) => setTimeout(r, 20));
      })(), 20_000, 'the working set to be written after SIGUSR2');
    });
    assert.equal(rec.code, 0, rec.stderr);
    assert.equal(rec.sum, cp.sum);
    assert.ok(existsSync(img));
    const recProc = rec.stats.processes.find((p) => p.imagePid === cp.pid)!;
    assert.ok(recProc.recordedPages! >= 400, `recorded ${recProc.recordedPages}`);
    const tl = recProc.timeline!;
    assert.ok(tl.filter((e) => e[3] === 'f').length >= 400, 'faults in the timeline');
    for (const e of tl) {
      assert.ok(e[0] >= 0 && /^0x[0-9a-f]+$/.test(e[1]) && e[2] >= 1 && ['f', 'p', 'z'].includes(e[3]));
    }

    // inspect shows the working set.
    const show = await runCli(['inspect', cp.dir]);
    assert.equal(show.code, 0, show.stderr);
    assert.match(show.stdout, /working set: \d+ pages in \d+ ranges/);

    const off = await cliRun(cp, work.path, ['--no-prefetch', '--no-working-set']);
    // Held until the working set is in: the fault count depends on the mechanism, not the load.
    const on = await cliRun(cp, work.path, ['--no-prefetch', '--working-set-hold', '600000']);
    for (const r of [off, on]) {
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.sum, cp.sum);
    }
    const offP = off.stats.processes.find((p) => p.imagePid === cp.pid)!;
    const onP = on.stats.processes.find((p) => p.imagePid === cp.pid)!;
    assert.equal(offP.workingSetPages, undefined);
    assert.equal(onP.workingSetPages, recProc.recordedPages);
    assert.ok(onP.warmedMs !== undefined, 'the replayed working set was all in');
    assert.ok(onP.faults * 3 <= offP.faults, `replay: ${onP.faults} faults vs ${offP.faults} without`);
    assert.ok(onP.timeline!.some((e) => e[3] === 'p'), 'replayed pages appear as pushes');

    // lazy-restore stats reads the daemon's file and plots it.
    const svg = join(work.path, 'timeline.svg');
    const st = await runCli(['stats', join(work.path, 'stats.json'), '--plot', svg]);
    assert.equal(st.code, 0, st.stderr);
    assert.match(st.stdout, new RegExp(`^\\s+${cp.pid}\\s+${onP.faults}\\s`, 'm'));
    const body = readFileSync(svg, 'utf8');
    assert.match(body, /^<svg /);
    assert.ok((body.match(/class="mark-p"/g) ?? []).length >= 1);
  } finally {
    work.dispose();
  }
});

test('lazy-pages daemon: --record-working-set over the socket protocol, SIGUSR2, then replay', { skip, timeout: 120_000 }, async () => {
  const work = tempDir('lr-wsd-');
  try {
    const cp = await checkpointKv(work.path, 8, 256);
    const img = join(cp.dir, `lr-workingset-${cp.pid}.img`);
    const sock = join(work.path, 'lazy.sock');
    const statsFile = join(work.path, 'daemon-stats.json');
    const { restore } = await import('../../plugin/restore/index.js');

    const daemonRun = async (args: string[], mid?: (daemonPid: number, stderr: () => string) => Promise<void>, released?: (pid: number) => void): Promise<{ code: number | null; stderr: string; sum: string; stats: StatsFile }> => {
      for (const f of ['go-2', 'answer-2', 'go-3', 'stop', 'result']) rmSync(join(cp.ctl, f), { force: true });
      rmSync(statsFile, { force: true });
      const d = spawn(process.execPath, [cliPath, 'lazy-pages', '-D', cp.dir, '--socket', sock, '--stats-file', statsFile, ...args, '--status-fd', '3'], { stdio: ['ignore', 'pipe', 'pipe', 'pipe'] });
      let stderr = '';
      d.stderr!.on('data', (b: Buffer) => (stderr += b.toString()));
      d.stdout!.resume();
      const exited = new Promise<number | null>((r) => d.once('close', (code) => r(code)));
      try {
        await withTimeout(new Promise<void>((resolve, reject) => {
          (d.stdio[3] as NodeJS.ReadableStream).once('data', () => resolve());
          d.once('close', () => reject(new Error(`daemon exited before listening: ${stderr}`)));
        }), 15_000, 'daemon listening');
        const tree = await restore({ imagesDir: cp.dir, lazy: true, lazySocket: sock, detached: true });
        let sum = '';
        try {
          released?.(tree.pid);
          request(cp.ctl, 'go-2');
          await waitForFile(join(cp.ctl, 'answer-2'), 30_000);
          sum = readFileSync(join(cp.ctl, 'answer-2'), 'utf8').split(' ')[0]!;
          await mid?.(d.pid!, () => stderr);
          request(cp.ctl, 'stop');
          request(cp.ctl, 'go-3');
          assert.equal((await withTimeout(tree.wait(), 30_000, 'restored kv-service exit')).code, 0);
        } finally {
          await tree.close();
        }
        const code = await withTimeout(exited, 30_000, `daemon exit (${stderr})`);
        const stats: unknown = JSON.parse(readFileSync(statsFile, 'utf8'));
        assert.ok(isStatsFile(stats));
        return { code, stderr, sum, stats };
      } finally {
        if (d.exitCode === null) d.kill('SIGKILL');
      }
    };

    const rec = await daemonRun(['--record-working-set=60'], async (pid, stderr) => {
      process.kill(pid, 'SIGUSR2');
      await withTimeout((async () => {
        while (!/working set of pid \d+: \d+ pages/.test(stderr())) await new Promise((r) => setTimeout(r, 20));
      })(), 20_000, 'the daemon to write the working set after SIGUSR2');
    });
    assert.equal(rec.code, 0, rec.stderr);
    assert.equal(rec.sum, cp.sum);
    assert.ok(existsSync(img));
    const recorded = rec.stats.processes.find((p) => p.imagePid === cp.pid)!.recordedPages!;
    assert.ok(recorded >= 200, `recorded ${recorded}`);

    // The restorer lets the tree run only once the daemon says the working
    // set is in (as the in-process daemon does): every recorded page is
    // present before the program is asked anything. (A long hold: the bound
    // must not be what is tested on a loaded machine.)
    const ws = (await loadWorkingSet(cp.dir, cp.pid))!;
    let missing = -1;
    const replay = await daemonRun(['--working-set-hold', '60000'], undefined, (pid) => {
      missing = ws.reduce((n, r) => n + absentPages(pid, r.start, r.end), 0);
    });
    assert.equal(missing, 0, 'working-set pages not present when restore returned');
    assert.equal(replay.code, 0, replay.stderr);
    assert.equal(replay.sum, cp.sum);
    assert.equal(replay.stats.processes.find((p) => p.imagePid === cp.pid)!.workingSetPages, recorded);
  } finally {
    work.dispose();
  }
});
