// `restore --lazy-pages -d` with no daemon in the work dir returns once the
// tree runs, like CRIU's `restore -d`: a detached lazy-pages daemon (its log
// in the work dir, guarded by its watchdog) serves on, finishes, writes its
// stats and exits; `--wait-lazy` keeps the old wait-until-complete
// behaviour; a failed restore leaves no daemon behind.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { isRoot, leakedFds, openFds, tempDir, withTimeout } from '../helpers/env.js';
import { cliPath, runCli } from '../helpers/cli.js';
import { alive, statOf, until, watchdogOf } from '../helpers/proc.js';
import { withDumped } from '../helpers/restore.js';
import { waitForFile } from '../helpers/workload.js';
import { dump } from '../../plugin/dump/index.js';
import { startWorkload } from '../helpers/workload.js';
import { LazyPagesServer } from '../../plugin/lazy/index.js';
import { helperPath } from '../../plugin/native/addon.js';

const skip = !isRoot && 'needs root';

/** Live processes (not zombies) whose command line names `needle`. */
function processesWith(needle: string): number[] {
  const out: number[] = [];
  for (const e of readdirSync('/proc')) {
    if (!/^\d+$/.test(e)) continue;
    try {
      if (readFileSync(`/proc/${e}/cmdline`, 'utf8').includes(needle) && alive(Number(e))) out.push(Number(e));
    } catch { /* gone */ }
  }
  return out;
}

function killIf(pid: number | undefined, comm: string): void {
  if (!pid) return;
  try {
    if (readFileSync(`/proc/${pid}/comm`, 'utf8').trim() === comm) process.kill(pid, 'SIGKILL');
  } catch { /* gone */ }
}

test('restore --lazy-pages -d returns while pages are unserved; the detached daemon serves, writes stats and exits', { skip }, async () => {
  await withDumped('workload-mem', ['16'], async (d) => {
    let restored: number | undefined;
    let daemon: number | undefined;
    try {
      const dir = d.images.path;
      // --no-prefetch: nothing is pushed, so the daemon cannot be done before
      // the program touches its memory; the command must return anyway.
      const r = await runCli(['restore', '-D', dir, '--lazy-pages', '-d', '--no-prefetch', '--pidfile', 'r.pid', '--stats-file', join(dir, 's.json')], { timeoutMs: 60_000 });
      assert.equal(r.code, 0, r.stderr);
      restored = Number(readFileSync(join(dir, 'r.pid'), 'utf8'));
      assert.equal(r.stdout.trim(), String(restored));
      const daemons = processesWith(`${dir}/lazy-pages.`);
      assert.equal(daemons.length, 1, 'one detached lazy-pages daemon on a socket in the work dir');
      daemon = daemons[0]!;
      assert.ok(watchdogOf(daemon) !== undefined, 'the daemon runs its watchdog');
      assert.ok(alive(restored), 'the restored workload runs');
      assert.ok(!existsSync(join(dir, 's.json')), 'not done yet: no stats file');

      d.wl.go(restored);
      await waitForFile(join(d.wl.ctrlDir, 'result'), 30_000);
      assert.equal(d.wl.result(), 'ok', 'the restored workload found every byte');
      const dpid = daemon;
      await until(() => !alive(dpid), 30_000, 'the detached daemon exits once every page is served');
      const log = readFileSync(join(dir, 'lazy-pages.log'), 'utf8');
      assert.match(log, /1 process\(es\): (1 complete, 0 exited|0 complete, 1 exited), 0 killed/, log);
      const stats = JSON.parse(readFileSync(join(dir, 's.json'), 'utf8')) as { processes?: unknown[] };
      assert.ok(Array.isArray(stats.processes) && stats.processes.length === 1, 'stats of the one process');
      assert.deepEqual(readdirSync(dir).filter((f) => f.endsWith('.socket')), [], 'the daemon removed its socket');
      assert.deepEqual(processesWith(`${dir}/lazy-pages.`), [], 'no daemon or watchdog left');
    } finally {
      killIf(daemon, 'node');
      killIf(restored, 'workload-mem');
    }
  });
});

test('restore --lazy-pages -d --wait-lazy serves in-process and returns only once every page is in', { skip }, async () => {
  await withDumped('workload-mem', ['16'], async (d) => {
    let restored: number | undefined;
    try {
      const dir = d.images.path;
      const cli = spawn(process.execPath, [cliPath, 'restore', '-D', dir, '--lazy-pages', '-d', '--wait-lazy', '--no-prefetch', '--pidfile', 'r.pid'], { stdio: ['ignore', 'ignore', 'pipe'] });
      let stderr = '';
      cli.stderr.on('data', (b: Buffer) => { stderr += b.toString(); });
      const exited = new Promise<number | null>((res) => cli.on('close', (c) => res(c)));
      let done = false;
      void exited.then(() => { done = true; });
      await waitForFile(join(dir, 'r.pid'), 30_000);
      restored = Number(readFileSync(join(dir, 'r.pid'), 'utf8'));
      assert.deepEqual(processesWith(`${dir}/lazy-pages.`), [], 'no detached daemon');
      assert.equal(done, false, 'still serving: nothing was pushed and the program has not run its check');
      d.wl.go(restored);
      await waitForFile(join(d.wl.ctrlDir, 'result'), 30_000);
      assert.equal(d.wl.result(), 'ok');
      assert.equal(await withTimeout(exited, 30_000, 'restore -d --wait-lazy exits once served'), 0, stderr);
    } finally {
      killIf(restored, 'workload-mem');
    }
  });
});

