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
import { cliPath } from '../helpers/cli.js';
import { isRoot, leakedFds, openFds, tempDir, withTimeout } from '../helpers/env.js';
import { statOf } from '../helpers/proc.js';
import { killRestoredWorkloads, reapChild, verdictOk } from '../helpers/restored.js';
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

/** What a drop-in test works with; everything it starts is stopped or killed by pid at the end. */
interface Dropin {
  /** workload-mem (8 MiB), a child of the test process. */
  wl: Workload;
  /** The test's temp dir (bin/criu lives in it). */
  dir: string;
  bin: string;
  /** `criu ARGS`, asserted to exit 0. */
  ok(args: string[]): Promise<Run>;
  /** `criu ARGS` that dumps the workload (asserted to exit 0), then waits until the dump killed it. */
  dump(args: string[]): Promise<Run>;
  /** A long-running `criu ARGS --status-fd 3`, SIGKILLed at the end if it still runs. */
  daemon(args: string[]): Daemon;
  /** Reads the restored root's pid from CRIU's pid file; the root is killed at the end unless reaped. */
  restoredFrom(pidfile: string): number;
  /** Checks a root restored with --restore-sibling: our child, verifies its memory, exits 0 (reaped here). */
  siblingVerdict(pid: number): Promise<void>;
  /** Kills `pid` (a process the test made, by pid) at the end. */
  killAtEnd(pid: number): void;
}

/** A test with the drop-in set up (bin/criu, a workload) and torn down, then checked for leaked fds. */
function dropinTest(name: string, body: (c: Dropin) => Promise<void>): void {
  test(name, { skip }, async () => {
    const fds = openFds();
    const t = tempDir('lr-criu-');
    const bin = criuLink(t.path);
    const wl = await startWorkload('workload-mem', ['8']);
    const daemons: Daemon[] = [];
    const kills: number[] = [];
    let restored: number | undefined;
    const c: Dropin = {
      wl, dir: t.path, bin,
      ok: async (args) => {
        const r = await criu(bin, args);
        assert.equal(r.code, 0, `criu ${args.join(' ')}: ${r.stderr}`);
        return r;
      },
      dump: async (args) => {
        const r = await c.ok(args);
        await withTimeout(wl.exited, 10_000, 'dumped workload killed');
        return r;
      },
      daemon: (args) => {
        const d = criuDaemon(bin, args);
        daemons.push(d);
        return d;
      },
      restoredFrom: (pidfile) => (restored = readPidfile(pidfile)),
      siblingVerdict: async (pid) => {
        assert.equal(statOf(pid)?.ppid, process.pid, 'the restored root is our child, criu\'s sibling');
        const exit = reapChild(pid);
        await verdictOk(wl, pid);
        assert.deepEqual(await withTimeout(exit, 20_000, 'sibling root exit'), { code: 0, signal: 0 });
        if (restored === pid) restored = undefined;
      },
      killAtEnd: (pid) => kills.push(pid),
    };
    try {
      await body(c);
    } finally {
      for (const d of daemons.reverse()) await stop(d);
      for (const pid of kills) try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ }
      killRestoredWorkloads([restored]);
      await wl.dispose();
      t.dispose();
    }
    assert.deepEqual(leakedFds(fds), []);
  });
}

/** Commands and options we refuse: the exit code and the one line that says why. */
const refused: { args: (dir: string) => string[]; code: number; stderr: RegExp }[] = [
  { args: () => ['check', '--feature', 'tun'], code: 1, stderr: /CRIU feature tun is not supported/ },
  { args: () => ['check', '--feature', 'no_such_feature'], code: 1, stderr: /unknown feature no_such_feature/ },
  { args: (d) => ['dedup', '-D', d], code: 2, stderr: /CRIU command "dedup" is not supported/ },
  { args: (d) => ['dump', '-t', '1', '-D', d, '--leave-stopped'], code: 2, stderr: /--leave-stopped is not supported/ },
  ...['page-server', 'lazy-pages'].map((cmd) => ({
    args: (d: string) => [cmd, '-D', d, '--port', '0', '--daemon'], code: 2, stderr: new RegExp(`-d/--daemon is not supported for ${cmd}`),
  })),
  { args: (d) => ['restore', '-D', d, '--restore-sibling'], code: 2, stderr: /--restore-sibling only makes sense with --restore-detached/ },
];

