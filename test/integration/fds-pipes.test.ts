// Pipes across a checkpoint: a shell pipeline `producer | consumer` (bash
// with two small C programs, native/helpers/workload-pipe.c) dumped while
// the producer is blocked on a full pipe and restored eagerly and lazily;
// the consumer checks that no counter is lost or duplicated. crit decodes
// files.img and pipes-data.img.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { closeSync, existsSync, openSync, readFileSync, readlinkSync } from 'node:fs';
import { join } from 'node:path';
import { dump } from '../../plugin/dump/index.js';
import { UserError } from '../../plugin/errors.js';
import { FdType, ImageDir } from '../../plugin/images/index.js';
import { helperPath } from '../../plugin/native/addon.js';
import { restore } from '../../plugin/restore/index.js';
import { cliPath } from '../helpers/cli.js';
import { critCheckDir, critDecode } from '../helpers/critcheck.js';
import { statOf, until } from '../helpers/proc.js';
import { isRoot, leakedFds, openFds, tempDir, withTimeout } from '../helpers/env.js';
import { parseReport, waitForFile } from '../helpers/workload.js';

const COUNTERS = 400000; // 3.2 MB through the pipe; the dump happens after half

/** bash -c 'producer | consumer' as a session leader; resolves once the consumer paused mid-stream. */
async function startPipeline(ctrl: string): Promise<{ bash: number; consumer: number; exited: Promise<unknown> }> {
  const wl = helperPath('workload-pipe');
  const child = spawn('/bin/bash', ['-c', `${wl} produce | ${wl} consume ${ctrl} ${COUNTERS}`], { detached: true, stdio: 'ignore' });
  const exited = new Promise((resolve) => child.once('exit', resolve));
  try {
    await waitForFile(join(ctrl, 'ready'), 20000);
  } catch (e) {
    child.kill('SIGKILL');
    throw e;
  }
  return { bash: child.pid!, consumer: Number(parseReport(readFileSync(join(ctrl, 'ready'), 'utf8')).pid), exited };
}

for (const mode of ['eager', 'lazy'] as const) {
  test(`pipeline producer | consumer checkpointed mid-stream, restored ${mode}: no byte lost or duplicated`, { skip: !isRoot && 'needs root' }, async () => {
    const before = openFds();
    const ctrl = tempDir('lr-pipes-ctl-');
    const img = tempDir('lr-pipes-img-');
    let pids: number[] = [];
    try {
      const p = await startPipeline(ctrl.path);
      const d = await dump({ pid: p.bash, imagesDir: img.path });
      pids = d.pids;
      assert.equal(d.pids.length, 3, 'bash, producer, consumer');
      await withTimeout(p.exited, 10000, 'the dumped bash is reaped');

      const dir = await ImageDir.open(img.path);
      const files = await dir.files();
      const pipes = files.filter((f) => f.type === FdType.PIPE);
      const inTree = pipes.filter((f) => pipes.some((g) => g !== f && g.pipe!.pipe_id === f.pipe!.pipe_id));
      assert.equal(inTree.length, 2, 'both ends of the pipeline pipe');
      const counts = critCheckDir(img.path);
      assert.equal(counts.get('pipes-data.img'), 1);
      const data = critDecode(join(img.path, 'pipes-data.img')).entries[0]!;
      assert.equal(data.pipe_id, inTree[0]!.pipe!.pipe_id);
      assert.ok(Number(data.bytes) > 0, 'the full pipe had queued bytes');

      const tree = await withTimeout(restore({ imagesDir: img.path, detached: true, lazy: mode === 'lazy' }), 30000, 'restore');
      process.kill(p.consumer, 'SIGUSR1');
      const exit = await withTimeout(tree.wait(), 30000, 'restored pipeline exits');
      await withTimeout(tree.lazyDone(), 30000, 'lazy pages served');
      await tree.close();
      assert.equal(readFileSync(join(ctrl.path, 'result'), 'utf8').trim(), `ok ${COUNTERS}`);
      assert.deepEqual(exit, { code: 0, signal: 0 });
      pids = [];
    } finally {
      for (const pid of pids) try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ }
      ctrl.dispose();
      img.dispose();
    }
    assert.deepEqual(leakedFds(before), []);
  });
}

/** Runs the CLI with `extraFd` as its fd 3. */
function runCliFd3(args: string[], extraFd: number): Promise<{ code: number; stderr: string }> {
  return new Promise((resolve) => {
    const c = spawn(process.execPath, [cliPath, ...args], { stdio: ['ignore', 'ignore', 'pipe', extraFd] });
    let stderr = '';
    c.stderr!.on('data', (d: Buffer) => { stderr += d.toString(); });
    const timer = setTimeout(() => c.kill('SIGKILL'), 60000);
    c.once('exit', (code) => { clearTimeout(timer); resolve({ code: code ?? -1, stderr }); });
  });
}