test('restore --lazy-pages -d that fails (pid in use) leaves no daemon and no socket behind', { skip }, async () => {
  const fds = openFds();
  const wl = await startWorkload('workload-mem', ['8']);
  const images = tempDir('lr-img-');
  try {
    await dump({ pid: wl.pid, imagesDir: images.path, shellJob: true, leaveRunning: true });
    const r = await runCli(['restore', '-D', images.path, '--lazy-pages', '-d'], { timeoutMs: 60_000 });
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, new RegExp(`pid ${wl.pid} is in use`));
    assert.deepEqual(processesWith(`${images.path}/lazy-pages.`), [], 'the daemon was stopped');
    assert.deepEqual(readdirSync(images.path).filter((f) => f.endsWith('.socket')), [], 'no socket left');
  } finally {
    await wl.dispose();
    images.dispose();
  }
  assert.deepEqual(leakedFds(fds), []);
});

/**
 * `CMD...` under build/bin/bench-reaper (a child subreaper: the restored
 * workload and a detached daemon left behind are reaped at once, so the next
 * restore of the same pid does not wait for PID 1 to reap a zombie).
 * `cmd`: the command's own status; `all`: everything it left has exited.
 */
function underReaper(args: string[]): { cmd: Promise<number>; all: Promise<number>; stderr: () => string; pid: number } {
  const child = spawn(helperPath('bench-reaper'), ['3', process.execPath, cliPath, ...args], { stdio: ['ignore', 'ignore', 'pipe', 'pipe'] });
  let err = '';
  child.stderr!.on('data', (b: Buffer) => { err += b.toString(); });
  let report = '';
  const rep = child.stdio[3] as NodeJS.ReadableStream;
  const cmd = new Promise<number>((res) => {
    rep.on('data', (b: Buffer) => { report += b.toString(); });
    rep.on('end', () => res(Number(/^exit (-?\d+)/.exec(report)?.[1] ?? -1)));
  });
  const all = new Promise<number>((res) => child.on('close', (c) => res(c ?? -1)));
  return { cmd, all, stderr: () => err, pid: child.pid! };
}

test('restore --lazy-pages -d many times in a row: every hand-over is taken and every run verifies', { skip }, async () => {
  await withDumped('workload-mem', ['8'], async (d) => {
    const dir = d.images.path;
    const runs = 8;
    let reaper: number | undefined;
    try {
      for (let i = 0; i < runs; i++) {
        for (const f of ['r.pid', 'lazy-pages.log']) rmSync(join(dir, f), { force: true });
        rmSync(join(d.wl.ctrlDir, 'result'), { force: true });
        const r = underReaper(['restore', '-D', dir, '--lazy-pages', '-d', '--pidfile', 'r.pid']);
        reaper = r.pid;
        assert.equal(await withTimeout(r.cmd, 60_000, `restore ${i}`), 0, `run ${i}: ${r.stderr()}`);
        const restored = Number(readFileSync(join(dir, 'r.pid'), 'utf8'));
        d.wl.go(restored);
        await waitForFile(join(d.wl.ctrlDir, 'result'), 30_000).catch(() => {
          throw new Error(`run ${i}: no answer from the restored workload; lazy-pages.log: ${readFileSync(join(dir, 'lazy-pages.log'), 'utf8')}`);
        });
        assert.equal(d.wl.result(), 'ok', `run ${i}`);
        assert.equal(await withTimeout(r.all, 30_000, `run ${i}: the workload and the daemon exit`), 0);
        reaper = undefined;
        const log = readFileSync(join(dir, 'lazy-pages.log'), 'utf8');
        assert.doesNotMatch(log, /refused|ESRCH/, `run ${i}: ${log}`);
        assert.match(log, /1 process\(es\): (1 complete, 0 exited|0 complete, 1 exited), 0 killed/, `run ${i}: ${log}`);
      }
    } finally {
      if (reaper !== undefined) try { process.kill(reaper, 'SIGKILL'); } catch { /* gone */ }
    }
  });
});

test('a daemon that is slow to look at a hand-over still finds the pid in the restorer\'s tree (the uffd is taken only after the look-up)', { skip }, async () => {
  await withDumped('workload-mem', ['8'], async (d) => {
    const dir = d.images.path;
    const sock = join(dir, 'slow.socket');
    const server = await LazyPagesServer.open({ imagesDir: dir, socketPath: sock, prefetch: false });
    const errors: string[] = [];
    server.on('error', (ev) => errors.push(ev.message));
    let restored: number | undefined;
    try {
      const cli = spawn(process.execPath, [cliPath, 'restore', '-D', dir, '--lazy-socket', sock, '-d', '--pidfile', 'r.pid'], { stdio: ['ignore', 'ignore', 'pipe'] });
      let stderr = '';
      cli.stderr.on('data', (b: Buffer) => { stderr += b.toString(); });
      const exited = new Promise<number | null>((res) => cli.on('close', (c) => res(c)));
      // This process is the daemon: stall its JavaScript (not its listener
      // thread) until the restorer has exited, or 5 s. A daemon that took the
      // uffd at once let the restorer release its tree and exit meanwhile; the
      // pid is then looked up in a tree that no longer holds it.
      const nap = new Int32Array(new SharedArrayBuffer(4));
      const end = Date.now() + 5000;
      while (Date.now() < end && statOf(cli.pid!)?.state !== 'Z') Atomics.wait(nap, 0, 0, 10);
      assert.equal(await withTimeout(exited, 30_000, 'restore --lazy-socket -d exits'), 0, stderr);
      restored = Number(readFileSync(join(dir, 'r.pid'), 'utf8'));
      d.wl.go(restored);
      await waitForFile(join(d.wl.ctrlDir, 'result'), 30_000);
      assert.equal(d.wl.result(), 'ok');
      assert.deepEqual(errors, []);
      await withTimeout(server.whenIdle(), 30_000, 'every page served');
    } finally {
      killIf(restored, 'workload-mem');
      await server.close();
    }
  });
});
