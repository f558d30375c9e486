// Post-copy through the CLI, as a user runs it on one host: `dump
// --lazy-pages --port` (the frozen source serves its memory), the images
// copied, `lazy-pages --page-server` and `restore --lazy-pages --pidns -d`.
// The programs here keep state the kernel itself writes during the restore
// in pages whose data exists only on the source: a statically linked
// program's TCB (TLS, stack canary, the rseq area) sits in its brk heap.
// Registering the rseq area before that page was served populated it with
// zeros underneath the daemon (whose copy then failed with EEXIST and was
// taken as served): the program ran on a zeroed TCB and crashed.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { cpSync, existsSync, readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { ImageDir } from '../../plugin/images/index.js';
import { PE_LAZY } from '../../plugin/pageserver/protocol.js';
import { cliPath, runCli } from '../helpers/cli.js';
import { isRoot, tempDir, withTimeout } from '../helpers/env.js';
import { alive, until } from '../helpers/proc.js';
import { startWorkload } from '../helpers/workload.js';

const skip = !isRoot && 'needs root';

interface Cli {
  child: ChildProcess;
  lines: string[];
  /** Resolves with the first output line matching `re`. */
  line(re: RegExp, ms: number): Promise<RegExpMatchArray>;
  exited: Promise<number | string>;
  kill(): Promise<void>;
}

