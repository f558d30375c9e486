// Post-copy migration of a real workload between two network namespaces
// joined by a veth pair: dump --lazy-pages here (the frozen source keeps its
// pids), the destination half in the other namespace restores the tree in
// its own pid namespace while the pages follow over mutual TLS. The
// workload verifies every byte of its memory itself. A cut of a few seconds
// is survived; a longer one kills the restored tree with a clear error and
// leaves the source running.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { migrate, type MigrateOptions } from '../../plugin/pageserver/migrate.js';
import { UserError } from '../../plugin/errors.js';
import { watchDestRunning } from '../helpers/migrate-dest.js';
import { tempDir, withTimeout } from '../helpers/env.js';
import { startWorkload, waitForFile, type Workload } from '../helpers/workload.js';
import { makeCerts } from '../helpers/pageserver.js';
import { blockedInFault, until } from '../helpers/proc.js';
import { makeNetnsHost, netnsAvailable, type NetnsHost } from '../helpers/netns.js';

const skip = !netnsAvailable() ? 'needs root and ip netns' : false;

/** The restored workload: the child of the pid namespace's init. */
function restoredWorkload(initPid: number): number {
  const kids = readdirSync(`/proc/${initPid}/task`).flatMap((t) => readFileSync(`/proc/${initPid}/task/${t}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number));
  const comm = readFileSync(`/proc/${initPid}/comm`, 'utf8').trim();
  if (comm.startsWith('workload-mem')) return initPid;
  if (kids.length !== 1) throw new Error(`expected one restored child of ${initPid} (${comm}), found ${kids.join(',')}`);
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

interface Setup {
  host: NetnsHost;
  wl: Workload;
  dirs: { path: string; dispose: () => void };
  opts: MigrateOptions;
}

async function setup(extra: Partial<MigrateOptions>, workload = 'workload-mem'): Promise<Setup> {
  const dirs = tempDir();
  const host = makeNetnsHost();
  const wl = await startWorkload(workload, ['8']);
  const certs = makeCerts(dirs.path, [host.hostIp]);
  return {
    host, wl, dirs,
    opts: {
      pid: wl.pid, sourceDir: join(dirs.path, 'src'), destDir: join(dirs.path, 'dst'),
      address: host.hostIp, destNetns: host.ns,
      tls: { cacert: certs.ca, cert: certs.serverCert, key: certs.serverKey },
      destTls: { cacert: certs.ca, cert: certs.clientCert, key: certs.clientKey },
      ...extra,
    },
  };
}

async function teardown(s: Setup, restoredInit: number | undefined): Promise<void> {
  killQuietly(restoredInit);
  try {
    s.host.heal();
  } catch {
    /* already up */
  }
  await s.wl.dispose();
  s.host.dispose();
  s.dirs.dispose();
}

// Linked statically, the workload keeps its TCB (TLS, stack canary, rseq
// area) in lazily served heap pages: the restore registers the rseq area
// only once the destination's daemon (in the same process, over TLS: the
// JS fetch path) has served that page.
test('migration with background push: byte-exact workload in its own pid namespace, source killed', { skip }, async () => {
  const s = await setup({}, 'workload-mem-static');
  let init: number | undefined;
  try {
    const lines: string[] = [];
    const report = await withTimeout(migrate({ ...s.opts, onDestLine: (l) => lines.push(l) }), 60_000, 'migration');
    init = report.pid;
    assert.equal(report.pagesTransferred, report.pagesTotal);
    assert.ok(report.pagesTotal > 2000, `pages ${report.pagesTotal}`);
    assert.ok(report.copiedBytes! < 1 << 20, `only metadata and eager pages copied: ${report.copiedBytes} bytes`);
    assert.ok(lines.some((l) => /^migrate: pages \d+\/\d+ \(\d+%\), [\d.]+ MiB\/s, \d+ faults served/.test(l)), 'progress line');
    assert.equal(await withTimeout(s.wl.exited, 10_000, 'source killed'), 'SIGKILL');
    const pid = restoredWorkload(init);
    assert.notEqual(pid, s.wl.pid);
    assert.match(readFileSync(`/proc/${pid}/status`, 'utf8'), new RegExp(`NSpid:\\s+${pid}\\s+${s.wl.pid}\\n`), 'keeps its pid inside its namespace');
    process.kill(pid, 'SIGUSR1');
    await waitForFile(join(s.wl.ctrlDir, 'result'), 20_000);
    assert.equal(s.wl.result(), 'ok');
  } finally {
    await teardown(s, init);
  }
});

test('pure on-demand migration survives a link cut of a few seconds', { skip }, async () => {
  const s = await setup({ prefetch: false, timeoutSec: 20 });
  let init: number | undefined;
  try {
    const lines: string[] = [];
    const dest = watchDestRunning(lines);
    const migrated = migrate({
      ...s.opts,
      onDestLine: dest.onDestLine,
    });
    migrated.catch(() => undefined);
    init = await withTimeout(dest.running, 60_000, 'restored tree running');
    const pid = restoredWorkload(init);
    s.host.cut();
    // The workload now touches its memory: every fault waits for the link.
    process.kill(pid, 'SIGUSR1');
    // The cut is felt (the destination's client reports it and reconnects) while
    // the workload sits blocked in a fault for a page that cannot come.
    await until(() => lines.some((l) => /lost .*reconnecting/.test(l)), 20_000, () => `the destination to report the lost link:\n${lines.join('\n')}`);
    await until(() => blockedInFault(pid), 20_000, 'the restored workload to block in a userfault during the cut');
    assert.throws(() => readFileSync(join(s.wl.ctrlDir, 'result')), 'no result while its pages cannot come');
    s.host.heal();
    await waitForFile(join(s.wl.ctrlDir, 'result'), 30_000);
    assert.equal(s.wl.result(), 'ok');
    const report = await withTimeout(migrated, 30_000, 'migration end');
    assert.ok(report.reconnects >= 1, `reconnects ${report.reconnects}`);
    assert.ok(report.faults > 0);
    assert.ok(lines.some((l) => /lost .*reconnecting/.test(l)), lines.join('\n'));
  } finally {
    await teardown(s, init);
  }
});

test('a longer cut kills the restored tree with a clear error; the source runs on', { skip }, async () => {
  const s = await setup({ prefetch: false, timeoutSec: 2 });
  let init: number | undefined;
  try {
    const lines: string[] = [];
    const dest = watchDestRunning(lines);
    const migrated = migrate({
      ...s.opts,
      onDestLine: dest.onDestLine,
    });
    migrated.catch(() => undefined);
    init = await withTimeout(dest.running, 60_000, 'restored tree running');
    const pid = restoredWorkload(init);
    s.host.cut();
    process.kill(pid, 'SIGUSR1');
    await assert.rejects(withTimeout(migrated, 30_000, 'migration failure'), (e: unknown) => e instanceof UserError && e.exitCode === 3 && /the source tree was left running/.test(e.message));
    assert.ok(lines.some((l) => /unreachable for 2000 ms/.test(l) && /killed pid \d+ with SIGKILL/.test(l)), lines.join('\n'));
    assert.throws(() => readFileSync(join(s.wl.ctrlDir, 'result')), 'the restored workload never ran on missing pages');
    // The frozen source was released: it still works.
    assert.equal(s.wl.child.exitCode, null);
    s.wl.go();
    await waitForFile(join(s.wl.ctrlDir, 'result'), 20_000);
    assert.equal(s.wl.result(), 'ok');
  } finally {
    await teardown(s, init);
  }
});
