// The daemon-death watchdog wired into the lazy-pages daemon: a real
// `lazy-restore lazy-pages` daemon serves a restore over its socket; the
// restored program is blocked in a fault when the daemon is SIGKILLed; the
// watchdog (holding a copy of its uffd) kills it at once, so it never runs
// on the zero pages the kernel would otherwise hand it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, existsSync, openSync, readFileSync, readdirSync, readlinkSync } from 'node:fs';
import { once } from 'node:events';
import { join } from 'node:path';
import { restore } from '../../plugin/restore/index.js';
import { cliPath } from '../helpers/cli.js';
import { isRoot, tempDir, withTimeout } from '../helpers/env.js';
import { dumpDemo } from '../helpers/integrity.js';

/** Polls `cond` (a /proc observation: no event exists for it) until true, bounded. */
async function until(cond: () => boolean, ms: number, what: string): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

function statOf(pid: number): { state: string; ppid: number; comm: string } | undefined {
  try {
    const s = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const rest = s.slice(s.lastIndexOf(')') + 2).split(' ');
    return { state: rest[0]!, ppid: Number(rest[1]), comm: s.slice(s.indexOf('(') + 1, s.lastIndexOf(')')) };
  } catch {
    return undefined;
  }
}

function watchdogOf(daemon: number): number | undefined {
  for (const e of readdirSync('/proc')) {
    if (!/^\d+$/.test(e)) continue;
    const st = statOf(Number(e));
    if (st && st.ppid === daemon && st.comm === 'lr-watchdog') return Number(e);
  }
  return undefined;
}

function holdsUffd(pid: number): boolean {
  try {
    return readdirSync(`/proc/${pid}/fd`).some((fd) => {
      try {
        return readlinkSync(`/proc/${pid}/fd/${fd}`) === 'anon_inode:[userfaultfd]';
      } catch {
        return false;
      }
    });
  } catch {
    return false;
  }
}

function blockedInFault(pid: number): boolean {
  try {
    return readFileSync(`/proc/${pid}/wchan`, 'utf8').includes('userfault') || readFileSync(`/proc/${pid}/stack`, 'utf8').includes('handle_userfault');
  } catch {
    return false;
  }
}

function alive(pid: number): boolean {
  const st = statOf(pid);
  return st !== undefined && st.state !== 'Z' && st.state !== 'X';
}

test('kill -9 of the lazy-pages daemon mid-restore: the blocked process is killed by the watchdog, never runs on zeros', { skip: !isRoot && 'needs root' }, async () => {
  const d = tempDir('lr-integ-wd-');
  let daemon: ChildProcess | undefined;
  let restoredPid: number | undefined;
  try {
    const { pid, images, ctl } = await dumpDemo(d.path, 8);
    const sock = join(d.path, 'lp.sock');
    daemon = spawn(process.execPath, [cliPath, 'lazy-pages', '-D', images, '--socket', sock, '--no-prefetch'], { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    const waiters: (() => void)[] = [];
    daemon.stderr!.on('data', (b: Buffer) => {
      stderr += b.toString();
      for (const w of waiters.splice(0)) w();
    });
    const stderrMatches = (re: RegExp, ms: number, what: string): Promise<void> => withTimeout((async () => {
      while (!re.test(stderr)) await new Promise<void>((r) => waiters.push(r));
    })(), ms, `${what}; stderr so far:\n${stderr}`);
    await stderrMatches(/listening on/, 15_000, 'daemon listening');

    const tree = await restore({ imagesDir: images, lazySocket: sock, detached: true });
    restoredPid = tree.pid;
    assert.equal(tree.pid, pid);
    const exit = tree.wait();
    let wd: number | undefined;
    await until(() => (wd = watchdogOf(daemon!.pid!)) !== undefined && holdsUffd(wd), 10_000, 'the watchdog to hold the uffd');

    // Freeze the daemon, let the program start its check: it blocks on its first lazy data page.
    process.kill(daemon.pid!, 'SIGSTOP');
    closeSync(openSync(join(ctl, 'go'), 'w'));
    await until(() => blockedInFault(pid), 10_000, 'the restored process to block in a userfault');

    process.kill(daemon.pid!, 'SIGKILL');
    await withTimeout(once(daemon, 'exit'), 10_000, 'daemon exit');
    const st = await withTimeout(exit, 10_000, 'restored process killed');
    assert.equal(st.signal, 9, `restored process must die by SIGKILL, got ${JSON.stringify(st)}`);
    assert.equal(alive(pid), false, 'no restored process left running');
    assert.equal(existsSync(join(ctl, 'result')), false, 'the program never got past the missing page');
    await stderrMatches(new RegExp(`killing pid ${pid} \\(memory not fully restored\\)`), 10_000, 'watchdog log line');
    assert.match(stderr, /lazy-pages daemon \(pid \d+\) died with 1 process\(es\) not fully restored/);
    await until(() => wd === undefined || !alive(wd), 10_000, 'watchdog exit');
    await tree.close();
  } finally {
    if (daemon && daemon.exitCode === null && daemon.signalCode === null) {
      daemon.kill('SIGKILL');
      await once(daemon, 'exit');
    }
    if (restoredPid !== undefined && alive(restoredPid)) process.kill(restoredPid, 'SIGKILL');
    d.dispose();
  }
});
