// The daemon-death watchdog wired into the lazy-pages daemon: a real
// `lazy-restore lazy-pages` daemon serves a restore over its socket; the
// restored program is blocked in a fault when the daemon is SIGKILLed; the
// watchdog (holding a copy of its uffd) kills it at once, so it never runs
// on the zero pages the kernel would otherwise hand it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, existsSync, openSync } from 'node:fs';
import { once } from 'node:events';
import { join } from 'node:path';
import { restore } from '../../plugin/restore/index.js';
import { cliPath } from '../helpers/cli.js';
import { isRoot, tempDir, withTimeout } from '../helpers/env.js';
import { dumpDemo } from '../helpers/integrity.js';
import { allStopped, alive, blockedInFault, uffdCount, until, watchdogOf } from '../helpers/proc.js';

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
    await until(() => (wd = watchdogOf(daemon!.pid!)) !== undefined && uffdCount(wd) > 0, 10_000, 'the watchdog to hold the uffd');

    // Freeze the daemon, let the program start its check: it blocks on its first lazy data page.
    process.kill(daemon.pid!, 'SIGSTOP');
    // Every thread: a spinning engine thread could otherwise still serve the fault.
    await until(() => allStopped(daemon!.pid!), 10_000, 'every daemon thread to stop');
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
