// A symlink named `criu` to our CLI, driven the way CRIU's own test suite
// (test/zdtm.py: --log-file/--images-dir/--verbosity=4, --status-fd pipes for
// the daemons, --pidfile, --restore-detached, --restore-sibling, pre-dumps
// with --prev-images-dir ../N --track-mem, --page-server, --lazy-pages and
// the post-copy form) drives criu. Every flow restores workload-mem, which
// checks its own memory byte for byte, and checks where the logs and pid
// files land, the status byte and the pid file's content.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFile, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, readlinkSync, statSync, symlinkSync } from 'node:fs';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { ImageDir, PE_PARENT, PE_PRESENT } from '../../plugin/images/index.js';
import { addon } from '../../plugin/native/addon.js';
import type { RestoreExitInfo } from '../../plugin/native/types.js';
import { cliPath } from '../helpers/cli.js';
import { isRoot, leakedFds, openFds, tempDir, withTimeout } from '../helpers/env.js';
import { startWorkload, waitForFile, type Workload } from '../helpers/workload.js';

const skip = isRoot ? false : 'needs root';

interface Run { code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string }

/** A temp dir with `criu` -> bin/lazy-restore.js in it. */
function criuLink(dir: string): string {
  const bin = join(dir, 'bin');
  mkdirSync(bin);
  symlinkSync(cliPath, join(bin, 'criu'));
  return join(bin, 'criu');
}

/** Runs `criu ARGS` to completion (bounded). */
function criu(bin: string, args: string[], timeoutMs = 60_000): Promise<Run> {
  return new Promise((resolve, reject) => {
    execFile(bin, args, { timeout: timeoutMs, maxBuffer: 16 << 20 }, (err, stdout, stderr) => {
      if (err && typeof err.code !== 'number' && !err.signal) {
        reject(new Error(`criu ${args.join(' ')}: ${err.message}\n${stderr}`));
        return;
      }
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : null) : 0, signal: err?.signal ?? null, stdout, stderr });
    });
  });
}

/** A long-running `criu` (daemon or dump --lazy-pages) with --status-fd 3, like zdtm's nowait actions. */
interface Daemon {
  child: ChildProcess;
  /** Resolves with the first bytes written to the status fd. */
  status: Promise<Buffer>;
  /** Every byte written to the status fd until it was closed. */
  statusAll: Promise<Buffer>;
  stdout: () => string;
  stderr: () => string;
  exited: Promise<Run>;
}