/** A long-running lazy-restore command with its stdout and stderr lines. */
function startCli(args: string[]): Cli {
  const child = spawn(process.execPath, [cliPath, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  const lines: string[] = [];
  const waiters: (() => void)[] = [];
  for (const s of [child.stdout!, child.stderr!]) {
    let buf = '';
    s.setEncoding('utf8');
    s.on('data', (d: string) => {
      buf += d;
      let i;
      while ((i = buf.indexOf('\n')) >= 0) {
        lines.push(buf.slice(0, i));
        buf = buf.slice(i + 1);
      }
      for (const w of waiters.splice(0)) w();
    });
  }
  let running = true;
  const exited = new Promise<number | string>((r) => child.on('exit', (code, sig) => {
    running = false;
    r(code ?? sig ?? -1);
    for (const w of waiters.splice(0)) w();
  }));
  const line = (re: RegExp, ms: number): Promise<RegExpMatchArray> => withTimeout(new Promise((resolve, reject) => {
    const look = (): void => {
      for (const l of lines) {
        const m = l.match(re);
        if (m) return resolve(m);
      }
      if (!running) return reject(new Error(`lazy-restore ${args[0]} exited before printing ${re}:\n${lines.join('\n')}`));
      waiters.push(look);
    };
    look();
  }), ms, `lazy-restore ${args[0]}: ${re}\n${lines.join('\n')}`);
  return {
    child, lines, line, exited,
    kill: async () => {
      if (running) child.kill('SIGKILL');
      await exited;
    },
  };
}

/** The only child of a pid namespace's init (the restored root). */
function childOf(init: number): number {
  const kids = readdirSync(`/proc/${init}/task`).flatMap((t) => readFileSync(`/proc/${init}/task/${t}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number));
  if (kids.length !== 1) throw new Error(`expected one child of ${init}, found [${kids.join(',')}]`);
  return kids[0]!;
}

function killQuietly(pid: number | undefined): void {
  if (pid === undefined) return;
  try {
    process.kill(pid, 'SIGKILL');
  } catch {
    /* gone */
  }
}

/**
 * Source dump --lazy-pages of `pid`, the images copied to a second
 * directory, the daemon fetching from the source, the restore; returns the
 * restored pid namespace's init once the daemon has served everything (or
 * at once with `wait: false`).
 */
async function postCopy(pid: number, dirs: { src: string; dst: string }, daemonArgs: string[], cleanup: (() => Promise<void>)[]): Promise<{ init: number; daemon: Cli; source: Cli }> {
  const source = startCli(['dump', '-t', String(pid), '-D', dirs.src, '--lazy-pages', '--address', '127.0.0.1', '--port', '0']);
  cleanup.push(source.kill);
  const port = Number((await source.line(/^page-server: listening on [\d.]+:(\d+)$/, 30_000))[1]);
  cpSync(dirs.src, dirs.dst, { recursive: true });
  const daemon = startCli(['lazy-pages', '-D', dirs.dst, '--page-server', '--address', '127.0.0.1', '--port', String(port), ...daemonArgs]);
  cleanup.push(daemon.kill);
  await daemon.line(/^lazy-pages: listening on /, 30_000);
  const pidfile = join(dirs.dst, 'restored.pid');
  const r = await runCli(['restore', '-D', dirs.dst, '--lazy-pages', '--pidns', '-d', '--pidfile', pidfile]);
  assert.equal(r.code, 0, r.stderr);
  const init = Number(readFileSync(pidfile, 'utf8'));
  cleanup.push(async () => {
    // SIGKILL to a pid namespace's init ends everything in it before init
    // itself is gone (a zombie for its slow reaper).
    killQuietly(init);
    await until(() => !alive(init), 10_000, `restored init ${init} to end`);
  });
  return { init, daemon, source };
}

test('post-copy CLI: a static program\'s TCB and rseq area in lazily served heap pages; every byte verified', { skip }, async () => {
  const wl = await startWorkload('workload-mem-static', ['4']);
  const d = tempDir();
  const cleanup: (() => Promise<void>)[] = [];
  try {
    const dirs = { src: join(d.path, 'src'), dst: join(d.path, 'dst') };
    const { init, daemon, source } = await postCopy(wl.pid, dirs, ['--no-prefetch'], cleanup);
    // The premise: the rseq area lies in a page the images do not hold.
    const img = await ImageDir.open(dirs.dst);
    const rseq = (await img.core(wl.pid)).thread_core!.rseq_entry!;
    const page = rseq.rseq_abi_pointer & ~4095n;
    const entries = await (await img.pagemap(wl.pid)).toArray();
    assert.ok(entries.some((e) => e.flags === PE_LAZY && e.vaddr <= page && page < e.vaddr + BigInt(e.nrPages) * 4096n),
      `rseq area 0x${rseq.rseq_abi_pointer.toString(16)} in a PE_LAZY-only page`);
    const pid = childOf(init);
    assert.ok(alive(pid), 'restored workload running');
    process.kill(pid, 'SIGUSR1');
    const result = join(wl.ctrlDir, 'result');
    await until(() => existsSync(result) || !alive(pid), 30_000, 'the restored workload\'s verdict');
    assert.ok(existsSync(result), `the restored workload died before its verdict:\n${readFileSync(join(wl.ctrlDir, 'stderr.log'), 'utf8')}`);
    assert.equal(wl.result(), 'ok');
    // Pure on-demand: the daemon stays until the source is told to close.
    killQuietly(init);
    assert.equal(await withTimeout(daemon.exited, 30_000, 'daemon exits once its processes are gone'), 0, daemon.lines.join('\n'));
    assert.equal(await withTimeout(source.exited, 30_000, 'source page server closes'), 0, source.lines.join('\n'));
    assert.equal(await withTimeout(wl.exited, 10_000, 'source tree killed'), 'SIGKILL');
  } finally {
    for (const c of cleanup.reverse()) await c();
    await wl.dispose();
    d.dispose();
  }
});

test('post-copy CLI: a busybox shell loop keeps counting on the destination (background push)', { skip }, async () => {
  const d = tempDir();
  const counter = join(d.path, 'count');
  const sh = spawn('busybox', ['sh', '-c', `i=0; while true; do i=$((i+1)); echo $i > ${counter}; sleep 0.05; done`], { detached: true, stdio: 'ignore' });
  const shExited = new Promise<number | string>((r) => sh.on('exit', (code, sig) => r(code ?? sig ?? -1)));
  const cleanup: (() => Promise<void>)[] = [];
  const count = (): number => {
    try {
      return Number(readFileSync(counter, 'utf8').trim()) || 0;
    } catch {
      return 0;
    }
  };
  try {
    await until(() => count() >= 3, 10_000, 'the shell to count');
    const dirs = { src: join(d.path, 'src'), dst: join(d.path, 'dst') };
    const { init, daemon, source } = await postCopy(sh.pid!, dirs, [], cleanup);
    assert.equal(await withTimeout(daemon.exited, 30_000, 'daemon served everything'), 0, daemon.lines.join('\n'));
    assert.match(daemon.lines.join('\n'), /: \d+ process\(es\): [1-9]\d* complete, \d+ exited, 0 killed/);
    assert.equal(await withTimeout(source.exited, 30_000, 'source page server closes'), 0, source.lines.join('\n'));
    assert.equal(await withTimeout(shExited, 10_000, 'source shell killed'), 'SIGKILL');
    const at = count();
    await until(() => count() >= at + 5, 20_000, () => `the restored shell to count past ${at + 5} (at ${count()})`);
    assert.ok(alive(childOf(init)), 'restored shell running');
  } finally {
    for (const c of cleanup.reverse()) await c();
    killQuietly(sh.pid);
    await shExited;
    d.dispose();
  }
});
