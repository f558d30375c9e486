// Restore-side native primitives on real processes: a stub with an exact pid,
// injected syscalls, a child cloned inside the stub with its own exact pid,
// EEXIST for a taken pid, and a teardown that leaves nothing behind.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { addon, helperPath } from '../../plugin/native/addon.js';
import { injectClone } from '../../plugin/restore/process.js';
import { NR, RemoteTask } from '../../plugin/restore/task.js';
import { isRoot, leakedFds, openFds } from '../helpers/env.js';

/** A pid that is free now (checked in /proc), away from the low range. */
function freePid(avoid: number[] = []): number {
  const max = Number(readFileSync('/proc/sys/kernel/pid_max', 'utf8'));
  for (let i = 0; i < 1000; i++) {
    const p = 2000 + Math.floor(Math.random() * (max - 3000));
    if (!avoid.includes(p) && !existsSync(`/proc/${p}`)) return p;
  }
  throw new Error('no free pid');
}

test('stub spawned with an exact pid, syscalls injected, child cloned with its own pid, all reaped', { skip: !isRoot && 'needs root' }, () => {
  const before = openFds();
  const pid = freePid();
  const got = addon.restoreSpawnStub(pid, helperPath('restore-stub'));
  const created = [[got]];
  try {
    assert.equal(got, pid);
    assert.equal(readlinkSync(`/proc/${pid}/exe`), helperPath('restore-stub'));
    const t = new RemoteTask(pid);
    t.findGadget();
    assert.equal(t.raw(NR.getpid), BigInt(pid));
    t.mapScratch(0x20000000n);
    // Read-write-execute: it holds the syscall-batch routine too.
    assert.ok(readFileSync(`/proc/${pid}/maps`, 'utf8').includes('20000000-20006000 rwxp'));
    // Stopped for the restorer (ptrace stop), and only stdio survives into the stub.
    assert.match(readFileSync(`/proc/${pid}/status`, 'utf8'), /State:\s+t/);
    const stubFds = readdirSync(`/proc/${pid}/fd`).map(Number).sort((a, b) => a - b);
    assert.ok(stubFds.every((fd) => fd <= 2), `only stdio in the stub, found fds ${stubFds.join(',')}: ${stubFds.map((fd) => readlinkSync(`/proc/${pid}/fd/${fd}`)).join(' ')}`);
    const childPid = freePid([pid]);
    const outer = injectClone(t, childPid, false);
    created.push([outer]);
    assert.equal(outer, childPid);
    const stat = readFileSync(`/proc/${childPid}/stat`, 'utf8');
    assert.equal(Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]), pid, 'the clone is a child of the stub');
    // A taken pid is EEXIST, from the spawn as from an injected clone.
    assert.throws(() => addon.restoreSpawnStub(pid, helperPath('restore-stub')), { code: 'EEXIST' });
    assert.throws(() => injectClone(t, childPid, false), /already in use/);
  } finally {
    addon.restoreKillTree(created);
  }
  assert.equal(existsSync(`/proc/${pid}`), false, 'stub gone');
  assert.equal(existsSync(`/proc/${created[1]?.[0] ?? -1}`), false, 'child gone, not left to init');
  assert.deepEqual(leakedFds(before), []);
});

for (const mode of ['batch', 'one by one (LR_INJECT_BATCH=0)']) test(`syscall batches, ${mode}: results in order, a failure stops the batch unless it may fail`, { skip: !isRoot && 'needs root' }, () => {
  const before = openFds();
  const pid = freePid();
  addon.restoreSpawnStub(pid, helperPath('restore-stub'));
  const saved = process.env.LR_INJECT_BATCH;
  if (mode !== 'batch') process.env.LR_INJECT_BATCH = '0';
  try {
    const t = new RemoteTask(pid);
    t.findGadget();
    t.mapScratch(0x20000000n);
    if (saved === undefined) delete process.env.LR_INJECT_BATCH;
    else process.env.LR_INJECT_BATCH = saved;
    const MAP = 0x22; // MAP_PRIVATE | MAP_ANONYMOUS
    const got = t.batch([
      { what: 'getpid', nr: NR.getpid, args: [] },
      { what: 'mmap', nr: NR.mmap, args: [0x30000000n, 0x2000n, 3, MAP | 0x100000, -1, 0] },
      { what: 'close(999)', nr: NR.close, args: [999], mayFail: true },
      { what: 'getppid', nr: NR.getppid, args: [] },
    ]);
    assert.deepEqual(got, [BigInt(pid), 0x30000000n, -9n, BigInt(process.pid)]);
    assert.ok(readFileSync(`/proc/${pid}/maps`, 'utf8').includes('30000000-30002000 rw-p'));
    // A failure that may not fail stops the batch there: named, and nothing after it runs.
    assert.throws(() => t.batch([
      { what: 'munmap(0x30000000)', nr: NR.munmap, args: [0x30000000n, 0x1000n] },
      { what: 'close(998)', nr: NR.close, args: [998] },
      { what: 'munmap(0x30001000)', nr: NR.munmap, args: [0x30001000n, 0x1000n] },
    ]), (e: Error) => {
      assert.equal(e.message, `pid ${pid}: close(998) failed in the restored process: EBADF`);
      return true;
    });
    const maps = readFileSync(`/proc/${pid}/maps`, 'utf8');
    assert.ok(!maps.includes('30000000-'), 'the call before the failure ran');
    assert.ok(maps.includes('30001000-30002000 rw-p'), 'the call after it did not');
    // The thread is left as it was: single injected calls still work.
    assert.equal(t.raw(NR.getpid), BigInt(pid));
  } finally {
    addon.restoreKillTree([[pid]]);
  }
  assert.deepEqual(leakedFds(before), []);
});

test('child waiter reports the exit status of a detached stub', { skip: !isRoot && 'needs root' }, async () => {
  const pid = freePid();
  addon.restoreSpawnStub(pid, helperPath('restore-stub'));
  const t = new RemoteTask(pid);
  t.findGadget();
  // Make it exit(7) untraced.
  const regs = addon.restoreGetRegs(pid);
  regs[16] = t.gadget;
  regs[10] = BigInt(NR.exit_group);
  regs[14] = 7n;
  regs[15] = BigInt.asUintN(64, -1n);
  addon.restoreSetRegs(pid, regs);
  const status = new Promise<{ code: number; signal: number }>((resolve) => {
    const w = new addon.RestoreChildWaiter(pid, (info) => {
      w.close();
      resolve(info);
    });
  });
  addon.restoreDetach(pid, 0);
  assert.deepEqual(await status, { code: 7, signal: 0 });
  assert.equal(existsSync(`/proc/${pid}`), false);
});
