// Debian's podman (4.3, with runc as its runtime) driving our criu: podman
// finds `criu` on PATH (runc's default), here a symlink to build/bin/lr-criu.
// A busybox image imported from a local rootfs tarball (no registry pulls),
// a container whose shell counts into /tmp/count; `podman container
// checkpoint` stops it, `podman container restore` brings it back counting
// on from where it was (its shell's memory came back, not a fresh start);
// then `checkpoint --export` to a tarball, the container removed, and
// `restore --import` recreates it from the tarball alone, still counting on.
// Each step's log (dump.log / restore.log in podman's work dir, kept with
// --keep) must be ours.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, symlinkSync } from 'node:fs';
import { join } from 'node:path';
import { tempDir } from '../helpers/env.js';
import { lrCriuPath } from '../helpers/cli.js';
import { BUSYBOX, COUNT_LOOP, makeBusyboxRootfs, readCount, waitForCountFile } from '../helpers/counting-rootfs.js';
import { RUNC, run, type RunResult } from '../helpers/runc.js';

const PODMAN = '/usr/bin/podman';

function unavailable(): string | undefined {
  if (process.getuid?.() !== 0) return 'needs root';
  return undefined;
}

/** podman with our criu first on PATH, bounded. */
function podman(binDir: string, args: string[], timeoutMs = 120_000): Promise<RunResult> {
  return run(PODMAN, args, timeoutMs, { ...process.env, PATH: `${binDir}:${process.env['PATH'] ?? '/usr/bin:/bin'}` });
}

/** `podman import -` of a tar stream of `dir`. */
function importRootfs(binDir: string, dir: string, image: string): Promise<RunResult> {
  return new Promise((resolve) => {
    const tar = spawn('tar', ['-C', dir, '-c', '.'], { stdio: ['ignore', 'pipe', 'ignore'] });
    const p = spawn(PODMAN, ['import', '-', image], { stdio: ['pipe', 'pipe', 'pipe'], env: { ...process.env, PATH: `${binDir}:${process.env['PATH'] ?? ''}` } });
    tar.stdout.pipe(p.stdin);
    let stderr = '';
    p.stderr.on('data', (d: Buffer) => { stderr += d.toString(); });
    const timer = setTimeout(() => { tar.kill('SIGKILL'); p.kill('SIGKILL'); }, 120_000);
    p.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code: code ?? 255, stdout: '', stderr });
    });
  });
}

test('podman container checkpoint / restore and --export / --import with our criu', { skip: unavailable() ?? false }, async () => {
  assert.ok(existsSync(PODMAN) && existsSync(RUNC) && existsSync(BUSYBOX), 'podman, runc and busybox-static are needed: run scripts/setup.sh');
  const t = tempDir('lr-podman-');
  const name = `lr-test-podman-${process.pid}`;
  const image = `localhost/lr-test-busybox-${process.pid}:latest`;
  const binDir = join(t.path, 'bin');
  mkdirSync(binDir);
  symlinkSync(lrCriuPath, join(binDir, 'criu'));
  const rootfs = join(t.path, 'rootfs');
  makeBusyboxRootfs(rootfs, ['sh', 'sleep', 'cat']);
  const inspect = async (fmt: string): Promise<string> => {
    const r = await podman(binDir, ['inspect', '--format', fmt, name]);
    assert.equal(r.code, 0, `podman inspect: ${r.stderr}`);
    return r.stdout.trim();
  };
  const countFile = async (): Promise<string> => join(await inspect('{{.GraphDriver.Data.MergedDir}}'), 'tmp', 'count');
  /** The log of our criu in podman's work dir (the container's userdata dir). */
  const ourLog = async (file: string): Promise<string> => {
    const text = readFileSync(join(await inspect('{{.StaticDir}}'), file), 'utf8');
    assert.match(text, /lazy-restore RPC/, `${file} is ours`);
    return text;
  };
  try {
    const imp = await importRootfs(binDir, rootfs, image);
    assert.equal(imp.code, 0, `podman import: ${imp.stderr}`);
    // runc as the runtime (Debian's crun is built without CRIU); no
    // CAP_SYS_RESOURCE here, so limits no higher than ours.
    const runArgs = ['--runtime', RUNC, 'run', '-d', '--name', name, '--network', 'none',
      '--ulimit', 'nofile=20000:20000', '--ulimit', 'nproc=4096:4096', image,
      '/bin/sh', '-c', COUNT_LOOP];
    const r = await podman(binDir, runArgs);
    assert.equal(r.code, 0, `podman run: ${r.stderr}`);
    let file = await countFile();
    const before = await waitForCountFile(file, 3, 30_000);

    const cp = await podman(binDir, ['container', 'checkpoint', '--keep', name]);
    assert.equal(cp.code, 0, `checkpoint: ${cp.stderr}`);
    assert.match(await inspect('{{.State.Status}}'), /^exited$/);
    await ourLog('dump.log');
    const atCheckpoint = Math.max(readCount(file), before);

    const rs = await podman(binDir, ['container', 'restore', '--keep', name]);
    assert.equal(rs.code, 0, `restore: ${rs.stderr}`);
    assert.equal(await inspect('{{.State.Status}}'), 'running');
    await ourLog('restore.log');
    file = await countFile();
    const seen: number[] = [];
    await waitForCountFile(file, atCheckpoint + 3, 30_000, seen);
    assert.ok(Math.min(...seen) >= before, `the restored shell counts on from ${before}: ${seen.join(' ')}`);

    // Export to a tarball, remove the container, import it again.
    const tarball = join(t.path, 'checkpoint.tar.gz');
    const ex = await podman(binDir, ['container', 'checkpoint', '--export', tarball, name]);
    assert.equal(ex.code, 0, `checkpoint --export: ${ex.stderr}`);
    assert.doesNotMatch(ex.stderr, /Can't stat file/, 'every file podman exports is there (stats-dump in the work dir)');
    const atExport = Math.max(readCount(file), before);
    const rm = await podman(binDir, ['rm', '-f', '-t', '0', name]);
    assert.equal(rm.code, 0, `podman rm: ${rm.stderr}`);
    const im = await podman(binDir, ['--runtime', RUNC, 'container', 'restore', '--import', tarball]);
    assert.equal(im.code, 0, `restore --import: ${im.stderr}`);
    assert.equal(await inspect('{{.State.Status}}'), 'running');
    file = await countFile();
    const seen2: number[] = [];
    await waitForCountFile(file, atExport + 3, 30_000, seen2);
    assert.ok(Math.min(...seen2) >= atCheckpoint, `the imported container counts on from ${atExport}: ${seen2.join(' ')}`);
  } finally {
    await podman(binDir, ['rm', '-f', '-t', '0', name]);
    await podman(binDir, ['rmi', '-f', image]);
    t.dispose();
  }
});
