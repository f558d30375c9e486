// The daemon-death watchdog and processes forked after a lazy restore: the
// daemon learns a child's uffd from UFFD_EVENT_FORK; the watchdog must hold
// a copy of it too, or the daemon's death closes the child's last copy and
// the kernel hands the child zero pages before any SIGKILL reaches it.
// Real processes: the CLI daemon, lazy-handover (a CRIU-protocol restorer)
// whose child verifies its lazy pages, kill -9 of the daemon while the child
// is blocked in a fault.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { join } from 'node:path';
import { PE_LAZY, PE_PRESENT } from '../../plugin/images/index.js';
import { cliPath } from '../helpers/cli.js';
import { isRoot, leakedFds, openFds, tempDir, withTimeout } from '../helpers/env.js';
import { pattern, startHandover, type Handover } from '../helpers/lazy.js';
import { writeLazyImages } from '../helpers/lazy-images.js';
import { allStopped, alive, blockedInFault, uffdCount, until, watchdogOf } from '../helpers/proc.js';

const PAGE = 4096;

/** Every page holds data: a zero page read anywhere is a mismatch the client reports. */
async function images(dir: string, pid: number, addr: bigint, npages: number, seed: bigint): Promise<void> {
  await writeLazyImages(dir, [{ pid, vmas: [{ start: addr, end: addr + BigInt(npages * PAGE) }], entries: [{ vaddr: addr, pages: npages, flags: PE_LAZY | PE_PRESENT, data: pattern(addr, npages * PAGE, seed) }] }]);
}

function stdoutLine(h: Handover, re: RegExp, ms: number): Promise<RegExpExecArray> {
  return withTimeout(new Promise<RegExpExecArray>((resolve) => {
    const check = (): boolean => {
      for (const l of h.stdout) {
        const m = re.exec(l);
        if (m) {
          resolve(m);
          return true;
        }
      }
      return false;
    };
    if (!check()) {
      const on = (): void => {
        // h.stdout is filled by the helper's own 'data' listener, registered first.
        if (check()) h.child.stdout!.off('data', on);
      };
      h.child.stdout!.on('data', on);
    }
  }), ms, `lazy-handover to print ${re}; stdout so far: ${h.stdout.join(' | ')}; stderr: ${h.stderr}`);
}

test('kill -9 of the daemon while a forked child is mid-restore: the child blocks on the watchdog\'s copy of its uffd and is killed, never reads zeros', { skip: !isRoot && 'needs root' }, async () => {
  const d = tempDir('lr-wd-fork-');
  const before = openFds();
  let daemon: ChildProcess | undefined;
  let h: Handover | undefined;
  let childPid: number | undefined;
  try {
    const addr = 0x7e5100000000n;
    const seed = 0x5eed0f0f12345678n;
    const npages = 64;
    h = await startHandover([join(d.path, 'lazy-pages.socket'), '--map', `0x${addr.toString(16)}:${npages}:0x${seed.toString(16)}`, '--verify', '--fork']);
    const parentPid = h.pids[0]!;
    await images(d.path, parentPid, addr, npages, seed);
    daemon = spawn(process.execPath, [cliPath, 'lazy-pages', '-D', d.path, '--no-prefetch', '--status-fd', '3'], { stdio: ['ignore', 'ignore', 'pipe', 'pipe'] });
    let stderr = '';
    const waiters: (() => void)[] = [];
    daemon.stderr!.on('data', (b: Buffer) => {
      stderr += b.toString();
      for (const w of waiters.splice(0)) w();
    });
    // 'close': exited and its pipes (ours too) closed, so the fd check below is exact.
    const daemonExit = once(daemon, 'close');
    const handoverClosed = once(h.child, 'close');
    await withTimeout(once(daemon.stdio[3] as NodeJS.ReadableStream, 'data'), 15_000, 'daemon listening');
    const dpid = daemon.pid!;

    h.go();
    childPid = Number((await stdoutLine(h, /^forked (\d+)$/, 10_000))[1]);
    let wd: number | undefined;
    // Parent's uffd (adopted at hand-over) and the child's (from UFFD_EVENT_FORK).
    await until(() => (wd = watchdogOf(dpid)) !== undefined && uffdCount(wd) === 2, 10_000,
      () => `the watchdog to hold 2 uffds (holds ${wd === undefined ? 'n/a' : uffdCount(wd)}); daemon stderr: ${stderr}`);

    // Freeze the daemon (every thread, or a spinning engine thread could still
    // serve), let the child start verifying: it blocks on its first lazy page.
    process.kill(dpid, 'SIGSTOP');
    await until(() => allStopped(dpid), 10_000, 'every daemon thread to stop');
    h.go();
    const cp = childPid;
    await until(() => blockedInFault(cp), 10_000, 'the forked child to block in a userfault');

    process.kill(dpid, 'SIGKILL');
    await withTimeout(daemonExit, 10_000, 'daemon exit');
    const st = await h.exit(10_000);
    assert.equal(st.signal, 'SIGKILL', `the restored parent must die by SIGKILL: ${JSON.stringify(st)} ${h.stderr}`);
    await until(() => !alive(cp), 10_000, 'the forked child to be dead');
    assert.doesNotMatch(h.stderr, /mismatch/, 'the child never read a page that was not served');
    assert.equal(h.stdout.some((l) => l.startsWith('verified')), false, 'the child never got past the missing page');
    await withTimeout((async () => {
      while (!new RegExp(`killing pid ${cp} \\(memory not fully restored\\)`).test(stderr)) await new Promise<void>((r) => waiters.push(r));
    })(), 10_000, `watchdog log line for the child; stderr: ${stderr}`);
    assert.match(stderr, /died with 2 process\(es\) not fully restored/);
    const w = wd;
    await until(() => w === undefined || !alive(w), 10_000, 'watchdog exit');
    await withTimeout(handoverClosed, 10_000, 'lazy-handover pipes closed');
  } finally {
    if (daemon && daemon.exitCode === null && daemon.signalCode === null) {
      daemon.kill('SIGKILL');
      await once(daemon, 'exit');
    }
    if (h && h.child.exitCode === null && h.child.signalCode === null) {
      h.child.kill('SIGKILL');
      await h.exit().catch(() => undefined);
    }
    if (childPid !== undefined && alive(childPid)) process.kill(childPid, 'SIGKILL');
    d.dispose();
  }
  assert.deepEqual(leakedFds(before), []);
});