test('criu check, check --feature with CRIU\'s names, and commands we do not have', { skip }, async () => {
  const t = tempDir('lr-criu-');
  try {
    const bin = criuLink(t.path);
    const all = await criu(bin, ['check']);
    assert.equal(all.code, 0, all.stderr);
    assert.match(all.stdout, /Looks good/);
    // zdtm.py's exact form (getopt reads -verbosity=0 as -v0).
    const features = ['uffd', 'uffd-noncoop', 'lazy_pages', 'mem_dirty_track', 'clone3_set_tid', 'pidfd_store', 'can_map_vdso', 'timerfd', 'kcmp_epoll'];
    const runs = await Promise.all(features.map((f) => criu(bin, ['check', '--no-default-config', '-verbosity=0', '--feature', f])));
    runs.forEach((r, i) => assert.equal(r.code, 0, `--feature ${features[i]}: ${r.stderr}`));
    const extra = await criu(bin, ['check', '--all']);
    assert.equal(extra.code, 0, extra.stderr);
    for (const r of refused) {
      const args = r.args(t.path);
      const run = await criu(bin, args);
      assert.equal(run.code, r.code, `criu ${args.join(' ')}: ${run.stderr}`);
      assert.match(run.stderr, r.stderr, `criu ${args.join(' ')}`);
      assert.equal(run.stderr.trim().split('\n').length, 1, `criu ${args.join(' ')}: one line`);
    }
  } finally {
    t.dispose();
  }
});

dropinTest('criu dump -v4 -o dump.log, then restore -d --pidfile: logs and pid file in the work dir, byte-exact', async (c) => {
  const d = join(c.dir, '1');
  mkdirSync(d);
  // zdtm passes the test's own pid file and --timeout to dump as well.
  await c.dump(['--log-file', 'dump.log', '--images-dir', d, '--verbosity=4', 'dump', '--tree', String(c.wl.pid),
    '--pidfile', join(c.wl.ctrlDir, 'ready'), '--timeout', '10', '--track-mem']);
  logHas(join(d, 'dump.log'));
  assert.match(readFileSync(join(d, 'dump.log'), 'utf8'), /\S/);

  await c.ok(['restore', '-o', 'restore.log', '-D', d, '-v4', '-d', '--pidfile', 'restore.pid']);
  logHas(join(d, 'restore.log'));
  const restored = c.restoredFrom(join(d, 'restore.pid'));
  assert.equal(restored, c.wl.pid, 'the root keeps its pid');
  // A second restore must not overwrite an existing pid file (CRIU: O_EXCL).
  const again = await criu(c.bin, ['restore', '-D', d, '-d', '--pidfile', 'restore.pid']);
  assert.equal(again.code, 1);
  assert.match(again.stderr, /--pidfile .*restore\.pid: file exists \(EEXIST\)/);
  await verdictOk(c.wl, restored);
});

dropinTest('criu restore -d -S (--restore-sibling): the root is a child of the caller, which reaps it', async (c) => {
  const d = join(c.dir, 'img');
  const w = join(c.dir, 'work');
  mkdirSync(w);
  await c.dump(['dump', '-t', String(c.wl.pid), '-D', d, '-W', w, '-o', 'dump.log', '-v4']);
  logHas(join(w, 'dump.log'));
  assert.ok(!existsSync(join(d, 'dump.log')), '-W: the log goes to the work dir, not the images dir');

  await c.ok(['restore', '-D', d, '-W', w, '-o', 'restore.log', '-v4', '-d', '-S', '--pidfile', 'rst.pid']);
  const restored = c.restoredFrom(join(w, 'rst.pid'));
  assert.equal(restored, c.wl.pid);
  logHas(join(w, 'restore.log'));
  await c.siblingVerdict(restored);
});