for (const inherit of [true, false]) {
  test(`external pipe (the writer outside the tree) ${inherit ? 'with --inherit-fd fd[3]:pipe:[INO]: the restored reader goes on reading it' : 'without --inherit-fd: a new pipe with the queued bytes, then EOF (CRIU\'s behaviour)'}`, { skip: !isRoot && 'needs root' }, async () => {
    const before = openFds();
    const ctrl = tempDir('lr-pipes-ext-');
    const img = tempDir('lr-pipes-ext-img-');
    const wl = helperPath('workload-pipe');
    // Only the consumer is dumped (setsid makes it a session leader); the producer stays outside.
    const bash = spawn('/bin/bash', ['-c', `${wl} produce | setsid ${wl} consume ${ctrl.path} ${COUNTERS}`], { detached: true, stdio: 'ignore' });
    const bashExit = new Promise((resolve) => bash.once('exit', resolve));
    let keep = -1;
    let consumer = 0;
    try {
      await waitForFile(join(ctrl.path, 'ready'), 20000);
      consumer = Number(parseReport(readFileSync(join(ctrl.path, 'ready'), 'utf8')).pid);
      const ino = /^pipe:\[(\d+)\]$/.exec(readlinkSync(`/proc/${consumer}/fd/0`))![1]!;
      // A read end held here keeps the producer blocked (not EPIPE) across the checkpoint.
      keep = openSync(`/proc/${consumer}/fd/0`, 'r');
      const d = await dump({ pid: consumer, imagesDir: img.path });
      assert.deepEqual(d.pids, [consumer]);
      await until(() => !existsSync(`/proc/${consumer}`) || readFileSync(`/proc/${consumer}/stat`, 'utf8').includes(') Z'), 10000, 'dumped consumer gone');
      const args = ['restore', '-D', img.path, '-d', '-v4', '-o', 'restore.log'];
      const r = await runCliFd3(inherit ? [...args, '--inherit-fd', `fd[3]:pipe:[${ino}]`] : args, keep);
      assert.equal(r.code, 0, r.stderr);
      process.kill(consumer, 0); // restored under its own pid
      const log = readFileSync(join(img.path, 'restore.log'), 'utf8');
      if (inherit) {
        assert.match(log, new RegExp(`pipe:\\[${ino}\\]: restored from the inherited fd 3`));
      }
      // The restored consumer still waits for its go signal.
      process.kill(consumer, 'SIGUSR1');
      const result = await (async () => {
        await until(() => existsSync(join(ctrl.path, 'result')), 30000, 'verdict');
        return readFileSync(join(ctrl.path, 'result'), 'utf8').trim();
      })();
      if (inherit) assert.equal(result, `ok ${COUNTERS}`);
      else {
        assert.match(log, new RegExp(`pipe:\\[${ino}\\] has no writer in the images .*--inherit-fd fd\\[N\\]:pipe:\\[${ino}\\]`));
        const m = /^fail eof after (\d+) counters$/.exec(result);
        assert.ok(m, result);
        assert.ok(Number(m[1]) > COUNTERS / 2, 'the queued bytes were restored before the EOF');
      }
    } finally {
      if (consumer) try { process.kill(consumer, 'SIGKILL'); } catch { /* gone */ }
      if (keep >= 0) closeSync(keep);
      try { process.kill(-bash.pid!, 'SIGKILL'); } catch { /* gone */ }
      await withTimeout(bashExit, 10000, 'bash exits');
      ctrl.dispose();
      img.dispose();
    }
    assert.deepEqual(leakedFds(before), []);
  });
}

test('bad input: an fd of a kind restore does not support fails before anything runs, naming pid, fd and kind', { skip: !isRoot && 'needs root' }, async () => {
  const ctrl = tempDir('lr-pipes-bad-');
  const img = tempDir('lr-pipes-bad-img-');
  try {
    const p = await startPipeline(ctrl.path);
    const d = await dump({ pid: p.bash, imagesDir: img.path });
    await withTimeout(p.exited, 10000, 'the dumped bash is reaped');
    const dir = await ImageDir.open(img.path);
    const fdinfo = await dir.fdinfo((await dir.ids(p.consumer)).files_id);
    const stdin = fdinfo.find((f) => f.fd === 0)!;
    // The consumer's stdin becomes a packet socket (a kind with no restore module).
    const files = (await dir.files()).map((f) => (f.id === stdin.id ? { type: FdType.PACKETSK, id: f.id, psk: { id: f.id } } : f));
    await dir.writeFiles(files);
    await assert.rejects(restore({ imagesDir: img.path, detached: true }), (e: unknown) => e instanceof UserError
      && e.message === `pid ${p.consumer}: fd 0 is a packet socket (files.img id ${stdin.id}, type 10), which restore does not support`);
    // The dumped processes may still be zombies waiting for PID 1; nothing live holds their pids.
    for (const pid of d.pids) {
      const st = statOf(pid);
      assert.ok(st === undefined || st.state === 'Z', `pid ${pid} was not recreated (${JSON.stringify(st)})`);
    }
  } finally {
    ctrl.dispose();
    img.dispose();
  }
});