function criuDaemon(bin: string, args: string[]): Daemon {
  const child = spawn(bin, [...args, '--status-fd', '3'], { stdio: ['ignore', 'pipe', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout!.on('data', (c: Buffer) => { out += c.toString(); });
  child.stderr!.on('data', (c: Buffer) => { err += c.toString(); });
  const fd3 = child.stdio[3] as Readable;
  const chunks: Buffer[] = [];
  const statusAll = new Promise<Buffer>((resolve) => {
    fd3.on('data', (c: Buffer) => chunks.push(c));
    fd3.on('close', () => resolve(Buffer.concat(chunks)));
  });
  const exited = new Promise<Run>((resolve) => {
    child.on('close', (code, signal) => resolve({ code, signal, stdout: out, stderr: err }));
  });
  const status = new Promise<Buffer>((resolve, reject) => {
    fd3.once('data', (c: Buffer) => resolve(c));
    void exited.then((r) => reject(new Error(`criu ${args[0]} exited (${r.code ?? r.signal}) before it was ready: ${r.stderr}`)));
  });
  status.catch(() => {});
  return { child, status, statusAll, stdout: () => out, stderr: () => err, exited };
}

/**
 * "listening on ADDR:PORT" printed by page-server and dump --lazy-pages (we
 * take --port 0). Printed before the status byte, but the two pipes may be
 * read here in either order.
 */
async function listeningPort(d: Daemon): Promise<number> {
  await withTimeout(d.status, 30_000, 'status byte');
  const re = /listening on [^\s]+:(\d+)/;
  if (!re.test(d.stdout())) {
    await withTimeout(new Promise<void>((resolve) => {
      const on = (): void => {
        if (!re.test(d.stdout())) return;
        d.child.stdout!.off('data', on);
        resolve();
      };
      d.child.stdout!.on('data', on);
      on();
    }), 30_000, 'the listening line on stdout');
  }
  return Number(re.exec(d.stdout())![1]);
}

async function stop(d: Daemon | undefined): Promise<void> {
  if (!d || d.child.exitCode !== null || d.child.signalCode !== null) return;
  d.child.kill('SIGKILL');
  await d.exited;
}

function logHas(path: string): void {
  assert.ok(existsSync(path), `log ${path} written`);
  assert.ok(statSync(path).size > 0, `log ${path} not empty`);
}

/** The pid file CRIU writes: the decimal pid and nothing else. */
function readPidfile(path: string): number {
  const text = readFileSync(path, 'utf8');
  assert.match(text, /^[1-9]\d*$/, `pid file ${path} content ${JSON.stringify(text)}`);
  assert.equal(statSync(path).mode & 0o777, 0o600, 'pid file mode');
  return Number(text);
}

function ppidOf(pid: number): number {
  const s = readFileSync(`/proc/${pid}/stat`, 'utf8');
  return Number(s.slice(s.lastIndexOf(')') + 2).split(' ')[1]);
}

function killIfWorkload(pid: number | undefined): void {
  if (!pid) return;
  try {
    if (readFileSync(`/proc/${pid}/comm`, 'utf8').trim() === 'workload-mem') process.kill(pid, 'SIGKILL');
  } catch { /* gone */ }
}

/** Tells the restored workload to check itself and waits for its verdict file. */
async function goAndVerdict(wl: Workload, pid: number): Promise<void> {
  process.kill(pid, 'SIGUSR1');
  await waitForFile(join(wl.ctrlDir, 'result'), 30_000);
  assert.equal(wl.result(), 'ok', 'the restored workload found every byte it wrote');
}

/** Reaps a child of this process (a root restored with --restore-sibling). */
function reap(pid: number): Promise<RestoreExitInfo> {
  return new Promise((resolve) => {
    const w = new addon.RestoreChildWaiter(pid, (info) => {
      w.close();
      resolve(info);
    });
  });
}

async function started(): Promise<{ wl: Workload; t: { path: string; dispose: () => void }; bin: string }> {
  const t = tempDir('lr-criu-');
  const bin = criuLink(t.path);
  const wl = await startWorkload('workload-mem', ['8']);
  return { wl, t, bin };
}

test('criu check, check --feature with CRIU\'s names, and commands we do not have', { skip }, async () => {
  const t = tempDir('lr-criu-');
  try {
    const bin = criuLink(t.path);
    const all = await criu(bin, ['check']);
    assert.equal(all.code, 0, all.stderr);
    assert.match(all.stdout, /Looks good/);
    // zdtm.py's exact form (getopt reads -verbosity=0 as -v0).
    const features = ['uffd', 'uffd-noncoop', 'lazy_pages', 'mem_dirty_track', 'clone3_set_tid', 'pidfd_store', 'can_map_vdso'];
    const runs = await Promise.all(features.map((f) => criu(bin, ['check', '--no-default-config', '-verbosity=0', '--feature', f])));
    runs.forEach((r, i) => assert.equal(r.code, 0, `--feature ${features[i]}: ${r.stderr}`));
    const extra = await criu(bin, ['check', '--all']);
    assert.equal(extra.code, 0, extra.stderr);
    const crOnly = await criu(bin, ['check', '--feature', 'tun']);
    assert.equal(crOnly.code, 1);
    assert.match(crOnly.stderr, /CRIU feature tun is not supported/);
    assert.equal(crOnly.stderr.trim().split('\n').length, 1, 'one line');
    const unknown = await criu(bin, ['check', '--feature', 'no_such_feature']);
    assert.equal(unknown.code, 1);
    assert.match(unknown.stderr, /unknown feature no_such_feature/);
    const dedup = await criu(bin, ['dedup', '-D', t.path]);
    assert.equal(dedup.code, 2);
    assert.match(dedup.stderr, /CRIU command "dedup" is not supported/);
    const opt = await criu(bin, ['dump', '-t', '1', '-D', t.path, '--leave-stopped']);
    assert.equal(opt.code, 2);
    assert.match(opt.stderr, /--leave-stopped is not supported/);
    for (const cmd of ['page-server', 'lazy-pages']) {
      const daemon = await criu(bin, [cmd, '-D', t.path, '--port', '0', '--daemon']);
      assert.equal(daemon.code, 2);
      assert.match(daemon.stderr, new RegExp(`-d/--daemon is not supported for ${cmd}`));
    }
    const sibNoDetach = await criu(bin, ['restore', '-D', t.path, '--restore-sibling']);
    assert.equal(sibNoDetach.code, 2);
    assert.match(sibNoDetach.stderr, /--restore-sibling only makes sense with --restore-detached/);
  } finally {
    t.dispose();
  }
});

test('criu dump -v4 -o dump.log, then restore -d --pidfile: logs and pid file in the work dir, byte-exact', { skip }, async () => {
  const fds = openFds();
  const { wl, t, bin } = await started();
  let restored: number | undefined;
  try {
    const d = join(t.path, '1');
    mkdirSync(d);
    // zdtm passes the test's own pid file and --timeout to dump as well.
    const dump = await criu(bin, ['--log-file', 'dump.log', '--images-dir', d, '--verbosity=4', 'dump', '--tree', String(wl.pid),
      '--pidfile', join(wl.ctrlDir, 'ready'), '--timeout', '10', '--track-mem']);
    assert.equal(dump.code, 0, dump.stderr);
    await withTimeout(wl.exited, 10_000, 'dumped workload killed');
    logHas(join(d, 'dump.log'));
    assert.match(readFileSync(join(d, 'dump.log'), 'utf8'), /\S/);

    const rst = await criu(bin, ['restore', '-o', 'restore.log', '-D', d, '-v4', '-d', '--pidfile', 'restore.pid']);
    assert.equal(rst.code, 0, rst.stderr);
    logHas(join(d, 'restore.log'));
    restored = readPidfile(join(d, 'restore.pid'));
    assert.equal(restored, wl.pid, 'the root keeps its pid');
    // A second restore must not overwrite an existing pid file (CRIU: O_EXCL).
    const again = await criu(bin, ['restore', '-D', d, '-d', '--pidfile', 'restore.pid']);
    assert.equal(again.code, 1);
    assert.match(again.stderr, /--pidfile .*restore\.pid: file exists \(EEXIST\)/);
    await goAndVerdict(wl, restored);
  } finally {
    killIfWorkload(restored);
    await wl.dispose();
    t.dispose();
  }
  assert.deepEqual(leakedFds(fds), []);
});

test('criu restore -d -S (--restore-sibling): the root is a child of the caller, which reaps it', { skip }, async () => {
  const fds = openFds();
  const { wl, t, bin } = await started();
  let restored: number | undefined;
  try {
    const d = join(t.path, 'img');
    const w = join(t.path, 'work');
    mkdirSync(w);
    const dump = await criu(bin, ['dump', '-t', String(wl.pid), '-D', d, '-W', w, '-o', 'dump.log', '-v4']);
    assert.equal(dump.code, 0, dump.stderr);
    await withTimeout(wl.exited, 10_000, 'dumped workload killed');
    logHas(join(w, 'dump.log'));
    assert.ok(!existsSync(join(d, 'dump.log')), '-W: the log goes to the work dir, not the images dir');

    const rst = await criu(bin, ['restore', '-D', d, '-W', w, '-o', 'restore.log', '-v4', '-d', '-S', '--pidfile', 'rst.pid']);
    assert.equal(rst.code, 0, rst.stderr);
    restored = readPidfile(join(w, 'rst.pid'));
    assert.equal(restored, wl.pid);
    logHas(join(w, 'restore.log'));
    assert.equal(ppidOf(restored), process.pid, 'the restored root is our child, criu\'s sibling');
    const exit = reap(restored);
    await goAndVerdict(wl, restored);
    assert.deepEqual(await withTimeout(exit, 20_000, 'sibling root exit'), { code: 0, signal: 0 });
    restored = undefined;
  } finally {
    killIfWorkload(restored);
    await wl.dispose();
    t.dispose();
  }
  assert.deepEqual(leakedFds(fds), []);
});

test('criu pre-dump, then dump --prev-images-dir ../1 --track-mem, then restore: byte-exact', { skip }, async () => {
  const fds = openFds();
  const { wl, t, bin } = await started();
  let restored: number | undefined;
  try {
    const d1 = join(t.path, '1');
    const d2 = join(t.path, '2');
    mkdirSync(d1);
    mkdirSync(d2);
    const pre = await criu(bin, ['--log-file', 'pre-dump.log', '--images-dir', d1, '--verbosity=4', 'pre-dump', '--tree', String(wl.pid), '--timeout', '10']);
    assert.equal(pre.code, 0, pre.stderr);
    logHas(join(d1, 'pre-dump.log'));
    assert.ok(existsSync(`/proc/${wl.pid}`), 'pre-dump leaves the tree running');
    const dump = await criu(bin, ['--log-file', 'dump.log', '--images-dir', d2, '--verbosity=4', 'dump', '--tree', String(wl.pid),
      '--prev-images-dir', '../1', '--track-mem', '--timeout', '10']);
    assert.equal(dump.code, 0, dump.stderr);
    assert.doesNotMatch(dump.stderr, /falling back|full dump/i, 'no fallback warning');
    // The dump is incremental: linked to its parent, unchanged pages left there as PE_PARENT.
    assert.equal(readlinkSync(join(d2, 'parent')), '../1');
    let parentPages = 0, copiedPages = 0;
    for await (const e of await (await ImageDir.open(d2)).pagemap(wl.pid)) {
      if (e.flags & PE_PARENT) parentPages += e.nrPages;
      else if (e.flags & PE_PRESENT) copiedPages += e.nrPages;
    }
    assert.ok(parentPages > 0 && copiedPages < parentPages, `the dump is incremental: ${parentPages} pages in the parent, ${copiedPages} copied`);
    await withTimeout(wl.exited, 10_000, 'dumped workload killed');
    const rst = await criu(bin, ['--log-file', 'restore.log', '--images-dir', d2, '--verbosity=4', 'restore', '--pidfile', join(t.path, 'test.pid'), '--restore-detached']);
    assert.equal(rst.code, 0, rst.stderr);
    restored = readPidfile(join(t.path, 'test.pid'));
    await goAndVerdict(wl, restored);
  } finally {
    killIfWorkload(restored);
    await wl.dispose();
    t.dispose();
  }
  assert.deepEqual(leakedFds(fds), []);
});

test('criu lazy-pages --status-fd, then restore --lazy-pages -d hands the uffds to that daemon', { skip }, async () => {
  const fds = openFds();
  const { wl, t, bin } = await started();
  let restored: number | undefined;
  let lp: Daemon | undefined;
  try {
    const d = join(t.path, '1');
    const dump = await criu(bin, ['dump', '-o', 'dump.log', '-D', d, '-v4', '-t', String(wl.pid)]);
    assert.equal(dump.code, 0, dump.stderr);
    await withTimeout(wl.exited, 10_000, 'dumped workload killed');

    lp = criuDaemon(bin, ['lazy-pages', '--log-file', 'lazy-pages.log', '--images-dir', d, '--verbosity=4']);
    assert.deepEqual(await withTimeout(lp.status, 30_000, 'lazy-pages status byte'), Buffer.from([0]));
    assert.ok(statSync(join(d, 'lazy-pages.socket')).isSocket(), 'the socket is in the work dir');

    const rst = await criu(bin, ['--log-file', 'restore.log', '--images-dir', d, '--verbosity=4', 'restore', '--lazy-pages', '--pidfile', 'r.pid', '--restore-detached']);
    assert.equal(rst.code, 0, rst.stderr);
    restored = readPidfile(join(d, 'r.pid'));
    await goAndVerdict(wl, restored);
    const end = await withTimeout(lp.exited, 30_000, 'lazy-pages exits once every page is served');
    assert.equal(end.code, 0, end.stderr);
    assert.match(end.stdout, /\b1 process/, `the daemon served our restore: ${end.stdout}`);
    assert.deepEqual(await lp.statusAll, Buffer.from([0]), 'exactly one zero byte on the status fd');
    logHas(join(d, 'lazy-pages.log'));
    logHas(join(d, 'restore.log'));
  } finally {
    await stop(lp);
    killIfWorkload(restored);
    await wl.dispose();
    t.dispose();
  }
  assert.deepEqual(leakedFds(fds), []);
});

test('criu page-server --status-fd + dump --page-server --address --port: pages land on the server side', { skip }, async () => {
  const fds = openFds();
  const { wl, t, bin } = await started();
  let restored: number | undefined;
  let ps: Daemon | undefined;
  try {
    const d = join(t.path, '1');
    mkdirSync(d);
    // Like zdtm: the page server writes into the same directory as the dump.
    ps = criuDaemon(bin, ['page-server', '--log-file', 'page-server.log', '--images-dir', d, '--verbosity=4', '--port', '0', '--pidfile', 'ps.pid']);
    const port = await listeningPort(ps);
    assert.deepEqual(await ps.status, Buffer.from([0]));
    assert.equal(readPidfile(join(d, 'ps.pid')), ps.child.pid, 'page-server --pidfile');
    const dump = await criu(bin, ['--log-file', 'dump.log', '--images-dir', d, '--verbosity=4', 'dump', '--tree', String(wl.pid),
      '--page-server', '--address', '127.0.0.1', '--port', String(port), '--timeout', '10']);
    assert.equal(dump.code, 0, dump.stderr);
    await withTimeout(wl.exited, 10_000, 'dumped workload killed');
    const end = await withTimeout(ps.exited, 30_000, 'page-server exits after the session');
    assert.equal(end.code, 0, end.stderr);
    assert.match(end.stdout, /received [1-9]\d* pages in 1 pagemaps/);
    logHas(join(d, 'page-server.log'));
    logHas(join(d, 'dump.log'));
    const names = readdirSync(d);
    assert.deepEqual(names.filter((n) => /^pages-/.test(n)), ['pages-65537.img'], 'only the server\'s pages file');
    assert.ok(names.includes(`pagemap-${wl.pid}.img`));
    assert.ok(!names.some((n) => n.startsWith('.lr-push')), 'no staging left behind');

    const rst = await criu(bin, ['restore', '-D', d, '-d', '--pidfile', 'r.pid']);
    assert.equal(rst.code, 0, rst.stderr);
    restored = readPidfile(join(d, 'r.pid'));
    await goAndVerdict(wl, restored);
  } finally {
    await stop(ps);
    killIfWorkload(restored);
    await wl.dispose();
    t.dispose();
  }
  assert.deepEqual(leakedFds(fds), []);
});

test('post-copy: criu dump --lazy-pages --port + lazy-pages --page-server + restore --lazy-pages', { skip }, async () => {
  const fds = openFds();
  const { wl, t, bin } = await started();
  let init: number | undefined;
  let src: Daemon | undefined;
  let lp: Daemon | undefined;
  try {
    const d = join(t.path, '1');
    src = criuDaemon(bin, ['dump', '-o', 'dump.log', '-D', d, '-v4', '-t', String(wl.pid), '--lazy-pages', '--port', '0']);
    const port = await listeningPort(src);
    assert.deepEqual(await src.status, Buffer.from([0]));
    lp = criuDaemon(bin, ['lazy-pages', '-o', 'lazy-pages.log', '-D', d, '-v4', '--page-server', '--address', '127.0.0.1', '--port', String(port)]);
    assert.deepEqual(await withTimeout(lp.status, 30_000, 'lazy-pages status byte'), Buffer.from([0]));
    // The source tree is still frozen under its pids on this machine: restore
    // in a new pid namespace (zdtm runs lazy migration in its ns flavours).
    const rst = await criu(bin, ['restore', '-o', 'restore.log', '-D', d, '-v4', '--lazy-pages', '-d', '--pidns', '--pidfile', 'r.pid']);
    assert.equal(rst.code, 0, rst.stderr);
    init = readPidfile(join(d, 'r.pid'));
    const root = Number(readFileSync(`/proc/${init}/task/${init}/children`, 'utf8').trim());
    await goAndVerdict(wl, root);
    const lpEnd = await withTimeout(lp.exited, 30_000, 'lazy-pages exits');
    assert.equal(lpEnd.code, 0, lpEnd.stderr);
    const srcEnd = await withTimeout(src.exited, 30_000, 'the dump ends once the destination closed');
    assert.equal(srcEnd.code, 0, srcEnd.stderr);
    await withTimeout(wl.exited, 10_000, 'source tree killed after the transfer');
    for (const l of ['dump.log', 'lazy-pages.log', 'restore.log']) logHas(join(d, l));
  } finally {
    await stop(lp);
    await stop(src);
    if (init !== undefined) try { process.kill(init, 'SIGKILL'); } catch { /* gone */ }
    await wl.dispose();
    t.dispose();
  }
  assert.deepEqual(leakedFds(fds), []);
});

test('remote lazy: criu page-server --lazy-pages --pidfile + lazy-pages --page-server + restore --lazy-pages', { skip }, async () => {
  const fds = openFds();
  const { wl, t, bin } = await started();
  let restored: number | undefined;
  let ps: Daemon | undefined;
  let lp: Daemon | undefined;
  try {
    const d = join(t.path, '1');
    const dump = await criu(bin, ['dump', '--log-file', 'dump.log', '--images-dir', d, '--verbosity=4', '--tree', String(wl.pid)]);
    assert.equal(dump.code, 0, dump.stderr);
    await withTimeout(wl.exited, 10_000, 'dumped workload killed');
    // zdtm.py --remote-lazy-pages: all three share the images directory.
    ps = criuDaemon(bin, ['page-server', '--log-file', 'page-server.log', '--images-dir', d, '--verbosity=4', '--pidfile', 'ps.pid', '--port', '0', '--lazy-pages']);
    const port = await listeningPort(ps);
    assert.equal(readPidfile(join(d, 'ps.pid')), ps.child.pid);
    lp = criuDaemon(bin, ['lazy-pages', '--log-file', 'lazy-pages.log', '--images-dir', d, '--verbosity=4', '--page-server', '--port', String(port), '--address', '127.0.0.1']);
    assert.deepEqual(await withTimeout(lp.status, 30_000, 'lazy-pages status byte'), Buffer.from([0]));
    const rst = await criu(bin, ['restore', '--log-file', 'restore.log', '--images-dir', d, '--verbosity=4', '--lazy-pages', '--pidfile', 'r.pid', '--restore-detached']);
    assert.equal(rst.code, 0, rst.stderr);
    restored = readPidfile(join(d, 'r.pid'));
    await goAndVerdict(wl, restored);
    const lpEnd = await withTimeout(lp.exited, 30_000, 'lazy-pages exits');
    assert.equal(lpEnd.code, 0, lpEnd.stderr);
    const psEnd = await withTimeout(ps.exited, 30_000, 'page-server exits after CLOSE');
    assert.equal(psEnd.code, 0, psEnd.stderr);
    assert.match(psEnd.stdout, /page-server: served \d+ pages/);
    for (const l of ['dump.log', 'page-server.log', 'lazy-pages.log', 'restore.log']) logHas(join(d, l));
  } finally {
    await stop(lp);
    await stop(ps);
    killIfWorkload(restored);
    await wl.dispose();
    t.dispose();
  }
  assert.deepEqual(leakedFds(fds), []);
});

test('criu restore --lazy-pages -d -S without a daemon: served in-process, the root is still the caller\'s child', { skip }, async () => {
  const fds = openFds();
  const { wl, t, bin } = await started();
  let restored: number | undefined;
  try {
    const d = join(t.path, '1');
    const dump = await criu(bin, ['dump', '-t', String(wl.pid), '-D', d]);
    assert.equal(dump.code, 0, dump.stderr);
    await withTimeout(wl.exited, 10_000, 'dumped workload killed');
    // -d with the in-process daemon: criu stays until every page is in.
    const rst = criu(bin, ['restore', '-D', d, '--lazy-pages', '-d', '-S', '--pidfile', 'r.pid']);
    await waitForFile(join(d, 'r.pid'), 30_000);
    restored = readPidfile(join(d, 'r.pid'));
    assert.equal(ppidOf(restored), process.pid);
    const exit = reap(restored);
    await goAndVerdict(wl, restored);
    assert.deepEqual(await withTimeout(exit, 20_000, 'sibling root exit'), { code: 0, signal: 0 });
    restored = undefined;
    const r = await rst;
    assert.equal(r.code, 0, r.stderr);
  } finally {
    killIfWorkload(restored);
    await wl.dispose();
    t.dispose();
  }
  assert.deepEqual(leakedFds(fds), []);
});