dropinTest('criu pre-dump, then dump --prev-images-dir ../1 --track-mem, then restore: byte-exact', async (c) => {
  const d1 = join(c.dir, '1');
  const d2 = join(c.dir, '2');
  mkdirSync(d1);
  mkdirSync(d2);
  await c.ok(['--log-file', 'pre-dump.log', '--images-dir', d1, '--verbosity=4', 'pre-dump', '--tree', String(c.wl.pid), '--timeout', '10']);
  logHas(join(d1, 'pre-dump.log'));
  assert.ok(existsSync(`/proc/${c.wl.pid}`), 'pre-dump leaves the tree running');
  const dump = await c.dump(['--log-file', 'dump.log', '--images-dir', d2, '--verbosity=4', 'dump', '--tree', String(c.wl.pid),
    '--prev-images-dir', '../1', '--track-mem', '--timeout', '10']);
  assert.doesNotMatch(dump.stderr, /falling back|full dump/i, 'no fallback warning');
  // The dump is incremental: linked to its parent, unchanged pages left there as PE_PARENT.
  assert.equal(readlinkSync(join(d2, 'parent')), '../1');
  let parentPages = 0, copiedPages = 0;
  for await (const e of await (await ImageDir.open(d2)).pagemap(c.wl.pid)) {
    if (e.flags & PE_PARENT) parentPages += e.nrPages;
    else if (e.flags & PE_PRESENT) copiedPages += e.nrPages;
  }
  assert.ok(parentPages > 0 && copiedPages < parentPages, `the dump is incremental: ${parentPages} pages in the parent, ${copiedPages} copied`);
  await c.ok(['--log-file', 'restore.log', '--images-dir', d2, '--verbosity=4', 'restore', '--pidfile', join(c.dir, 'test.pid'), '--restore-detached']);
  await verdictOk(c.wl, c.restoredFrom(join(c.dir, 'test.pid')));
});

dropinTest('criu lazy-pages --status-fd, then restore --lazy-pages -d hands the uffds to that daemon', async (c) => {
  const d = join(c.dir, '1');
  await c.dump(['dump', '-o', 'dump.log', '-D', d, '-v4', '-t', String(c.wl.pid)]);
  const lp = c.daemon(['lazy-pages', '--log-file', 'lazy-pages.log', '--images-dir', d, '--verbosity=4']);
  assert.deepEqual(await withTimeout(lp.status, 30_000, 'lazy-pages status byte'), Buffer.from([0]));
  assert.ok(statSync(join(d, 'lazy-pages.socket')).isSocket(), 'the socket is in the work dir');

  await c.ok(['--log-file', 'restore.log', '--images-dir', d, '--verbosity=4', 'restore', '--lazy-pages', '--pidfile', 'r.pid', '--restore-detached']);
  await verdictOk(c.wl, c.restoredFrom(join(d, 'r.pid')));
  const end = await withTimeout(lp.exited, 30_000, 'lazy-pages exits once every page is served');
  assert.equal(end.code, 0, end.stderr);
  assert.match(end.stdout, /\b1 process/, `the daemon served our restore: ${end.stdout}`);
  assert.deepEqual(await lp.statusAll, Buffer.from([0]), 'exactly one zero byte on the status fd');
  logHas(join(d, 'lazy-pages.log'));
  logHas(join(d, 'restore.log'));
});

dropinTest('criu page-server --status-fd + dump --page-server --address --port: pages land on the server side', async (c) => {
  const d = join(c.dir, '1');
  mkdirSync(d);
  // Like zdtm: the page server writes into the same directory as the dump.
  const ps = c.daemon(['page-server', '--log-file', 'page-server.log', '--images-dir', d, '--verbosity=4', '--port', '0', '--pidfile', 'ps.pid']);
  const port = await listeningPort(ps);
  assert.deepEqual(await ps.status, Buffer.from([0]));
  assert.equal(readPidfile(join(d, 'ps.pid')), ps.child.pid, 'page-server --pidfile');
  await c.dump(['--log-file', 'dump.log', '--images-dir', d, '--verbosity=4', 'dump', '--tree', String(c.wl.pid),
    '--page-server', '--address', '127.0.0.1', '--port', String(port), '--timeout', '10']);
  const end = await withTimeout(ps.exited, 30_000, 'page-server exits after the session');
  assert.equal(end.code, 0, end.stderr);
  assert.match(end.stdout, /received [1-9]\d* pages in 1 pagemaps/);
  logHas(join(d, 'page-server.log'));
  logHas(join(d, 'dump.log'));
  const names = readdirSync(d);
  assert.deepEqual(names.filter((n) => /^pages-/.test(n)), ['pages-65537.img'], 'only the server\'s pages file');
  assert.ok(names.includes(`pagemap-${c.wl.pid}.img`));
  assert.ok(!names.some((n) => n.startsWith('.lr-push')), 'no staging left behind');

  await c.ok(['restore', '-D', d, '-d', '--pidfile', 'r.pid']);
  await verdictOk(c.wl, c.restoredFrom(join(d, 'r.pid')));
});

