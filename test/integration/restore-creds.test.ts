// Creds, rlimits and pending signals across dump -> kill -> restore, eager
// and lazy: workload-creds switches to uid/gid 1000-ish with supplementary
// groups and a reduced capability set, lowers NOFILE/CORE/STACK, queues
// blocked standard and real-time signals (shared and per thread, with
// values), and after the restore checks all of it itself. The images decode
// with crit; a limit that cannot be restored is a one-line error naming the
// pid, the resource and EPERM, with nothing left running.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { holdOriginal } from '../helpers/proc.js';
import { dump } from '../../plugin/dump/index.js';
import { ImageDir } from '../../plugin/images/index.js';
import { runCliWithoutCap } from '../helpers/cli.js';
import { critCheckDir, critDecode } from '../helpers/critcheck.js';
import { isRoot, leakedFds, openFds, tempDir, withTimeout } from '../helpers/env.js';
import { type Dumped, pidExists, restoreAndCheck, restoreTree, withDumped } from '../helpers/restore.js';
import { startWorkload } from '../helpers/workload.js';

const skip = !isRoot && 'needs root';
const RLIMIT_NOFILE = 7;

function statusOf(pid: number, tid = pid): Map<string, string> {
  const m = new Map<string, string>();
  for (const line of readFileSync(`/proc/${pid}/task/${tid}/status`, 'utf8').split('\n')) {
    const i = line.indexOf(':');
    if (i > 0) m.set(line.slice(0, i), line.slice(i + 1).trim());
  }
  return m;
}

async function roundTrip(lazy: boolean): Promise<void> {
  await withDumped('workload-creds', [], async (d) => {
    assert.equal(d.wl.report.early_fail, undefined, 'the workload set up its state');
    await checkImages(d);
    await restoreAndCheck(d, { lazy }, (tree) => {
      const tid = Number(d.wl.report.tid_thread);
      for (const t of [tree.pid, tid]) {
        const st = statusOf(tree.pid, t);
        assert.equal(st.get('Uid'), '1000\t1001\t1002\t1000', `uids of ${t} seen from outside`);
        assert.equal(st.get('Gid'), '1010\t1011\t1012\t1010');
        assert.equal(st.get('Groups'), '27 1020 1021');
        assert.equal(st.get('CapEff'), '0000000000000420');
      }
    });
  });
}

/** What the dump wrote, through our reader and through crit. */
async function checkImages(d: Dumped): Promise<void> {
  const dir = await ImageDir.open(d.images.path);
  const core = await dir.core(d.wl.pid);
  const c = core.thread_core!.creds!;
  assert.deepEqual([c.uid, c.euid, c.suid, c.fsuid, c.gid, c.egid, c.sgid, c.fsgid], [1000, 1001, 1002, 1000, 1010, 1011, 1012, 1010]);
  assert.deepEqual(c.cap_eff, [0x420, 0]);
  assert.equal(c.secbits, 0x13);
  assert.equal(core.tc!.rlimits!.rlimits[RLIMIT_NOFILE]!.max, 128n);
  assert.equal(core.tc!.signals_s!.signals.length, 5, 'SIGHUP + 4 queued real-time signals in the shared queue');
  assert.equal(core.thread_core!.signals_p!.signals.length, 2, 'SIGUSR2 + one real-time signal queued to the main thread');
  const tcore = await dir.core(Number(d.wl.report.tid_thread));
  assert.equal(tcore.thread_core!.signals_p!.signals.length, 3);
  assert.equal(tcore.thread_core!.creds!.uid, 1000, 'every thread has its creds');
  critCheckDir(d.images.path);
  const decoded = critDecode(`${d.images.path}/core-${d.wl.pid}.img`).entries[0] as {
    tc: { signals_s: { signals: { siginfo: string }[] }; rlimits: { rlimits: { cur: number; max: number }[] } };
    thread_core: { creds: { uid: number; groups: number[]; secbits: number } };
  };
  assert.equal(decoded.thread_core.creds.uid, 1000);
  assert.deepEqual(decoded.thread_core.creds.groups, [27, 1020, 1021]);
  assert.equal(decoded.tc.rlimits.rlimits[RLIMIT_NOFILE]!.cur, 64);
  assert.equal(decoded.tc.signals_s.signals.length, 5);
}

