// The daemon-death watchdog with real processes: a stand-in daemon hands it
// victims, the test SIGKILLs the daemon, and the victims (children of this
// test) must die by SIGKILL with a log line saying why.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { once } from 'node:events';
import { createInterface } from 'node:readline';
import { projectRoot } from '../helpers/cli.js';
import { isRoot, leakedFds, openFds, tempDir, withTimeout } from '../helpers/env.js';

const daemonScript = join(projectRoot, 'dist', 'test', 'helpers', 'watchdog-daemon.js');

function startVictim(): ChildProcess {
  // A process that would run forever; only the watchdog (or the test's cleanup) ends it.
  return spawn('sleep', ['600'], { stdio: 'ignore' });
}

function exitOf(p: ChildProcess): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
  if (p.exitCode !== null || p.signalCode !== null) return Promise.resolve({ code: p.exitCode, signal: p.signalCode });
  return once(p, 'exit').then(([code, signal]) => ({ code: code as number | null, signal: signal as NodeJS.Signals | null }));
}

async function startDaemon(args: string[]): Promise<{ daemon: ChildProcess; watchdogPid: number; lines: AsyncIterableIterator<string> }> {
  const daemon = spawn(process.execPath, [daemonScript, ...args], { stdio: ['ignore', 'pipe', 'inherit'] });
  const lines = createInterface({ input: daemon.stdout! })[Symbol.asyncIterator]();
  const first = await withTimeout(lines.next(), 10_000, 'daemon ready');
  const m = /^ready (\d+)$/.exec(String(first.value));
  assert.ok(m, `unexpected daemon output ${String(first.value)}`);
  return { daemon, watchdogPid: Number(m[1]), lines };
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

test('daemon killed with -9: every victim not reported done is SIGKILLed, with a log line', { skip: !isRoot && 'needs root (pidfd_getfd)' }, async () => {
  const d = tempDir();
  const v1 = startVictim();
  const v2 = startVictim();
  const v3 = startVictim();
  try {
    const log = join(d.path, 'watchdog.log');
    const { daemon } = await startDaemon([log, String(v1.pid), String(v2.pid), String(v3.pid), `done=${v3.pid}`]);
    daemon.kill('SIGKILL');
    await exitOf(daemon);
    const [e1, e2] = await withTimeout(Promise.all([exitOf(v1), exitOf(v2)]), 10_000, 'victims killed');
    assert.equal(e1.signal, 'SIGKILL');
    assert.equal(e2.signal, 'SIGKILL');
    assert.equal(v3.exitCode, null, 'a victim reported done must survive');
    assert.equal(v3.signalCode, null);
    const text = readFileSync(log, 'utf8');
    assert.match(text, /daemon \(pid \d+\) died with 2 process\(es\) not fully restored/);
    assert.match(text, new RegExp(`killing pid ${v1.pid} `));
  } finally {
    for (const v of [v1, v2, v3]) if (v.exitCode === null && v.signalCode === null) v.kill('SIGKILL');
    await Promise.all([v1, v2, v3].map(exitOf));
    d.dispose();
  }
});

test('normal close: the watchdog exits and kills nothing', { skip: !isRoot && 'needs root (pidfd_getfd)' }, async () => {
  const d = tempDir();
  const v = startVictim();
  try {
    const { daemon, watchdogPid, lines } = await startDaemon([join(d.path, 'w.log'), String(v.pid), '--bye']);
    const next = await withTimeout(lines.next(), 10_000, 'daemon closed');
    assert.equal(next.value, 'closed');
    await withTimeout(exitOf(daemon), 10_000, 'daemon exit');
    assert.equal(alive(v.pid!), true);
    assert.equal(v.signalCode, null);
    // The watchdog was reaped by the daemon; its pid is gone or reused by another process.
    assert.ok(!alive(watchdogPid) || !readFileSync(`/proc/${watchdogPid}/cmdline`, 'utf8').includes('lr-watchdog'));
  } finally {
    v.kill('SIGKILL');
    await exitOf(v);
    d.dispose();
  }
});

test('adopting an fd the daemon does not have is refused with the errno name', { skip: !isRoot && 'needs root' }, async () => {
  const { Watchdog } = await import('../../plugin/integrity/watchdog.js');
  const w = await Watchdog.start();
  try {
    await assert.rejects(w.adopt(process.pid, 987654), /watchdog: adopt pid \d+: EBADF/);
  } finally {
    await w.close();
  }
});

/** Blocks the event loop (on purpose) until `pid` is a zombie, bounded. */
function blockUntilZombie(pid: number, statOf: (pid: number) => { state: string } | undefined): void {
  const deadline = Date.now() + 10_000;
  while (statOf(pid)?.state !== 'Z') {
    if (Date.now() > deadline) throw new Error(`pid ${pid} did not exit`);
  }
}

test('close(): the watchdog answering BYE and exiting at once is a clean close, even when its exit is reaped before its answer is read', { skip: !isRoot && 'needs root (pidfd_open)' }, async () => {
  const { Watchdog } = await import('../../plugin/integrity/watchdog.js');
  const { statOf } = await import('../helpers/proc.js');
  const before = openFds();
  for (let i = 0; i < 5; i++) {
    const w = await Watchdog.start();
    const wpid = w.pid!;
    // Another child's SIGCHLD makes node reap every exited child at the end
    // of a loop iteration, after the fd callbacks of that iteration: the
    // order seen in the benchmark ("watchdog exited (code 0)" at close).
    // The other child's output and exit are made pending together; its
    // output callback sends BYE and waits for the watchdog to exit, so the
    // reaping that follows sees the watchdog gone before its "OK" is read.
    const other = spawn('sh', ['-c', 'echo x'], { stdio: ['ignore', 'pipe', 'ignore'] });
    let closing: Promise<void> | undefined;
    const sent = new Promise<void>((resolve) => other.stdout!.once('data', () => {
      closing = w.close();
      blockUntilZombie(wpid, statOf);
      resolve();
    }));
    blockUntilZombie(other.pid!, statOf);
    await withTimeout(sent, 10_000, 'the other child\'s output');
    await withTimeout(closing!, 10_000, 'watchdog close');
    await exitOf(other);
  }
  assert.deepEqual(leakedFds(before), []);
});