dropinTest('post-copy: criu dump --lazy-pages --port + lazy-pages --page-server + restore --lazy-pages', async (c) => {
  const d = join(c.dir, '1');
  const src = c.daemon(['dump', '-o', 'dump.log', '-D', d, '-v4', '-t', String(c.wl.pid), '--lazy-pages', '--port', '0']);
  const port = await listeningPort(src);
  assert.deepEqual(await src.status, Buffer.from([0]));
  const lp = c.daemon(['lazy-pages', '-o', 'lazy-pages.log', '-D', d, '-v4', '--page-server', '--address', '127.0.0.1', '--port', String(port)]);
  assert.deepEqual(await withTimeout(lp.status, 30_000, 'lazy-pages status byte'), Buffer.from([0]));
  // The source tree is still frozen under its pids on this machine: restore
  // in a new pid namespace (zdtm runs lazy migration in its ns flavours).
  await c.ok(['restore', '-o', 'restore.log', '-D', d, '-v4', '--lazy-pages', '-d', '--pidns', '--pidfile', 'r.pid']);
  const init = readPidfile(join(d, 'r.pid'));
  c.killAtEnd(init);
  const root = Number(readFileSync(`/proc/${init}/task/${init}/children`, 'utf8').trim());
  await verdictOk(c.wl, root);
  const lpEnd = await withTimeout(lp.exited, 30_000, 'lazy-pages exits');
  assert.equal(lpEnd.code, 0, lpEnd.stderr);
  const srcEnd = await withTimeout(src.exited, 30_000, 'the dump ends once the destination closed');
  assert.equal(srcEnd.code, 0, srcEnd.stderr);
  await withTimeout(c.wl.exited, 10_000, 'source tree killed after the transfer');
  for (const l of ['dump.log', 'lazy-pages.log', 'restore.log']) logHas(join(d, l));
});

dropinTest('remote lazy: criu page-server --lazy-pages --pidfile + lazy-pages --page-server + restore --lazy-pages', async (c) => {
  const d = join(c.dir, '1');
  await c.dump(['dump', '--log-file', 'dump.log', '--images-dir', d, '--verbosity=4', '--tree', String(c.wl.pid)]);
  // zdtm.py --remote-lazy-pages: all three share the images directory.
  const ps = c.daemon(['page-server', '--log-file', 'page-server.log', '--images-dir', d, '--verbosity=4', '--pidfile', 'ps.pid', '--port', '0', '--lazy-pages']);
  const port = await listeningPort(ps);
  assert.equal(readPidfile(join(d, 'ps.pid')), ps.child.pid);
  const lp = c.daemon(['lazy-pages', '--log-file', 'lazy-pages.log', '--images-dir', d, '--verbosity=4', '--page-server', '--port', String(port), '--address', '127.0.0.1']);
  assert.deepEqual(await withTimeout(lp.status, 30_000, 'lazy-pages status byte'), Buffer.from([0]));
  await c.ok(['restore', '--log-file', 'restore.log', '--images-dir', d, '--verbosity=4', '--lazy-pages', '--pidfile', 'r.pid', '--restore-detached']);
  await verdictOk(c.wl, c.restoredFrom(join(d, 'r.pid')));
  const lpEnd = await withTimeout(lp.exited, 30_000, 'lazy-pages exits');
  assert.equal(lpEnd.code, 0, lpEnd.stderr);
  const psEnd = await withTimeout(ps.exited, 30_000, 'page-server exits after CLOSE');
  assert.equal(psEnd.code, 0, psEnd.stderr);
  assert.match(psEnd.stdout, /page-server: served \d+ pages/);
  for (const l of ['dump.log', 'page-server.log', 'lazy-pages.log', 'restore.log']) logHas(join(d, l));
});

dropinTest('criu restore --lazy-pages -d -S without a daemon: served in-process, the root is still the caller\'s child', async (c) => {
  const d = join(c.dir, '1');
  await c.dump(['dump', '-t', String(c.wl.pid), '-D', d]);
  // -d with the in-process daemon: criu stays until every page is in.
  const rst = criu(c.bin, ['restore', '-D', d, '--lazy-pages', '-d', '-S', '--pidfile', 'r.pid']);
  await waitForFile(join(d, 'r.pid'), 30_000);
  await c.siblingVerdict(c.restoredFrom(join(d, 'r.pid')));
  const r = await rst;
  assert.equal(r.code, 0, r.stderr);
});