test('eager: creds, capabilities, securebits, rlimits and pending signals (shared and per thread)', { skip }, async () => {
  await roundTrip(false);
});

test('lazy: creds, capabilities, securebits, rlimits and pending signals (shared and per thread)', { skip }, async () => {
  await roundTrip(true);
});

test('--pidns: pending signals are re-queued by pid inside the new namespace, creds as dumped', { skip }, async () => {
  const fds = openFds();
  const wl = await startWorkload('workload-creds');
  const img = tempDir('lr-img-');
  try {
    // The original keeps running (and its pids): the copy gets its own pid namespace.
    await dump({ pid: wl.pid, imagesDir: img.path, shellJob: true, leaveRunning: true });
    // The original is held stopped: the verdict file it shares can then only be written by the copy.
    const original = await holdOriginal(wl.pid);
    rmSync(join(wl.ctrlDir, 'result'), { force: true });
    const tree = await restoreTree(img.path, { pidns: true });
    const root = Number(readFileSync(`/proc/${tree.pid}/task/${tree.pid}/children`, 'utf8').trim());
    assert.equal(statusOf(root).get('Uid'), '1000\t1001\t1002\t1000');
    process.kill(root, 'SIGUSR1');
    assert.deepEqual(await withTimeout(tree.wait(), 20000, 'namespace init exit'), { code: 0, signal: 0 });
    assert.equal(wl.result(), 'ok');
    assert.equal(original.stillThere(), undefined, 'the original still runs (held) with its pid');
    await tree.close();
  } finally {
    await wl.dispose();
    img.dispose();
  }
  assert.deepEqual(leakedFds(fds), []);
});

test('a hard limit above the restorer\'s, a capability it lacks: one-line errors naming pid, what and EPERM; nothing left running', { skip }, async () => {
  // The restorer runs as a child that dropped CAP_SYS_RESOURCE (24) from its
  // bounding set before exec (so root keeps every other capability but not
  // this one): both errors hold on any root, whatever capabilities it has.
  await withDumped('workload-creds', [], async (d) => {
    const dir = await ImageDir.open(d.images.path);
    const core = await dir.core(d.wl.pid);
    const own = readFileSync('/proc/self/limits', 'utf8').split('\n').find((l) => l.startsWith('Max open files'))!;
    const hard = BigInt(own.slice(26).trim().split(/\s+/)[1]!);
    core.tc!.rlimits!.rlimits[RLIMIT_NOFILE] = { cur: 64n, max: hard + 1n };
    const w = await ImageDir.create(d.images.path);
    await w.writeCore(d.wl.pid, core);
    const restoreWithoutSysResource = async (): Promise<string> => {
      const cli = await runCliWithoutCap('sys_resource', ['restore', '-D', d.images.path, '--shell-job', '-d'], { timeoutMs: 60000 });
      if (cli.code === 0) {
        // Restored after all: stop it before failing, so nothing outlives the test.
        const pid = Number(cli.stdout.trim());
        if (pid > 0 && pidExists(pid)) process.kill(pid, 'SIGKILL');
        assert.fail(`the restore should have failed: ${cli.stderr}`);
      }
      assert.equal(cli.code, 1, cli.stderr);
      const lines = cli.stderr.trim().split('\n');
      assert.equal(lines.length, 1, cli.stderr);
      assert.equal(pidExists(d.wl.pid), false, 'nothing left running');
      return lines[0]!;
    };
    assert.match(await restoreWithoutSysResource(), new RegExp(`^lazy-restore: pid ${d.wl.pid}: cannot restore RLIMIT_NOFILE \\(soft 64, hard ${hard + 1n}\\): prlimit64: EPERM \\(raising the hard limit above the current ${hard} needs CAP_SYS_RESOURCE\\)$`));

    // A capability the restorer lacks: the one its child dropped.
    core.tc!.rlimits!.rlimits[RLIMIT_NOFILE] = { cur: 64n, max: 128n };
    core.thread_core!.creds!.cap_prm = [core.thread_core!.creds!.cap_prm[0]! | (1 << 24), core.thread_core!.creds!.cap_prm[1] ?? 0];
    await w.writeCore(d.wl.pid, core);
    assert.match(await restoreWithoutSysResource(), new RegExp(`^lazy-restore: pid ${d.wl.pid}: cannot restore capabilities cap_sys_resource\\(24\\): the restorer does not hold them \\(EPERM\\)$`));
  });
});
